//! The Supervisor actor: the root of the tree. It holds the facts (engines, VPN views), runs
//! `plan::reconcile` whenever a fact changes, performs the plan through its children, and
//! supervises them: a crashed child is restarted within the restart-intensity limits instead of
//! taking the daemon down.
//!
//! It never waits on Docker for an engine: every engine's container work happens in that engine's
//! own actor, concurrently, so the Supervisor (and the API through it) keeps answering.
//!
//! Tracing: a `Vpn` message is handled inside the span it was sent in (ractor carries it), a
//! transition of the emergency machine opens `emergency.*` under it, a reconcile that decides
//! something opens `reconcile`, and each decision an `engine.create` / `engine.remove` span that
//! the Engine actor's work runs in. A reconcile that changes nothing opens no span.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, Span, error, field, info, info_span, warn};

use crate::actors::engine::{Engine, EngineArgs, EngineMode};
use crate::actors::messages::{
    Counters, EngineMsg, EngineReport, EngineView, GoneCause, MonitorMsg, NameMsg, ProvisionError,
    SupervisorMsg, SupervisorSnapshot, VpnStatus, VpnUpdate,
};
use crate::actors::name_registry::NameRegistry;
use crate::actors::vpn_monitor::{MonitorArgs, VpnMonitor, emergency_lists};
use crate::clients::{EngineApi, VpnControl};
use crate::config::{Config, VpnMode};
use crate::core::breaker::{Breaker, BreakerState};
use crate::core::emergency::{EmergencyState, Transition};
use crate::core::engine_spec::{EngineSlot, SpecContext, engine_spec};
use crate::core::intensity::{Intensity, Verdict};
use crate::core::labels::LabelKeys;
use crate::core::model::{EngineFact, EnginePhase, Readiness, VpnView};
use crate::core::naming::{engine_name, parse_ordinal};
use crate::core::plan::{self, Action, PlanInput};
use crate::core::template::{EngineTemplate, template_for};
use crate::core::vpn_watch::{VpnEvent, WatchTimings};
use crate::runtime::{ContainerRuntime, ListQuery};

/// The effects the tree works through.
#[derive(Clone)]
pub struct Deps {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub control: Arc<dyn VpnControl>,
    pub engine_api: Arc<dyn EngineApi>,
}

pub struct SupervisorArgs {
    pub config: Config,
    pub deps: Deps,
    /// Gluetun API keys by VPN index, read from the configured env vars.
    pub gluetun_keys: Vec<Option<String>>,
}

struct EngineEntry {
    fact: EngineFact,
    container_id: Option<String>,
    host: Option<String>,
    actor: Option<ActorRef<EngineMsg>>,
}

pub struct SupervisorState {
    cfg: Config,
    deps: Deps,
    gluetun_keys: Vec<Option<String>>,
    template: EngineTemplate,
    keys: LabelKeys,
    names: Option<ActorRef<NameMsg>>,
    monitor: Option<ActorRef<MonitorMsg>>,
    engines: BTreeMap<String, EngineEntry>,
    actor_names: HashMap<ActorId, String>,
    lanes: Vec<VpnView>,
    vpns: Vec<VpnStatus>,
    emergency: EmergencyState,
    vpn_seen: bool,
    listed: bool,
    ready: bool,
    counters: Counters,
    intensity: Intensity,
    holds: HashMap<String, Instant>,
    create_backoff: HashMap<String, Duration>,
    docker_error: Option<String>,
    tasks: Vec<JoinHandle<()>>,
    breaker: Breaker,
    /// Provisioning requests waiting for a new engine to become ready, oldest first.
    provisions: Vec<PendingProvision>,
}

struct PendingProvision {
    reply: RpcReplyPort<Result<EngineView, ProvisionError>>,
    since: Instant,
    /// Engines that existed when it was asked: the answer is an engine not among them.
    known: Vec<String>,
    /// The pool size this request needs: one more than what existed (and was asked) before it.
    floor: u32,
}

pub struct Supervisor;

