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
use futures_util::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, Span, debug, error, field, info, info_span, warn};

use crate::actors::engine::{Engine, EngineArgs, EngineMode};
use crate::actors::messages::{
    ChildSpawner, ContainerDetail, Counters, DeleteOutcome, EngineMsg, EngineRemoved, EngineReport,
    EngineView, GoneCause, MonitorMsg, NameMsg, ProvisionError, ProvisionWait, RemovalWatcher,
    ScaleOutcome, SupervisorMsg, SupervisorSnapshot, VpnStatus, VpnUpdate,
};
use crate::actors::name_registry::NameRegistry;
use crate::actors::vpn_monitor::{MonitorArgs, VpnMonitor, emergency_lists};
use crate::clients::{EngineApi, VpnControl};
use crate::config::{Config, VpnMode};
use crate::core::breaker::Breaker;
use crate::core::emergency::{EmergencyState, Transition};
use crate::core::engine_spec::{EngineIdentity, SpecContext, engine_spec};
use crate::core::intensity::{Intensity, Verdict};
use crate::core::labels::LabelKeys;
use crate::core::model::{EngineFact, EnginePhase, Readiness, VpnView};
use crate::core::naming::{engine_name, parse_ordinal};
use crate::core::plan::{self, Action, PlanInput};
use crate::core::template::EngineTemplate;
use crate::core::vpn_watch::{VpnEvent, WatchTimings};
use crate::runtime::{ContainerBrief, ContainerRuntime, ListQuery, RuntimeResult};

/// The effects the tree works through.
#[derive(Clone)]
pub struct Deps {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub control: Arc<dyn VpnControl>,
    pub engine_api: Arc<dyn EngineApi>,
    /// How the NameRegistry is spawned; `None` (the daemon): the real one. Tests put a stand-in
    /// here to make the registry stop answering (tests/memory_supervision.rs).
    pub name_registry: Option<SpawnNames>,
}

/// Spawns a NameRegistry linked under the given Supervisor cell, seeded with the held numbers.
pub type SpawnNames = Arc<
    dyn Fn(Vec<u32>, ActorCell) -> BoxFuture<'static, Result<ActorRef<NameMsg>, SpawnErr>>
        + Send
        + Sync,
>;

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
    /// When acevisor first knew of it: a Docker listing taken before that cannot judge it.
    known_since: Instant,
    /// Its container's labels, as created or adopted.
    labels: BTreeMap<String, String>,
    /// A rename to this (reserved) number is under way.
    renaming: Option<u32>,
    /// A rename failed on a name held by a container acevisor does not know yet (the next
    /// listing finds it): no new rename of this engine before then.
    rename_after: Option<Instant>,
    /// While it is being created, the span its creation was decided in (an incident's, or none):
    /// what its creation reports lead to (the next creations) is traced there, beside it, not
    /// under its own `engine.create` (which would chain a cold start's creations into one deep
    /// trace). Later reports are followed up in their own span (an `engine.died`, say).
    cause: Option<Span>,
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
    /// The planner's input: each VPN's `lane` (set with `vpns`), or the plain-network lane in
    /// mode `none`.
    lanes: Vec<VpnView>,
    vpns: Vec<VpnStatus>,
    emergency: EmergencyState,
    vpn_seen: bool,
    listed: bool,
    /// A Docker listing is under way (its result comes back as `Listed`).
    listing: bool,
    /// The events stream was re-subscribed while a listing was under way: list again after it.
    relist_after_listing: bool,
    /// Containers of engines confirmed gone, and when: a listing taken before that is stale for
    /// them and must not adopt them again.
    gone_ids: HashMap<String, Instant>,
    ready: bool,
    counters: Counters,
    intensity: Intensity,
    holds: HashMap<String, Instant>,
    create_backoff: HashMap<String, Duration>,
    docker_error: Option<String>,
    tasks: Vec<JoinHandle<()>>,
    breaker: Breaker,
    /// Provisioning requests waiting for a new engine (created or ready), oldest first.
    provisions: Vec<PendingProvision>,
    /// Pool size asked by `POST /scale/{demand}`, kept until reached (or `ready_timeout * 2`).
    scale_target: Option<(u32, Instant)>,
    /// Told of every engine removed or lost (the Streams actor).
    removal_watchers: Vec<RemovalWatcher>,
    /// The Streams actor, when one was put under this Supervisor: how it is spawned, and the
    /// running one.
    streams: Option<(ChildSpawner, ActorCell)>,
    /// The last VPN events and emergency transitions (the dashboard's incidents).
    incidents: crate::core::incidents::IncidentLog,
    /// Engines the built-in stream proxy plays contents on, and the external stream counts.
    proxy: ProxyBook,
}

