//! The typed messages between the actors, and the snapshots they publish. Actors share nothing
//! else: every fact crosses as one of these.

use std::collections::BTreeMap;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use ractor::{ActorCell, RpcReplyPort};
use tokio::time::Instant;

use crate::core::emergency::{EmergencyState, Transition};
use crate::core::intensity::SlotReport;
use crate::core::model::{EnginePhase, VpnView};
use crate::core::vpn_watch::VpnEvent;
use crate::runtime::{ContainerBrief, ContainerEvent, EventKind, RuntimeError};

/// What the VpnMonitor publishes: the events of this round and the fresh view of every VPN.
#[derive(Clone, Debug)]
pub struct VpnUpdate {
    /// `(vpn, event)` in the order they happened.
    pub events: Vec<(String, VpnEvent)>,
    /// Every configured VPN, in config order.
    pub vpns: Vec<VpnStatus>,
    pub emergency: EmergencyState,
    pub transition: Option<Transition>,
}

/// One VPN: its planner lane and what `/vpn/status` shows besides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VpnStatus {
    /// The planner's view: container name and ID, readiness (with the settled forwarded ports),
    /// `failed`.
    pub lane: VpnView,
    /// `down` / `starting` / `degraded` / `misconfigured` / `up`.
    pub status: &'static str,
    /// Docker health: `healthy` / `unhealthy` / `starting` / `none`.
    pub health: &'static str,
    pub connected: bool,
    pub ip: Option<String>,
    /// The tunnel's exit address, as its control server last reported it while up.
    pub public_ip: Option<String>,
    pub last_check_at: Option<SystemTime>,
    /// The control server's last error, if any (401, unreachable, ...).
    pub last_error: Option<String>,
}

impl VpnStatus {
    /// The VPN's container name.
    pub fn name(&self) -> &str {
        self.lane.name.as_deref().unwrap_or_default()
    }
}

/// Why an engine's container is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GoneCause {
    /// acevisor removed it.
    Removed,
    /// Its process exited (acevisor then removed the exited container).
    Died { exit_code: Option<i64> },
    /// Someone removed it out of band.
    Destroyed,
}

/// What an Engine actor reports to the Supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineReport {
    /// Docker reports the new container started; its start-settle check is still running (the
    /// creation permit is free, the creation itself not yet confirmed).
    Started {
        container_id: String,
    },
    Created {
        container_id: String,
        host: Option<String>,
    },
    CreateFailed {
        error: String,
    },
    Ready,
    Unhealthy {
        since: Instant,
    },
    Healthy,
    Gone {
        cause: GoneCause,
    },
    /// The container now has the name `to` (the report itself comes under the old name).
    Renamed {
        to: String,
    },
    /// The rename to `to` failed; `conflict`: another container holds that name.
    RenameFailed {
        to: String,
        conflict: bool,
        error: String,
    },
}

