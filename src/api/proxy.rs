//! `GET /ace/getstream?id=<content id>` (or `infohash=`): the built-in stream proxy's viewer
//! route. The viewer joins the content's StreamSession and gets `200 video/mp2t`, chunked, once
//! the first bytes arrive; or a JSON 4xx/502/503 (with `Retry-After`) when there will be none.
//! Also fills the proxy's figures (viewers, bytes delivered, failovers) into its `/streams`
//! records.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::ApiContext;
use super::error::ApiError;
use super::extract::ApiQuery;
use super::types::StreamState;
use crate::actors::proxy::{Piece, ProxyMsg};
use crate::core::proxy::parse_content;

#[derive(Debug, Default, Deserialize)]
pub struct GetStreamQuery {
    id: Option<String>,
    infohash: Option<String>,
    /// Players add these; the proxy always answers MPEG-TS.
    #[serde(flatten)]
    _rest: std::collections::HashMap<String, String>,
}

/// `GET /ace/getstream`.
pub async fn getstream(
    State(ctx): State<ApiContext>,
    ApiQuery(q): ApiQuery<GetStreamQuery>,
) -> Response {
    let content = match parse_content(q.id.as_deref(), q.infohash.as_deref()) {
        Ok(c) => c,
        Err(m) => return ApiError::Unprocessable(m).into_response(),
    };
    let Some(proxy) = ctx.proxy.clone() else {
        return ApiError::Unavailable("the stream proxy is not running".into()).into_response();
    };
    let mut rx = match super::ask(&proxy, ctx.call_timeout, "stream proxy", |reply| {
        ProxyMsg::Join {
            content: content.clone(),
            reply,
        }
    })
    .await
    {
        Ok(rx) => rx,
        Err(e) => return e.into_response(),
    };
    // The session answers the first piece within its start timeout (bytes or why not).
    let first: Option<Piece> = rx.recv().await;
    match first {
        Some(Ok(bytes)) => {
            let rest = futures_util::stream::unfold(rx, |mut rx| async move {
                match rx.recv().await {
                    Some(Ok(b)) => Some((Ok::<_, std::io::Error>(coalesce(b, &mut rx)), rx)),
                    _ => None,
                }
            });
            let head = futures_util::stream::once(async move { Ok(bytes) });
            let body = Body::from_stream(futures_util::StreamExt::chain(head, rest));
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
            response
        }
        Some(Err(refusal)) => {
            let status =
                StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut response = (
                status,
                axum::Json(json!({
                    "detail": {"code": refusal.code, "message": refusal.message}
                })),
            )
                .into_response();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            response
        }
        None => {
            let mut response = ApiError::Unavailable(format!(
                "the stream session of {} ended before its first byte; try again",
                content.label()
            ))
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            response
        }
    }
}

/// A viewer behind by several chunks gets them in one write (fewer syscalls under load; nothing
/// waits for more).
fn coalesce(first: Bytes, rx: &mut tokio::sync::mpsc::Receiver<Piece>) -> Bytes {
    let mut more = Vec::new();
    let mut len = first.len();
    while len < COALESCE_MAX
        && let Ok(Ok(b)) = rx.try_recv()
    {
        len += b.len();
        more.push(b);
    }
    if more.is_empty() {
        return first;
    }
    let mut all = Vec::with_capacity(len);
    all.extend_from_slice(&first);
    more.iter().for_each(|b| all.extend_from_slice(b));
    Bytes::from(all)
}

/// At most this many bytes in one coalesced write.
const COALESCE_MAX: usize = 256 * 1024;

/// Fills the proxy's figures into the records of its sessions (ids `proxy:<content>`); other
/// streams keep `null`. A proxy that does not answer leaves them `null` too (the list is still
/// served).
pub async fn add_session_figures(ctx: &ApiContext, streams: &mut [StreamState]) {
    let Some(proxy) = &ctx.proxy else { return };
    if !streams.iter().any(|s| s.id.starts_with("proxy:")) {
        return;
    }
    let sessions =
        match super::ask(proxy, ctx.call_timeout, "stream proxy", ProxyMsg::Sessions).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = ?e, "no stream proxy figures for /streams");
                return;
            }
        };
    for s in streams {
        if let Some(v) = sessions.iter().find(|v| v.stream_id == s.id) {
            s.viewers = Some(if s.ended_at.is_none() {
                v.viewers as u64
            } else {
                0
            });
            s.bytes_delivered = Some(v.delivered);
            s.failovers = Some(v.failovers);
        }
    }
}
