//! The global creation breaker: after `threshold` engine creations fail in a row, creation stops
//! (open) for a cool-down; then one probe creation is let through (half-open); its success closes
//! the breaker, its failure opens it again for twice as long (capped). Stops acevisor from
//! hammering a Docker daemon that keeps refusing.

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
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// May a creation start now? In half-open, exactly one (the probe) may.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    /// Closes the breaker by hand (an operator's reset), as a success would.
    pub fn reset(&mut self) {
        self.success();
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.cooldown = self.base;
        self.state = BreakerState::Closed;
    }

    pub fn failure(&mut self, now: Instant) {
        match self.state {
            BreakerState::HalfOpen => {
                self.cooldown = (self.cooldown * 2).min(self.cap);
                self.state = BreakerState::Open {
                    until: now + self.cooldown,
                };
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
            let mut b = Breaker::new(3, 5 * S, 40 * S);
            let mut in_flight_probe = false;
            for (op, dt) in ops {
                now += Duration::from_secs(dt);
                match op {
                    0 => {
                        let was_half = matches!(b.state(), BreakerState::Open { .. });
                        let allowed = b.allow(now);
                        if was_half && allowed {
                            prop_assert!(!in_flight_probe);
                            in_flight_probe = true;
                        }
                        if b.state() == BreakerState::HalfOpen && !was_half {
                            prop_assert!(!allowed, "a second creation in half-open");
                        }
                    }
                    1 => { b.success(); in_flight_probe = false; }
                    _ => { b.failure(now); if !matches!(b.state(), BreakerState::HalfOpen) { in_flight_probe = false; } }
                }
                if let BreakerState::Open { until } = b.state() {
                    prop_assert!(until <= now + 40 * S, "cool-down capped");
                }
            }
        }
    }
}
