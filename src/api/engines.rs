//! `/engines`, `/engines/{id}`, `/provision/acestream` and `/provision`.
//!
//! `/engines` lists only engines whose HTTP API has answered (phase ready or unhealthy), each
//! with the address a proxy on the Docker network reaches it at: the VPN container's IP (or the
//! engine's own in mode `none`) and the engine's HTTP port.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::ApiContext;
use super::auth::Reader;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery, OptionalJson};
use super::types::{
    BlockedDetail, EngineDetail, EngineState, GenericProvisionReq, GenericProvisionResponse,
    ProvisionReq, ProvisionResponse, StreamState, rfc3339,
};
use crate::actors::messages::{EngineView, ProvisionError, ProvisionWait, SupervisorMsg};
use crate::actors::streams::{EngineUsage, StreamsMsg};
use crate::core::model::EnginePhase;
use crate::core::ports::block_at;
use crate::core::streams::{EngineRef, StreamStatus, names_engine};

/// Whether the engine's HTTP API has answered (it may serve streams).
pub fn is_listed(e: &EngineView) -> bool {
    matches!(e.phase, EnginePhase::Ready | EnginePhase::Unhealthy { .. })
        && e.container_id.is_some()
}

/// `healthy` / `unhealthy` / `unknown`.
pub fn health_status(e: &EngineView) -> &'static str {
    match e.phase {
        EnginePhase::Ready => "healthy",
        EnginePhase::Unhealthy { .. } => "unhealthy",
        _ => "unknown",
    }
}

/// The labels shown for an engine: its container's own (`acevisor.managed` is the instance id)
/// plus the upstream names clients read.
fn engine_labels(prefix: &str, e: &EngineView) -> BTreeMap<String, String> {
    let mut l = e.labels.clone();
    let key = |k: &str| format!("{prefix}.{k}");
    // Until Docker's labels are known (a container still being created), acevisor's facts.
    l.entry(key("role")).or_insert_with(|| "engine".into());
    l.entry(key("ordinal"))
        .or_insert_with(|| e.ordinal.to_string());
    l.entry(key("forwarded"))
        .or_insert_with(|| e.forwarded.to_string());
    l.entry(key("p2p_port"))
        .or_insert_with(|| e.p2p_port.to_string());
    l.entry(key("http_port"))
        .or_insert_with(|| e.http_port.to_string());
    if let Some(vpn) = &e.vpn {
        l.entry(key("vpn")).or_insert_with(|| vpn.clone());
        l.insert("acestream.vpn_container".into(), vpn.clone());
    }
    if let Some(id) = &e.vpn_id {
        l.entry(key("vpn_id")).or_insert_with(|| id.clone());
    }
    l.insert("acestream.forwarded".into(), e.forwarded.to_string());
    l.insert("host.http_port".into(), e.http_port.to_string());
    l
}

fn engine_ref(e: &EngineView) -> EngineRef {
    EngineRef {
        name: e.name.clone(),
        container_id: e.container_id.clone(),
        host: e.host.clone(),
        http_port: e.http_port,
    }
}

/// The reachable address of an engine: its known host, else its container name.
pub fn engine_host(e: &EngineView) -> String {
    e.host.clone().unwrap_or_else(|| e.name.clone())
}

pub fn engine_state(
    ctx: &ApiContext,
    e: &EngineView,
    usage: Option<&EngineUsage>,
    now: SystemTime,
) -> EngineState {
    let ports = block_at(e.http_port);
    let streams = usage.map(|u| u.streams.clone()).unwrap_or_default();
    EngineState {
        container_id: e.container_id.clone().unwrap_or_default(),
        container_name: e.name.clone(),
        host: engine_host(e),
        port: e.http_port,
        api_port: ports.api,
        labels: engine_labels(&ctx.label_prefix, e),
        forwarded: e.forwarded,
        first_seen: rfc3339(usage.map(|u| u.first_seen).unwrap_or(now)),
        last_seen: rfc3339(now),
        active_streams: streams.len() as u32,
        streams,
        health_status: health_status(e).into(),
        last_health_check: None,
        last_stream_usage: usage.and_then(|u| u.last_stream_usage).map(rfc3339),
        vpn_container: e.vpn.clone(),
        forwarded_port: e.forwarded.then_some(e.p2p_port),
        p2p_port: e.p2p_port,
        https_port: ports.https,
        ordinal: e.ordinal,
        state: e.phase_label().into(),
    }
}

