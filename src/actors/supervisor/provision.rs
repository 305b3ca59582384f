//! Provisioning: one more engine within `max_replicas`, answered as soon as a new engine's
//! container runs (or, asked with `ProvisionWait::Ready`, once its API answers). Whether a request
//! is taken is `core::provisioning::decide`, the same decision `/orchestrator/status` reports.

use super::*;
use crate::core::provisioning::{self, ProvisionFacts};

/// The facts `core::provisioning::decide` judges, as the Supervisor holds them now.
pub(super) fn provision_facts(st: &SupervisorState, now: Instant) -> ProvisionFacts {
    ProvisionFacts {
        ready: st.ready,
        placeable: st.lanes.iter().any(plan::placeable),
        breaker: st.breaker.state(),
        counted: st.engines.values().filter(|e| e.fact.counts()).count() as u32,
        asked: st.provisions.iter().map(|p| p.floor).max().unwrap_or(0),
        max_replicas: st.cfg.engines.max_replicas,
        now,
    }
}

/// The pool size pending requests and `POST /scale` ask for.
pub(super) fn demand_floor(st: &SupervisorState) -> u32 {
    let asked = st.provisions.iter().map(|p| p.floor).max().unwrap_or(0);
    asked.max(st.scale_target.map(|(t, _)| t).unwrap_or(0))
}

pub(super) fn on_provision(
    st: &mut SupervisorState,
    wait: ProvisionWait,
    reply: RpcReplyPort<Result<EngineView, ProvisionError>>,
) {
    let now = Instant::now();
    match provisioning::decide(&provision_facts(st, now)) {
        Err(e) => {
            info!(code = e.code(), "provisioning refused");
            let _ = reply.send(Err(e));
        }
        Ok(floor) => {
            let known = st.engines.keys().cloned().collect();
            st.provisions.push(PendingProvision {
                reply,
                wait,
                since: now,
                known,
                floor,
            });
        }
    }
}

/// A new engine reached `stage` (its container runs, or its API answers): it answers the oldest
/// request waiting for that stage that did not know it.
pub(super) fn answer_provision(st: &mut SupervisorState, name: &str, stage: ProvisionWait) {
    let Some(i) = st
        .provisions
        .iter()
        .position(|p| p.wait == stage && !p.known.iter().any(|k| k == name))
    else {
        return;
    };
    let pending = st.provisions.remove(i);
    if let Some(view) = st.engines.get(name).map(engine_view) {
        info!(engine = %name, wait = ?stage, waited_ms = pending.since.elapsed().as_millis() as u64, "provisioning answered");
        let _ = pending.reply.send(Ok(view));
    }
}

/// Requests not served within `provisioning::answer_within` are answered `TimedOut` (never as a
/// breaker they did not meet).
pub(super) fn expire_provisions(st: &mut SupervisorState) {
    let now = Instant::now();
    let (call, ready) = (st.cfg.docker.call_timeout, st.cfg.engines.ready_timeout);
    let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.provisions)
        .into_iter()
        .partition(|p| {
            let limit = provisioning::answer_within(p.wait == ProvisionWait::Ready, call, ready);
            now.saturating_duration_since(p.since) >= limit || p.reply.is_closed()
        });
    st.provisions = kept;
    for p in expired {
        let waited = now.saturating_duration_since(p.since).as_secs();
        info!(waited_s = waited, wait = ?p.wait, "provisioning timed out");
        let _ = p.reply.send(Err(ProvisionError::TimedOut {
            waited_seconds: waited,
        }));
    }
}
