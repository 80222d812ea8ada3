//! The seam between the canary strategy and the data plane: how the
//! controller sends a share of an app's traffic to its canaries, and how
//! it reads what the proxy measured of each set.
//!
//! The real implementation is [`crate::routing::Routing`] (a split in the
//! route table, measured by the proxy); tests drive the strategy with a
//! fake.

use std::sync::Arc;
use std::time::Duration;

use crate::supervisor::instance::Instance;

/// What the proxy measured of one set of an app's instances over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measurements {
    /// Requests answered.
    pub requests: u64,
    /// Answers with a 5xx status from the backend.
    pub server_errors: u64,
    /// Connections to a backend of the set that failed.
    pub connect_failures: u64,
    /// 99th percentile of the answers' latency; `None` without any.
    pub p99: Option<Duration>,
}

impl Measurements {
    /// Failures (5xx answers and failed connections) over attempts
    /// (answers and failed connections), so a version that refuses every
    /// connection is at 100%, not at 0; 0 without any attempt.
    pub fn error_rate(&self) -> f64 {
        let failures = self.server_errors.saturating_add(self.connect_failures);
        let attempts = self.requests.saturating_add(self.connect_failures);
        if attempts == 0 {
            return 0.0;
        }
        failures as f64 / attempts as f64
    }
}

/// Both sets of a split over the same window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pair {
    /// The version that served before the deployment.
    pub stable: Measurements,
    /// The new version.
    pub canary: Measurements,
}

/// The measurements of one split.
pub trait Measure: Send + Sync {
    /// Starts a new window: later reads count from now.
    fn mark(&self);
    /// Both sets since the last mark (since the split began without one).
    fn read(&self) -> Pair;
}

/// Which set serves once a split ends.
#[derive(Debug, Clone)]
pub enum SplitEnd {
    /// The canaries leave the table; the stable set serves alone.
    Stable,
    /// These canaries serve alone: they become the app's serving set.
    Canary(Vec<Arc<Instance>>),
}

/// Changes the share of an app's traffic its canaries get. Each call is
/// one table swap.
pub trait Traffic: Send + Sync {
    /// Sends `weight_bp` basis points (0..=10000) of `app`'s new requests
    /// (and, with `sticky`, of its new clients) to `canaries`, the rest to
    /// the app's serving set. A later call with the same canaries changes
    /// the weight and keeps measuring on the same counters. Fails when the
    /// data plane cannot split (nothing changed then).
    fn set_split(
        &self,
        app: &str,
        canaries: &[Arc<Instance>],
        weight_bp: u16,
        sticky: bool,
    ) -> Result<Arc<dyn Measure>, String>;

    /// Ends `app`'s split (if any) in one table swap; `keep` says which
    /// set serves from then on. Returns the route table generation.
    fn end_split(&self, app: &str, keep: SplitEnd) -> u64;
}
