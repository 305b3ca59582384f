//! `/vpn/status`, `/orchestrator/status`, `/health/status`, `/livez`, `/readyz`: views of the
//! Supervisor's snapshot. `/orchestrator/status` keeps the fields proxies read to decide whether
//! to provision or wait (`status`, `vpn.connected`, `provisioning.*`, `capacity.*`).

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::ApiContext;
use super::engines::{blocked_detail, is_listed};
use super::error::{ApiError, ApiResult};
use super::types::{EmergencyMode, VpnEntry, VpnStatusResponse, rfc3339, wall_clock};
use crate::actors::messages::{SupervisorMsg, SupervisorSnapshot, VpnStatus};
use crate::config::VpnMode;
use crate::core::emergency::EmergencyState;
use crate::core::model::EnginePhase;

fn mode_label(mode: VpnMode) -> &'static str {
    match mode {
        VpnMode::None => "none",
        VpnMode::Single => "single",
        VpnMode::Redundant => "redundant",
    }
}

fn vpn_entry(v: &VpnStatus) -> VpnEntry {
    VpnEntry {
        container_name: v.name().to_string(),
        status: v.status.into(),
        health: v.health.into(),
        connected: v.connected,
        forwarded_port: v.lane.forwarded_port(),
        forwarded_ports: v.lane.forwarded_ports().to_vec(),
        public_ip: v.public_ip.clone(),
        last_check_at: v.last_check_at.map(rfc3339),
        container_id: v.lane.container_id.clone(),
        failed: v.lane.failed,
        last_error: v.last_error.clone(),
    }
}

fn emergency_mode(e: &EmergencyState, now: Instant, wall_now: SystemTime) -> EmergencyMode {
    let (failed, healthy, since) = match e {
        EmergencyState::Normal => (Vec::new(), Vec::new(), None),
        EmergencyState::Emergency {
            failed,
            healthy,
            since,
        } => (failed.clone(), healthy.clone(), Some(*since)),
        EmergencyState::Outage { failed, since } => (failed.clone(), Vec::new(), Some(*since)),
    };
    EmergencyMode {
        active: since.is_some(),
        failed_vpn: failed.first().cloned(),
        healthy_vpn: healthy.first().cloned(),
        duration_seconds: since.map(|s| now.saturating_duration_since(s).as_secs()),
        entered_at: since.map(|s| rfc3339(wall_clock(s, now, wall_now))),
        state: e.label().into(),
        failed_vpns: failed,
        healthy_vpns: healthy,
    }
}

/// `GET /vpn/status`.
pub async fn vpn(State(ctx): State<ApiContext>) -> ApiResult<Json<VpnStatusResponse>> {
    let snap = ctx.snapshot().await?;
    Ok(Json(vpn_status_of(&ctx, &snap)))
}

/// The `/vpn/status` document of a snapshot (the dashboard shows the same).
pub fn vpn_status_of(ctx: &ApiContext, snap: &SupervisorSnapshot) -> VpnStatusResponse {
    let vpns: Vec<VpnEntry> = snap.vpns.iter().map(vpn_entry).collect();
    let first = vpns.first();
    let enabled = ctx.mode != VpnMode::None;
    let connected = vpns.iter().any(|v| v.connected);
    let last_check = vpns.iter().filter_map(|v| v.last_check_at.clone()).max();
    let primary = first.map(|v| v.container_name.clone());
    VpnStatusResponse {
        mode: mode_label(ctx.mode).into(),
        status: if !enabled {
            "disabled"
        } else if connected {
            "running"
        } else {
            "unhealthy"
        }
        .into(),
        container_name: primary.clone(),
        container: primary,
        health: if !enabled {
            "unknown"
        } else if connected {
            "healthy"
        } else {
            "unhealthy"
        }
        .into(),
        last_check: last_check.clone(),
        last_check_at: last_check,
        vpn1: vpns.first().cloned(),
        vpn2: vpns.get(1).cloned(),
        emergency_mode: emergency_mode(&snap.emergency, Instant::now(), SystemTime::now()),
        enabled,
        connected,
        forwarded_port: first.and_then(|v| v.forwarded_port),
        forwarded_ports: first.map(|v| v.forwarded_ports.clone()).unwrap_or_default(),
        vpns,
    }
}

