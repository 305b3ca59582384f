//! `GET /metrics`: Prometheus (OpenMetrics) text, rendered at scrape time from the Supervisor's
//! snapshot plus the live Docker-call metrics (`crate::metrics::render`). No auth, like upstream.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::ApiContext;
use super::error::ApiResult;

/// `GET /metrics`; 503 (JSON) when the Supervisor does not answer.
pub async fn metrics(State(ctx): State<ApiContext>) -> ApiResult<Response> {
    let snapshot = ctx.snapshot().await?;
    let proxy = match &ctx.proxy {
        Some(p) => Some(
            super::ask(
                p,
                ctx.call_timeout,
                "stream proxy",
                crate::actors::proxy::ProxyMsg::Totals,
            )
            .await?,
        ),
        None => None,
    };
    let body = crate::metrics::render_with_proxy(&ctx.metrics, &snapshot, proxy.as_ref());
    Ok(([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response())
}
