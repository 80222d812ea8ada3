//! Progressive delivery in the data plane: an app's traffic split between
//! its stable backends and a second set (the canary), the sticky cookie
//! that keeps a client on the version it was given, and the per-version
//! measurements the canary analysis reads.
//!
//! - [`Split`]: what the control plane puts in a table
//!   ([`crate::RouteTableBuilder::split`]).
//! - [`stats`]: [`SplitStats`], [`VersionStats`], [`VersionSnapshot`].
//! - [`sticky`]: the `cutover-<app>` cookie: read, stripped, set.
//!
//! The pick ([`crate::AppEntry::choose`]) is lock-free and allocation-free:
//! a request without a valid sticky cookie takes the next position in the
//! split's sequence (one relaxed `fetch_add`), and position `p` goes to the
//! canary when `floor((p+1)·w/10000) > floor(p·w/10000)` (Bresenham), so
//! any run of consecutive positions gets the canary share `w` to within one
//! request. When the chosen set has no ready backend the request goes to
//! the other set rather than being held.

pub mod stats;
pub mod sticky;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use http::HeaderValue;
use tokio::time::Instant;

use crate::backend::{Backend, InflightGuard};
pub use crate::mode::AppMode;
pub use crate::pages::ErrorPages;
pub use stats::{SplitStats, VersionSnapshot, VersionStats};

/// The whole share, in basis points.
pub const FULL_WEIGHT_BP: u16 = 10_000;

/// One of the two sets of a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The app's current backends (the table's `backends`).
    Stable,
    /// The second set ([`Split::canary`]).
    Canary,
}

impl Version {
    /// `stable` or `canary` (the access log's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Stable => "stable",
            Version::Canary => "canary",
        }
    }

    fn other(self) -> Version {
        match self {
            Version::Stable => Version::Canary,
            Version::Canary => Version::Stable,
        }
    }

    fn index(self) -> usize {
        match self {
            Version::Stable => 0,
            Version::Canary => 1,
        }
    }
}

/// An app's second set of backends and the share of new requests it gets.
#[derive(Debug, Clone)]
pub struct Split {
    /// The canary's ready backends.
    pub canary: Vec<Arc<Backend>>,
    /// The canary's share of requests without a sticky cookie, in basis
    /// points (0..=10000; more counts as 10000).
    pub weight_bp: u16,
    /// Keep each client on the version it was first given (the
    /// `cutover-<app>` cookie).
    pub sticky: bool,
    /// The stable version's cookie value.
    pub stable_tag: Arc<str>,
    /// The canary version's cookie value.
    pub canary_tag: Arc<str>,
    /// Where the proxy counts each version's answers; keep the same `Arc`
    /// in every table of one deployment (it also carries the weighted
    /// sequence, so the share stays exact across table swaps).
    pub stats: Arc<SplitStats>,
}

/// A [`Split`] as a table carries it: with what the pick needs computed
/// once, when the table is built.
#[derive(Debug)]
pub(crate) struct SplitEntry {
    pub(crate) split: Split,
    weight: u64,
    /// Rotates ties among the canary's backends, as the app's own cursor
    /// does among the stable ones.
    pub(crate) canary_cursor: AtomicUsize,
    /// Hashes of the cookie values naming each version (stable, canary).
    tag_hashes: [u64; 2],
    /// The `Set-Cookie` value for each version (stable, canary).
    set_cookie: [Option<HeaderValue>; 2],
}

impl SplitEntry {
    pub(crate) fn new(app: &str, split: Split) -> SplitEntry {
        let stable = sticky::cookie_value(&split.stable_tag);
        let canary = sticky::cookie_value(&split.canary_tag);
        SplitEntry {
            weight: u64::from(split.weight_bp.min(FULL_WEIGHT_BP)),
            canary_cursor: AtomicUsize::new(0),
            tag_hashes: [sticky::tag_hash(stable.as_bytes()), sticky::tag_hash(canary.as_bytes())],
            set_cookie: [
                sticky::set_cookie(app, &split.stable_tag),
                sticky::set_cookie(app, &split.canary_tag),
            ],
            split,
        }
    }

    /// The version a sticky cookie (its value's hash) names, if any.
    #[inline]
    pub(crate) fn named(&self, cookie: Option<u64>) -> Option<Version> {
        let hash = cookie?;
        if !self.split.sticky {
            return None;
        }
        if hash == self.tag_hashes[0] {
            Some(Version::Stable)
        } else if hash == self.tag_hashes[1] {
            Some(Version::Canary)
        } else {
            None
        }
    }

