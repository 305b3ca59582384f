//! Restart intensity, as in OTP: at most `max_restarts` restarts of one slot within
//! `restart_window`; past that the slot backs off exponentially instead of looping.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    BackOff { until: Instant },
}

/// What `/health/status` shows of one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotReport {
    pub slot: String,
    pub restarts_in_window: u32,
    pub backing_off_until: Option<Instant>,
}

#[derive(Clone, Debug)]
pub struct Intensity {}

impl Intensity {
    pub fn new(max_restarts: u32, window: Duration) -> Self {
        let _ = (max_restarts, window);
        todo!("cores helper")
    }

    /// Asks to restart `slot` at `now`; an allowed restart is recorded.
    pub fn request(&mut self, slot: &str, now: Instant) -> Verdict {
        let _ = (slot, now);
        todo!()
    }

    pub fn report(&self, now: Instant) -> Vec<SlotReport> {
        let _ = now;
        todo!()
    }
}
