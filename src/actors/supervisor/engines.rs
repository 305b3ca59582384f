//! The Supervisor's engine book-keeping: reports from Engine actors (renames included), Docker
//! events routed to them, stream counts, restart intensity of engine deaths, and spawning or
//! respawning Engine actors.
//!
//! An engine is known by its current name, which a rename changes; its container ID never
//! changes, so events, listings and stream counts find it by ID first.

use super::*;
use crate::runtime::ContainerEvent;

/// The span an engine's report is followed up in: its creation's cause while it is being created
/// (let go once the creation is over, so that span can end), else the report's own.
pub(super) fn creation_cause(st: &mut SupervisorState, name: &str, report: &EngineReport) -> Span {
    let Some(entry) = st.engines.get_mut(name) else {
        return Span::current();
    };
    let cause = match report {
        EngineReport::Started { .. } | EngineReport::Created { .. } => entry.cause.clone(),
        _ => entry.cause.take(),
    };
    cause.unwrap_or_else(Span::current)
}

pub(super) fn on_engine_report(st: &mut SupervisorState, name: String, report: EngineReport) {
    let Some(entry) = st.engines.get_mut(&name) else {
        return;
    };
    let lane = entry.fact.vpn_key().to_string();
    let n = entry.fact.ordinal;
    let removing = entry.fact.phase == EnginePhase::Removing;
    match report {
        // The creation permit is free once the container runs (see `reconcile`); the creation is
        // confirmed, or failed, when its start-settle check ends.
        EngineReport::Started { container_id } if entry.container_id.is_none() => {
            entry.container_id = Some(container_id);
        }
        EngineReport::Created { container_id, host } => {
            entry.container_id = Some(container_id);
            entry.host = host.or(entry.host.take());
            if entry.fact.phase == EnginePhase::Creating {
                st.counters.engines_created += 1;
                st.breaker.success();
            }
            if !removing {
                entry.fact.phase = EnginePhase::Starting;
            }
            names_cast(st, NameMsg::Confirm(n));
            if !removing {
                answer_provision(st, &name, ProvisionWait::Created);
            }
        }
        EngineReport::CreateFailed { error } => {
            st.breaker.failure(Instant::now());
            st.engines.remove(&name);
            st.counters.create_failures += 1;
            names_cast(st, NameMsg::Release(n));
            let backoff = st
                .create_backoff
                .entry(lane.clone())
                .or_insert(Duration::from_millis(250));
            *backoff = (*backoff * 2).min(Duration::from_secs(30));
            warn!(engine = %name, vpn = %lane, error = %error, backoff = ?*backoff, "engine creation failed; backing off");
            let until = Instant::now() + *backoff;
            st.holds.insert(lane, until);
        }
        EngineReport::Ready => {
            if !removing {
                entry.fact.phase = EnginePhase::Ready;
                if entry.fact.streams == 0 {
                    entry.fact.idle_since = Some(Instant::now());
                }
            }
            info!(engine = %name, vpn = %lane, forwarded = entry.fact.forwarded, p2p_port = entry.fact.p2p_port, "engine ready");
            st.create_backoff.remove(&lane);
            answer_provision(st, &name, ProvisionWait::Ready);
        }
        EngineReport::Unhealthy { since } if !removing => {
            entry.fact.phase = EnginePhase::Unhealthy { since }
        }
        EngineReport::Healthy if !removing => entry.fact.phase = EnginePhase::Ready,
        EngineReport::Renamed { to } => on_renamed(st, &name, to),
        EngineReport::RenameFailed {
            to,
            conflict,
            error,
        } => {
            entry.renaming = None;
            let Some(m) = parse_ordinal(&st.cfg.engines.prefix, &to) else {
                return;
            };
            if conflict {
                // A container acevisor does not know holds that name; the next listing tells
                // the registry (and adopts it if it is an engine).
                entry.rename_after = Some(Instant::now() + RENAME_RETRY);
            }
            names_cast(st, NameMsg::Release(m));
            debug!(engine = %name, to = %to, error = %error, "rename not done; the name stays");
        }
        EngineReport::Gone { cause } => {
            let gone = st.engines.remove(&name);
            // A rename under way will never report: its number is free again.
            if let Some(m) = gone.as_ref().and_then(|e| e.renaming) {
                names_cast(st, NameMsg::Release(m));
            }
            let container_id = gone.as_ref().and_then(|e| e.container_id.clone());
            if let Some(id) = &container_id {
                let now = Instant::now();
                st.gone_ids
                    .retain(|_, at| now.duration_since(*at) < GONE_MEMORY);
                st.gone_ids.insert(id.clone(), now);
            }
            // Its actor may still run (the engine was found gone by a listing): stop it, so
            // nothing acts on this name for a container that no longer exists.
            if let Some(actor) = gone.and_then(|e| e.actor) {
                actor.stop(Some("engine gone".into()));
            }
            if cause != GoneCause::Removed {
                // acevisor's own removals told the watchers when they were decided.
                notify_removed(st, &name, container_id);
            }
            names_cast(st, NameMsg::Gone(n));
            if cause != GoneCause::Removed {
                st.counters.engines_lost += 1;
                // Replacements reuse the lowest free name and ports, so the restart-intensity
                // slot is the lane the engine served: too many deaths there in the window and its
                // creations back off.
                let slot = death_slot(&lane);
                if let Verdict::BackOff { until } = st.intensity.request(&slot, Instant::now()) {
                    st.counters.restarts_suppressed += 1;
                    warn!(engine = %name, vpn = %lane, slot = %slot, "engines on this VPN die too often; backing off");
                    st.holds.insert(lane, until);
                }
            }
        }
        _ => {}
    }
}

