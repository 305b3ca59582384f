//! `reconcile`: from the desired state and the facts, the actions that move toward it.
//!
//! Owns the forwarded-engine invariant (BEHAVIOR.md): for each Up VPN with known port P there is
//! exactly one live forwarded engine whose recorded P2P port is P. Port events are only triggers;
//! this function decides from the facts alone, so a stale "old port" can never delete a fresh
//! forwarded engine.

use std::time::Duration;
use tokio::time::Instant;

use crate::config::EmergencyCapacity;
use crate::core::model::{EngineFact, VpnView};
use crate::core::ports::EnginePorts;

/// Everything `reconcile` decides from.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    pub now: Instant,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub min_free: u32,
    pub idle_grace: Duration,
    pub unhealthy_grace: Duration,
    pub emergency_capacity: EmergencyCapacity,
    /// Every configured lane (VPN, or the plain network in mode `none`), in config order.
    pub lanes: &'a [VpnView],
    /// Every engine acevisor knows, including creations under way.
    pub engines: &'a [EngineFact],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemoveReason {
    /// Its VPN failed: the engine is dead or stranded.
    VpnFailed,
    /// Attached to a previous container of its VPN (recreated or restarted).
    Stale,
    /// A forwarded engine whose P2P port is no longer the VPN's port (its replacement is ready).
    PortMismatch,
    /// Idle above the replica floors for longer than `idle_grace`.
    Surplus,
    /// Unhealthy beyond `unhealthy_grace` (its replacement is ready).
    Unhealthy,
    /// Its VPN is not in the config any more.
    UnknownVpn,
}

impl RemoveReason {
    pub fn label(&self) -> &'static str {
        match self {
            RemoveReason::VpnFailed => "vpn_failed",
            RemoveReason::Stale => "stale",
            RemoveReason::PortMismatch => "port_mismatch",
            RemoveReason::Surplus => "surplus",
            RemoveReason::Unhealthy => "unhealthy",
            RemoveReason::UnknownVpn => "unknown_vpn",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create an engine on `vpn` with these ports (for a forwarded engine, `ports.p2p` is the
    /// VPN's forwarded port).
    Create { vpn: Option<String>, vpn_id: Option<String>, forwarded: bool, ports: EnginePorts },
    Remove { name: String, reason: RemoveReason },
}

/// The actions that move the facts toward the desired state.
pub fn reconcile(input: &PlanInput<'_>) -> Vec<Action> {
    let _ = input;
    Vec::new()
}