struct PendingProvision {
    reply: RpcReplyPort<Result<EngineView, ProvisionError>>,
    wait: ProvisionWait,
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
            template: cfg.engines.template(),
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
            listing: false,
            relist_after_listing: false,
            gone_ids: HashMap::new(),
            ready: false,
            counters: Counters::default(),
            holds: HashMap::new(),
            create_backoff: HashMap::new(),
            docker_error: None,
            tasks: Vec::new(),
            // A probe reports within a Docker create, start and inspect; past four call timeouts
            // it is given up and the next creation probes instead.
            breaker: Breaker::new(5, Duration::from_secs(5), Duration::from_secs(300))
                .with_probe_timeout(cfg.docker.call_timeout * 4),
            provisions: Vec::new(),
            scale_target: None,
            removal_watchers: Vec::new(),
            streams: None,
            incidents: Default::default(),
            proxy: ProxyBook::default(),
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
                // Decided under the emergency transition when there is one, else under the event.
                let cause = if transition.is_none() {
                    Span::current()
                } else {
                    transition.clone()
                };
                // Told in the incident's own span, before the reconcile removes anything.
                notify_trouble(st);
                reconcile(&myself, st, &cause).instrument(transition).await;
                return Ok(());
            }
            SupervisorMsg::Engine {
                name,
                actor,
                report,
            } => {
                if !is_current_actor(st, &name, actor) {
                    // An actor of an engine already forgotten (its name may be reused now): its
                    // reports are about another container.
                    debug!(engine = %name, ?report, "report of a stale engine actor ignored");
                    return Ok(());
                }
                // A create that failed may still have made its container (a lost reply): look.
                if matches!(report, EngineReport::CreateFailed { .. }) {
                    myself.send_after(Duration::from_secs(2), || SupervisorMsg::Relist);
                }
                let cause = creation_cause(st, &name, &report);
                on_engine_report(st, name, report);
                after_change(&myself, st, &cause).await;
                return Ok(());
            }
            SupervisorMsg::Docker(ev) => {
                if let Some(m) = st
                    .monitor
                    .as_ref()
                    .filter(|_| st.cfg.vpn.gluetun.iter().any(|g| g.container == ev.name))
                {
                    let _ = m.cast(MonitorMsg::Docker(ev));
                } else {
                    on_engine_event(st, ev);
                }
                return Ok(());
            }
            SupervisorMsg::Relist => {
                relist(&myself, st);
                return Ok(());
            }
            SupervisorMsg::EventsSubscribed => {
                st.listed = false;
                // A listing already under way started before the subscription and may miss what
                // happened in between: another one follows it.
                st.relist_after_listing = st.listing;
                relist(&myself, st);
                return Ok(());
            }
            SupervisorMsg::Listed { at, result } => on_listed(&myself, st, at, result).await,
            SupervisorMsg::DockerTrouble(e) => {
                if st.docker_error.as_ref() != Some(&e) {
                    warn!(error = %e, "Docker trouble; will re-list when the events stream is back");
                }
                st.docker_error = Some(e);
                return Ok(());
            }
            SupervisorMsg::Tick => {
                expire_provisions(st);
                expire_scale_target(st);
            }
            SupervisorMsg::Respawn { name, granted } => {
                respawn_engine(&myself, st, &name, granted).await
            }
            SupervisorMsg::Snapshot(reply) => {
                let _ = reply.send(snapshot(st));
                return Ok(());
            }
            SupervisorMsg::StreamCounts(counts) => on_stream_counts(st, counts),
            SupervisorMsg::Provision { wait, reply } => on_provision(st, wait, reply),
            SupervisorMsg::Scale { demand, reply } => on_scale(st, demand, reply),
            SupervisorMsg::ResetBreaker(reply) => {
                let before = st.breaker.state().label();
                st.breaker.reset();
                st.create_backoff.clear();
                st.holds.clear();
                info!(before, "creation breaker reset through the API");
                let _ = reply.send(before);
            }
            SupervisorMsg::Gc(reply) => {
                let before: Vec<String> = removing_names(st);
                reconcile(&myself, st, &Span::current()).await;
                let after = removing_names(st);
                let _ = reply.send(after.into_iter().filter(|n| !before.contains(n)).collect());
                return Ok(());
            }
            SupervisorMsg::Delete { id, reply } => {
                let _ = reply.send(on_delete(st, &id));
                return Ok(());
            }
            SupervisorMsg::Inspect { id, reply } => {
                let target = find_engine(st, &id).and_then(|e| e.container_id.clone());
                inspect_later(st, target.into_iter().collect(), move |mut found| {
                    let _ = reply.send(found.pop());
                });
                return Ok(());
            }
            SupervisorMsg::ByLabel { key, value, reply } => {
                let ids = st
                    .engines
                    .values()
                    .filter(|e| e.labels.get(&key) == Some(&value))
                    .filter_map(|e| e.container_id.clone())
                    .collect();
                inspect_later(st, ids, move |found| {
                    let _ = reply.send(found);
                });
                return Ok(());
            }
            SupervisorMsg::WatchRemovals(watcher) => {
                st.removal_watchers.push(watcher);
                return Ok(());
            }
            SupervisorMsg::SuperviseStreams { spawn, reply } => {
                let started = (spawn.0)(myself.get_cell()).await;
                let answer = started.map(|cell| st.streams = Some((spawn, cell)));
                let _ = reply.send(answer);
                return Ok(());
            }
            SupervisorMsg::WatchTrouble(watcher) => {
                st.proxy.trouble_watchers.push(watcher);
                return Ok(());
            }
            SupervisorMsg::PublicIp(reply) => {
                match &st.monitor {
                    Some(m) => {
                        let _ = m.cast(MonitorMsg::PublicIp(reply));
                    }
                    None => {
                        let _ =
                            reply.send(Err("no VPN is configured (vpn.mode = \"none\")".into()));
                    }
                }
                return Ok(());
            }
            SupervisorMsg::ReserveEngine {
                content,
                exclude,
                max_per_engine,
                reply,
            } => {
                let _ = reply.send(on_reserve(st, &content, &exclude, max_per_engine));
                return Ok(());
            }
            SupervisorMsg::ReleaseEngine { content } => on_release(st, &content),
            SupervisorMsg::PortHook { vpn, reply } => {
                let known = st.cfg.vpn.gluetun.iter().any(|g| g.container == vpn);
                if known && let Some(m) = &st.monitor {
                    let _ = m.cast(MonitorMsg::PortHook(vpn));
                }
                let _ = reply.send(known);
                return Ok(());
            }
        }
        after_change(&myself, st, &Span::current()).await;
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
            restart_singleton(&myself, st, "vpn_monitor", failure).await?;
        } else if st.names.as_ref().is_some_and(|n| n.get_id() == id) {
            restart_singleton(&myself, st, "name_registry", failure).await?;
        } else if st.streams.as_ref().is_some_and(|(_, c)| c.get_id() == id) {
            restart_singleton(&myself, st, "streams", failure).await?;
        } else if let Some(name) = st.actor_names.remove(&id) {
            let Some(err) = failure else { return Ok(()) };
            // Only the current actor of an engine is restarted: a stale one (its engine
            // forgotten, the name perhaps reused) must not take over the new container.
            let Some(entry) = st
                .engines
                .get_mut(&name)
                .filter(|e| e.actor.as_ref().is_some_and(|a| a.get_id() == id))
            else {
                warn!(engine = %name, error = %err, "a stale engine actor crashed");
                return Ok(());
            };
            error!(engine = %name, error = %err, "engine actor crashed");
            entry.actor = None;
            respawn_engine(&myself, st, &name, false).await;
        }
        Ok(())
    }
}

/// The report comes from the engine's current actor.
fn is_current_actor(st: &SupervisorState, name: &str, actor: ActorId) -> bool {
    st.engines
        .get(name)
        .and_then(|e| e.actor.as_ref())
        .is_some_and(|a| a.get_id() == actor)
}

fn direct_lane(cfg: &Config) -> VpnView {
    VpnView {
        name: None,
        container_id: None,
        started_at: None,
        readiness: Readiness::up(None),
        failed: false,
        forwarding: false,
        port_wait_expired: false,
        engine_ports: cfg.engines.http_ports,
    }
}

mod api;
mod children;
mod engines;
mod provision;
mod proxy;
mod reconcile;
mod relist;
mod vpn;

use api::*;
use children::*;
/// What follows any change of the facts: the stream proxy's sessions on engines now in trouble
/// are told (before the reconcile removes anything, so they move at once), then the plan runs,
/// its decisions traced under `cause`.
async fn after_change(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState, cause: &Span) {
    notify_trouble(st);
    reconcile(myself, st, cause).await;
}

pub use engines::death_slot;
use engines::*;
use provision::*;
use proxy::*;
use reconcile::*;
use relist::*;
use vpn::*;
