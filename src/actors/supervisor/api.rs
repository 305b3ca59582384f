//! The Supervisor's side of the operator routes of the API (the earlier orchestrator's
//! `/scale`, `/gc`, `/containers/{id}`, `/by-label`): each is a message; whatever needs Docker runs
//! in a task that answers the reply port itself, so the Supervisor never waits on Docker.

use super::*;

/// The engine a client names by container name, full container ID or an ID prefix (12+).
pub(super) fn find_engine<'a>(st: &'a SupervisorState, id: &str) -> Option<&'a EngineEntry> {
    st.engines.values().find(|e| {
        crate::core::streams::names_engine(
            id,
            &crate::core::streams::EngineRef {
                name: e.fact.name.clone(),
                container_id: e.container_id.clone(),
                host: None,
                http_port: e.fact.http_port,
            },
        )
    })
}

pub(super) fn removing_names(st: &SupervisorState) -> Vec<String> {
    st.engines
        .values()
        .filter(|e| e.fact.phase == EnginePhase::Removing)
        .map(|e| e.fact.name.clone())
        .collect()
}

/// Tells every watcher that an engine is removed (or about to be); drops watchers that are gone.
pub(super) fn notify_removed(st: &mut SupervisorState, name: &str, container_id: Option<String>) {
    let removed = EngineRemoved {
        name: name.to_string(),
        container_id,
    };
    st.removal_watchers.retain(|w| (w.0)(removed.clone()));
    forget_reservations(st, name);
}

/// `DELETE /containers/{id}`: the engine is removed like any other removal (its number and ports
/// come back once Docker confirms); the plan then replaces it if the pool needs it.
pub(super) fn on_delete(st: &mut SupervisorState, id: &str) -> DeleteOutcome {
    let Some(name) = find_engine(st, id).map(|e| e.fact.name.clone()) else {
        return DeleteOutcome::NotFound;
    };
    let Some(entry) = st.engines.get_mut(&name) else {
        return DeleteOutcome::NotFound;
    };
    let container_id = entry.container_id.clone();
    if entry.fact.phase != EnginePhase::Removing {
        info!(engine = %name, ordinal = entry.fact.ordinal, reason = "api", "removing engine (DELETE /containers)");
        entry.fact.phase = EnginePhase::Removing;
        *st.counters.engines_removed.entry("api").or_insert(0) += 1;
        let n = entry.fact.ordinal;
        if let Some(actor) = &entry.actor {
            let _ = actor.cast(EngineMsg::Remove);
        }
        names_cast(st, NameMsg::Removing(n));
        notify_removed(st, &name, container_id.clone());
    }
    DeleteOutcome::Removing { name, container_id }
}

/// `POST /scale/{demand}`: the pool is held at the demand (clamped to the replica bounds) until
/// it is reached; then the usual rules apply (idle engines above the floors go after
/// `idle_grace`).
pub(super) fn on_scale(st: &mut SupervisorState, demand: u32, reply: RpcReplyPort<ScaleOutcome>) {
    let e = &st.cfg.engines;
    let target = demand.clamp(e.min_replicas, e.max_replicas);
    let engines = st.engines.values().filter(|e| e.fact.counts()).count() as u32;
    info!(demand, target, engines, "scale requested through the API");
    st.scale_target = (target > engines).then(|| (target, Instant::now()));
    let _ = reply.send(ScaleOutcome { target, engines });
}

/// Drops the scale target once the pool reached it, or after `ready_timeout * 2`.
pub(super) fn expire_scale_target(st: &mut SupervisorState) {
    let Some((target, since)) = st.scale_target else {
        return;
    };
    let engines = st.engines.values().filter(|e| e.fact.counts()).count() as u32;
    if engines >= target || since.elapsed() >= st.cfg.engines.ready_timeout * 2 {
        st.scale_target = None;
    }
}

/// Inspects these containers in a task and hands the found ones to `answer`.
pub(super) fn inspect_later(
    st: &SupervisorState,
    ids: Vec<String>,
    answer: impl FnOnce(Vec<ContainerDetail>) + Send + 'static,
) {
    let runtime = st.deps.runtime.clone();
    tokio::spawn(async move {
        let looks = ids.iter().map(|id| runtime.inspect(id));
        let found = futures_util::future::join_all(looks)
            .await
            .into_iter()
            .filter_map(|r| match r {
                Ok(info) => info,
                Err(e) => {
                    warn!(error = %e, "cannot inspect an engine for the API");
                    None
                }
            })
            .map(|c| ContainerDetail {
                id: c.id,
                name: c.name,
                image: c.image,
                status: if c.running { "running" } else { "exited" },
                started_at: c.started_at,
                labels: c.labels,
            })
            .collect();
        answer(found);
    });
}
