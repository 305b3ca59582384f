//! `/events/stream_started`, `/events/stream_ended`, `/streams` and `/streams/{id}/stats`: thin
//! translations between JSON and the Streams actor, which owns every stream.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderName;
use serde::Deserialize;

use super::ApiContext;
use super::auth::Reader;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::types::{EndedResponse, StatSnapshot, StreamState, parse_rfc3339};
use crate::actors::streams::{StartError, StreamsMsg};
use crate::core::streams::{
    EngineRef, StartRefusal, StreamEndedReq, StreamStartedReq, StreamStatus, names_engine,
};

/// Header of `GET /streams` giving how many streams matched, whatever the page.
pub const TOTAL_COUNT: HeaderName = HeaderName::from_static("x-total-count");

/// `POST /events/stream_started`.
pub async fn started(
    State(ctx): State<ApiContext>,
    ApiJson(req): ApiJson<StreamStartedReq>,
) -> ApiResult<Json<StreamState>> {
    if req.stream.key.trim().is_empty() {
        return Err(ApiError::Unprocessable(
            "stream.key must not be empty".into(),
        ));
    }
    let answer = ctx
        .ask_streams(|reply| StreamsMsg::Started(req, reply))
        .await?;
    match answer {
        Ok(record) => Ok(Json(StreamState::from(&record))),
        Err(e @ StartError::UnknownEngine { .. }) => Err(ApiError::NotFound(e.to_string())),
        Err(e @ StartError::SupervisorUnavailable(_)) => Err(ApiError::Unavailable(e.to_string())),
        Err(StartError::Refused(e @ StartRefusal::LabelsTooLarge { .. })) => {
            Err(ApiError::Unprocessable(e.to_string()))
        }
        Err(StartError::Refused(e)) => Err(ApiError::TooMany(e.to_string())),
    }
}

/// `POST /events/stream_ended`: idempotent.
pub async fn ended(
    State(ctx): State<ApiContext>,
    ApiJson(req): ApiJson<StreamEndedReq>,
) -> ApiResult<Json<EndedResponse>> {
    let outcome = ctx
        .ask_streams(|reply| StreamsMsg::Ended(req, reply))
        .await?;
    Ok(Json(EndedResponse {
        updated: outcome.updated,
        stream: outcome.stream.as_ref().map(StreamState::from),
    }))
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamsQuery {
    status: Option<String>,
    container_id: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// `GET /streams?status=started|ended&container_id=&offset=&limit=`: oldest start first; the
/// whole list unless `limit` asks for a page. `X-Total-Count` says how many matched; 404 when
/// `container_id` names no engine. The engine URLs only for a reader with the key.
pub async fn list(
    State(ctx): State<ApiContext>,
    reader: Reader,
    ApiQuery(q): ApiQuery<StreamsQuery>,
) -> ApiResult<([(HeaderName, String); 1], Json<Vec<StreamState>>)> {
    if q.limit == Some(0) {
        return Err(ApiError::Unprocessable("limit must be at least 1".into()));
    }
    let status = match q.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(StreamStatus::parse(s).ok_or_else(|| {
            ApiError::Unprocessable(format!("status must be started or ended, not {s:?}"))
        })?),
    };
    let container_id = q
        .container_id
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    if let Some(c) = &container_id {
        // An engine acevisor does not know (removed, or never ours) is a 404, so a proxy that
        // asks per engine skips a dead one instead of taking it for a free engine.
        let snap = ctx.snapshot().await?;
        let known = snap.engines.iter().any(|e| {
            names_engine(
                c,
                &EngineRef {
                    name: e.name.clone(),
                    container_id: e.container_id.clone(),
                    host: e.host.clone(),
                    http_port: e.http_port,
                },
            )
        });
        if !known {
            return Err(ApiError::NotFound(format!("engine {c:?} not found")));
        }
    }
    let (total, streams) = ctx
        .ask_streams(|reply| StreamsMsg::List {
            status,
            container_id,
            offset: q.offset.unwrap_or(0),
            limit: q.limit,
            reply,
        })
        .await?;
    let mut streams: Vec<StreamState> = streams
        .iter()
        .map(|s| StreamState::from(s).for_reader(reader))
        .collect();
    super::proxy::add_session_figures(&ctx, &mut streams).await;
    Ok(([(TOTAL_COUNT, total.to_string())], Json(streams)))
}

#[derive(Debug, Default, Deserialize)]
pub struct StatsQuery {
    since: Option<String>,
}

/// `GET /streams/{id}/stats?since=<RFC 3339>`.
pub async fn stats(
    State(ctx): State<ApiContext>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<Vec<StatSnapshot>>> {
    let since = match q.since.as_deref() {
        None | Some("") => None,
        Some(s) => Some(parse_rfc3339(s).ok_or_else(|| {
            ApiError::Unprocessable(format!("since must be an RFC 3339 time, not {s:?}"))
        })?),
    };
    let history = ctx
        .ask_streams(|reply| StreamsMsg::Stats {
            id: id.clone(),
            since,
            reply,
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("stream {id:?} not found")))?;
    Ok(Json(history.iter().map(StatSnapshot::from).collect()))
}
