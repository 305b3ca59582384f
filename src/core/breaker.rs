//! The global creation breaker: after `threshold` engine creations fail in a row, creation stops
//! (open) for a cool-down; then one probe creation is let through (half-open); its success closes
//! the breaker, its failure opens it again for twice as long (capped). Stops acevisor from
//! hammering a Docker daemon that keeps refusing. A probe that ends with neither (its name could
//! not be reserved, its actor died before reporting) is given up after `probe_timeout`, and the
//! next creation is the new probe: half-open never lasts forever.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe creation is under way.
    HalfOpen,
}

impl BreakerState {
    pub fn label(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Breaker {
    threshold: u32,
    base: Duration,
    cap: Duration,
    failures: u32,
    cooldown: Duration,
    state: BreakerState,
    probe_timeout: Duration,
    /// While half-open: when the probe under way counts as lost.
    probe_deadline: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, base: Duration, cap: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            base,
            cap: cap.max(base),
            failures: 0,
            cooldown: base,
            state: BreakerState::Closed,
            probe_timeout: Duration::from_secs(60),
            probe_deadline: None,
        }
    }

    /// How long a half-open probe may go without an outcome before another one is let through.
    pub fn with_probe_timeout(mut self, probe_timeout: Duration) -> Self {
        self.probe_timeout = probe_timeout;
        self
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Would `allow` let a creation start now? (Asks without taking the probe.)
    pub fn permits(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until } => now >= until,
            BreakerState::HalfOpen => self.probe_deadline.is_some_and(|d| now >= d),
        }
    }

    /// May a creation start now? In half-open, exactly one (the probe) may, and another only
    /// once that one is lost (no outcome within `probe_timeout`).
    pub fn allow(&mut self, now: Instant) -> bool {
        if !self.permits(now) {
            return false;
        }
        if self.state != BreakerState::Closed {
            self.state = BreakerState::HalfOpen;
            self.probe_deadline = Some(now + self.probe_timeout);
        }
        true
    }

    /// Closes the breaker by hand (an operator's reset), as a success would.
    pub fn reset(&mut self) {
        self.success();
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.cooldown = self.base;
        self.state = BreakerState::Closed;
        self.probe_deadline = None;
    }

    pub fn failure(&mut self, now: Instant) {
        match self.state {
            BreakerState::HalfOpen => {
                self.cooldown = (self.cooldown * 2).min(self.cap);
                self.state = BreakerState::Open {
                    until: now + self.cooldown,
                };
                self.probe_deadline = None;
            }
            BreakerState::Closed => {
                self.failures += 1;
                if self.failures >= self.threshold {
                    self.state = BreakerState::Open {
                        until: now + self.cooldown,
                    };
                }
            }
            BreakerState::Open { .. } => {}
        }
    }

    /// Seconds until a creation may be tried again (0 when closed).
    pub fn retry_after(&self, now: Instant) -> u64 {
        match self.state {
            BreakerState::Open { until } => until.saturating_duration_since(now).as_secs().max(1),
            BreakerState::HalfOpen => 1,
            BreakerState::Closed => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn opens_after_threshold_then_half_opens_with_one_probe() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, 10 * S, 60 * S);
        for _ in 0..2 {
            assert!(b.allow(t0));
            b.failure(t0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure(t0);
        assert_eq!(b.state(), BreakerState::Open { until: t0 + 10 * S });
        assert!(!b.allow(t0 + 9 * S));
        assert!(b.allow(t0 + 10 * S), "the probe");
        assert!(!b.allow(t0 + 10 * S), "only one probe");
        b.failure(t0 + 11 * S);
        assert_eq!(
            b.state(),
            BreakerState::Open { until: t0 + 31 * S },
            "cool-down doubled"
        );
        assert!(b.allow(t0 + 31 * S));
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow(t0 + 31 * S) && b.allow(t0 + 31 * S));
    }

    #[test]
    fn a_probe_without_an_outcome_is_given_up_after_its_timeout() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, 10 * S, 60 * S).with_probe_timeout(30 * S);
        b.failure(t0);
        assert!(b.allow(t0 + 10 * S), "the probe");
        // The probe is lost: no success, no failure ever comes.
        assert!(!b.permits(t0 + 39 * S) && !b.allow(t0 + 39 * S));
        assert!(
            b.allow(t0 + 40 * S),
            "a new probe once the first is given up"
        );
        assert!(!b.allow(t0 + 41 * S), "still one at a time");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn permits_asks_without_taking_the_probe() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, 10 * S, 60 * S);
        b.failure(t0);
        assert!(b.permits(t0 + 10 * S) && b.permits(t0 + 10 * S));
        assert!(b.allow(t0 + 10 * S));
        assert!(!b.permits(t0 + 10 * S));
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, S, S);
        b.failure(t0);
        b.success();
        b.failure(t0);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    proptest! {
        #[test]
        fn at_most_one_probe_while_not_closed(ops in proptest::collection::vec((0u8..3, 0u64..30), 1..60)) {
            let mut now = Instant::now();
            let mut b = Breaker::new(3, 5 * S, 40 * S).with_probe_timeout(45 * S);
            // When the probe under way was let through (None: none under way).
            let mut in_flight_probe: Option<Instant> = None;
            for (op, dt) in ops {
                now += Duration::from_secs(dt);
                match op {
                    0 => {
                        let before = b.state();
                        let allowed = b.allow(now);
                        if allowed && before != BreakerState::Closed {
                            if let Some(at) = in_flight_probe {
                                prop_assert!(now >= at + 45 * S, "a second probe before the first was given up");
                            }
                            in_flight_probe = Some(now);
                        }
                    }
                    1 => { b.success(); in_flight_probe = None; }
                    _ => { b.failure(now); if !matches!(b.state(), BreakerState::HalfOpen) { in_flight_probe = None; } }
                }
                if let BreakerState::Open { until } = b.state() {
                    prop_assert!(until <= now + 40 * S, "cool-down capped");
                }
            }
        }
    }
}
