//! The earlier orchestrator's operator routes, over acevisor's managed engines: `GET` and
//! `DELETE /containers/{id}`, `GET /by-label`, `POST /scale/{demand}`, `POST /gc` and
//! `POST /health/circuit-breaker/reset`. Each is one call to the Supervisor; only engines acevisor
//! manages are shown or removed (any other container is a 404).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery};
use crate::actors::messages::{ContainerDetail, DeleteOutcome, SupervisorMsg};

/// The earlier orchestrator's inspect shape: `id, name, image, created, status, labels, ports`
/// (engines publish no ports: behind a VPN its container holds them).
fn container_json(c: &ContainerDetail) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "image": c.image,
        "created": Value::Null,
        "started_at": if c.started_at.is_empty() { Value::Null } else { json!(c.started_at) },
        "status": c.status,
        "labels": c.labels,
        "ports": {},
    })
}

async fn ask_supervisor<T: Send + 'static>(
    ctx: &ApiContext,
    build: impl FnOnce(ractor::RpcReplyPort<T>) -> SupervisorMsg,
) -> ApiResult<T> {
    super::ask(&ctx.supervisor, ctx.call_timeout, "supervisor", build).await
}

/// `GET /containers/{id}`: a managed engine's container, by name, ID or ID prefix.
pub async fn inspect(
    State(ctx): State<ApiContext>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let found = ask_supervisor(&ctx, |reply| SupervisorMsg::Inspect {
        id: id.clone(),
        reply,
    })
    .await?;
    match found {
        Some(c) => Ok(Json(container_json(&c))),
        None => Err(ApiError::NotFound("container not found".into())),
    }
}

/// `DELETE /containers/{id}`: removes a managed engine (its streams end now); answered once the
/// removal is under way: `{"deleted": id}`.
pub async fn delete(
    State(ctx): State<ApiContext>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let outcome = ask_supervisor(&ctx, |reply| SupervisorMsg::Delete {
        id: id.clone(),
        reply,
    })
    .await?;
    match outcome {
        DeleteOutcome::Removing { name, container_id } => Ok(Json(json!({
            "deleted": id,
            "container_name": name,
            "container_id": container_id,
            "state": "removing",
        }))),
        DeleteOutcome::NotFound => Err(ApiError::NotFound("container not found".into())),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ByLabelQuery {
    key: Option<String>,
    value: Option<String>,
}

/// `GET /by-label?key=&value=`: managed engines whose label `key` is `value`.
pub async fn by_label(
    State(ctx): State<ApiContext>,
    ApiQuery(q): ApiQuery<ByLabelQuery>,
) -> ApiResult<Json<Vec<Value>>> {
    let (Some(key), Some(value)) = (q.key, q.value) else {
        return Err(ApiError::Unprocessable(
            "query parameters key and value are required".into(),
        ));
    };
    let found = ask_supervisor(&ctx, |reply| SupervisorMsg::ByLabel { key, value, reply }).await?;
    let mut out: Vec<Value> = found.iter().map(container_json).collect();
    out.sort_by_key(|c| c["name"].as_str().unwrap_or_default().to_string());
    Ok(Json(out))
}

/// `POST /scale/{demand}`: engines are created up to the demand (clamped to the replica bounds)
/// now; idle engines above the floors are removed after `idle_grace`, as always.
pub async fn scale(
    State(ctx): State<ApiContext>,
    ApiPath(demand): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let demand: u32 = demand.trim().parse().map_err(|_| {
        ApiError::Unprocessable(format!(
            "demand must be a non-negative integer, not {demand:?}"
        ))
    })?;
    let outcome = ask_supervisor(&ctx, |reply| SupervisorMsg::Scale { demand, reply }).await?;
    Ok(Json(json!({
        "scaled_to": demand,
        "target": outcome.target,
        "engines": outcome.engines,
        "min_replicas": ctx.min_replicas,
        "max_replicas": ctx.max_replicas,
    })))
}

/// `POST /gc`: a reconcile now (idle engines past `idle_grace` above the floors are removed).
pub async fn gc(State(ctx): State<ApiContext>) -> ApiResult<Json<Value>> {
    let removing = ask_supervisor(&ctx, SupervisorMsg::Gc).await?;
    Ok(Json(json!({ "status": "ok", "removing": removing })))
}

#[derive(Debug, Default, Deserialize)]
pub struct ResetQuery {
    operation_type: Option<String>,
}

/// `POST /health/circuit-breaker/reset[?operation_type=]`: closes the creation breaker and lifts
/// creation backoffs (acevisor has one breaker, for engine creation).
pub async fn reset_breaker(
    State(ctx): State<ApiContext>,
    ApiQuery(q): ApiQuery<ResetQuery>,
) -> ApiResult<Json<Value>> {
    let before = ask_supervisor(&ctx, SupervisorMsg::ResetBreaker).await?;
    let which = q
        .operation_type
        .filter(|o| !o.trim().is_empty())
        .map(|o| format!("for {o}"))
        .unwrap_or_else(|| "all".into());
    Ok(Json(json!({
        "message": format!("Circuit breaker {which} reset successfully"),
        "previous_state": before,
        "state": "closed",
    })))
}
