//! The dashboard's state document: one JSON value built from the same snapshot and the same
//! functions as `/vpn/status`, `/engines` and `/streams`, so the page and the routes agree.
//! The times in it are wall-clock RFC 3339 instants; the page turns them into "for 3m 12s".

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::actors::messages::{EngineView, SupervisorSnapshot, VpnStatus};
use crate::actors::streams::StreamsMsg;
use crate::api::ApiContext;
use crate::api::auth::Reader;
use crate::api::engines::{engine_state, is_listed, usage_of};
use crate::api::error::ApiResult;
use crate::api::status::{overall, vpn_status_of};
use crate::api::types::{StreamState, rfc3339, wall_clock};
use crate::core::emergency::EmergencyState;
use crate::core::incidents::Incident;

/// How many ended streams the page lists below the active ones.
const ENDED_SHOWN: usize = 20;

/// When each VPN entered its current readiness, as the dashboard has watched it.
#[derive(Debug, Default)]
pub struct Since {
    vpns: BTreeMap<String, (&'static str, SystemTime)>,
}

impl Since {
    /// The time `v` entered its present status: kept while the status stays, else now. At the
    /// first look the latest incident about it that matches the status is the better guess,
    /// else the start of the API.
    fn vpn(&mut self, v: &VpnStatus, incidents: &[Incident], start: SystemTime, now: SystemTime) {
        let entry = self.vpns.get(v.name()).copied();
        let at = match entry {
            Some((status, at)) if status == v.status => at,
            Some(_) => now,
            None => incidents
                .iter()
                .find(|i| i.vpn.as_deref() == Some(v.name()))
                .filter(|i| (i.kind == "vpn_failed") == (v.status != "up"))
                .map(|i| i.at)
                .unwrap_or(start),
        };
        self.vpns.insert(v.name().to_string(), (v.status, at));
    }

