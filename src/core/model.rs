//! Facts the pure decision cores reason about: VPN views and engines as acevisor knows them.
//!
//! These are plain data; the actors gather them, the cores decide on them.

use tokio::time::Instant;

use crate::core::port_set::PortSet;
use crate::core::ports::PortRange;

/// Readiness of one VPN, derived from Docker and the control server (docs/behavior.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Container missing or not running.
    Down,
    /// Running, but Docker health `starting` or the control server not answering yet.
    Starting,
    /// Running, but the tunnel is down (Docker `unhealthy` or control server not `running`).
    Degraded,
    /// The control server refused our key (401): a configuration error.
    Misconfigured,
    /// Running, healthy, tunnel up. `forwarded_ports` is empty until a non-zero port is known.
    Up { forwarded_ports: PortSet },
}

impl Readiness {
    /// `Up` with these forwarded ports (`None`, `Some(p)`, a `PortSet`, ...).
    pub fn up(ports: impl Into<PortSet>) -> Readiness {
        Readiness::Up {
            forwarded_ports: ports.into(),
        }
    }

    /// The forwarded ports when `Up` (empty otherwise).
    pub fn ports(&self) -> PortSet {
        match self {
            Readiness::Up { forwarded_ports } => *forwarded_ports,
            _ => PortSet::EMPTY,
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self, Readiness::Up { .. })
    }

    pub fn label(&self) -> &'static str {
        match self {
            Readiness::Down => "down",
            Readiness::Starting => "starting",
            Readiness::Degraded => "degraded",
            Readiness::Misconfigured => "misconfigured",
            Readiness::Up { .. } => "up",
        }
    }
}

/// What the planner knows about one lane: a VPN, or the plain network in mode `none`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VpnView {
    /// VPN container name; `None` for the plain-network lane of mode `none`.
    pub name: Option<String>,
    /// Current container ID of the VPN (engines attached to another ID are stale).
    pub container_id: Option<String>,
    /// `StartedAt` of that container (a restart in place strands every engine attached before).
    pub started_at: Option<String>,
    /// Readiness; for `Up`, the ports are the settled (debounced) forwarded ports.
    pub readiness: Readiness,
    /// A `Failed` was emitted and no `Recovered` yet: its engines are dead or stranded.
    pub failed: bool,
    /// This VPN has a forwarded port (config `forwarding`).
    pub forwarding: bool,
    /// Up long enough without a port that ordinary engines may be placed (config `port_wait`).
    pub port_wait_expired: bool,
    /// Ports this lane's engines take their blocks from.
    pub engine_ports: PortRange,
}

impl VpnView {
    /// The lowest settled forwarded port, when the VPN is Up and has one.
    pub fn forwarded_port(&self) -> Option<u16> {
        self.readiness.ports().first()
    }

    /// Every settled forwarded port (empty unless Up with known ports).
    pub fn forwarded_ports(&self) -> PortSet {
        self.readiness.ports()
    }

    pub fn key(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// Where an engine is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnginePhase {
    /// Name claimed, container being created (not yet known to Docker, or not started).
    Creating,
    /// Container runs; its HTTP API has not answered yet.
    Starting,
    /// HTTP API answered; serves streams.
    Ready,
    /// Failed `failure_threshold` probes in a row since `since`.
    Unhealthy { since: Instant },
    /// Removal under way.
    Removing,
}

/// One engine as acevisor knows it (from labels plus its own observations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineFact {
    pub name: String,
    pub ordinal: u32,
    /// VPN container name, `None` in mode `none`.
    pub vpn: Option<String>,
    /// VPN container ID the engine was attached to.
    pub vpn_id: Option<String>,
    /// The VPN container's `StartedAt` when the engine was attached.
    pub vpn_started_at: Option<String>,
    pub forwarded: bool,
    pub p2p_port: u16,
    /// First port of the engine's port block (its HTTP port).
    pub http_port: u16,
    pub phase: EnginePhase,
    /// Active streams on this engine.
    pub streams: u32,
    /// When the engine last became idle (no streams); `None` while busy.
    pub idle_since: Option<Instant>,
    /// Made from an earlier engine template (its `config_hash` label differs): to be rolled.
    pub outdated: bool,
}

impl EngineFact {
    pub fn vpn_key(&self) -> &str {
        self.vpn.as_deref().unwrap_or("")
    }

    /// Still counts toward capacity (not unhealthy, not being removed).
    pub fn counts(&self) -> bool {
        matches!(
            self.phase,
            EnginePhase::Creating | EnginePhase::Starting | EnginePhase::Ready
        )
    }
}
