//! The emergency-mode state machine over all VPNs: Normal / Emergency / Outage, re-evaluated from
//! fresh facts every time (never from a stale cache).

use tokio::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmergencyState {
    /// No VPN failed.
    Normal,
    /// Some VPNs failed while others are Up.
    Emergency { failed: Vec<String>, healthy: Vec<String>, since: Instant },
    /// VPNs failed and none is Up: nothing can be served.
    Outage { failed: Vec<String>, since: Instant },
}

impl EmergencyState {
    pub fn label(&self) -> &'static str {
        match self {
            EmergencyState::Normal => "normal",
            EmergencyState::Emergency { .. } => "emergency",
            EmergencyState::Outage { .. } => "outage",
        }
    }
}

/// The facts of one VPN the machine needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VpnHealth {
    pub name: String,
    /// `Failed` emitted, no `Recovered` yet.
    pub failed: bool,
    pub up: bool,
}

/// A change of state (kind, or the set of failed VPNs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: EmergencyState,
    pub to: EmergencyState,
}

#[derive(Clone, Debug)]
pub struct Emergency {}

impl Emergency {
    pub fn new() -> Self {
        todo!("cores helper")
    }

    pub fn state(&self) -> &EmergencyState {
        todo!()
    }

    /// Re-evaluates from the fresh facts of every VPN; `Some` only when the state changed.
    pub fn update(&mut self, now: Instant, vpns: &[VpnHealth]) -> Option<Transition> {
        let _ = (now, vpns);
        todo!()
    }
}

impl Default for Emergency {
    fn default() -> Self {
        Emergency::new()
    }
}
