//! Rebuilding the Supervisor's facts from Docker: labels are the state, except the ordinal, which
//! is the current name's (a rename changes the name, and Docker cannot change labels). An engine
//! whose `config_hash` label differs from the current template's is adopted as outdated, to be
//! rolled.

use super::*;

/// Lists Docker in a task (the Supervisor keeps answering meanwhile); the result comes back as
/// `SupervisorMsg::Listed`. A brief listing: names, IDs, labels and running state are all the
/// facts need, so Docker is not asked for an inspect per engine.
pub(super) fn relist(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState) {
    if !st.vpn_seen || st.listing {
        return; // adoption needs the VPNs' current container IDs; done on the first VPN update
    }
    st.listing = true;
    let query = ListQuery {
        labels: Vec::new(),
        name: Some(format!("{}-", st.cfg.engines.prefix)),
        all: true,
    };
    let runtime = st.deps.runtime.clone();
    let sup = myself.clone();
    tokio::spawn(async move {
        let at = Instant::now();
        let result = runtime.list_brief(&query).await;
        let _ = sup.cast(SupervisorMsg::Listed { at, result });
    });
}

/// Rebuilds the engine facts from a listing (labels are the state): seeds the names, adopts
/// managed engines not known yet, forgets engines Docker no longer has.
pub(super) async fn on_listed(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    at: Instant,
    result: RuntimeResult<Vec<ContainerBrief>>,
) {
    st.listing = false;
    let prefix = st.cfg.engines.prefix.clone();
    let all = match result {
        Ok(all) => all,
        Err(e) => {
            if st.docker_error != Some(e.to_string()) {
                warn!(error = %e, "cannot list containers; retrying");
            }
            st.docker_error = Some(e.to_string());
            myself.send_after(Duration::from_secs(1), || SupervisorMsg::Relist);
            return;
        }
    };
    st.docker_error = None;
    // A container known by ID holds the number of the name acevisor knows it by now (the
    // listing may predate a rename); one confirmed gone since holds nothing.
    let ordinals: Vec<u32> = all
        .iter()
        .filter(|c| !st.gone_ids.contains_key(&c.id))
        .filter_map(|c| match engine_with_id(st, &c.id) {
            Some(e) => Some(e.fact.ordinal),
            None => parse_ordinal(&prefix, &c.name),
        })
        .collect();
    names_cast(st, NameMsg::Seed(ordinals));

    let vanished: Vec<String> = st
        .engines
        .iter()
        .filter(|(name, e)| {
            let listed = all
                .iter()
                .any(|c| &c.name == *name || e.container_id.as_deref() == Some(c.id.as_str()));
            e.fact.phase != EnginePhase::Creating && e.known_since < at && !listed
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in vanished {
        // An engine acevisor was removing itself is gone as planned, not lost.
        let cause = if st.engines[&name].fact.phase == EnginePhase::Removing {
            GoneCause::Removed
        } else {
            warn!(engine = %name, "engine no longer exists in Docker");
            GoneCause::Destroyed
        };
        on_engine_report(st, name, EngineReport::Gone { cause });
    }

    let template_hash = crate::core::template::config_hash(&st.template);
    for c in all {
        // Known already (by name, or by ID under the name a rename gave it since the listing),
        // or confirmed gone since (the listing is older than that fact).
        if st.engines.contains_key(&c.name)
            || engine_with_id(st, &c.id).is_some()
            || st.gone_ids.contains_key(&c.id)
        {
            continue;
        }
        let Some(l) = st.keys.decode(&st.cfg.instance, &c.labels) else {
            continue;
        };
        // The ordinal is the name's: a renamed engine's label keeps the number it was created
        // with.
        let Some(ordinal) = parse_ordinal(&prefix, &c.name) else {
            continue;
        };
        let outdated = !l.config_hash.is_empty() && l.config_hash != template_hash;
        if outdated {
            info!(engine = %c.name, "engine made from an earlier template: it will be rolled");
        }
        let fact = EngineFact {
            name: c.name.clone(),
            ordinal,
            vpn: l.vpn,
            vpn_id: l.vpn_id,
            vpn_started_at: l.vpn_started_at,
            forwarded: l.forwarded,
            p2p_port: l.p2p_port,
            http_port: l.http_port,
            phase: if c.running {
                EnginePhase::Starting
            } else {
                EnginePhase::Removing
            },
            streams: 0,
            idle_since: None,
            outdated,
        };
        info!(engine = %c.name, running = c.running, forwarded = fact.forwarded, "adopting engine");
        let host = lane_host(st, fact.vpn.as_deref());
        st.engines.insert(
            c.name.clone(),
            EngineEntry {
                fact,
                container_id: Some(c.id.clone()),
                host,
                actor: None,
                known_since: Instant::now(),
                labels: c.labels.clone(),
                renaming: None,
                rename_after: None,
                cause: None,
            },
        );
        if spawn_engine(
            myself,
            st,
            &c.name,
            EngineMode::Adopt {
                container_id: c.id.clone(),
            },
            Span::none(),
        )
        .await
            && !c.running
        {
            // An exited engine serves nothing: remove it so its name and ports come back.
            st.counters
                .engines_removed
                .entry("exited")
                .and_modify(|n| *n += 1)
                .or_insert(1);
            if let Some(a) = st.engines.get(&c.name).and_then(|e| e.actor.as_ref()) {
                let _ = a.cast(EngineMsg::Remove);
            }
        }
    }
    st.listed = true;
    if std::mem::take(&mut st.relist_after_listing) {
        relist(myself, st);
    }
}

/// The engine whose container has this ID, whatever its name now.
fn engine_with_id<'a>(st: &'a SupervisorState, id: &str) -> Option<&'a EngineEntry> {
    st.engines
        .values()
        .find(|e| e.container_id.as_deref() == Some(id))
}
