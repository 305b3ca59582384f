//! The Supervisor's side of the built-in stream proxy: the reservation book (which contents the
//! proxy plays on which engine), taken and given back through `ReserveEngine` / `ReleaseEngine`
//! so two contents never land on one engine beyond `proxy.max_streams_per_engine`. Reserved
//! engines count as busy for the plan (never removed as idle) and are not offered as free.

use super::*;
use crate::core::proxy::{Candidate, Choice, Reservations, choose_engine};

#[derive(Default)]
pub(super) struct ProxyBook {
    pub(super) reserved: Reservations,
    /// The last stream counts of external proxies, by engine.
    pub(super) external: BTreeMap<String, u32>,
}

/// The engine view with the proxy's reservations on it.
pub(super) fn proxy_view(st: &SupervisorState, e: &EngineEntry) -> EngineView {
    let mut view = engine_view(e);
    view.reserved = st.proxy.reserved.count(&e.fact.name) as u32;
    view
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
            ready: e.fact.phase == EnginePhase::Ready,
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