    fn get(&self, vpn: &str) -> Option<SystemTime> {
        self.vpns.get(vpn).map(|(_, at)| *at)
    }
}

/// The slot whose restart intensity an engine counts against.
fn slot_of(e: &EngineView) -> String {
    crate::actors::supervisor::death_slot(e.vpn.as_deref().unwrap_or(""))
}

fn incident_json(i: &Incident, trace_ui_url: Option<&str>) -> Value {
    json!({
        "seq": i.seq,
        "at": rfc3339(i.at),
        "kind": i.kind,
        "vpn": i.vpn,
        "detail": i.detail,
        "duration_seconds": i.duration.map(|d| d.as_secs()),
        "trace_id": i.trace_id,
        "trace_url": i.trace_id.as_ref().zip(trace_ui_url).map(|(t, u)| u.replace("{trace_id}", t)),
    })
}

/// The whole document (without `generated_at`, which the publisher adds when it sends it).
pub async fn build(ctx: &ApiContext, since: &mut Since) -> ApiResult<Value> {
    let snap: SupervisorSnapshot = ctx.snapshot().await?;
    let now = Instant::now();
    let wall_now = SystemTime::now();
    let all: Vec<&EngineView> = snap.engines.iter().collect();
    let usage = usage_of(ctx, &all).await?;
    let (_, streams) = ctx
        .ask_streams(|reply| StreamsMsg::List {
            status: None,
            container_id: None,
            offset: 0,
            limit: None,
            reply,
        })
        .await?;

    let vpn_status = vpn_status_of(ctx, &snap);
    let mut emergency = serde_json::to_value(&vpn_status.emergency_mode).unwrap_or_default();
    if let Some(o) = emergency.as_object_mut() {
        o.remove("duration_seconds"); // the page counts from `entered_at`
    }
    for v in &snap.vpns {
        since.vpn(v, &snap.incidents, ctx.started_at, wall_now);
    }
    let vpn_cards: Vec<Value> = snap
        .vpns
        .iter()
        .map(|v| {
            let engines: Vec<&str> = snap
                .engines_on(v.name())
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            json!({
                "name": v.name(),
                "status": v.status,
                "health": v.health,
                "connected": v.connected,
                "forwarded_port": v.lane.forwarded_port(),
                "forwarded_ports": v.lane.forwarded_ports().to_vec(),
                // The VPN container's IP on the Docker network (engines are reached at it).
                "ip": v.ip,
                "public_ip": v.public_ip,
                "engines": engines,
                "since": since.get(v.name()).map(rfc3339),
                "last_error": v.last_error,
            })
        })
        .collect();

    let intensity: BTreeMap<&str, Value> = snap
        .intensity
        .iter()
        .map(|s| {
            let backing_off = s.backing_off_until.filter(|u| *u > now);
            (
                s.slot.as_str(),
                json!({
                    "restarts_in_window": s.restarts_in_window,
                    "backing_off_until": backing_off.map(|u| rfc3339(wall_clock(u, now, wall_now))),
                }),
            )
        })
        .collect();

    let mut active: Vec<StreamState> = Vec::new();
    let mut ended: Vec<StreamState> = Vec::new();
    // The page is open and takes no key: it never shows the engine URLs while a key is set.
    let public = Reader {
        trusted: ctx.api_key.is_none(),
    };
    let mut streams: Vec<StreamState> = streams
        .iter()
        .map(|s| StreamState::from(s).for_reader(public))
        .collect();
    crate::api::proxy::add_session_figures(ctx, &mut streams).await;
    for s in streams {
        if s.ended_at.is_none() {
            active.push(s);
        } else {
            ended.push(s);
        }
    }
    ended.sort_by(|a, b| b.ended_at.cmp(&a.ended_at));
    ended.truncate(ENDED_SHOWN);
    // Who watches each engine: a built-in proxy session's viewers, one for any other stream.
    let mut viewers: BTreeMap<&str, u64> = BTreeMap::new();
    for s in &active {
        *viewers.entry(s.container_id.as_str()).or_default() += s.viewers.unwrap_or(1);
    }
    let mut engines: Vec<Value> = snap
        .engines
        .iter()
        .map(|e| {
            let u = usage.get(&e.name);
            let mut v = serde_json::to_value(engine_state(ctx, e, u, wall_now)).unwrap_or_default();
            let slot = slot_of(e);
            // Volatile fields would make every poll a change; the page computes ages itself.
            if let Some(o) = v.as_object_mut() {
                o.remove("last_seen");
            }
            v["listed"] = json!(is_listed(e));
            v["http_port"] = json!(e.http_port);
            let id = e.container_id.as_deref().unwrap_or_default();
            v["viewers"] = json!(viewers.get(id).copied().unwrap_or(0));
            v["uptime_since"] = json!(u.map(|u| rfc3339(u.first_seen)));
            v["slot"] = json!(slot);
            v["intensity"] = intensity.get(slot.as_str()).cloned().unwrap_or(Value::Null);
            v
        })
        .collect();
    engines.sort_by_key(|e| e["ordinal"].as_u64());

    Ok(json!({
        "status": overall(ctx, &snap),
        "ready": snap.ready,
        "mode": vpn_status.mode,
        "emergency": emergency,
        "capacity": { "ready": snap.ready_count(), "min_replicas": ctx.min_replicas, "max_replicas": ctx.max_replicas },
        "vpns": vpn_cards,
        "engines": engines,
        "streams": { "active": active, "ended": ended },
        "incidents": snap.incidents.iter().map(|i| incident_json(i, ctx.trace_ui_url.as_deref())).collect::<Vec<_>>(),
        "breaker": { "state": snap.breaker.label(), "pending_provisions": snap.pending_provisions },
        "docker": { "ok": snap.docker_error.is_none(), "error": snap.docker_error },
        "started_at": rfc3339(ctx.started_at),
        "outage": matches!(snap.emergency, EmergencyState::Outage { .. }),
    }))
}
