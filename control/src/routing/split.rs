//! The canary split as the control plane keeps it, and [`Traffic`] on the
//! route table: a `cutover_proxy::Split` per app, measured by the proxy's
//! `SplitStats`.

use std::sync::{Arc, Mutex};

use cutover_proxy::{AppId, RouteTableBuilder, Split, SplitStats, VersionSnapshot};

use super::Routing;
use crate::deploy::canary::traffic::{Measure, Measurements, Pair, SplitEnd, Traffic};
use crate::supervisor::instance::Instance;

/// An app's canary set while a canary deployment walks its steps.
#[derive(Clone)]
pub struct CanarySet {
    /// The new version's instances (only the ready ones enter a table).
    pub instances: Vec<Arc<Instance>>,
    /// Their share of new requests, in basis points.
    pub weight_bp: u16,
    /// Clients keep the set they were first given (cookie).
    pub sticky: bool,
    /// Cookie values: the stable and the new version.
    pub tags: (Arc<str>, Arc<str>),
    /// What the proxy measures of both sets; kept across weight changes.
    pub stats: Arc<SplitStats>,
}

/// Adds `app`'s split to the table being built: the ready canaries, their
/// weight and the shared counters.
pub(super) fn add_split(builder: &mut RouteTableBuilder, id: AppId, _app: &str, canary: &CanarySet) {
    let backends = canary
        .instances
        .iter()
        .filter_map(|i| i.state().ready_backend().cloned())
        .collect();
    builder.split(
        id,
        Split {
            canary: backends,
            weight_bp: canary.weight_bp.min(10_000),
            sticky: canary.sticky,
            stable_tag: Arc::clone(&canary.tags.0),
            canary_tag: Arc::clone(&canary.tags.1),
            stats: Arc::clone(&canary.stats),
        },
    );
}

impl Traffic for Routing {
    fn set_split(
        &self,
        app: &str,
        canaries: &[Arc<Instance>],
        weight_bp: u16,
        sticky: bool,
    ) -> Result<Arc<dyn Measure>, String> {
        // Same canaries: a new weight on the same counters.
        let same = self.canary(app).filter(|c| {
            c.instances.len() == canaries.len() && c.instances.iter().zip(canaries).all(|(a, b)| Arc::ptr_eq(a, b))
        });
        let version = |set: &[Arc<Instance>]| -> Arc<str> {
            set.first()
                .map_or_else(|| "none".into(), |i| i.spec().app.version().into())
        };
        let set = match same {
            Some(set) => CanarySet {
                weight_bp,
                sticky,
                ..set
            },
            None => CanarySet {
                instances: canaries.to_vec(),
                weight_bp,
                sticky,
                // The canary's tag is its first instance's name, never
                // reused: a redeploy of the same version (same `version()`)
                // still gets two distinct tags, and a cookie from an earlier
                // canary names neither set and is re-issued.
                tags: (
                    version(&self.serving(app)),
                    canaries.first().map_or_else(|| "none".into(), |i| Arc::from(i.name())),
                ),
                stats: SplitStats::new(),
            },
        };
        let stats = Arc::clone(&set.stats);
        self.set_canary(app, Some(set), None);
        Ok(Arc::new(SplitMeasure::new(stats)))
    }

    fn end_split(&self, app: &str, keep: SplitEnd) -> u64 {
        match keep {
            SplitEnd::Stable => self.set_canary(app, None, None),
            SplitEnd::Canary(canaries) => self.set_canary(app, None, Some(canaries)),
        }
    }
}

/// Windows over one split's counters.
struct SplitMeasure {
    stats: Arc<SplitStats>,
    mark: Mutex<(VersionSnapshot, VersionSnapshot)>,
}

impl SplitMeasure {
    fn new(stats: Arc<SplitStats>) -> Self {
        let mark = (stats.stable().snapshot(), stats.canary().snapshot());
        Self {
            stats,
            mark: Mutex::new(mark),
        }
    }
}

impl Measure for SplitMeasure {
    fn mark(&self) {
        *self.mark.lock().unwrap_or_else(|e| e.into_inner()) =
            (self.stats.stable().snapshot(), self.stats.canary().snapshot());
    }

    fn read(&self) -> Pair {
        let (stable, canary) = self.mark.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Pair {
            stable: measurements(&self.stats.stable().snapshot().since(&stable)),
            canary: measurements(&self.stats.canary().snapshot().since(&canary)),
        }
    }
}

fn measurements(s: &VersionSnapshot) -> Measurements {
    Measurements {
        requests: s.requests,
        server_errors: s.server_errors,
        connect_failures: s.connect_failures,
        p99: s.p99(),
    }
}