    /// The version the weight gives the next request.
    #[inline]
    pub(crate) fn weighted(&self) -> Version {
        let full = u64::from(FULL_WEIGHT_BP);
        match self.weight {
            0 => Version::Stable,
            w if w >= full => Version::Canary,
            w => {
                // The pattern repeats every 10000 positions: the modulo
                // keeps the products small and the sequence exact across
                // the wrap.
                let p = self.split.stats.next_position() % full;
                if (p + 1) * w / full > p * w / full {
                    Version::Canary
                } else {
                    Version::Stable
                }
            }
        }
    }

    /// The canary's backends.
    pub(crate) fn canary(&self) -> &[Arc<Backend>] {
        &self.split.canary
    }

    /// The `Set-Cookie` value naming `version`.
    pub(crate) fn set_cookie(&self, version: Version) -> Option<&HeaderValue> {
        self.set_cookie[version.index()].as_ref()
    }
}

/// What a pick claimed: the backend, and for an app with a split, which
/// set it came from and whether the client gets the sticky cookie.
#[derive(Debug)]
pub struct Choice {
    /// The claimed backend.
    pub claim: InflightGuard,
    /// The set the backend belongs to; `None` without a split.
    pub version: Option<Version>,
    /// The client had no valid sticky cookie and the split is sticky: the
    /// answer carries `Set-Cookie` naming `version`.
    pub set_cookie: bool,
}

impl Choice {
    pub(crate) fn new(claim: InflightGuard, version: Option<Version>, set_cookie: bool) -> Choice {
        Choice {
            claim,
            version,
            set_cookie,
        }
    }

    /// `first`'s pick, else the other set's.
    pub(crate) fn from_sets(
        first: Version,
        pick: impl Fn(Version) -> Option<InflightGuard>,
        set_cookie: bool,
    ) -> Option<Choice> {
        if let Some(claim) = pick(first) {
            return Some(Choice::new(claim, Some(first), set_cookie));
        }
        let other = first.other();
        pick(other).map(|claim| Choice::new(claim, Some(other), set_cookie))
    }
}

/// What a request records about the set that served it: for the
/// measurements and the cookie. Lives in the request's context.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) version: Version,
    pub(crate) stats: Arc<SplitStats>,
    pub(crate) set_cookie: Option<HeaderValue>,
    pub(crate) claimed_at: Instant,
}

impl Served {
    pub(crate) fn new(entry: &SplitEntry, version: Version, set_cookie: bool) -> Served {
        Served {
            version,
            stats: Arc::clone(&entry.split.stats),
            set_cookie: set_cookie.then(|| entry.set_cookie(version).cloned()).flatten(),
            claimed_at: Instant::now(),
        }
    }

    /// The backend's response head arrived, with `status`.
    pub(crate) fn answered(&self, status: u16) {
        self.stats.of(self.version).answered(status, self.claimed_at.elapsed());
    }