/// The engine now has the name `to`: its entry, its actor and the provisioning requests follow
/// the name; the old number is free at once (Docker renames atomically), the new one is held.
fn on_renamed(st: &mut SupervisorState, from: &str, to: String) {
    let Some(mut entry) = st.engines.remove(from) else {
        return;
    };
    let old = entry.fact.ordinal;
    let Some(new) = parse_ordinal(&st.cfg.engines.prefix, &to) else {
        st.engines.insert(from.to_string(), entry);
        return;
    };
    info!(engine = %to, from = %from, ordinal = new, "engine renamed to close a gap in the names");
    st.proxy.reserved.rename(from, &to);
    entry.renaming = None;
    entry.fact.name = to.clone();
    entry.fact.ordinal = new;
    if let Some(actor) = &entry.actor {
        st.actor_names.insert(actor.get_id(), to.clone());
    }
    let removing = entry.fact.phase == EnginePhase::Removing;
    st.engines.insert(to.clone(), entry);
    for p in &mut st.provisions {
        for known in p.known.iter_mut().filter(|k| *k == from) {
            *known = to.clone();
        }
    }
    names_cast(st, NameMsg::Gone(old));
    names_cast(
        st,
        if removing {
            NameMsg::Removing(new)
        } else {
            NameMsg::Confirm(new)
        },
    );
}

/// The engine a Docker event is about: by container ID (the name may have changed since the
/// event), else by name.
fn engine_of_event<'a>(st: &'a SupervisorState, ev: &ContainerEvent) -> Option<&'a EngineEntry> {
    st.engines
        .values()
        .find(|e| e.container_id.as_deref() == Some(ev.id.as_str()))
        .or_else(|| st.engines.get(&ev.name))
}

/// Routes a Docker event that is not about a VPN to its engine's actor (which ignores events of
/// other containers of the same name).
pub(super) fn on_engine_event(st: &SupervisorState, ev: ContainerEvent) {
    if let Some(entry) = engine_of_event(st, &ev) {
        if let Some(actor) = &entry.actor {
            let _ = actor.cast(EngineMsg::Docker {
                id: ev.id,
                kind: ev.kind,
            });
        }
    } else if ev.kind == crate::runtime::EventKind::Destroy
        && let Some(n) = parse_ordinal(&st.cfg.engines.prefix, &ev.name)
        // A late event about a name a rename is taking right now says nothing of it.
        && !st.engines.values().any(|e| e.renaming == Some(n))
    {
        // A container holding one of our names (not ours) is gone: the number is free.
        names_cast(st, NameMsg::Gone(n));
    }
}

/// Active streams per engine, keyed by container ID (a rename keeps them), else by name.
pub(super) fn on_stream_counts(st: &mut SupervisorState, counts: BTreeMap<String, u32>) {
    let now = Instant::now();
    st.proxy.external = counts.clone();
    for (name, entry) in st.engines.iter_mut() {
        let key = entry.container_id.as_deref().unwrap_or(name);
        let streams = counts
            .get(key)
            .or_else(|| counts.get(name))
            .copied()
            .unwrap_or(0);
        // The proxy's own streams count too: an engine it plays on is busy, never idle.
        let streams = streams + st.proxy.reserved.count(name) as u32;
        if streams == entry.fact.streams {
            continue;
        }
        entry.fact.idle_since = (streams == 0).then_some(now);
        entry.fact.streams = streams;
    }
}

/// The restart-intensity slot of engine deaths on a lane (`engines@<vpn>`, `engines@direct`).
pub fn death_slot(lane: &str) -> String {
    format!("engines@{}", if lane.is_empty() { "direct" } else { lane })
}