#[derive(Debug)]
pub enum SupervisorMsg {
    Vpn(VpnUpdate),
    /// A report of the Engine actor `actor` about the engine `name`.
    Engine {
        name: String,
        actor: ractor::ActorId,
        report: EngineReport,
    },
    Docker(ContainerEvent),
    /// The events stream is (re)subscribed: re-list everything.
    EventsSubscribed,
    /// Re-list Docker (periodic safety net; after a failed create, whose container may exist).
    Relist,
    /// A listing started at `at` came back.
    Listed {
        at: Instant,
        result: Result<Vec<ContainerBrief>, RuntimeError>,
    },
    /// Docker could not be listed or its events stream broke.
    DockerTrouble(String),
    Tick,
    /// Respawn a crashed Engine actor once its backoff has passed (`granted`: the restart was
    /// already counted against its intensity; only Docker has to be asked again).
    Respawn {
        name: String,
        granted: bool,
    },
    Snapshot(RpcReplyPort<SupervisorSnapshot>),
    /// Active streams per engine name (from the streams owner); engines not listed have none.
    StreamCounts(BTreeMap<String, u32>),
    /// One more engine within `max_replicas`; answered at `wait`, or why not.
    Provision {
        wait: ProvisionWait,
        reply: RpcReplyPort<Result<EngineView, ProvisionError>>,
    },
    /// Register a callback for engines removed or lost (the Streams actor ends their streams).
    WatchRemovals(RemovalWatcher),
    /// Spawn the Streams actor through `spawn` as a supervised child (respawned the same way,
    /// within the restart intensity, when it dies); answers once it runs.
    SuperviseStreams {
        spawn: ChildSpawner,
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// Register a callback for engines reserved by the stream proxy that turn unhealthy or whose
    /// VPN fails (called once per spell, in the incident's span; the sessions move at once).
    WatchTrouble(RemovalWatcher),
    /// `POST /health/circuit-breaker/reset`: close the creation breaker and lift creation
    /// backoffs; answers the breaker state before the reset.
    ResetBreaker(RpcReplyPort<&'static str>),
    /// `GET /containers/{id}`: a managed engine's container from Docker (`None`: unknown id).
    Inspect {
        id: String,
        reply: RpcReplyPort<Option<ContainerDetail>>,
    },
    /// `GET /by-label`: managed engines whose label `key` is `value`, from Docker.
    ByLabel {
        key: String,
        value: String,
        reply: RpcReplyPort<Vec<ContainerDetail>>,
    },
    /// `DELETE /containers/{id}`: remove a managed engine.
    Delete {
        id: String,
        reply: RpcReplyPort<DeleteOutcome>,
    },
    /// `POST /scale/{demand}`: create engines up to the demand (within the replica bounds) now;
    /// idle ones above it are removed after `idle_grace` as usual.
    Scale {
        demand: u32,
        reply: RpcReplyPort<ScaleOutcome>,
    },
    /// `POST /gc`: run a reconcile now; answers the engines it decided to remove.
    Gc(RpcReplyPort<Vec<String>>),
    /// `GET /vpn/publicip`: `(vpn, ip)` of the first connected VPN, or why not.
    PublicIp(RpcReplyPort<PublicIpResult>),
    /// The stream proxy takes an engine for `content` (not one of `exclude`), atomically:
    /// `None` when no ready engine has room (`proxy.max_streams_per_engine`).
    ReserveEngine {
        content: String,
        exclude: Vec<String>,
        max_per_engine: usize,
        reply: RpcReplyPort<Option<EngineView>>,
    },
    /// The stream proxy no longer plays `content`: its engine is free again.
    ReleaseEngine {
        content: String,
    },
    /// The port hook of the VPN container `vpn` fired; answers whether `vpn` is a configured VPN
    /// (then the VpnMonitor looks at it now).
    PortHook {
        vpn: String,
        reply: RpcReplyPort<bool>,
    },
}

/// Why a provisioning request cannot be served now (the 503 `detail.code` of docs/api.md);
/// decided by
/// `core::provisioning::decide`.
pub use crate::core::provisioning::Refusal as ProvisionError;

/// When a provisioning request is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProvisionWait {
    /// Once Docker reports the new engine's container running, its address known (the earlier
    /// orchestrator's behaviour; proxies call with a short client timeout).
    #[default]
    Created,
    /// Once the new engine's HTTP API answers (`?wait=ready`).
    Ready,
}

/// One engine removed, or about to be (its streams are over).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineRemoved {
    pub name: String,
    pub container_id: Option<String>,
}

/// A callback the Supervisor calls for every engine it removes or loses (the Streams actor casts
/// it to itself). It returns false once its receiver is gone, and is then dropped.
pub struct RemovalWatcher(pub Box<dyn Fn(EngineRemoved) -> bool + Send + 'static>);

/// Spawns a child linked to the Supervisor cell it is given and answers the child's cell. The
/// Supervisor calls it for the first start and for every restart.
pub struct ChildSpawner(
    pub Box<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, String>> + Send + Sync>,
);

impl std::fmt::Debug for ChildSpawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildSpawner")
    }
}

impl std::fmt::Debug for RemovalWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemovalWatcher")
    }
}

/// One managed container as `GET /containers/{id}` shows it (the earlier orchestrator's inspect
/// shape, from Docker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerDetail {
    pub id: String,
    pub name: String,
    pub image: String,
    /// `running` / `exited`.
    pub status: &'static str,
    pub started_at: String,
    pub labels: BTreeMap<String, String>,
}

/// What `DELETE /containers/{id}` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The engine's removal is under way (or already was).
    Removing {
        name: String,
        container_id: Option<String>,
    },
    NotFound,
}

/// What `POST /scale/{demand}` set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleOutcome {
    /// The demand clamped to `[min_replicas, max_replicas]`.
    pub target: u32,
    /// Engines counted toward the pool when asked.
    pub engines: u32,
}

/// Why the VPN's public IP is not known.
pub type PublicIpResult = Result<(String, String), String>;

#[derive(Debug)]
pub enum EngineMsg {
    Start,
    ProbeReady,
    Probe,
    /// A Docker event about container `id` under this engine's name (an event for an older
    /// container of the same name is ignored).
    Docker {
        id: String,
        kind: EventKind,
    },
    Remove,
    /// Rename the container to this name (a lower free one).
    Rename {
        to: String,
    },
}

