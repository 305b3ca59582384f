//! Running the plan over the facts and performing it, then closing gaps in the names by
//! renaming engines; the snapshot the API and tests read.

use super::*;
use crate::core::naming::{Mobility, renames};
use crate::core::plan::RemoveReason;

/// Runs the plan over the current facts and performs it; what it decides is traced under `cause`
/// (a root trace when that is none).
pub(super) async fn reconcile(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    cause: &Span,
) {
    // Before the first listing nothing is known. During a re-list (after the events stream was
    // re-subscribed) only the removals a failed or replaced VPN forces are made: its engines are
    // dead whatever the listing will say, and they must not outlive the failure.
    let relisting = !st.listed;
    if !st.vpn_seen || (relisting && !st.ready) {
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
    let actions: Vec<Action> = if relisting {
        actions
            .into_iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Remove {
                        reason: RemoveReason::VpnFailed | RemoveReason::Stale,
                        ..
                    }
                )
            })
            .collect()
    } else {
        actions
    };
    st.counters.reconciles += 1;
    // A child of whatever caused this reconcile (a VPN event, the incident an engine was created
    // for), or a root when a timer or a cold start's creations found something to do; nothing at
    // all when there is nothing to do.
    let span = if actions.is_empty() {
        Span::none()
    } else {
        info_span!(parent: cause, "reconcile", actions = actions.len())
    };
    // A creation holds its permit until Docker reports its container started (it then has an ID),
    // not through the start-settle check that follows.
    let mut creating = st
        .engines
        .values()
        .filter(|e| e.fact.phase == EnginePhase::Creating && e.container_id.is_none())
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
                // An engine being renamed holds two numbers until the rename is done.
                let held =
                    st.engines.len() + st.engines.values().filter(|e| e.renaming.is_some()).count();
                if n as usize > held + 1 {
                    error!(
                        ordinal = n,
                        held, "name registry handed out a name above live+1"
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
                    &EngineIdentity {
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
                    outdated: false,
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
                        renaming: None,
                        rename_after: None,
                        cause: Some(cause.clone()),
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
    if !names_unavailable {
        close_name_gaps(st, &span).await;
    }
    st.counters.reconcile_duration.observe(started.elapsed());
    if !st.ready {
        st.ready = true;
        info!(engines = st.engines.len(), "first reconcile done");
    }
}

/// Renames ready engines down to the lowest free numbers (`naming::renames`), so that at rest
/// the names are exactly 1..N; not during an emergency or outage (the failed VPN's engines come
/// back into the gaps). The Engine actor renames its container; its report moves the
/// entry to the new name.
async fn close_name_gaps(st: &mut SupervisorState, parent: &Span) {
    // Not while a VPN is down: its engines come back into the gaps its failure left.
    if st.lanes.iter().any(|l| l.failed) {
        return;
    }
    let engines: Vec<(&str, u32, Mobility)> = st
        .engines
        .values()
        .map(|e| {
            let now = Instant::now();
            let mobility = if e.renaming.is_some()
                || e.rename_after.is_some_and(|t| t > now)
                || e.actor.is_none()
                || e.fact.phase == EnginePhase::Removing
            {
                Mobility::Stays
            } else if e.fact.phase == EnginePhase::Ready && e.container_id.is_some() {
                Mobility::Now
            } else {
                Mobility::Later
            };
            (e.fact.name.as_str(), e.fact.ordinal, mobility)
        })
        .collect();
    let reserved: Vec<u32> = st.engines.values().filter_map(|e| e.renaming).collect();
    let moves = renames(&engines, &reserved);
    let Some(names) = st.names.clone() else {
        return;
    };
    for (name, _gap) in moves {
        let Some(ordinal) = st.engines.get(&name).map(|e| e.fact.ordinal) else {
            continue;
        };
        // The registry knows every holder of a name (containers acevisor does not manage too):
        // it hands out the actual number, or none.
        let n = match ractor::call_t!(names, NameMsg::ReserveBelow, 5_000, ordinal) {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, "name registry did not answer; renames deferred to the next pass");
                break;
            }
        };
        let to = engine_name(&st.cfg.engines.prefix, n);
        let Some(entry) = st.engines.get_mut(&name) else {
            names_cast(st, NameMsg::Release(n));
            continue;
        };
        let Some(actor) = &entry.actor else {
            names_cast(st, NameMsg::Release(n));
            continue;
        };
        parent.in_scope(
            || info!(engine = %name, to = %to, "renaming engine to close a gap in the names"),
        );
        entry.renaming = Some(n);
        let _ = actor.cast(EngineMsg::Rename { to });
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
