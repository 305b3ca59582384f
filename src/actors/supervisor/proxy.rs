//! The Supervisor's side of the built-in stream proxy: the reservation book (which contents the
//! proxy plays on which engine), taken and given back through `ReserveEngine` / `ReleaseEngine`
//! so two contents never land on one engine beyond `proxy.max_streams_per_engine`. Reserved
//! engines count as busy for the plan (never removed as idle) and are not offered as free.
//! Sessions are told at once (`WatchTrouble`) when a reserved engine turns unhealthy or its VPN
//! fails, in the span of the incident, so they move before any stall.

use super::*;
use crate::core::proxy::{Candidate, Choice, Reservations, ReservedEngine, choose_engine, trouble};
use std::collections::BTreeSet;

#[derive(Default)]
pub(super) struct ProxyBook {
    pub(super) reserved: Reservations,
    /// The last stream counts of external proxies, by engine.
    pub(super) external: BTreeMap<String, u32>,
    /// Told of reserved engines that turn unhealthy or whose VPN fails (the proxy's sessions).
    pub(super) trouble_watchers: Vec<RemovalWatcher>,
    /// Reserved engines already reported in trouble (told once per spell).
    pub(super) troubled: BTreeSet<String>,
}

/// The engine view with the proxy's reservations on it.
pub(super) fn proxy_view(st: &SupervisorState, e: &EngineEntry) -> EngineView {
    let mut view = engine_view(e);
    view.reserved = st.proxy.reserved.count(&e.fact.name) as u32;
    view
}

fn lane_failed(st: &SupervisorState, vpn: Option<&str>) -> bool {
    vpn.is_some_and(|vpn| {
        st.lanes
            .iter()
            .any(|l| l.name.as_deref() == Some(vpn) && l.failed)
    })
}

fn lane_healthy(st: &SupervisorState, vpn: Option<&str>) -> bool {
    let Some(vpn) = vpn else { return true };
    st.lanes
        .iter()
        .find(|l| l.name.as_deref() == Some(vpn))
        .is_some_and(|l| !l.failed && matches!(l.readiness, Readiness::Up { .. }))
}

/// `ReserveEngine`: choose (core::proxy) and reserve in one step.
pub(super) fn on_reserve(
    st: &mut SupervisorState,
    content: &str,
    exclude: &[String],
    max_per_engine: usize,
) -> Option<EngineView> {
    let candidates: Vec<Candidate> = st
        .engines
        .values()
        .filter(|e| e.host.is_some())
        .map(|e| Candidate {
            name: e.fact.name.clone(),
            // An engine of a failed VPN cannot play: never reserved (its sessions just left it).
            ready: e.fact.phase == EnginePhase::Ready && !lane_failed(st, e.fact.vpn.as_deref()),
            vpn_healthy: lane_healthy(st, e.fact.vpn.as_deref()),
            forwarded: e.fact.forwarded,
            external_streams: e
                .container_id
                .as_deref()
                .and_then(|id| st.proxy.external.get(id))
                .or_else(|| st.proxy.external.get(&e.fact.name))
                .copied()
                .unwrap_or(0),
        })
        .collect();
    let Choice::Engine(name) =
        choose_engine(&candidates, &st.proxy.reserved, exclude, max_per_engine)
    else {
        return None;
    };
    if !st.proxy.reserved.reserve(&name, content, max_per_engine) {
        return None;
    }
    info!(engine = %name, content, "engine reserved by the stream proxy");
    refresh_streams(st);
    st.engines.get(&name).map(|e| proxy_view(st, e))
}

/// `ReleaseEngine`.
pub(super) fn on_release(st: &mut SupervisorState, content: &str) {
    if let Some(engine) = st.proxy.reserved.release(content) {
        info!(engine = %engine, content, "engine released by the stream proxy");
        refresh_streams(st);
    }
}

/// An engine removed or lost holds no reservation any more (its sessions are told).
pub(super) fn forget_reservations(st: &mut SupervisorState, name: &str) {
    if !st.proxy.reserved.drop_engine(name).is_empty() {
        refresh_streams(st);
    }
}

fn refresh_streams(st: &mut SupervisorState) {
    let counts = st.proxy.external.clone();
    on_stream_counts(st, counts);
}

/// Tells the trouble watchers of reserved engines that turned unhealthy or whose VPN failed since
/// the last call (once per spell); runs in the span of the message that caused it (a VPN
/// incident's `vpn.failed`), which the watchers' failover spans hang under.
pub(super) fn notify_trouble(st: &mut SupervisorState) {
    let reserved: Vec<ReservedEngine> = st
        .proxy
        .reserved
        .engines()
        .filter_map(|(name, _)| st.engines.get(name))
        .map(|e| ReservedEngine {
            name: e.fact.name.clone(),
            unhealthy: matches!(e.fact.phase, EnginePhase::Unhealthy { .. }),
            vpn_failed: lane_failed(st, e.fact.vpn.as_deref()),
        })
        .collect();
    let (now, tell) = trouble(reserved, &st.proxy.troubled);
    for name in &tell {
        let container_id = st.engines.get(name).and_then(|e| e.container_id.clone());
        warn!(engine = %name, "a reserved engine is unhealthy or lost its VPN: its stream sessions move");
        let ev = EngineRemoved {
            name: name.clone(),
            container_id,
        };
        st.proxy.trouble_watchers.retain(|w| (w.0)(ev.clone()));
    }
    st.proxy.troubled = now;
}