#[derive(Debug)]
pub enum MonitorMsg {
    Poll,
    Docker(ContainerEvent),
    /// The port hook of this VPN container fired: look at it now and poll it fast for a while.
    PortHook(String),
    Snapshot(RpcReplyPort<VpnUpdate>),
    /// The public IP of the first connected VPN, asked of its control server.
    PublicIp(RpcReplyPort<PublicIpResult>),
    /// The answer to the VpnMonitor's own question for this VPN's public IP (asked in `epoch`).
    PublicIpOf {
        vpn: String,
        epoch: u64,
        ip: Option<String>,
    },
}

#[derive(Debug)]
pub enum NameMsg {
    Seed(Vec<u32>),
    Reserve(RpcReplyPort<u32>),
    /// Reserve the lowest free number below this one, if any (the target of a rename).
    ReserveBelow(u32, RpcReplyPort<Option<u32>>),
    Confirm(u32),
    Release(u32),
    Removing(u32),
    Gone(u32),
    Held(RpcReplyPort<usize>),
}

/// One engine as the API and tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineView {
    pub name: String,
    pub ordinal: u32,
    pub vpn: Option<String>,
    pub vpn_id: Option<String>,
    pub forwarded: bool,
    pub p2p_port: u16,
    pub http_port: u16,
    pub phase: EnginePhase,
    pub container_id: Option<String>,
    pub host: Option<String>,
    pub streams: u32,
    /// The container's labels as created or adopted (empty until known).
    pub labels: BTreeMap<String, String>,
    /// Contents the built-in stream proxy plays on it (never offered as free while > 0).
    pub reserved: u32,
}

impl EngineView {
    pub fn phase_label(&self) -> &'static str {
        match self.phase {
            EnginePhase::Creating => "creating",
            EnginePhase::Starting => "starting",
            EnginePhase::Ready => "ready",
            EnginePhase::Unhealthy { .. } => "unhealthy",
            EnginePhase::Removing => "removing",
        }
    }
}

/// Counts of decisions since start (the metrics and the tests read these).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub vpn_failed: u64,
    pub vpn_recovered: u64,
    pub port_changed: u64,
    pub emergency_entered: u64,
    pub emergency_exited: u64,
    pub outage_entered: u64,
    pub engines_created: u64,
    pub create_failures: u64,
    pub engines_removed: BTreeMap<&'static str, u64>,
    pub engines_lost: u64,
    pub actor_restarts: u64,
    pub restarts_suppressed: u64,
    pub reconciles: u64,
    /// Time to plan and dispatch each reconcile.
    pub reconcile_duration: crate::core::histogram::DurationHistogram,
    /// Names handed out above k+1 with k names held (must stay 0: names stay within live+1).
    pub names_above_bound: u64,
}

impl Counters {
    pub fn removed_total(&self) -> u64 {
        self.engines_removed.values().sum()
    }
}

/// Everything the Supervisor knows, for the API and tests.
#[derive(Clone, Debug)]
pub struct SupervisorSnapshot {
    pub engines: Vec<EngineView>,
    /// The planner's lanes: each VPN's `lane`, or the plain-network lane in mode `none`.
    pub lanes: Vec<VpnView>,
    pub vpns: Vec<VpnStatus>,
    pub emergency: EmergencyState,
    pub counters: Counters,
    pub intensity: Vec<SlotReport>,
    /// Lanes where creation is held back, and until when.
    pub holds: Vec<(String, Instant)>,
    /// The first listing and reconcile are done.
    pub ready: bool,
    /// The last Docker call of the Supervisor failed with this.
    pub docker_error: Option<String>,
    /// The global creation breaker.
    pub breaker: crate::core::breaker::BreakerState,
    /// Provisioning requests waiting for an engine.
    pub pending_provisions: usize,
    /// What a provisioning request would be answered now (`core::provisioning::decide`):
    /// `None` = it would be taken.
    pub provision_block: Option<ProvisionError>,
    /// The last VPN events and emergency transitions, newest first (the dashboard).
    pub incidents: Vec<crate::core::incidents::Incident>,
}

impl SupervisorSnapshot {
    pub fn engines_on(&self, vpn: &str) -> Vec<&EngineView> {
        self.engines
            .iter()
            .filter(|e| e.vpn.as_deref() == Some(vpn))
            .collect()
    }

    pub fn forwarded_on(&self, vpn: &str) -> Vec<&EngineView> {
        self.engines_on(vpn)
            .into_iter()
            .filter(|e| e.forwarded)
            .collect()
    }

    pub fn ready_count(&self) -> usize {
        self.engines
            .iter()
            .filter(|e| e.phase == EnginePhase::Ready)
            .count()
    }
}
