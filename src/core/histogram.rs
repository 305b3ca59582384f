//! The reconcile duration histogram: counted by value inside the Supervisor's counters (no shared
//! state between actors) and rendered at scrape time by `metrics`. Plain data, so the snapshot
//! that carries it and the renderer that reads it both depend on core and not on each other.

use std::time::Duration;

/// Upper bounds (seconds) of the reconcile duration buckets: 100 µs to 1 s.
pub const RECONCILE_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
];

/// A latency histogram kept by value inside the Supervisor's counters (no shared state between
/// actors), rendered at scrape time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationHistogram {
    /// Observations per bucket of [`RECONCILE_BUCKETS`] (not cumulative), plus one for `+Inf`.
    buckets: [u64; RECONCILE_BUCKETS.len() + 1],
    count: u64,
    sum_nanos: u64,
}

impl Default for DurationHistogram {
    fn default() -> Self {
        DurationHistogram {
            buckets: [0; RECONCILE_BUCKETS.len() + 1],
            count: 0,
            sum_nanos: 0,
        }
    }
}

impl DurationHistogram {
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = RECONCILE_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(RECONCILE_BUCKETS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_nanos = self
            .sum_nanos
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_nanos)
    }

    /// Each bucket's upper bound (seconds, the last `+Inf`) with its observations (not
    /// cumulative), as the exposition format wants them.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        RECONCILE_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().copied())
    }
}
