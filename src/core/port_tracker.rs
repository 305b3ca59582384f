//! Per-VPN forwarded-ports tracking with debounce: turns raw readings of the set of forwarded
//! ports into settled changes of that set.
//!
//! A reading is a [`PortSet`] (Gluetun may forward several ports); the empty set (0, `null`,
//! `[]`) means "not known yet", never "changed to nothing". A new set must be seen for
//! `port_settle` before it becomes a change, so `{p} -> {} -> {p}` is nothing and `{p} -> {} ->
//! {q}` is one change; `{a,b} -> {a}` is a change too, once `{a}` has held for `port_settle`.
//! With no baseline (start, or after `reset` on `Failed`) the first non-empty set becomes the
//! baseline at once, without a change.
//!
//! "Seen for `port_settle`" means: the candidate has been the latest non-empty reading since it
//! was first read. Empty readings in between neither confirm nor cancel it; a reading of the
//! baseline cancels it; a reading of a third set replaces it (and restarts its clock).

use std::time::Duration;
use tokio::time::Instant;

use crate::core::port_set::PortSet;

/// A settled change of the forwarded ports (both sets non-empty and different).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortChange {
    pub old: PortSet,
    pub new: PortSet,
}

impl PortChange {
    /// A change of a single port (tests).
    #[cfg(test)]
    pub fn single(old: u16, new: u16) -> PortChange {
        PortChange {
            old: PortSet::one(old),
            new: PortSet::one(new),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PortTracker {
    settle: Duration,
    baseline: Option<PortSet>,
    /// A set different from the baseline, and when it was first read.
    candidate: Option<(PortSet, Instant)>,
}

impl PortTracker {
    pub fn new(settle: Duration) -> Self {
        PortTracker {
            settle,
            baseline: None,
            candidate: None,
        }
    }

    /// Feeds one reading taken at `now`.
    pub fn observe(&mut self, now: Instant, ports: impl Into<PortSet>) -> Option<PortChange> {
        match ports.into().known() {
            None => {}
            Some(p) => match self.baseline {
                None => {
                    self.baseline = Some(p);
                    self.candidate = None;
                    return None;
                }
                Some(base) if base == p => self.candidate = None,
                Some(_) => match self.candidate {
                    Some((c, _)) if c == p => {}
                    _ => self.candidate = Some((p, now)),
                },
            },
        }
        self.tick(now)
    }

    /// Lets time pass with no reading (a candidate may settle).
    pub fn tick(&mut self, now: Instant) -> Option<PortChange> {
        let (new, since) = self.candidate?;
        let old = self.baseline?;
        if now.saturating_duration_since(since) < self.settle {
            return None;
        }
        self.baseline = Some(new);
        self.candidate = None;
        Some(PortChange { old, new })
    }

    /// Starts from a baseline known before (a restarted owner resuming what it knew).
    pub fn resume(settle: Duration, baseline: PortSet) -> Self {
        PortTracker {
            baseline: baseline.known(),
            ..PortTracker::new(settle)
        }
    }

    /// Forgets the baseline (on `Failed`).
    pub fn reset(&mut self) {
        self.baseline = None;
        self.candidate = None;
    }

    /// The settled ports (empty while none is known).
    pub fn baseline(&self) -> PortSet {
        self.baseline.unwrap_or_default()
    }

    /// When the candidate settles if it keeps being read (its first sighting + `settle`).
    pub fn settles_at(&self) -> Option<Instant> {
        self.candidate.map(|(_, since)| since + self.settle)
    }

    /// A set read but not settled yet.
    pub fn candidate(&self) -> Option<PortSet> {
        self.candidate.map(|(p, _)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SETTLE: Duration = Duration::from_secs(5);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn first_port_becomes_baseline_without_change() {
        let t0 = Instant::now();
        let mut t = PortTracker::new(SETTLE);
        assert_eq!(t.observe(t0, None), None);
        assert_eq!(t.observe(t0, Some(0)), None);
        assert!(t.baseline().is_empty());
        assert_eq!(t.observe(t0 + secs(1), Some(34817)), None);
        assert_eq!(t.baseline(), PortSet::one(34817));
        assert_eq!(t.tick(t0 + secs(100)), None);
    }

    #[test]
    fn zero_is_never_a_change() {
        let t0 = Instant::now();
        let mut t = PortTracker::new(SETTLE);
        t.observe(t0, Some(1000));
        for k in 1..20 {
            assert_eq!(t.observe(t0 + secs(k), Some(0)), None);
            assert_eq!(t.observe(t0 + secs(k), None), None);
        }
        assert_eq!(t.baseline(), PortSet::one(1000));
    }

    #[test]
    fn change_reported_once_after_settle() {
        let t0 = Instant::now();
        let mut t = PortTracker::new(SETTLE);
        t.observe(t0, Some(1000));
        assert_eq!(t.observe(t0 + secs(1), Some(2000)), None);
        assert_eq!(t.candidate(), Some(PortSet::one(2000)));
        assert_eq!(t.settles_at(), Some(t0 + secs(1) + SETTLE));
        assert_eq!(t.observe(t0 + secs(3), Some(2000)), None);
        assert_eq!(t.tick(t0 + secs(5)), None);
        assert_eq!(t.tick(t0 + secs(6)), Some(PortChange::single(1000, 2000)));
        assert_eq!(t.baseline(), PortSet::one(2000));
        assert_eq!(t.tick(t0 + secs(60)), None);
        assert_eq!(t.observe(t0 + secs(61), Some(2000)), None);
    }

    #[test]
    fn settles_through_observe_too() {
        let t0 = Instant::now();
        let mut t = PortTracker::new(SETTLE);
        t.observe(t0, Some(1000));
        t.observe(t0, Some(2000));
        assert_eq!(
            t.observe(t0 + SETTLE, Some(2000)),
            Some(PortChange::single(1000, 2000))
        );
    }

    #[test]
    fn flap_back_to_baseline_cancels_candidate() {
        let t0 = Instant::now();
        let mut t = PortTracker::new(SETTLE);
        t.observe(t0, Some(1000));
        t.observe(t0 + secs(1), Some(2000));
        t.observe(t0 + secs(2), Some(1000));
        assert_eq!(t.candidate(), None);
        assert_eq!(t.tick(t0 + secs(60)), None);
    }

    #[test]
    fn third_port_restarts_the_clock() {
        let t0 = Instant::now();
        let mut t = PortTracker::new(SETTLE);
        t.observe(t0, Some(1000));
        t.observe(t0 + secs(1), Some(2000));
        t.observe(t0 + secs(4), Some(3000));
        assert_eq!(t.tick(t0 + secs(8)), None);
        assert_eq!(t.tick(t0 + secs(9)), Some(PortChange::single(1000, 3000)));
    }

    #[test]
    fn zeros_do_not_cancel_a_candidate() {
        // p -> 0 -> q: q settles while the readings go back to 0.
        let t0 = Instant::now();
        let mut t = PortTracker::new(SETTLE);
        t.observe(t0, Some(1000));
        t.observe(t0 + secs(1), Some(0));
        t.observe(t0 + secs(2), Some(2000));
        t.observe(t0 + secs(3), Some(0));
        assert_eq!(
            t.observe(t0 + secs(7), None),
            Some(PortChange::single(1000, 2000))
        );
    }

    #[test]
    fn reset_forgets_baseline_and_candidate() {
        let t0 = Instant::now();
        let mut t = PortTracker::new(SETTLE);
        t.observe(t0, Some(55747));
        t.observe(t0, Some(1));
        t.reset();
        assert!(t.baseline().is_empty());
        assert_eq!(t.candidate(), None);
        assert_eq!(t.tick(t0 + secs(100)), None);
        // After a reset, the first port is the new baseline without a change.
        assert_eq!(t.observe(t0 + secs(101), Some(34817)), None);
        assert_eq!(t.baseline(), PortSet::one(34817));
    }

    #[test]
    fn a_set_that_shrinks_or_grows_is_one_change_after_settle_and_order_is_no_change() {
        let t0 = Instant::now();
        let mut t = PortTracker::new(SETTLE);
        t.observe(t0, PortSet::new([5678, 9876]));
        assert_eq!(t.observe(t0, PortSet::new([9876, 5678])), None);
        assert_eq!(t.candidate(), None, "the same set in another order");
        assert_eq!(t.observe(t0 + secs(1), PortSet::one(5678)), None);
        assert_eq!(t.observe(t0 + secs(2), PortSet::EMPTY), None);
        assert_eq!(
            t.tick(t0 + secs(6)),
            Some(PortChange {
                old: PortSet::new([5678, 9876]),
                new: PortSet::one(5678)
            })
        );
        t.observe(t0 + secs(7), PortSet::new([5678, 1111]));
        assert_eq!(t.settles_at(), Some(t0 + secs(7) + SETTLE));
        assert_eq!(
            t.observe(t0 + secs(12), PortSet::new([1111, 5678])),
            Some(PortChange {
                old: PortSet::one(5678),
                new: PortSet::new([1111, 5678])
            })
        );
    }

    #[test]
    fn zero_settle_reports_immediately() {
        let t0 = Instant::now();
        let mut t = PortTracker::new(Duration::ZERO);
        t.observe(t0, Some(1));
        assert_eq!(t.observe(t0, Some(2)), Some(PortChange::single(1, 2)));
    }

    /// One step: time passes (ms), then a reading or a tick.
    #[derive(Clone, Debug)]
    enum Step {
        Read(u64, PortSet),
        Tick(u64),
    }

    fn zeros(max_gap_ms: u64) -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                (0..max_gap_ms, prop_oneof![Just(None), Just(Some(0u16))])
                    .prop_map(|(d, p)| Step::Read(d, PortSet::from(p))),
                (0..max_gap_ms).prop_map(Step::Tick),
            ],
            0..20,
        )
    }

    fn run(t: &mut PortTracker, now: &mut Instant, steps: &[Step]) -> Vec<PortChange> {
        let mut out = Vec::new();
        for s in steps {
            let change = match *s {
                Step::Read(d, p) => {
                    *now += Duration::from_millis(d);
                    t.observe(*now, p)
                }
                Step::Tick(d) => {
                    *now += Duration::from_millis(d);
                    t.tick(*now)
                }
            };
            out.extend(change);
        }
        out
    }

    proptest! {
        #[test]
        fn p_zero_p_never_reports(
            p in 1u16..,
            before in zeros(20_000),
            middle in zeros(20_000),
            after in zeros(20_000),
        ) {
            let mut now = Instant::now();
            let mut t = PortTracker::new(SETTLE);
            let mut changes = run(&mut t, &mut now, &before);
            changes.extend(t.observe(now, Some(p)));
            changes.extend(run(&mut t, &mut now, &middle));
            changes.extend(t.observe(now, Some(p)));
            changes.extend(run(&mut t, &mut now, &after));
            prop_assert!(changes.is_empty(), "{changes:?}");
            prop_assert_eq!(t.baseline(), PortSet::one(p));
        }

        #[test]
        fn p_zero_q_reports_exactly_one_change(
            p in 1u16..,
            q in 1u16..,
            middle in zeros(20_000),
            after in zeros(20_000),
        ) {
            prop_assume!(p != q);
            let mut now = Instant::now();
            let mut t = PortTracker::new(SETTLE);
            let mut changes: Vec<PortChange> = t.observe(now, Some(p)).into_iter().collect();
            changes.extend(run(&mut t, &mut now, &middle));
            changes.extend(t.observe(now, Some(q)));
            changes.extend(run(&mut t, &mut now, &after));
            // Whatever the interleaving, once settle has passed the change is reported.
            now += SETTLE;
            changes.extend(t.tick(now));
            prop_assert_eq!(changes, vec![PortChange::single(p, q)]);
            prop_assert_eq!(t.baseline(), PortSet::one(q));
        }

        /// Random readings of sets over a small port alphabet (zero to three ports, zeros
        /// included): every change is preceded by at least `settle` of its set being the latest
        /// non-empty reading, and each change needs a new set (never two changes to the same set
        /// in a row, the old set of one the new set of the previous).
        #[test]
        fn changes_respect_settle_and_need_a_new_value(
            steps in proptest::collection::vec(
                prop_oneof![
                    (0u64..4_000, proptest::collection::vec(0u16..4, 0..4))
                        .prop_map(|(d, p)| Step::Read(d, PortSet::new(p))),
                    (0u64..4_000).prop_map(Step::Tick),
                ],
                0..60,
            ),
        ) {
            let mut now = Instant::now();
            let mut t = PortTracker::new(SETTLE);
            // (set, since) of the latest non-empty reading run.
            let mut latest: Option<(PortSet, Instant)> = None;
            let mut last_new: Option<PortSet> = None;
            for s in &steps {
                let change = match *s {
                    Step::Read(d, p) => {
                        now += Duration::from_millis(d);
                        if !p.is_empty() && latest.map(|(l, _)| l) != Some(p) {
                            latest = Some((p, now));
                        }
                        t.observe(now, p)
                    }
                    Step::Tick(d) => {
                        now += Duration::from_millis(d);
                        t.tick(now)
                    }
                };
                if let Some(c) = change {
                    prop_assert_ne!(c.old, c.new);
                    prop_assert!(!c.new.is_empty() && !c.old.is_empty());
                    let (l, since) = latest.unwrap();
                    prop_assert_eq!(l, c.new);
                    prop_assert!(now - since >= SETTLE, "reported before settle");
                    prop_assert_ne!(Some(c.new), last_new, "two changes to the same value");
                    prop_assert_eq!(Some(c.old), last_new.or(Some(c.old)));
                    last_new = Some(c.new);
                }
                // The baseline is always the latest non-empty reading or an older one.
                prop_assert!(latest.is_none() || !t.baseline().is_empty());
            }
        }
    }
}
