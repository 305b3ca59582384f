//! Per-VPN forwarded-port tracking with debounce: turns raw port readings into settled changes.
//!
//! 0 / `None` means "not known yet", never "changed to 0". A new port must be seen for
//! `port_settle` before it becomes a change, so `p -> 0 -> p` is nothing and `p -> 0 -> q` is one
//! change. With no baseline (start, or after `reset` on `Failed`) the first port becomes the
//! baseline at once, without a change.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortChange {
    pub old: u16,
    pub new: u16,
}

#[derive(Clone, Debug)]
pub struct PortTracker {}

impl PortTracker {
    pub fn new(settle: Duration) -> Self {
        let _ = settle;
        todo!("cores helper")
    }

    /// Feeds one reading taken at `now`.
    pub fn observe(&mut self, now: Instant, port: Option<u16>) -> Option<PortChange> {
        let _ = (now, port);
        todo!()
    }

    /// Lets time pass with no reading (a candidate may settle).
    pub fn tick(&mut self, now: Instant) -> Option<PortChange> {
        let _ = now;
        todo!()
    }

    /// Forgets the baseline (on `Failed`).
    pub fn reset(&mut self) {
        todo!()
    }

    /// The settled port.
    pub fn baseline(&self) -> Option<u16> {
        todo!()
    }
}
