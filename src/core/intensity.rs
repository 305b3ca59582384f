//! Restart intensity, as in OTP: at most `max_restarts` restarts of one slot within
//! `restart_window`; past that the slot backs off exponentially instead of looping.
//!
//! Exactly, per slot, for `request(slot, now)`:
//! - Restarts older than `window` are forgotten (the window is `(now - window, now]`).
//! - While a backoff runs (`now < until`), the answer is `BackOff { until }` with the same `until`:
//!   asking again never lengthens it.
//! - Otherwise, with fewer than `max_restarts` restarts in the window, the restart is allowed and
//!   recorded. This also holds right after a backoff expired: an expired backoff is no permission
//!   by itself, the window must have room.
//! - Otherwise it is denied with a new backoff of `base * 2^k`, capped at `cap`, where `k` counts
//!   the denials of the current streak (0 for the first). The streak is forgotten once a whole
//!   `window` has passed since the last backoff ended, so a slot that has calmed down starts again
//!   from `base`.
//!
//! Defaults (`new`): `base = window / max_restarts`, at least 1 s (the pace at which the window
//! refills on average), and `cap = window` (a slot never waits longer than a full window between
//! two attempts; at least `base`).

use std::collections::{BTreeMap, VecDeque};
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

#[derive(Clone, Debug, Default)]
struct Slot {
    /// Allowed restarts, oldest first, all within the window after pruning.
    restarts: VecDeque<Instant>,
    /// End of the last backoff (kept after it expired, to know when the streak may be forgotten).
    backoff_until: Option<Instant>,
    /// Denials in the current streak.
    denials: u32,
}

#[derive(Clone, Debug)]
pub struct Intensity {
    max_restarts: u32,
    window: Duration,
    base: Duration,
    cap: Duration,
    slots: BTreeMap<String, Slot>,
}

impl Intensity {
    pub fn new(max_restarts: u32, window: Duration) -> Self {
        let base = (window / max_restarts.max(1)).max(Duration::from_secs(1));
        Intensity::with_backoff(max_restarts, window, base, window.max(base))
    }

    /// Like `new` with an explicit first backoff `base` and ceiling `cap`.
    pub fn with_backoff(
        max_restarts: u32,
        window: Duration,
        base: Duration,
        cap: Duration,
    ) -> Self {
        Intensity {
            max_restarts,
            window,
            base,
            cap,
            slots: BTreeMap::new(),
        }
    }

    /// Asks to restart `slot` at `now`; an allowed restart is recorded.
    pub fn request(&mut self, slot: &str, now: Instant) -> Verdict {
        let window = self.window;
        let s = self.slots.entry(slot.to_string()).or_default();
        while s
            .restarts
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            s.restarts.pop_front();
        }
        if let Some(until) = s.backoff_until {
            if now < until {
                return Verdict::BackOff { until };
            }
            if now.saturating_duration_since(until) >= window {
                s.backoff_until = None;
                s.denials = 0;
            }
        }
        if (s.restarts.len() as u32) < self.max_restarts {
            s.restarts.push_back(now);
            return Verdict::Allow;
        }
        let delay = backoff_delay(self.base, self.cap, s.denials);
        s.denials = s.denials.saturating_add(1);
        let until = now + delay;
        s.backoff_until = Some(until);
        Verdict::BackOff { until }
    }

    /// Slots with restarts in the window or a running backoff, by slot name.
    pub fn report(&self, now: Instant) -> Vec<SlotReport> {
        self.slots
            .iter()
            .filter_map(|(name, s)| {
                let restarts_in_window = s
                    .restarts
                    .iter()
                    .filter(|&&t| now.saturating_duration_since(t) < self.window)
                    .count() as u32;
                let backing_off_until = s.backoff_until.filter(|&until| now < until);
                (restarts_in_window > 0 || backing_off_until.is_some()).then(|| SlotReport {
                    slot: name.clone(),
                    restarts_in_window,
                    backing_off_until,
                })
            })
            .collect()
    }

    /// Drops a slot's history (its engine was removed for good, not replaced).
    pub fn forget(&mut self, slot: &str) {
        self.slots.remove(slot);
    }
}