/// How often Docker is re-listed as a safety net besides the events stream.
const RELIST_EVERY: Duration = Duration::from_secs(60);

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let cfg = args.config;
        let (lanes, vpn_seen) = if cfg.vpn.mode == VpnMode::None {
            (vec![direct_lane(&cfg)], true)
        } else {
            (Vec::new(), false)
        };
        let health = &cfg.engines.health;
        Ok(SupervisorState {
            template: template_for(&cfg.engines),
            keys: LabelKeys::new(&cfg.docker.label_prefix),
            intensity: Intensity::new(health.max_restarts, health.restart_window),
            deps: args.deps,
            gluetun_keys: args.gluetun_keys,
            names: None,
            monitor: None,
            engines: BTreeMap::new(),
            actor_names: HashMap::new(),
            lanes,
            vpns: Vec::new(),
            emergency: EmergencyState::Normal,
            vpn_seen,
            listed: false,
            ready: false,
            counters: Counters::default(),
            holds: HashMap::new(),
            create_backoff: HashMap::new(),
            docker_error: None,
            tasks: Vec::new(),
            breaker: Breaker::new(5, Duration::from_secs(5), Duration::from_secs(300)),
            provisions: Vec::new(),
            cfg,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        spawn_names(&myself, st, Vec::new()).await?;
        if st.cfg.vpn.mode != VpnMode::None {
            spawn_monitor(&myself, st).await?;
        }
        // Subscribe to events before the first listing; the task asks for the listing itself.
        st.tasks.push(tokio::spawn(events_loop(
            st.deps.runtime.clone(),
            myself.clone(),
        )));
        st.tasks
            .push(myself.send_interval(st.cfg.vpn.poll_interval, || SupervisorMsg::Tick));
        // Docker is re-listed now and then, so a container nobody told us about (a create whose
        // reply was lost while Docker was unreachable) is adopted or removed, never left behind.
        st.tasks
            .push(myself.send_interval(RELIST_EVERY, || SupervisorMsg::Relist));
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        st.tasks.iter().for_each(JoinHandle::abort);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Vpn(update) => {
                let transition = on_vpn_update(&myself, st, update).await;
                reconcile(&myself, st).instrument(transition).await;
                return Ok(());
            }
            SupervisorMsg::Engine { name, report } => {
                // A create that failed may still have made its container (a lost reply): look.
                if matches!(report, EngineReport::CreateFailed { .. }) {
                    myself.send_after(Duration::from_secs(2), || SupervisorMsg::Relist);
                }
                on_engine_report(st, name, report)
            }
            SupervisorMsg::Docker(ev) => {
                if let Some(m) = st
                    .monitor
                    .as_ref()
                    .filter(|_| st.cfg.vpn.gluetun.iter().any(|g| g.container == ev.name))
                {
                    let _ = m.cast(MonitorMsg::Docker(ev));
                } else if let Some(entry) = st.engines.get(&ev.name) {
                    let ours = entry.container_id.as_ref().is_none_or(|id| *id == ev.id);
                    if let (true, Some(actor)) = (ours, &entry.actor) {
                        let _ = actor.cast(EngineMsg::Docker {
                            id: ev.id,
                            kind: ev.kind,
                        });
                    }
                } else if ev.kind == crate::runtime::EventKind::Destroy {
                    // A container holding one of our names (not ours) is gone: the number is free.
                    if let (Some(n), Some(names)) =
                        (parse_ordinal(&st.cfg.engines.prefix, &ev.name), &st.names)
                    {
                        let _ = names.cast(NameMsg::Gone(n));
                    }
                }
                return Ok(());
            }
            SupervisorMsg::Relist => relist(&myself, st).await,
            SupervisorMsg::EventsSubscribed => {
                st.listed = false;
                relist(&myself, st).await;
            }
            SupervisorMsg::DockerTrouble(e) => {
                if st.docker_error.as_ref() != Some(&e) {
                    warn!(error = %e, "Docker trouble; will re-list when the events stream is back");
                }
                st.docker_error = Some(e);
                return Ok(());
            }
            SupervisorMsg::Tick => expire_provisions(st),
            SupervisorMsg::Respawn { name } => respawn_engine(&myself, st, &name).await,
            SupervisorMsg::Snapshot(reply) => {
                let _ = reply.send(snapshot(st));
                return Ok(());
            }
            SupervisorMsg::StreamCounts(counts) => on_stream_counts(st, counts),
            SupervisorMsg::Provision(reply) => on_provision(st, reply),
            SupervisorMsg::CrashEngine { name } => {
                if let Some(actor) = st.engines.get(&name).and_then(|e| e.actor.as_ref()) {
                    let _ = actor.cast(EngineMsg::Crash);
                }
                return Ok(());
            }
        }
        reconcile(&myself, st).await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return Ok(()),
        };
        let id = cell.get_id();
        if st.monitor.as_ref().is_some_and(|m| m.get_id() == id) {
            error!(error = ?failure, "VpnMonitor stopped; restarting it");
            st.monitor = None;
            spawn_monitor(&myself, st).await?;
        } else if st.names.as_ref().is_some_and(|n| n.get_id() == id) {
            error!(error = ?failure, "NameRegistry stopped; restarting it from the known engines");
            let seed = st.engines.values().map(|e| e.fact.ordinal).collect();
            spawn_names(&myself, st, seed).await?;
        } else if let Some(name) = st.actor_names.remove(&id) {
            let Some(err) = failure else { return Ok(()) };
            error!(engine = %name, error = %err, "engine actor crashed");
            if let Some(entry) = st.engines.get_mut(&name) {
                entry.actor = None;
            }
            respawn_engine(&myself, st, &name).await;
        }
        Ok(())
    }
}

