//! Per-version measurements of a split: what the canary analysis reads.
//!
//! Counted on the request path with a few relaxed atomic adds, and only
//! for requests the split routed (the [`SplitStats`] lives in the
//! [`super::Split`], so once a table without the split is published
//! nothing new is counted). The controller takes a [`VersionSnapshot`]
//! at a step's start and compares later snapshots against it
//! ([`VersionSnapshot::since`]).
//!
//! Latency is the time from claiming a backend to its response head (time
//! to first byte): it measures the backend, not the client's download
//! speed, and it is defined for WebSocket, SSE and gRPC as well.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Latency buckets per doubling: upper bounds are `2^(1/8)` apart, so a
/// p99 read from them is at most ~9% above the true value.
const PER_OCTAVE: usize = 8;
/// Doublings covered above [`FIRST_BOUND_NS`]: the last bound is 25 µs ×
/// 2^(23 - 1/8) ≈ 192 s.
const OCTAVES: usize = 23;
/// Finite buckets; one more counts everything above the last bound.
const FINITE: usize = PER_OCTAVE * OCTAVES;
/// Every bucket, the overflow one included.
pub const BUCKETS: usize = FINITE + 1;
/// The first bucket's upper bound: 25 µs.
const FIRST_BOUND_NS: u64 = 25_000;
/// `2^(j/8)` for j in 0..8, in 1/1_000_000.
const STEPS: [u64; PER_OCTAVE] = [
    1_000_000, 1_090_508, 1_189_207, 1_296_840, 1_414_214, 1_542_211, 1_681_793, 1_834_008,
];

/// Upper bounds of the finite buckets, in nanoseconds.
static BOUNDS_NS: [u64; FINITE] = bounds();

const fn bounds() -> [u64; FINITE] {
    let mut out = [0u64; FINITE];
    let mut k = 0;
    while k < FINITE {
        let octave = FIRST_BOUND_NS << (k / PER_OCTAVE);
        out[k] = octave / 1_000_000 * STEPS[k % PER_OCTAVE] + octave % 1_000_000 * STEPS[k % PER_OCTAVE] / 1_000_000;
        k += 1;
    }
    out
}

/// The bucket a latency falls in: the first whose upper bound is at least
/// it.
fn bucket(latency: Duration) -> usize {
    let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    BOUNDS_NS.partition_point(|&bound| bound < ns)
}

/// The upper bound of bucket `index` (the overflow bucket reports the last
/// finite bound: "at least this").
pub fn bucket_bound(index: usize) -> Duration {
    Duration::from_nanos(BOUNDS_NS[index.min(FINITE - 1)])
}

/// The two versions' measurements of one split. Shared (`Arc`) between
/// the tables that carry the split and the controller that reads them.
#[derive(Debug, Default)]
pub struct SplitStats {
    stable: VersionStats,
    canary: VersionStats,
    /// Requests the weight has placed so far: the weighted choice's
    /// position. Here rather than in the table so the share stays exact
    /// across table swaps (a swap for an unrelated change would otherwise
    /// restart the sequence, and a 5% canary would get nothing if tables
    /// changed every few requests).
    sequence: AtomicU64,
}

impl SplitStats {
    /// Fresh measurements, all zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The stable version's measurements.
    pub fn stable(&self) -> &VersionStats {
        &self.stable
    }

    /// The canary version's measurements.
    pub fn canary(&self) -> &VersionStats {
        &self.canary
    }

    /// The version's measurements.
    pub fn of(&self, version: super::Version) -> &VersionStats {
        match version {
            super::Version::Stable => &self.stable,
            super::Version::Canary => &self.canary,
        }
    }

    /// Takes the next position in the weighted sequence.
    #[inline]
    pub(crate) fn next_position(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }
}