pub(crate) async fn usage_of(
    ctx: &ApiContext,
    engines: &[&EngineView],
) -> ApiResult<BTreeMap<String, EngineUsage>> {
    let refs: Vec<EngineRef> = engines.iter().map(|e| engine_ref(e)).collect();
    ctx.ask_streams(|reply| StreamsMsg::Usage {
        engines: refs,
        reply,
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct EnginesQuery {
    prefer: Option<String>,
}

/// `GET /engines[?prefer=free]`.
pub async fn list(
    State(ctx): State<ApiContext>,
    ApiQuery(q): ApiQuery<EnginesQuery>,
) -> ApiResult<Json<Vec<EngineState>>> {
    let prefer_free = match q.prefer.as_deref() {
        None | Some("") => false,
        Some("free") => true,
        Some(other) => {
            return Err(ApiError::Unprocessable(format!(
                "prefer must be \"free\", not {other:?}"
            )));
        }
    };
    let snap = ctx.snapshot().await?;
    // An engine the built-in stream proxy plays on is not free for external proxies.
    let listed: Vec<&EngineView> = snap
        .engines
        .iter()
        .filter(|e| is_listed(e) && !(prefer_free && e.reserved > 0))
        .collect();
    let usage = usage_of(&ctx, &listed).await?;
    let now = SystemTime::now();
    let mut out: Vec<EngineState> = listed
        .iter()
        .map(|e| engine_state(&ctx, e, usage.get(&e.name), now))
        .collect();
    if prefer_free {
        // Healthy first, then the forwarded engine (peers can dial into it), then least loaded.
        out.sort_by_key(|e| {
            (
                e.health_status != "healthy",
                !e.forwarded,
                e.active_streams,
                e.port,
                e.container_name.clone(),
            )
        });
    } else {
        out.sort_by_key(|e| (e.port, e.host.clone(), e.container_name.clone()));
    }
    Ok(Json(out))
}

/// `GET /engines/{id}`: by container ID (full or short) or name, in any phase; its streams'
/// engine URLs only for a reader with the key.
pub async fn detail(
    State(ctx): State<ApiContext>,
    reader: Reader,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EngineDetail>> {
    let snap = ctx.snapshot().await?;
    let engine = snap
        .engines
        .iter()
        .find(|e| names_engine(&id, &engine_ref(e)))
        .ok_or_else(|| ApiError::NotFound(format!("engine {id:?} not found")))?;
    let usage = usage_of(&ctx, &[engine]).await?;
    let name = engine.name.clone();
    let streams = ctx
        .ask_streams(|reply| StreamsMsg::List {
            status: Some(StreamStatus::Started),
            container_id: Some(name),
            offset: 0,
            limit: None,
            reply,
        })
        .await?
        .1;
    Ok(Json(EngineDetail {
        engine: engine_state(&ctx, engine, usage.get(&engine.name), SystemTime::now()),
        streams: streams
            .iter()
            .map(|s| StreamState::from(s).for_reader(reader))
            .collect(),
    }))
}

/// The 503 detail of a refused provisioning request, with a retry hint.
pub fn blocked_detail(e: &ProvisionError) -> BlockedDetail {
    let (message, eta, can_retry) = match e {
        ProvisionError::VpnDisconnected {
            recovery_eta_seconds,
        } => (
            "no VPN can take engines now; waiting for a VPN to come back".to_string(),
            *recovery_eta_seconds,
            true,
        ),
        ProvisionError::CircuitBreaker {
            retry_after_seconds,
        } => (
            "engine creation keeps failing; creation is paused".to_string(),
            Some(*retry_after_seconds),
            false,
        ),
        ProvisionError::MaxCapacity => (
            "max_replicas reached; wait for a stream to end".to_string(),
            None,
            true,
        ),
        ProvisionError::TimedOut { waited_seconds } => (
            format!("no new engine was ready to answer within {waited_seconds} s; try again"),
            None,
            true,
        ),
    };
    BlockedDetail {
        error: "provisioning_blocked".into(),
        code: e.code().into(),
        message,
        recovery_eta_seconds: eta,
        can_retry,
        should_wait: true,
    }
}

fn blocked(detail: BlockedDetail) -> ApiError {
    ApiError::Blocked(serde_json::to_value(detail).unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
pub struct ProvisionQuery {
    wait: Option<String>,
}

impl ProvisionQuery {
    fn wait(&self) -> ApiResult<ProvisionWait> {
        match self.wait.as_deref().map(str::trim) {
            None | Some("") | Some("created") | Some("running") => Ok(ProvisionWait::Created),
            Some("ready") => Ok(ProvisionWait::Ready),
            Some(other) => Err(ApiError::Unprocessable(format!(
                "wait must be \"ready\" or \"created\", not {other:?}"
            ))),
        }
    }
}

/// Asks the Supervisor for one more engine: the new engine once its container runs (or, with
/// `ProvisionWait::Ready`, once its API answers), or the upstream 503 detail.
async fn provision_engine(ctx: &ApiContext, wait: ProvisionWait) -> ApiResult<EngineView> {
    let timeout = match wait {
        ProvisionWait::Created => ctx.create_timeout,
        ProvisionWait::Ready => ctx.provision_timeout,
    };
    let answer = super::ask(&ctx.supervisor, timeout, "supervisor", |reply| {
        SupervisorMsg::Provision { wait, reply }
    })
    .await
    .map_err(|e| match e {
        ApiError::Unavailable(message) => blocked(BlockedDetail {
            error: "provisioning_unavailable".into(),
            code: "general_error".into(),
            message,
            recovery_eta_seconds: None,
            can_retry: true,
            should_wait: true,
        }),
        other => other,
    })?;
    match answer {
        Ok(e) => {
            tracing::info!(engine = %e.name, ?wait, "provisioned engine");
            Ok(e)
        }
        Err(e) => {
            tracing::info!(code = e.code(), "provisioning refused");
            Err(blocked(blocked_detail(&e)))
        }
    }
}

/// `POST /provision/acestream[?wait=ready]`: one more engine, answered as soon as Docker reports
/// its container running (the engine joins `/engines` once its API answers); `?wait=ready`
/// answers once it is ready instead.
pub async fn provision(
    State(ctx): State<ApiContext>,
    ApiQuery(q): ApiQuery<ProvisionQuery>,
    OptionalJson(req): OptionalJson<ProvisionReq>,
) -> ApiResult<Json<ProvisionResponse>> {
    let wait = q.wait()?;
    if !req.env.is_empty() || !req.labels.is_empty() || req.image.is_some() {
        tracing::debug!(
            "provision request carries labels/env/image; engines come from the configured template"
        );
    }
    let e = provision_engine(&ctx, wait).await?;
    let ports = block_at(e.http_port);
    Ok(Json(ProvisionResponse {
        container_id: e.container_id.clone().unwrap_or_default(),
        container_name: e.name.clone(),
        host_http_port: e.http_port,
        container_http_port: e.http_port,
        container_https_port: ports.https,
        host: engine_host(&e),
        port: e.http_port,
        forwarded: e.forwarded,
        vpn_container: e.vpn.clone(),
        p2p_port: e.p2p_port,
        state: e.phase_label().into(),
    }))
}

/// `POST /provision` (the earlier orchestrator's generic route): acevisor runs engines only, from
/// its template, so this is one more engine as `/provision/acestream` makes it, answered in the
/// generic shape `{"container_id", "container_name"}` (plus acevisor's fields).
pub async fn provision_generic(
    State(ctx): State<ApiContext>,
    ApiQuery(q): ApiQuery<ProvisionQuery>,
    OptionalJson(req): OptionalJson<GenericProvisionReq>,
) -> ApiResult<Json<GenericProvisionResponse>> {
    let wait = q.wait()?;
    if req.image.is_some() || !req.env.is_empty() || !req.labels.is_empty() || !req.ports.is_empty()
    {
        tracing::debug!(
            "generic provision request options are not applied; engines come from the configured template"
        );
    }
    let e = provision_engine(&ctx, wait).await?;
    Ok(Json(GenericProvisionResponse {
        container_id: e.container_id.clone().unwrap_or_default(),
        container_name: e.name.clone(),
        host: engine_host(&e),
        port: e.http_port,
        state: e.phase_label().into(),
    }))
}
