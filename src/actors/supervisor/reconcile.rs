//! Running the plan over the facts and performing it; the snapshot the API and tests read.

use super::*;

/// Runs the plan over the current facts and performs it.
pub(super) async fn reconcile(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState) {
    if !(st.listed && st.vpn_seen) {
        return;
    }
    let started = std::time::Instant::now();
    let now = Instant::now();
    st.holds.retain(|_, until| *until > now);
    let facts: Vec<EngineFact> = st.engines.values().map(|e| e.fact.clone()).collect();
    let e = &st.cfg.engines;
    let actions = plan::reconcile(&PlanInput {
        now,
        min_replicas: e.min_replicas,
        max_replicas: e.max_replicas,
        min_free: e.min_free,
        idle_grace: e.idle_grace,
        unhealthy_grace: e.health.unhealthy_grace,
        emergency_capacity: st.cfg.vpn.emergency_capacity,
        lanes: &st.lanes,
        engines: &facts,
        demand_floor: demand_floor(st),
    });
    st.counters.reconciles += 1;
    // A child of whatever caused this reconcile (a VPN event, an engine's report), or a root when
    // a timer found something to do; nothing at all when there is nothing to do.
    let span = if actions.is_empty() {
        Span::none()
    } else {
        info_span!("reconcile", actions = actions.len())
    };
    let mut creating = facts
        .iter()
        .filter(|f| f.phase == EnginePhase::Creating)
        .count() as u32;
    // Set when the name registry cannot hand out names: the remaining creations wait for the
    // next pass, the removals still happen.
    let mut names_unavailable = false;
    for action in actions {
        match action {
            Action::Create {
                vpn,
                vpn_id,
                vpn_started_at,
                forwarded,
                ports,
            } => {
                let lane = vpn.clone().unwrap_or_default();
                if names_unavailable
                    || st.holds.contains_key(&lane)
                    || creating >= st.cfg.engines.create_concurrency
                    || !st.breaker.permits(now)
                {
                    continue;
                }
                let Some(names) = st.names.clone() else {
                    names_unavailable = true;
                    continue;
                };
                let n = match ractor::call_t!(names, NameMsg::Reserve, 5_000) {
                    Ok(n) => n,
                    Err(e) => {
                        warn!(error = %e, "name registry did not answer; creations deferred to the next pass");
                        names_unavailable = true;
                        continue;
                    }
                };
                // Taken only now that a name is reserved, so a half-open probe is never spent on a
                // creation that could not start.
                st.breaker.allow(now);
                let name = engine_name(&st.cfg.engines.prefix, n);
                if n as usize > st.engines.len() + 1 {
                    error!(
                        ordinal = n,
                        held = st.engines.len(),
                        "name registry handed out a name above live+1"
                    );
                    st.counters.names_above_bound += 1;
                }
                let spec = engine_spec(
                    &st.template,
                    &SpecContext {
                        instance: &st.cfg.instance,
                        keys: &st.keys,
                        extra_labels: &st.cfg.docker.labels,
                        network: &st.cfg.docker.network,
                    },
                    &EngineSlot {
                        name: &name,
                        ordinal: n,
                        vpn: vpn.as_deref(),
                        vpn_id: vpn_id.as_deref(),
                        vpn_started_at: vpn_started_at.as_deref(),
                        forwarded,
                        ports,
                    },
                );
                let create_span = info_span!(
                    parent: &span,
                    "engine.create",
                    engine = %name,
                    ordinal = n,
                    vpn = %lane,
                    forwarded,
                    p2p_port = ports.p2p,
                    http_port = ports.http,
                    container_id = field::Empty,
                    error = field::Empty,
                    otel.status_code = field::Empty,
                );
                create_span.in_scope(|| info!(engine = %name, ordinal = n, vpn = %lane, forwarded, p2p_port = ports.p2p, http_port = ports.http, "creating engine"));
                let fact = EngineFact {
                    name: name.clone(),
                    ordinal: n,
                    vpn: vpn.clone(),
                    vpn_id,
                    vpn_started_at,
                    forwarded,
                    p2p_port: ports.p2p,
                    http_port: ports.http,
                    phase: EnginePhase::Creating,
                    streams: 0,
                    idle_since: None,
                };
                let host = lane_host(st, vpn.as_deref());
                st.engines.insert(
                    name.clone(),
                    EngineEntry {
                        fact,
                        container_id: None,
                        host,
                        actor: None,
                        known_since: now,
                        labels: spec.labels.clone(),
                    },
                );
                if spawn_engine(myself, st, &name, EngineMode::Create(spec), create_span).await {
                    creating += 1;
                }
            }
            Action::Remove { name, reason } => {
                let Some(entry) = st.engines.get_mut(&name) else {
                    continue;
                };
                // The Engine actor's removal runs in this span (ractor carries it with `Remove`).
                let remove_span = info_span!(
                    parent: &span,
                    "engine.remove",
                    engine = %name,
                    ordinal = entry.fact.ordinal,
                    vpn = %entry.fact.vpn_key(),
                    forwarded = entry.fact.forwarded,
                    p2p_port = entry.fact.p2p_port,
                    reason = reason.label(),
                    container_id = entry.container_id.as_deref().unwrap_or(""),
                );
                let _in_remove_span = remove_span.enter(); // no await below in this arm
                info!(engine = %name, ordinal = entry.fact.ordinal, vpn = %entry.fact.vpn_key(), reason = reason.label(), forwarded = entry.fact.forwarded, p2p_port = entry.fact.p2p_port, "removing engine");
                entry.fact.phase = EnginePhase::Removing;
                *st.counters
                    .engines_removed
                    .entry(reason.label())
                    .or_insert(0) += 1;
                let n = entry.fact.ordinal;
                if let Some(actor) = &entry.actor {
                    let _ = actor.cast(EngineMsg::Remove);
                }
                let container_id = entry.container_id.clone();
                names_cast(st, NameMsg::Removing(n));
                notify_removed(st, &name, container_id);
            }
        }
    }
    st.counters.reconcile_duration.observe(started.elapsed());
    if !st.ready {
        st.ready = true;
        info!(engines = st.engines.len(), "first reconcile done");
    }
}

pub(super) fn engine_view(e: &EngineEntry) -> EngineView {
    EngineView {
        name: e.fact.name.clone(),
        ordinal: e.fact.ordinal,
        vpn: e.fact.vpn.clone(),
        vpn_id: e.fact.vpn_id.clone(),
        forwarded: e.fact.forwarded,
        p2p_port: e.fact.p2p_port,
        http_port: e.fact.http_port,
        phase: e.fact.phase,
        container_id: e.container_id.clone(),
        host: e.host.clone(),
        streams: e.fact.streams,
        labels: e.labels.clone(),
        reserved: 0,
    }
}

pub(super) fn snapshot(st: &SupervisorState) -> SupervisorSnapshot {
    SupervisorSnapshot {
        engines: st.engines.values().map(|e| proxy_view(st, e)).collect(),
        lanes: st.lanes.clone(),
        vpns: st.vpns.clone(),
        emergency: st.emergency.clone(),
        counters: st.counters.clone(),
        intensity: st.intensity.report(Instant::now()),
        holds: st.holds.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        ready: st.ready,
        docker_error: st.docker_error.clone(),
        breaker: st.breaker.state(),
        pending_provisions: st.provisions.len(),
        provision_block: crate::core::provisioning::decide(&provision_facts(st, Instant::now()))
            .err(),
        incidents: st.incidents.newest_first(),
    }
}