/// `GET /vpn/publicip`: `{"public_ip"}` of the first connected VPN (asked of its control server),
/// or 503 when no VPN can tell.
pub async fn public_ip(State(ctx): State<ApiContext>) -> ApiResult<Json<Value>> {
    let answer = super::ask(
        &ctx.supervisor,
        ctx.call_timeout,
        "supervisor",
        SupervisorMsg::PublicIp,
    )
    .await?;
    match answer {
        Ok((vpn, ip)) => Ok(Json(json!({ "public_ip": ip, "vpn_container": vpn }))),
        Err(why) => {
            tracing::info!(reason = %why, "VPN public IP not available");
            Err(ApiError::Unavailable(format!(
                "Unable to retrieve VPN public IP: {why}"
            )))
        }
    }
}

/// Counts of engines by phase.
fn engine_counts(snap: &SupervisorSnapshot) -> Value {
    let count =
        |f: &dyn Fn(&EnginePhase) -> bool| snap.engines.iter().filter(|e| f(&e.phase)).count();
    json!({
        "total": snap.engines.len(),
        "running": snap.engines.iter().filter(|e| is_listed(e)).count(),
        "healthy": count(&|p| *p == EnginePhase::Ready),
        "unhealthy": count(&|p| matches!(p, EnginePhase::Unhealthy { .. })),
        "starting": count(&|p| *p == EnginePhase::Starting),
        "creating": count(&|p| *p == EnginePhase::Creating),
        "removing": count(&|p| *p == EnginePhase::Removing),
        "forwarded": snap.engines.iter().filter(|e| e.forwarded && is_listed(e)).count(),
    })
}

/// `healthy` / `degraded` / `unavailable`.
pub fn overall(ctx: &ApiContext, snap: &SupervisorSnapshot) -> &'static str {
    let outage = matches!(snap.emergency, EmergencyState::Outage { .. });
    let listed = snap.engines.iter().filter(|e| is_listed(e)).count();
    if !snap.ready || snap.docker_error.is_some() || outage {
        return "unavailable";
    }
    let unhealthy = snap
        .engines
        .iter()
        .any(|e| matches!(e.phase, EnginePhase::Unhealthy { .. }));
    let emergency = matches!(snap.emergency, EmergencyState::Emergency { .. });
    let vpn_trouble = ctx.mode != VpnMode::None && snap.vpns.iter().any(|v| !v.connected);
    if unhealthy || emergency || vpn_trouble || (listed == 0 && ctx.min_replicas > 0) {
        "degraded"
    } else {
        "healthy"
    }
}

fn vpn_summary(ctx: &ApiContext, snap: &SupervisorSnapshot) -> Value {
    let enabled = ctx.mode != VpnMode::None;
    let up = snap.vpns.iter().filter(|v| v.connected).count();
    let (connected, health) = if !enabled {
        (true, "healthy")
    } else if up == 0 {
        (false, "unhealthy")
    } else if up < snap.vpns.len() {
        (true, "degraded")
    } else {
        (true, "healthy")
    };
    json!({
        "enabled": enabled,
        "mode": mode_label(ctx.mode),
        "connected": connected,
        "health": health,
        "forwarded_port": snap.vpns.iter().find_map(|v| v.lane.forwarded_port()),
        "emergency": snap.emergency.label(),
        "vpns": snap.vpns.iter().map(|v| json!({
            "container_name": v.name(),
            "status": v.status,
            "connected": v.connected,
            "forwarded_port": v.lane.forwarded_port(),
            "forwarded_ports": v.lane.forwarded_ports().to_vec(),
        })).collect::<Vec<_>>(),
    })
}

/// `GET /orchestrator/status`.
pub async fn orchestrator(State(ctx): State<ApiContext>) -> ApiResult<Json<Value>> {
    let snap = ctx.snapshot().await?;
    let listed: Vec<_> = snap.engines.iter().filter(|e| is_listed(e)).collect();
    let used = listed.iter().filter(|e| e.streams > 0).count();
    let active_streams: u32 = snap.engines.iter().map(|e| e.streams).sum();
    // The Supervisor's own verdict (`core::provisioning::decide`), so this never disagrees with
    // what `POST /provision/acestream` answers.
    let block = snap.provision_block.clone();
    let uptime = SystemTime::now()
        .duration_since(ctx.started_at)
        .unwrap_or(Duration::ZERO);
    Ok(Json(json!({
        "status": overall(&ctx, &snap),
        "ready": snap.ready,
        "uptime_seconds": uptime.as_secs(),
        "engines": engine_counts(&snap),
        "streams": { "active": active_streams },
        "capacity": {
            "total": listed.len(),
            "used": used,
            "available": listed.len() - used,
            "min_replicas": ctx.min_replicas,
            "max_replicas": ctx.max_replicas,
        },
        "vpn": vpn_summary(&ctx, &snap),
        "provisioning": {
            "can_provision": block.is_none(),
            "circuit_breaker_state": snap.breaker.label(),
            "blocked_reason": block.as_ref().map(|b| blocked_detail(b).message),
            "blocked_reason_details": block.as_ref().map(blocked_detail),
        },
        "docker": { "ok": snap.docker_error.is_none(), "error": snap.docker_error },
    })))
}

