//! Prometheus metrics (prometheus-client, explicit registry, OpenMetrics text).
//!
//! Almost everything is rendered at scrape time from a `SupervisorSnapshot`: the Supervisor's
//! facts and decision counters are the single source, so `/metrics` can never disagree with
//! `/engines` or `/vpn/status`. Only what happens outside the Supervisor is recorded live in
//! [`Metrics`] (owned by `runtime::calls`, re-exported here): Docker call latency (by operation and outcome, fed by
//! `runtime::instrumented::Instrumented`) and event-stream reconnects.
//!
//! Names: the upstream orchestrator's `orch_*` gauges that still mean the same thing, and
//! acevisor's own under `acevisor_*`; the catalogue is in `docs/observability.md`.

use std::collections::BTreeMap;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::actors::messages::SupervisorSnapshot;
use crate::core::emergency::EmergencyState;
pub use crate::core::histogram::DurationHistogram;
use crate::core::model::EnginePhase;
pub use crate::runtime::calls::{DockerCallLabels, Metrics};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self.buckets().collect();
        encoder.encode_histogram::<NoLabelSet>(
            self.sum().as_secs_f64(),
            self.count(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

type Labels = Vec<(&'static str, String)>;

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn family() -> Family<Labels, Gauge> {
    Family::default()
}

/// The Prometheus text for this snapshot plus the live metrics.
pub fn render(metrics: &Metrics, snap: &SupervisorSnapshot) -> String {
    render_with_proxy(metrics, snap, None)
}

/// `render`, plus the built-in stream proxy's figures when it runs.
pub fn render_with_proxy(
    metrics: &Metrics,
    snap: &SupervisorSnapshot,
    proxy: Option<&crate::actors::proxy::ProxyTotals>,
) -> String {
    let mut r = Registry::default();
    if let Some(p) = proxy {
        proxy_metrics(&mut r, p);
    }
    upstream(&mut r, snap);
    engines(&mut r, snap);
    vpns(&mut r, snap);
    decisions(&mut r, snap);
    metrics.register(&mut r);
    r.register(
        "acevisor_docker_reachable",
        "1 when the Supervisor's last Docker call succeeded",
        gauge(snap.docker_error.is_none() as i64),
    );
    let breaker = family();
    for state in ["closed", "open", "half_open"] {
        breaker
            .get_or_create(&vec![("state", state.to_string())])
            .set((snap.breaker.label() == state) as i64);
    }
    r.register(
        "acevisor_creation_breaker",
        "1 for the global engine-creation breaker's current state",
        breaker,
    );
    r.register(
        "acevisor_pending_provisions",
        "Provisioning requests waiting for an engine",
        gauge(snap.pending_provisions as i64),
    );
    r.register(
        "acevisor_ready",
        "1 once the first listing and reconcile are done",
        gauge(snap.ready as i64),
    );
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &r);
    text
}

/// The built-in stream proxy's sessions, viewers, bytes, failovers and failover gaps.
fn proxy_metrics(r: &mut Registry, p: &crate::actors::proxy::ProxyTotals) {
    r.register(
        "acevisor_proxy_sessions",
        "Contents the built-in stream proxy plays now",
        gauge(p.sessions as i64),
    );
    r.register(
        "acevisor_proxy_viewers",
        "Viewers connected to the built-in stream proxy",
        gauge(p.viewers as i64),
    );
    r.register_with_unit(
        "acevisor_proxy_delivered",
        "Bytes the stream proxy read from engines and fanned out, since start",
        Unit::Bytes,
        counter(p.bytes),
    );
    r.register(
        "acevisor_proxy_failovers",
        "Times a proxy session moved to another engine, since start",
        counter(p.failovers),
    );
    r.register(
        "acevisor_proxy_failover_gaps",
        "Failovers whose gap (last byte of the old engine to the first of the new) was measured",
        counter(p.gaps),
    );
    r.register_with_unit(
        "acevisor_proxy_failover_gap",
        "Sum of the measured failover gaps, since start",
        Unit::Seconds,
        {
            let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            g.set(p.gap_ms_sum as f64 / 1000.0);
            g
        },
    );
}

/// The upstream orchestrator's gauges, same names and meaning.
fn upstream(r: &mut Registry, s: &SupervisorSnapshot) {
    let count = |f: &dyn Fn(&crate::actors::messages::EngineView) -> bool| {
        s.engines.iter().filter(|e| f(e)).count() as i64
    };
    r.register(
        "orch_healthy_engines",
        "Engines whose API answers (ready)",
        gauge(count(&|e| e.phase == EnginePhase::Ready)),
    );
    r.register(
        "orch_unhealthy_engines",
        "Engines failing their health probe",
        gauge(count(&|e| matches!(e.phase, EnginePhase::Unhealthy { .. }))),
    );
    r.register(
        "orch_used_engines",
        "Engines with at least one active stream",
        gauge(count(&|e| e.streams > 0)),
    );
    r.register(
        "orch_total_streams",
        "Active streams over all engines",
        gauge(s.engines.iter().map(|e| e.streams as i64).sum()),
    );
    // vpn1 / vpn2 are the first and second configured VPNs (redundant mode).
    for (i, name) in ["orch_vpn1_engines", "orch_vpn2_engines"]
        .iter()
        .enumerate()
    {
        let n = s
            .lanes
            .get(i)
            .filter(|l| l.name.is_some())
            .map(|l| s.engines_on(l.key()).len() as i64)
            .unwrap_or(0);
        r.register(
            *name,
            format!("Engines behind VPN number {}", i + 1),
            gauge(n),
        );
    }
}

fn engines(r: &mut Registry, s: &SupervisorSnapshot) {
    let by_state = family();
    let mut seen: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
    for lane in &s.lanes {
        for state in ["creating", "starting", "ready", "unhealthy", "removing"] {
            seen.insert((lane.key().to_string(), state), 0);
        }
    }
    for e in &s.engines {
        *seen
            .entry((e.vpn.clone().unwrap_or_default(), e.phase_label()))
            .or_insert(0) += 1;
    }
    for ((vpn, state), n) in seen {
        by_state
            .get_or_create(&vec![("vpn", vpn), ("state", state.to_string())])
            .set(n);
    }
    r.register(
        "acevisor_engines",
        "Engines by VPN (empty without VPN) and state",
        by_state,
    );
    let streams = family();
    for e in &s.engines {
        streams
            .get_or_create(&vec![("engine", e.name.clone())])
            .set(e.streams as i64);
    }
    r.register(
        "acevisor_engine_streams",
        "Active streams per engine",
        streams,
    );
}

fn vpns(r: &mut Registry, s: &SupervisorSnapshot) {
    let present = family();
    let up = family();
    let readiness = family();
    let port = family();
    let port_count = family();
    let on_port = family();
    let holds = family();
    for lane in s.lanes.iter().filter(|l| l.name.is_some()) {
        let vpn = lane.key().to_string();
        let label = || vec![("vpn", vpn.clone())];
        let lane_ports = lane.readiness.ports();
        let lane_port = lane_ports.first();
        let has = s
            .forwarded_on(&vpn)
            .iter()
            .any(|e| e.phase == EnginePhase::Ready && lane_port.is_none_or(|p| p == e.p2p_port));
        present.get_or_create(&label()).set(has as i64);
        up.get_or_create(&label())
            .set((lane.readiness.is_up() && !lane.failed) as i64);
        for state in ["down", "starting", "degraded", "misconfigured", "up"] {
            readiness
                .get_or_create(&vec![("vpn", vpn.clone()), ("state", state.to_string())])
                .set((lane.readiness.label() == state) as i64);
        }
        port.get_or_create(&label())
            .set(lane_port.map(i64::from).unwrap_or(0));
        port_count
            .get_or_create(&label())
            .set(lane_ports.len() as i64);
        for p in lane_ports.iter() {
            let served = s
                .forwarded_on(&vpn)
                .iter()
                .any(|e| e.phase == EnginePhase::Ready && e.p2p_port == p);
            on_port
                .get_or_create(&vec![("vpn", vpn.clone()), ("port", p.to_string())])
                .set(served as i64);
        }
        holds
            .get_or_create(&label())
            .set(s.holds.iter().any(|(v, _)| *v == vpn) as i64);
    }
    r.register(
        "acevisor_forwarded_engine_present",
        "1 when the VPN has a ready forwarded engine on its (lowest) forwarded port",
        present,
    );
    r.register(
        "acevisor_forwarded_engine_on_port",
        "Per forwarded port of the VPN: 1 when a ready forwarded engine has it as its P2P port",
        on_port,
    );
    r.register(
        "acevisor_vpn_up",
        "1 when the VPN is Up (and not failed): it may receive engines",
        up,
    );
    r.register(
        "acevisor_vpn_readiness",
        "1 for the VPN's current readiness state",
        readiness,
    );
    r.register(
        "acevisor_vpn_forwarded_port",
        "The VPN's forwarded port, the lowest when it forwards several (0 while unknown)",
        port,
    );
    r.register(
        "acevisor_vpn_forwarded_ports",
        "How many ports the VPN forwards (0 while unknown)",
        port_count,
    );
    r.register(
        "acevisor_creation_held",
        "1 while engine creation on the VPN is held back (creation failures, restart intensity)",
        holds,
    );
    let state = family();
    for s_ in ["normal", "emergency", "outage"] {
        state
            .get_or_create(&vec![("state", s_.to_string())])
            .set((s.emergency.label() == s_) as i64);
    }
    r.register(
        "acevisor_emergency_state",
        "1 for the current emergency state",
        state,
    );
    r.register(
        "acevisor_emergency_active",
        "1 while in emergency or outage (some VPN failed)",
        gauge(!matches!(s.emergency, EmergencyState::Normal) as i64),
    );
}

fn decisions(r: &mut Registry, s: &SupervisorSnapshot) {
    let c = &s.counters;
    let transitions = Family::<Labels, Counter>::default();
    for (to, n) in [
        ("emergency", c.emergency_entered),
        ("normal", c.emergency_exited),
        ("outage", c.outage_entered),
    ] {
        transitions
            .get_or_create(&vec![("to", to.to_string())])
            .inc_by(n);
    }
    r.register(
        "acevisor_emergency_transitions",
        "Emergency state machine transitions by target state",
        transitions,
    );
    r.register(
        "acevisor_vpn_failures",
        "VPN Failed events",
        counter(c.vpn_failed),
    );
    r.register(
        "acevisor_vpn_recoveries",
        "VPN Recovered events",
        counter(c.vpn_recovered),
    );
    r.register(
        "acevisor_port_changes",
        "Forwarded port changes (PortChanged events)",
        counter(c.port_changed),
    );
    r.register(
        "acevisor_engines_created",
        "Engine containers created and started",
        counter(c.engines_created),
    );
    r.register(
        "acevisor_engine_create_failures",
        "Engine creations that failed",
        counter(c.create_failures),
    );
    let removed = Family::<Labels, Counter>::default();
    for reason in [
        "vpn_failed",
        "stale",
        "port_mismatch",
        "surplus",
        "unhealthy",
        "unknown_vpn",
        "duplicate",
        "port_clash",
        "exited",
    ] {
        let _ = removed.get_or_create(&vec![("reason", reason.to_string())]);
    }
    for (reason, n) in &c.engines_removed {
        removed
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(*n);
    }
    r.register(
        "acevisor_engines_removed",
        "Engines removed by reason (port_mismatch, port_clash and unhealthy are replacements)",
        removed,
    );
    r.register(
        "acevisor_engines_lost",
        "Engine containers that died or were removed out of band",
        counter(c.engines_lost),
    );
    r.register(
        "acevisor_engine_actor_restarts",
        "Engine actors restarted after a crash",
        counter(c.actor_restarts),
    );
    r.register(
        "acevisor_restarts_suppressed",
        "Restarts or replacements held back by the restart-intensity limit",
        counter(c.restarts_suppressed),
    );
    r.register(
        "acevisor_reconciles",
        "Reconcile passes run",
        counter(c.reconciles),
    );
    r.register_with_unit(
        "acevisor_reconcile_duration",
        "Time to plan and dispatch one reconcile",
        Unit::Seconds,
        c.reconcile_duration.clone(),
    );
    r.register(
        "acevisor_slots_backing_off",
        "Restart-intensity slots (the engines of one VPN) backing off after too many restarts",
        gauge(
            s.intensity
                .iter()
                .filter(|r| r.backing_off_until.is_some())
                .count() as i64,
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn duration_histogram_buckets_and_sum() {
        let mut h = DurationHistogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(2));
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum(), Duration::from_micros(2_003_050));
        let mut r = Registry::default();
        r.register_with_unit("x", "x", Unit::Seconds, h);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains("x_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_bucket{le=\"1.0\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_count 3\n"), "{text}");
    }
}
