//! The per-VPN state machine of the VpnMonitor: turns observations over time into the typed
//! events `Failed` / `Recovered` / `PortChanged` (BEHAVIOR.md "The VpnMonitor's events").

use std::time::Duration;
use tokio::time::Instant;

use crate::core::model::Readiness;
use crate::core::port_tracker::PortChange;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailCause {
    /// die / stop / destroy / new ID / new StartedAt: the namespace died, act at once.
    ContainerGone,
    /// Tunnel down inside a running container for longer than `tunnel_grace`.
    TunnelDown,
}

impl FailCause {
    pub fn label(&self) -> &'static str {
        match self {
            FailCause::ContainerGone => "container_gone",
            FailCause::TunnelDown => "tunnel_down",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VpnEvent {
    Failed { cause: FailCause },
    Recovered { forwarded_port: Option<u16> },
    PortChanged(PortChange),
}

/// One look at a VPN: its container identity and derived readiness (raw port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub container_id: Option<String>,
    pub started_at: Option<String>,
    pub readiness: Readiness,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchTimings {
    pub port_settle: Duration,
    pub tunnel_grace: Duration,
    /// `None` = wait for the port forever.
    pub port_wait: Option<Duration>,
    /// `None` = never force a restart.
    pub force_restart_after: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct VpnWatch {}

impl VpnWatch {
    pub fn new(timings: WatchTimings) -> Self {
        let _ = timings;
        todo!("cores helper")
    }

    /// Feeds one observation taken at `now`; returns the events it causes, in order.
    pub fn observe(&mut self, now: Instant, obs: Observation) -> Vec<VpnEvent> {
        let _ = (now, obs);
        todo!()
    }

    /// Lets time pass (tunnel grace may expire, a port candidate may settle).
    pub fn tick(&mut self, now: Instant) -> Vec<VpnEvent> {
        let _ = now;
        todo!()
    }

    /// Readiness as the planner sees it: for `Up`, the *settled* port.
    pub fn readiness(&self) -> Readiness {
        todo!()
    }

    /// A `Failed` was emitted and no `Recovered` since.
    pub fn failed(&self) -> bool {
        todo!()
    }

    /// Container ID last observed.
    pub fn container_id(&self) -> Option<&str> {
        todo!()
    }

    /// Up without a settled port for at least `port_wait`.
    pub fn port_wait_expired(&self, now: Instant) -> bool {
        let _ = now;
        todo!()
    }

    /// True once per outage, when the VPN has been Down for `force_restart_after`.
    pub fn take_force_restart(&mut self, now: Instant) -> bool {
        let _ = now;
        todo!()
    }
}