/// `GET /health/status`: engine health, restart intensity, creation holds.
pub async fn health(State(ctx): State<ApiContext>) -> ApiResult<Json<Value>> {
    let snap = ctx.snapshot().await?;
    let now = Instant::now();
    let wall_now = SystemTime::now();
    let intensity: Vec<Value> = snap
        .intensity
        .iter()
        .map(|s| {
            let backing_off = s.backing_off_until.filter(|u| *u > now);
            json!({
                "slot": s.slot,
                "restarts_in_window": s.restarts_in_window,
                "backing_off": backing_off.is_some(),
                "backing_off_until": backing_off.map(|u| rfc3339(wall_clock(u, now, wall_now))),
                "backoff_remaining_seconds": backing_off.map(|u| u.saturating_duration_since(now).as_secs()),
            })
        })
        .collect();
    let mut holds: Vec<Value> = snap
        .holds
        .iter()
        .filter(|(_, until)| *until > now)
        .map(|(lane, until)| {
            json!({
                "vpn": if lane.is_empty() { None } else { Some(lane.clone()) },
                "until": rfc3339(wall_clock(*until, now, wall_now)),
                "remaining_seconds": until.saturating_duration_since(now).as_secs(),
            })
        })
        .collect();
    holds.sort_by_key(|h| h["vpn"].to_string());
    let c = &snap.counters;
    Ok(Json(json!({
        "status": overall(&ctx, &snap),
        "engines": engine_counts(&snap),
        "restart_intensity": {
            "slots": intensity,
            "backing_off": snap.intensity.iter().filter(|s| s.backing_off_until.is_some_and(|u| u > now)).count(),
        },
        "creation_holds": holds,
        "circuit_breaker": { "state": snap.breaker.label(), "pending_provisions": snap.pending_provisions },
        "counters": {
            "engines_created": c.engines_created,
            "create_failures": c.create_failures,
            "engines_removed": c.engines_removed,
            "engines_lost": c.engines_lost,
            "actor_restarts": c.actor_restarts,
            "restarts_suppressed": c.restarts_suppressed,
            "reconciles": c.reconciles,
            "names_above_bound": c.names_above_bound,
            "vpn_failed": c.vpn_failed,
            "vpn_recovered": c.vpn_recovered,
            "port_changed": c.port_changed,
            "emergency_entered": c.emergency_entered,
            "emergency_exited": c.emergency_exited,
            "outage_entered": c.outage_entered,
        },
        "docker_error": snap.docker_error,
    })))
}

/// `GET /livez`: 200 while the actor tree answers (a bounded call to the Supervisor), 503 with
/// why when it does not: a daemon whose supervision died must not look alive to Docker's
/// healthcheck.
pub async fn livez(State(ctx): State<ApiContext>) -> Response {
    match ctx.snapshot().await {
        Ok(_) => Json(json!({ "status": "alive" })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "dead", "detail": format!("{e:?}") })),
        )
            .into_response(),
    }
}

/// `GET /readyz`: 200 once Docker answered and the first reconcile is done, else 503 with why.
pub async fn readyz(State(ctx): State<ApiContext>) -> Response {
    let snap = match ctx.snapshot().await {
        Ok(s) => s,
        Err(e) => {
            let reason = format!("{e:?}");
            return not_ready(&reason);
        }
    };
    if let Some(err) = &snap.docker_error {
        return not_ready(&format!("Docker is not answering: {err}"));
    }
    if !snap.ready {
        return not_ready("the first reconcile is not done yet");
    }
    Json(json!({ "status": "ready" })).into_response()
}

fn not_ready(reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "not_ready", "detail": reason })),
    )
        .into_response()
}