/// One version's counters and latency histogram (atomics only).
#[derive(Debug)]
pub struct VersionStats {
    requests: AtomicU64,
    server_errors: AtomicU64,
    connect_failures: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for VersionStats {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl VersionStats {
    /// Counts a response head from one of this version's backends, its
    /// status and how long after the claim it came.
    #[inline]
    pub fn answered(&self, status: u16, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if (500..600).contains(&status) {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[bucket(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed connection: the connect failed, or the connection
    /// dropped (or timed out) before a response head.
    #[inline]
    pub fn failed_connection(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now. Each counter is read on its own, so a snapshot
    /// taken while requests run may be off by the requests in between.
    pub fn snapshot(&self) -> VersionSnapshot {
        VersionSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            latency: self.latency.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
        }
    }
}

/// A version's counters at one moment (or, after
/// [`VersionSnapshot::since`], over an interval).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionSnapshot {
    /// Response heads from the version's backends.
    pub requests: u64,
    /// Of those, 5xx answers.
    pub server_errors: u64,
    /// Connections that failed or dropped before a response head.
    pub connect_failures: u64,
    /// Answers per latency bucket ([`bucket_bound`] gives each one's upper
    /// bound); empty in a `Default` snapshot (all zero).
    pub latency: Vec<u64>,
}

impl VersionSnapshot {
    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &VersionSnapshot) -> VersionSnapshot {
        let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
        let len = self.latency.len().max(earlier.latency.len());
        VersionSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            server_errors: self.server_errors.saturating_sub(earlier.server_errors),
            connect_failures: self.connect_failures.saturating_sub(earlier.connect_failures),
            latency: (0..len)
                .map(|i| at(&self.latency, i).saturating_sub(at(&earlier.latency, i)))
                .collect(),
        }
    }

    /// (5xx answers + failed connections) / answers; 0 without any answer
    /// (a version whose connections all fail has no answers: the
    /// analysis's `min_requests` is what keeps such a step from passing).
    /// More than 1 when connections failed more often than heads came.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.server_errors.saturating_add(self.connect_failures) as f64 / self.requests as f64
    }

    /// The 99th percentile latency, as the upper bound of its bucket;
    /// `None` without any answer.
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }

    /// The `q` quantile (0..=1) of latency, as the upper bound of its
    /// bucket; `None` without any answer.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the sample at quantile q, 1-based, at least 1.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (i, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_bound(i));
            }
        }
        Some(bucket_bound(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_log_spaced_and_increasing() {
        assert_eq!(BOUNDS_NS[0], 25_000);
        assert_eq!(BOUNDS_NS[PER_OCTAVE], 50_000);
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        for w in BOUNDS_NS.windows(2) {
            let ratio = w[1] as f64 / w[0] as f64;
            assert!((ratio - 2f64.powf(1.0 / 8.0)).abs() < 1e-3, "{ratio}");
        }
        assert!(bucket_bound(FINITE - 1) > Duration::from_secs(100));
    }

    #[test]
    fn a_latency_lands_in_the_first_bucket_bounding_it() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_micros(25)), 0);
        assert_eq!(bucket(Duration::from_nanos(25_001)), 1);
        assert_eq!(bucket(Duration::from_secs(3600)), FINITE);
        let b = bucket(Duration::from_millis(300));
        assert!(bucket_bound(b) >= Duration::from_millis(300));
        assert!(bucket_bound(b - 1) < Duration::from_millis(300));
    }

    #[test]
    fn p99_is_the_bucket_upper_bound() {
        let stats = VersionStats::default();
        assert_eq!(stats.snapshot().p99(), None);
        for _ in 0..98 {
            stats.answered(200, Duration::from_millis(1));
        }
        stats.answered(200, Duration::from_millis(500));
        stats.answered(200, Duration::from_millis(500));
        let p99 = stats.snapshot().p99().unwrap();
        assert!(
            p99 >= Duration::from_millis(500) && p99 < Duration::from_millis(550),
            "{p99:?}"
        );
        let p50 = stats.snapshot().quantile(0.5).unwrap();
        assert!(
            p50 >= Duration::from_millis(1) && p50 < Duration::from_micros(1100),
            "{p50:?}"
        );
    }

    #[test]
    fn since_and_error_rate() {
        let stats = VersionStats::default();
        stats.answered(200, Duration::from_millis(1));
        let start = stats.snapshot();
        assert_eq!(VersionSnapshot::default().error_rate(), 0.0);
        for _ in 0..8 {
            stats.answered(200, Duration::from_millis(1));
        }
        stats.answered(503, Duration::from_millis(1));
        stats.answered(500, Duration::from_millis(1));
        stats.failed_connection();
        let step = stats.snapshot().since(&start);
        assert_eq!((step.requests, step.server_errors, step.connect_failures), (10, 2, 1));
        assert!((step.error_rate() - 0.3).abs() < 1e-9);
        assert_eq!(step.latency.iter().sum::<u64>(), 10);
        // From a default (empty) snapshot: everything.
        assert_eq!(stats.snapshot().since(&VersionSnapshot::default()).requests, 11);
        // No answer at all: 0 (the contract; min_requests gates a step).
        let only_failed = VersionSnapshot {
            connect_failures: 3,
            ..VersionSnapshot::default()
        };
        assert_eq!(only_failed.error_rate(), 0.0);
    }
}