fn direct_lane(cfg: &Config) -> VpnView {
    VpnView {
        name: None,
        container_id: None,
        started_at: None,
        readiness: Readiness::Up {
            forwarded_port: None,
        },
        failed: false,
        forwarding: false,
        port_wait_expired: false,
        engine_ports: cfg.engines.http_ports,
    }
}

async fn spawn_names(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    seed: Vec<u32>,
) -> Result<(), ActorProcessingErr> {
    let (names, _) = Actor::spawn_linked(None, NameRegistry, seed, myself.get_cell()).await?;
    st.names = Some(names);
    Ok(())
}

async fn spawn_monitor(
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
        runtime: st.deps.runtime.clone(),
        control: st.deps.control.clone(),
        supervisor: myself.clone(),
    };
    let (monitor, _) = Actor::spawn_linked(None, VpnMonitor, args, myself.get_cell()).await?;
    st.monitor = Some(monitor);
    Ok(())
}

/// Subscribes to Docker events and forwards them; after the stream breaks, resubscribes with
/// backoff (each subscription triggers a full re-list, so nothing missed stays missed).
async fn events_loop(runtime: Arc<dyn ContainerRuntime>, sup: ActorRef<SupervisorMsg>) {
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

/// Takes in a VpnMonitor update; returns the span of its emergency transition (if any), which
/// the reconcile that follows runs in.
async fn on_vpn_update(
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
    st.lanes = update.lanes;
    st.vpns = update.vpns;
    st.emergency = update.emergency;
    let first = !st.vpn_seen;
    st.vpn_seen = true;
    if first && !st.listed {
        relist(myself, st).await;
    }
    span
}

/// `emergency.enter` / `emergency.exit` / `emergency.outage` / `emergency.update` (only the lists
/// of failed or healthy VPNs changed), a child of the VPN event's span.
fn transition_span(t: &Transition) -> Span {
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

fn on_engine_report(st: &mut SupervisorState, name: String, report: EngineReport) {
    let Some(entry) = st.engines.get_mut(&name) else {
        return;
    };
    let lane = entry.fact.vpn_key().to_string();
    let n = entry.fact.ordinal;
    let removing = entry.fact.phase == EnginePhase::Removing;
    match report {
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
            answer_provision(st, &name);
        }
        EngineReport::Unhealthy { since } if !removing => {
            entry.fact.phase = EnginePhase::Unhealthy { since }
        }
        EngineReport::Healthy if !removing => entry.fact.phase = EnginePhase::Ready,
        EngineReport::Gone { cause } => {
            st.engines.remove(&name);
            names_cast(st, NameMsg::Gone(n));
            if cause != GoneCause::Removed {
                st.counters.engines_lost += 1;
                // Replacements reuse the lowest free name and ports, so an engine slot is the
                // lane it serves: too many deaths there in the window and its creations back off.
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

/// Provisioning: one more engine within `max_replicas`, answered once a new engine is ready.
fn on_provision(st: &mut SupervisorState, reply: RpcReplyPort<Result<EngineView, ProvisionError>>) {
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
fn answer_provision(st: &mut SupervisorState, name: &str) {
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
fn expire_provisions(st: &mut SupervisorState) {
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

fn on_stream_counts(st: &mut SupervisorState, counts: BTreeMap<String, u32>) {
    let now = Instant::now();
    for (name, entry) in st.engines.iter_mut() {
        let streams = counts.get(name).copied().unwrap_or(0);
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

fn names_cast(st: &SupervisorState, msg: NameMsg) {
    if let Some(names) = &st.names {
        let _ = names.cast(msg);
    }
}

/// Rebuilds the engine facts from Docker (labels are the state): seeds the names, adopts managed
/// engines not known yet, forgets engines Docker no longer has.
async fn relist(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState) {
    if !st.vpn_seen {
        return; // adoption needs the VPNs' current container IDs; done on the first VPN update
    }
    let prefix = st.cfg.engines.prefix.clone();
    let query = ListQuery {
        labels: Vec::new(),
        name: Some(format!("{prefix}-")),
        all: true,
    };
    let all = match st.deps.runtime.list(&query).await {
        Ok(all) => all,
        Err(e) => {
            if st.docker_error != Some(e.to_string()) {
                warn!(error = %e, "cannot list containers; retrying");
            }
            st.docker_error = Some(e.to_string());
            myself.send_after(Duration::from_secs(1), || SupervisorMsg::EventsSubscribed);
            return;
        }
    };
    st.docker_error = None;
    let ordinals: Vec<u32> = all
        .iter()
        .filter_map(|c| parse_ordinal(&prefix, &c.name))
        .collect();
    names_cast(st, NameMsg::Seed(ordinals));

    let known: Vec<String> = all.iter().map(|c| c.name.clone()).collect();
    let vanished: Vec<String> = st
        .engines
        .iter()
        .filter(|(name, e)| e.fact.phase != EnginePhase::Creating && !known.contains(name))
        .map(|(name, _)| name.clone())
        .collect();
    for name in vanished {
        warn!(engine = %name, "engine no longer exists in Docker");
        on_engine_report(
            st,
            name,
            EngineReport::Gone {
                cause: GoneCause::Destroyed,
            },
        );
    }

    for c in all {
        if st.engines.contains_key(&c.name) {
            continue;
        }
        let Some(l) = st.keys.decode(&st.cfg.instance, &c.labels) else {
            continue;
        };
        if parse_ordinal(&prefix, &c.name) != Some(l.ordinal) {
            continue;
        }
        let fact = EngineFact {
            name: c.name.clone(),
            ordinal: l.ordinal,
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
}

fn lane_host(st: &SupervisorState, vpn: Option<&str>) -> Option<String> {
    let vpn = vpn?;
    st.vpns
        .iter()
        .find(|v| v.container_name == vpn)
        .and_then(|v| v.ip.clone())
}

/// Spawns the Engine actor of an entry; false (entry dropped) when the spawn failed. `span` is the
/// `engine.create` span its creation runs in (`Span::none()` when adopting).
async fn spawn_engine(
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

/// Restarts a crashed Engine actor on its container, within the intensity limits.
async fn respawn_engine(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState, name: &str) {
    let now = Instant::now();
    if let Verdict::BackOff { until } = st.intensity.request(&format!("actor:{name}"), now) {
        st.counters.restarts_suppressed += 1;
        warn!(engine = %name, "engine actor crashed too often; backing off before restarting it");
        let name = name.to_string();
        myself.send_after(until.saturating_duration_since(now), move || {
            SupervisorMsg::Respawn { name }
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
        None => st
            .deps
            .runtime
            .inspect(name)
            .await
            .ok()
            .flatten()
            .map(|c| c.id),
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

/// Runs the plan over the current facts and performs it.
async fn reconcile(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState) {
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
        demand_floor: st.provisions.iter().map(|p| p.floor).max().unwrap_or(0),
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
                if st.holds.contains_key(&lane) || creating >= st.cfg.engines.create_concurrency {
                    continue;
                }
                if !st.breaker.allow(now) {
                    continue;
                }
                let Some(names) = st.names.clone() else {
                    return;
                };
                let n = match ractor::call_t!(names, NameMsg::Reserve, 5_000) {
                    Ok(n) => n,
                    Err(e) => {
                        warn!(error = %e, "name registry did not answer; creation deferred");
                        return;
                    }
                };
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
                names_cast(st, NameMsg::Removing(n));
            }
        }
    }
    st.counters.reconcile_duration.observe(started.elapsed());
    if !st.ready {
        st.ready = true;
        info!(engines = st.engines.len(), "first reconcile done");
    }
}

fn engine_view(e: &EngineEntry) -> EngineView {
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
    }
}

fn snapshot(st: &SupervisorState) -> SupervisorSnapshot {
    SupervisorSnapshot {
        engines: st.engines.values().map(engine_view).collect(),
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
    }
}
