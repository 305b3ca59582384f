//! The Supervisor's children and its Docker events task: spawning the NameRegistry and the
//! VpnMonitor, restarting them (and the Streams actor put under it) within the restart intensity (past it the Supervisor stops and the
//! daemon exits, as OTP escalates), and turning the events stream into messages (resubscribing
//! with backoff).

use super::*;

pub(super) async fn spawn_names(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    seed: Vec<u32>,
) -> Result<(), ActorProcessingErr> {
    let names = match &st.deps.name_registry {
        Some(spawn) => spawn(seed, myself.get_cell()).await?,
        None => {
            Actor::spawn_linked(None, NameRegistry, seed, myself.get_cell())
                .await?
                .0
        }
    };
    st.names = Some(names);
    Ok(())
}

pub(super) async fn spawn_monitor(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
) -> Result<(), ActorProcessingErr> {
    let v = &st.cfg.vpn;
    let args = MonitorArgs {
        vpns: v.gluetun.clone(),
        api_keys: st.gluetun_keys.clone(),
        timings: WatchTimings {
            port_settle: v.port_settle,
            tunnel_grace: v.tunnel_grace,
            port_wait: v.port_wait,
            force_restart_after: v.force_restart_after,
        },
        poll_interval: v.poll_interval,
        fast_poll_interval: v.fast_poll_interval,
        runtime: st.deps.runtime.clone(),
        control: st.deps.control.clone(),
        supervisor: myself.clone(),
        // A replacement resumes from what the crashed one last published.
        resume: st
            .vpn_seen
            .then(|| (st.lanes.clone(), st.emergency.clone())),
    };
    let (monitor, _) = Actor::spawn_linked(None, VpnMonitor, args, myself.get_cell()).await?;
    st.monitor = Some(monitor);
    Ok(())
}

/// Subscribes to Docker events and forwards them; after the stream breaks, resubscribes with
/// backoff (each subscription triggers a full re-list, so nothing missed stays missed).
pub(super) async fn events_loop(runtime: Arc<dyn ContainerRuntime>, sup: ActorRef<SupervisorMsg>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match runtime.events().await {
            Ok(mut stream) => {
                backoff = Duration::from_millis(200);
                if sup.cast(SupervisorMsg::EventsSubscribed).is_err() {
                    return;
                }
                let why = loop {
                    match stream.next().await {
                        Some(Ok(ev)) => {
                            if sup.cast(SupervisorMsg::Docker(ev)).is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) => break format!("Docker events stream broke: {e}"),
                        None => break "Docker events stream ended".to_string(),
                    }
                };
                if sup.cast(SupervisorMsg::DockerTrouble(why)).is_err() {
                    return;
                }
            }
            Err(e) => {
                if sup
                    .cast(SupervisorMsg::DockerTrouble(format!(
                        "cannot subscribe to Docker events: {e}"
                    )))
                    .is_err()
                {
                    return;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Restarts a crashed or stopped singleton child (`vpn_monitor`, `name_registry`, `streams`)
/// within the restart intensity. Past it, escalates: the Supervisor stops, the daemon exits non-zero and
/// its container's restart policy starts a fresh acevisor, which rebuilds everything from Docker.
pub(super) async fn restart_singleton(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    child: &'static str,
    failure: Option<String>,
) -> Result<(), ActorProcessingErr> {
    let now = Instant::now();
    st.counters.actor_restarts += 1;
    if let Verdict::BackOff { .. } = st.intensity.request(&format!("actor:{child}"), now) {
        error!(child, error = ?failure, "restarted too often within the restart window; stopping the supervisor");
        myself.stop(Some(format!("{child} restarted too often")));
        return Ok(());
    }
    error!(child, error = ?failure, "restarting");
    match child {
        "vpn_monitor" => {
            st.monitor = None;
            spawn_monitor(myself, st).await
        }
        "streams" => {
            // The new Streams actor starts with no streams: no engine keeps a count of the
            // streams that died with the old one (proxies report them again as they go on).
            on_stream_counts(st, BTreeMap::new());
            let Some((spawn, cell)) = st.streams.as_mut() else {
                return Ok(());
            };
            *cell = (spawn.0)(myself.get_cell()).await?;
            Ok(())
        }
        _ => {
            let seed = st.engines.values().map(|e| e.fact.ordinal).collect();
            spawn_names(myself, st, seed).await
        }
    }
}