/// `base * 2^denials`, capped at `cap` (and without overflow for long streaks).
fn backoff_delay(base: Duration, cap: Duration, denials: u32) -> Duration {
    let factor = 1u32.checked_shl(denials).unwrap_or(u32::MAX);
    base.checked_mul(factor).map_or(cap, |d| d.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_backoff_parameters() {
        let i = Intensity::new(3, secs(60));
        assert_eq!((i.base, i.cap), (secs(20), secs(60)));
        let i = Intensity::new(10, secs(1));
        assert_eq!(
            (i.base, i.cap),
            (secs(1), secs(1)),
            "base at least 1 s, cap at least base"
        );
        let i = Intensity::new(0, secs(30));
        assert_eq!((i.base, i.cap), (secs(30), secs(30)));
    }

    #[test]
    fn allows_max_restarts_then_backs_off() {
        let t0 = Instant::now();
        let mut i = Intensity::new(3, secs(60));
        for k in 0..3 {
            assert_eq!(i.request("acestream-1", t0 + secs(k)), Verdict::Allow);
        }
        let until = t0 + secs(3) + secs(20);
        assert_eq!(
            i.request("acestream-1", t0 + secs(3)),
            Verdict::BackOff { until }
        );
        // Asking again during the backoff does not lengthen it.
        for k in 4..23 {
            assert_eq!(
                i.request("acestream-1", t0 + secs(k)),
                Verdict::BackOff { until }
            );
        }
        // Another slot is unaffected.
        assert_eq!(i.request("acestream-2", t0 + secs(4)), Verdict::Allow);
    }

    #[test]
    fn backoff_doubles_per_consecutive_denial_up_to_cap() {
        let t0 = Instant::now();
        let mut i = Intensity::with_backoff(1, secs(1000), secs(10), secs(50));
        assert_eq!(i.request("s", t0), Verdict::Allow);
        let mut now = t0 + secs(1);
        let mut delays = Vec::new();
        for _ in 0..6 {
            match i.request("s", now) {
                Verdict::BackOff { until } => {
                    delays.push((until - now).as_secs());
                    now = until; // ask again exactly when it expires
                }
                Verdict::Allow => panic!("window is full"),
            }
        }
        assert_eq!(delays, vec![10, 20, 40, 50, 50, 50]);
    }

    #[test]
    fn expired_backoff_allows_only_if_the_window_has_room() {
        let t0 = Instant::now();
        let mut i = Intensity::new(2, secs(60)); // base 30 s
        i.request("s", t0);
        i.request("s", t0 + secs(10));
        assert_eq!(
            i.request("s", t0 + secs(20)),
            Verdict::BackOff {
                until: t0 + secs(50)
            }
        );
        // At 50 s the restarts at 0 and 10 are still in the window: denied, doubled (capped).
        assert_eq!(
            i.request("s", t0 + secs(50)),
            Verdict::BackOff {
                until: t0 + secs(110)
            }
        );
        // At 110 s both are out of the window.
        assert_eq!(i.request("s", t0 + secs(110)), Verdict::Allow);
    }

    #[test]
    fn streak_forgotten_after_a_calm_window() {
        let t0 = Instant::now();
        let mut i = Intensity::with_backoff(1, secs(10), secs(2), secs(100));
        i.request("s", t0);
        assert_eq!(
            i.request("s", t0 + secs(1)),
            Verdict::BackOff {
                until: t0 + secs(3)
            }
        );
        assert_eq!(
            i.request("s", t0 + secs(3)),
            Verdict::BackOff {
                until: t0 + secs(7)
            }
        );
        // Window has room at 10 s; the streak is still remembered (backoff ended 3 s ago).
        assert_eq!(i.request("s", t0 + secs(10)), Verdict::Allow);
        assert_eq!(
            i.request("s", t0 + secs(11)),
            Verdict::BackOff {
                until: t0 + secs(19)
            }
        );
        // Calm for a full window after the backoff ended at 19 s: back to base.
        assert_eq!(i.request("s", t0 + secs(29)), Verdict::Allow);
        assert_eq!(
            i.request("s", t0 + secs(30)),
            Verdict::BackOff {
                until: t0 + secs(32)
            }
        );
    }

    #[test]
    fn zero_max_restarts_never_allows() {
        let t0 = Instant::now();
        let mut i = Intensity::new(0, secs(30));
        assert!(matches!(i.request("s", t0), Verdict::BackOff { .. }));
        assert!(matches!(
            i.request("s", t0 + secs(3600)),
            Verdict::BackOff { .. }
        ));
    }

    #[test]
    fn report_lists_active_slots() {
        let t0 = Instant::now();
        let mut i = Intensity::new(2, secs(60));
        i.request("b", t0);
        i.request("a", t0);
        i.request("a", t0 + secs(1));
        i.request("a", t0 + secs(2)); // backs off until 32 s
        assert_eq!(
            i.report(t0 + secs(5)),
            vec![
                SlotReport {
                    slot: "a".into(),
                    restarts_in_window: 2,
                    backing_off_until: Some(t0 + secs(32)),
                },
                SlotReport {
                    slot: "b".into(),
                    restarts_in_window: 1,
                    backing_off_until: None
                },
            ]
        );
        assert_eq!(
            i.report(t0 + secs(60)),
            vec![SlotReport {
                slot: "a".into(),
                restarts_in_window: 1,
                backing_off_until: None
            }]
        );
        assert_eq!(i.report(t0 + secs(61)), vec![]);
        i.forget("a");
        assert_eq!(i.request("a", t0 + secs(2)), Verdict::Allow);
    }

    #[test]
    fn backoff_delay_never_overflows() {
        assert_eq!(backoff_delay(secs(1), secs(60), 0), secs(1));
        assert_eq!(backoff_delay(secs(1), secs(60), 5), secs(32));
        assert_eq!(backoff_delay(secs(1), secs(60), 31), secs(60));
        assert_eq!(backoff_delay(secs(1), secs(60), u32::MAX), secs(60));
        assert_eq!(backoff_delay(Duration::MAX, secs(60), 3), secs(60));
    }

    fn params() -> impl Strategy<Value = (u32, u64, u64, u64)> {
        // max_restarts, window ms, base ms, cap ms
        (1u32..5, 1_000u64..60_000, 100u64..10_000, 100u64..120_000)
    }

    /// (slot, ms since the previous request)
    fn requests() -> impl Strategy<Value = Vec<(usize, u64)>> {
        proptest::collection::vec((0usize..3, 0u64..20_000), 0..120)
    }

    proptest! {
        #[test]
        fn never_more_than_max_in_any_window((max, window, base, cap) in params(), reqs in requests()) {
            let window = Duration::from_millis(window);
            let mut i = Intensity::with_backoff(
                max, window, Duration::from_millis(base), Duration::from_millis(cap));
            let mut now = Instant::now();
            let mut allowed: Vec<Vec<Instant>> = vec![Vec::new(); 3];
            let mut backoff: Vec<Option<Instant>> = vec![None; 3];
            for (slot, dt) in reqs {
                now += Duration::from_millis(dt);
                match i.request(&format!("s{slot}"), now) {
                    Verdict::Allow => {
                        if let Some(u) = backoff[slot] {
                            prop_assert!(now >= u, "allowed during a backoff");
                        }
                        allowed[slot].push(now);
                    }
                    Verdict::BackOff { until } => {
                        prop_assert!(until > now);
                        if let Some(u) = backoff[slot].filter(|&u| now < u) {
                            prop_assert_eq!(until, u, "backoff changed while running");
                        }
                        backoff[slot] = Some(until);
                    }
                }
            }
            for times in &allowed {
                for (k, &start) in times.iter().enumerate() {
                    let in_window = times[k..].iter().take_while(|&&t| t - start < window).count();
                    prop_assert!(in_window <= max as usize, "{in_window} allows within a window");
                }
            }
        }

        #[test]
        fn slots_are_independent((max, window, base, cap) in params(), reqs in requests()) {
            let make = || Intensity::with_backoff(
                max,
                Duration::from_millis(window),
                Duration::from_millis(base),
                Duration::from_millis(cap),
            );
            let t0 = Instant::now();
            let mut shared = make();
            let mut alone: Vec<Intensity> = (0..3).map(|_| make()).collect();
            let mut now = t0;
            for (slot, dt) in reqs {
                now += Duration::from_millis(dt);
                let name = format!("s{slot}");
                prop_assert_eq!(shared.request(&name, now), alone[slot].request(&name, now));
            }
            let mut separate: Vec<SlotReport> =
                alone.iter().flat_map(|i| i.report(now)).collect();
            separate.sort_by(|a, b| a.slot.cmp(&b.slot));
            prop_assert_eq!(shared.report(now), separate);
        }

        /// A slot requesting once per window never backs off.
        #[test]
        fn a_calm_slot_is_always_allowed(max in 1u32..5, window in 1_000u64..60_000, n in 1usize..30) {
            let window = Duration::from_millis(window);
            let mut i = Intensity::new(max, window);
            let mut now = Instant::now();
            for _ in 0..n {
                prop_assert_eq!(i.request("s", now), Verdict::Allow);
                now += window;
            }
        }
    }
}
