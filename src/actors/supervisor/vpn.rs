//! What the Supervisor does with a VpnMonitor update: counters, the incident's root span, the
//! incident log the dashboard shows, the lanes the planner works on.

use super::*;

/// Takes in a VpnMonitor update; returns the span of its emergency transition (if any), which
/// the reconcile that follows runs in.
pub(super) async fn on_vpn_update(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    update: VpnUpdate,
) -> Span {
    for (_, ev) in &update.events {
        match ev {
            VpnEvent::Failed { .. } => st.counters.vpn_failed += 1,
            VpnEvent::Recovered { .. } => st.counters.vpn_recovered += 1,
            VpnEvent::PortChanged(_) => st.counters.port_changed += 1,
        }
    }
    if let Some(t) = &update.transition {
        match (&t.from, &t.to) {
            (_, EmergencyState::Emergency { .. })
                if !matches!(t.from, EmergencyState::Emergency { .. }) =>
            {
                st.counters.emergency_entered += 1
            }
            (EmergencyState::Emergency { .. }, EmergencyState::Normal) => {
                st.counters.emergency_exited += 1
            }
            _ => {}
        }
        if matches!(t.to, EmergencyState::Outage { .. })
            && !matches!(t.from, EmergencyState::Outage { .. })
        {
            st.counters.outage_entered += 1;
        }
    }
    let span = update
        .transition
        .as_ref()
        .map(transition_span)
        .unwrap_or_else(Span::none);
    record_incidents(st, &update, &span);
    st.lanes = update.vpns.iter().map(|v| v.lane.clone()).collect();
    st.vpns = update.vpns;
    st.emergency = update.emergency;
    let first = !st.vpn_seen;
    st.vpn_seen = true;
    if first && !st.listed {
        relist(myself, st);
    }
    span
}

/// `emergency.enter` / `emergency.exit` / `emergency.outage` / `emergency.update` (only the lists
/// of failed or healthy VPNs changed), a child of the VPN event's span.
pub(super) fn transition_span(t: &Transition) -> Span {
    let (failed, healthy) = emergency_lists(&t.to);
    let (from, to) = (t.from.label(), t.to.label());
    match (&t.from, &t.to) {
        (EmergencyState::Emergency { .. }, EmergencyState::Emergency { .. })
        | (EmergencyState::Outage { .. }, EmergencyState::Outage { .. }) => {
            info_span!("emergency.update", from, to, failed, healthy)
        }
        (_, EmergencyState::Emergency { .. }) => {
            info_span!("emergency.enter", from, to, failed, healthy)
        }
        (_, EmergencyState::Outage { .. }) => {
            info_span!("emergency.outage", from, to, failed, healthy)
        }
        (_, EmergencyState::Normal) => info_span!("emergency.exit", from, to, failed, healthy),
    }
}

/// The OpenTelemetry trace id of `span` (32 hex digits), or none when telemetry is off.
fn trace_id_of(span: &Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Adds the update's VPN events (in the span it was sent in) and its emergency transition (in
/// `transition`'s span) to the incident log.
fn record_incidents(st: &mut SupervisorState, update: &VpnUpdate, transition: &Span) {
    let now = std::time::SystemTime::now();
    let event_trace = trace_id_of(&Span::current());
    for (vpn, ev) in &update.events {
        let (kind, detail) = match ev {
            VpnEvent::Failed { cause } => ("vpn_failed", cause.label().replace('_', " ")),
            VpnEvent::Recovered { forwarded_ports } => (
                "vpn_recovered",
                match forwarded_ports.len() {
                    0 => "forwarded port not known yet".into(),
                    1 => format!("forwarded port {forwarded_ports}"),
                    _ => format!("forwarded ports {forwarded_ports}"),
                },
            ),
            VpnEvent::PortChanged(c) => ("port_changed", format!("{} -> {}", c.old, c.new)),
        };
        st.incidents
            .push(kind, Some(vpn.clone()), detail, now, event_trace.clone());
    }
    if let Some(t) = &update.transition {
        let trace = trace_id_of(transition).or(event_trace);
        let (failed, healthy) = emergency_lists(&t.to);
        for kind in crate::core::incidents::transition_kinds(t.from.label(), t.to.label()) {
            let detail = match kind {
                "emergency_entered" => format!("failed: {failed}; serving: {healthy}"),
                "outage_entered" => format!("failed: {failed}"),
                _ => format!("now {}", t.to.label()),
            };
            st.incidents.push(kind, None, detail, now, trace.clone());
        }
    }
}