pub(super) fn names_cast(st: &SupervisorState, msg: NameMsg) {
    if let Some(names) = &st.names {
        let _ = names.cast(msg);
    }
}

pub(super) fn lane_host(st: &SupervisorState, vpn: Option<&str>) -> Option<String> {
    let vpn = vpn?;
    st.vpns
        .iter()
        .find(|v| v.name() == vpn)
        .and_then(|v| v.ip.clone())
}

/// Spawns the Engine actor of an entry; false (entry dropped) when the spawn failed. `span` is the
/// `engine.create` span its creation runs in (`Span::none()` when adopting).
pub(super) async fn spawn_engine(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    name: &str,
    mode: EngineMode,
    span: Span,
) -> bool {
    let Some(entry) = st.engines.get(name) else {
        return false;
    };
    let none_mode = entry.fact.vpn.is_none();
    let args = EngineArgs {
        name: name.to_string(),
        mode,
        http_port: entry.fact.http_port,
        host: entry.host.clone(),
        network: none_mode.then(|| st.cfg.docker.network.clone()),
        runtime: st.deps.runtime.clone(),
        engine_api: st.deps.engine_api.clone(),
        supervisor: myself.clone(),
        health: st.cfg.engines.health.clone(),
        ready_timeout: st.cfg.engines.ready_timeout,
        stop_timeout: st.cfg.docker.stop_timeout,
        span,
    };
    match Actor::spawn_linked(None, Engine, args, myself.get_cell()).await {
        Ok((actor, _)) => {
            st.actor_names.insert(actor.get_id(), name.to_string());
            if let Some(entry) = st.engines.get_mut(name) {
                entry.actor = Some(actor);
            }
            true
        }
        Err(e) => {
            error!(engine = %name, error = %e, "cannot start the engine actor");
            if let Some(entry) = st.engines.remove(name) {
                names_cast(st, NameMsg::Release(entry.fact.ordinal));
            }
            false
        }
    }
}

/// How long a container confirmed gone is remembered against stale listings (a listing takes
/// at most a Docker call timeout).
const GONE_MEMORY: Duration = Duration::from_secs(600);

/// How long an engine whose rename hit a name held by an unknown container waits to try again.
const RENAME_RETRY: Duration = Duration::from_secs(10);

/// How soon a respawn whose inspect failed asks Docker again.
const RESPAWN_RETRY: Duration = Duration::from_secs(2);

/// Restarts a crashed Engine actor on its container, within the intensity limits.
pub(super) async fn respawn_engine(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    name: &str,
    granted: bool,
) {
    let now = Instant::now();
    if !granted
        && let Verdict::BackOff { until } = st.intensity.request(&format!("actor:{name}"), now)
    {
        st.counters.restarts_suppressed += 1;
        warn!(engine = %name, "engine actor crashed too often; backing off before restarting it");
        let name = name.to_string();
        myself.send_after(until.saturating_duration_since(now), move || {
            SupervisorMsg::Respawn {
                name,
                granted: false,
            }
        });
        return;
    }
    let Some(entry) = st.engines.get_mut(name) else {
        return;
    };
    if entry.actor.is_some() {
        return;
    }
    let container_id = match entry.container_id.clone() {
        Some(id) => Some(id),
        None => match st.deps.runtime.inspect(name).await {
            Ok(found) => found.map(|c| c.id),
            Err(e) => {
                // A Docker error is no evidence that the container is gone: keep the name and
                // the entry, and ask again.
                warn!(engine = %name, error = %e, "cannot inspect the engine's container to restart its actor; retrying");
                let name = name.to_string();
                myself.send_after(RESPAWN_RETRY, move || SupervisorMsg::Respawn {
                    name,
                    granted: true,
                });
                return;
            }
        },
    };
    let Some(container_id) = container_id else {
        // It crashed before its container existed: forget it; the plan creates it again.
        if let Some(entry) = st.engines.remove(name) {
            names_cast(st, NameMsg::Release(entry.fact.ordinal));
        }
        return;
    };
    let Some(entry) = st.engines.get_mut(name) else {
        return;
    };
    entry.container_id = Some(container_id.clone());
    let removing = entry.fact.phase == EnginePhase::Removing;
    if !removing {
        entry.fact.phase = EnginePhase::Starting;
    }
    st.counters.actor_restarts += 1;
    info!(engine = %name, "restarting engine actor on its container");
    if spawn_engine(
        myself,
        st,
        name,
        EngineMode::Adopt { container_id },
        Span::none(),
    )
    .await
        && removing
        && let Some(a) = st.engines.get(name).and_then(|e| e.actor.as_ref())
    {
        let _ = a.cast(EngineMsg::Remove);
    }
}