    /// The connection failed or dropped before a response head.
    pub(crate) fn failed(&self) {
        self.stats.of(self.version).failed_connection();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ProxyMetrics;
    use crate::router::AppId;
    use crate::table::RouteTable;

    fn backend(port: u16, generation: u64) -> Arc<Backend> {
        Backend::new(([127, 0, 0, 1], port).into(), format!("web-{port}"), generation)
    }

    fn split(canary: Vec<Arc<Backend>>, weight_bp: u16, sticky: bool) -> Split {
        Split {
            canary,
            weight_bp,
            sticky,
            stable_tag: "v1".into(),
            canary_tag: "v2".into(),
            stats: SplitStats::new(),
        }
    }

    fn table(stable: Vec<Arc<Backend>>, split: Split) -> RouteTable {
        let metrics = ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
        let mut b = RouteTable::builder();
        b.split(AppId(0), split); // before the app: order does not matter
        b.app(AppId(0), "web", stable, metrics.app("web"));
        b.build()
    }

    fn canary_count(table: &RouteTable, n: usize) -> usize {
        let app = table.app(AppId(0)).unwrap();
        (0..n)
            .filter(|_| app.choose(&[], None).unwrap().version == Some(Version::Canary))
            .count()
    }

    #[test]
    fn the_share_is_exact_over_any_window() {
        for (weight, per_thousand) in [(500, 50), (2500, 250), (5000, 500), (1, 0), (0, 0), (10_000, 1000)] {
            let t = table(vec![backend(1, 1)], split(vec![backend(2, 2)], weight, false));
            // Every window of 1000 consecutive requests, whatever came
            // before it.
            for _ in 0..3 {
                assert_eq!(canary_count(&t, 1000), per_thousand, "weight {weight}");
            }
            // Any shorter window: within one request of the share.
            let got = canary_count(&t, 37) as f64;
            assert!(
                (got - 37.0 * f64::from(weight) / 10_000.0).abs() <= 1.0,
                "weight {weight}: {got}"
            );
        }
    }

    #[test]
    fn the_sequence_carries_over_table_swaps() {
        let stats = SplitStats::new();
        let mut canary = 0;
        for _ in 0..100 {
            // A new table every 5 requests: a 5% canary still gets 5%.
            let mut s = split(vec![backend(2, 2)], 500, false);
            s.stats = Arc::clone(&stats);
            canary += canary_count(&table(vec![backend(1, 1)], s), 5);
        }
        assert_eq!(canary, 25);
    }

    #[test]
    fn an_empty_set_falls_back_to_the_other() {
        let t = table(vec![backend(1, 1)], split(vec![], 10_000, false));
        assert_eq!(canary_count(&t, 10), 0);
        let t = table(vec![], split(vec![backend(2, 2)], 0, false));
        assert_eq!(canary_count(&t, 10), 10);
        // A draining or excluded canary too.
        let c = backend(2, 2);
        let t = table(vec![backend(1, 1)], split(vec![Arc::clone(&c)], 10_000, false));
        let app = t.app(AppId(0)).unwrap();
        assert_eq!(app.choose(&[2], None).unwrap().version, Some(Version::Stable));
        c.start_draining();
        assert_eq!(app.choose(&[], None).unwrap().version, Some(Version::Stable));
        assert!(app.choose(&[1], None).is_none());
    }

    #[test]
    fn a_valid_cookie_wins_over_the_weight_and_is_not_set_again() {
        let t = table(vec![backend(1, 1)], split(vec![backend(2, 2)], 10_000, true));
        let app = t.app(AppId(0)).unwrap();
        let v1 = Some(sticky::tag_hash(b"v1"));
        for _ in 0..5 {
            let c = app.choose(&[], v1).unwrap();
            assert_eq!((c.version, c.set_cookie), (Some(Version::Stable), false));
        }
        // No cookie, or one naming another version: weighted, and set.
        let c = app.choose(&[], None).unwrap();
        assert_eq!((c.version, c.set_cookie), (Some(Version::Canary), true));
        let c = app.choose(&[], Some(sticky::tag_hash(b"v0"))).unwrap();
        assert_eq!((c.version, c.set_cookie), (Some(Version::Canary), true));
        // The cookie's set has no backend left: the other serves, and the
        // client keeps its cookie.
        let c = app.choose(&[1], v1).unwrap();
        assert_eq!((c.version, c.set_cookie), (Some(Version::Canary), false));
        assert_eq!(
            app.served(&app.choose(&[], None).unwrap()).unwrap().set_cookie.unwrap(),
            "cutover-web=v2; Path=/; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn without_sticky_cookies_are_neither_honoured_nor_set() {
        let t = table(vec![backend(1, 1)], split(vec![backend(2, 2)], 10_000, false));
        let app = t.app(AppId(0)).unwrap();
        let c = app.choose(&[], Some(sticky::tag_hash(b"v1"))).unwrap();
        assert_eq!((c.version, c.set_cookie), (Some(Version::Canary), false));
        assert!(app.served(&c).unwrap().set_cookie.is_none());
    }

    #[test]
    fn without_a_split_nothing_is_recorded() {
        let metrics = ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
        let mut b = RouteTable::builder();
        b.app(AppId(0), "web", vec![backend(1, 1)], metrics.app("web"));
        b.split(AppId(3), split(vec![], 0, true)); // no such app: ignored
        let t = b.build();
        let app = t.app(AppId(0)).unwrap();
        let c = app.choose(&[], Some(sticky::tag_hash(b"v1"))).unwrap();
        assert_eq!((c.version, c.set_cookie), (None, false));
        assert!(app.served(&c).is_none() && app.split().is_none());
    }
}
