//! Provisioning: one more engine within `max_replicas`, answered once a new engine is ready.

use super::*;

/// Provisioning: one more engine within `max_replicas`, answered once a new engine is ready.
pub(super) fn on_provision(
    st: &mut SupervisorState,
    reply: RpcReplyPort<Result<EngineView, ProvisionError>>,
) {
    let now = Instant::now();
    let counted = st.engines.values().filter(|e| e.fact.counts()).count() as u32;
    let asked = st.provisions.iter().map(|p| p.floor).max().unwrap_or(0);
    let floor = counted.max(asked) + 1;
    let refuse = if !st.ready || !st.lanes.iter().any(plan::placeable) {
        Some(ProvisionError::VpnDisconnected {
            recovery_eta_seconds: None,
        })
    } else if matches!(
        st.breaker.state(),
        BreakerState::Open { .. } | BreakerState::HalfOpen
    ) {
        Some(ProvisionError::CircuitBreaker {
            retry_after_seconds: st.breaker.retry_after(now),
        })
    } else if floor > st.cfg.engines.max_replicas {
        Some(ProvisionError::MaxCapacity)
    } else {
        None
    };
    if let Some(e) = refuse {
        info!(code = e.code(), "provisioning refused");
        let _ = reply.send(Err(e));
        return;
    }
    let known = st.engines.keys().cloned().collect();
    st.provisions.push(PendingProvision {
        reply,
        since: now,
        known,
        floor,
    });
}

/// A new engine is ready: it answers the oldest provisioning request that did not know it.
pub(super) fn answer_provision(st: &mut SupervisorState, name: &str) {
    let Some(i) = st
        .provisions
        .iter()
        .position(|p| !p.known.iter().any(|k| k == name))
    else {
        return;
    };
    let pending = st.provisions.remove(i);
    if let Some(view) = st.engines.get(name).map(engine_view) {
        let _ = pending.reply.send(Ok(view));
    }
}

/// Requests not served within twice the ready timeout are answered with a retry hint.
pub(super) fn expire_provisions(st: &mut SupervisorState) {
    let now = Instant::now();
    let limit = st.cfg.engines.ready_timeout * 2;
    let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.provisions)
        .into_iter()
        .partition(|p| now.saturating_duration_since(p.since) >= limit || p.reply.is_closed());
    st.provisions = kept;
    for p in expired {
        let retry = st.breaker.retry_after(now).max(5);
        let _ = p.reply.send(Err(ProvisionError::CircuitBreaker {
            retry_after_seconds: retry,
        }));
    }
}
