//! The route table: an immutable snapshot of routes and ready backends.
//!
//! The control plane builds a new table for every change and publishes it
//! through [`crate::TableHandle`]; requests read whichever table is current
//! when they pick a backend. Nothing in a table changes after it is built,
//! except the per-backend counters (which belong to the backends, not the
//! table), a split's measurements and weighted sequence (which belong to
//! its `SplitStats`, shared by the tables of one deployment) and the
//! round-robin cursors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, InflightGuard};
use crate::longlived::LongLivedSettings;
use crate::metrics::AppMetrics;
use crate::mode::AppMode;
use crate::pages::ErrorPages;
use crate::router::{AppId, DuplicateRoute, HostMatch, Router};
use crate::split::{Choice, Served, Split, SplitEntry, Version};

/// One immutable snapshot.
#[derive(Debug, Default)]
pub struct RouteTable {
    generation: u64,
    /// How long a request may wait for a ready backend; `None`: the
    /// proxy's default. In the table so a pushed change applies at once.
    hold_timeout: Option<Duration>,
    /// WebSocket/SSE drain settings; `None`: the proxy's defaults.
    long_lived: Option<LongLivedSettings>,
    router: Router,
    /// Indexed by `AppId`; `None` for ids not (or no longer) in use.
    apps: Vec<Option<AppEntry>>,
}

/// How the proxy speaks to an app's instances (`apps.*.upstream`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// HTTP/1.1, one request per pooled connection at a time.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge on a plain connection (gRPC and other
    /// HTTP/2 backends): many streams share one connection. WebSocket and
    /// SSE requests still reach the instance over HTTP/1.1 on the same
    /// port (the takeover path speaks HTTP/1.1).
    H2c,
}

impl UpstreamProtocol {
    /// The config spelling (`http1`, `h2c`).
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
        }
    }
}

/// One app's ready backends and metric handles, its split (a canary) if
/// any, its mode and its error pages.
#[derive(Debug)]
pub struct AppEntry {
    name: Arc<str>,
    backends: Vec<Arc<Backend>>,
    metrics: Arc<AppMetrics>,
    upstream: UpstreamProtocol,
    /// Rotates the starting point of the least-in-flight scan, so ties
    /// (the common case: all idle) spread round-robin.
    cursor: AtomicUsize,
    split: Option<SplitEntry>,
    mode: AppMode,
    error_pages: Option<Arc<ErrorPages>>,
}

impl RouteTable {
    /// Starts an empty table.
    pub fn builder() -> RouteTableBuilder {
        RouteTableBuilder::default()
    }

    /// Bumped by every publish; 0 for a table never published.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// The app a request for `host` + `path` goes to.
    #[inline]
    pub fn route(&self, host: &str, path: &str) -> Option<AppId> {
        self.router.lookup(host, path)
    }

    /// An app by id.
    #[inline]
    pub fn app(&self, id: AppId) -> Option<&AppEntry> {
        self.apps.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Every app in the table.
    pub fn apps(&self) -> impl Iterator<Item = (AppId, &AppEntry)> {
        self.apps
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (AppId(i as u32), e)))
    }

    /// Number of routes.
    pub fn route_count(&self) -> usize {
        self.router.len()
    }

    /// The hold timeout this table sets, if any.
    pub fn hold_timeout(&self) -> Option<Duration> {
        self.hold_timeout
    }

    /// The long-lived connection settings this table sets, if any.
    pub fn long_lived(&self) -> Option<LongLivedSettings> {
        self.long_lived
    }
}

impl AppEntry {
    /// The app's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Ready backends (the stable set when there is a split).
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// The split between the stable backends and a canary, if any.
    pub fn split(&self) -> Option<&Split> {
        self.split.as_ref().map(|s| &s.split)
    }

    /// The app's mode (serving, paused, maintenance).
    pub fn mode(&self) -> &AppMode {
        &self.mode
    }

    /// The app's error pages, if it has any.
    pub fn error_pages(&self) -> Option<&Arc<ErrorPages>> {
        self.error_pages.as_ref()
    }

    /// Metric handles.
    pub fn metrics(&self) -> &Arc<AppMetrics> {
        &self.metrics
    }

    /// How the proxy speaks to this app's instances.
    #[inline]
    pub fn upstream(&self) -> UpstreamProtocol {
        self.upstream
    }

    /// Picks the backend with the fewest requests in flight, skipping the
    /// generations in `exclude` (backends this request already failed on),
    /// and claims it. With a split, a request without a sticky cookie: see
    /// [`AppEntry::choose`].
    ///
    /// Least-in-flight rather than plain round-robin: a deploy briefly runs
    /// instances of unequal speed (a clone warming up, `/slow` requests
    /// piling on one), and in-flight count adapts to that at the cost of one
    /// atomic load per backend. Ties rotate, so idle backends share load
    /// evenly.
    ///
    /// `None` when no backend is left, or the chosen one started draining
    /// (this table is stale): the caller reloads the table and tries again.
    #[inline]
    pub fn pick(&self, exclude: &[u64]) -> Option<InflightGuard> {
        self.choose(exclude, None).map(|choice| choice.claim)
    }

    /// [`AppEntry::pick`] for a request whose sticky cookie's value hashes
    /// to `cookie` (see [`crate::split::sticky::find`]). Without a split:
    /// the least-loaded backend. With one: the set the cookie names (when
    /// the split is sticky and the cookie names one of its tags), else the
    /// set the weight gives this request; when that set has no ready
    /// backend, the other set's. Lock-free and allocation-free.
    #[inline]
    pub fn choose(&self, exclude: &[u64], cookie: Option<u64>) -> Option<Choice> {
        let Some(split) = &self.split else {
            return least_loaded(&self.backends, &self.cursor, exclude).map(|claim| Choice::new(claim, None, false));
        };
        let named = split.named(cookie);
        let first = named.unwrap_or_else(|| split.weighted());
        let set_cookie = split.split.sticky && named.is_none();
        Choice::from_sets(
            first,
            |version| match version {
                Version::Stable => least_loaded(&self.backends, &self.cursor, exclude),
                Version::Canary => least_loaded(split.canary(), &split.canary_cursor, exclude),
            },
            set_cookie,
        )
    }

    /// What the request records about a choice (the set, its measurements
    /// and the cookie); `None` without a split.
    pub(crate) fn served(&self, choice: &Choice) -> Option<Served> {
        let split = self.split.as_ref()?;
        choice
            .version
            .map(|version| Served::new(split, version, choice.set_cookie))
    }
}

/// The least-loaded backend of `backends` not in `exclude`, claimed; ties
/// rotate with `cursor`.
#[inline]
fn least_loaded(backends: &[Arc<Backend>], cursor: &AtomicUsize, exclude: &[u64]) -> Option<InflightGuard> {
    let n = backends.len();
    if n == 0 {
        return None;
    }
    let start = if n == 1 {
        0
    } else {
        cursor.fetch_add(1, Ordering::Relaxed) % n
    };
    let mut best: Option<(&Arc<Backend>, u64)> = None;
    for i in 0..n {
        let backend = &backends[(start + i) % n];
        if exclude.contains(&backend.generation()) {
            continue;
        }
        let load = backend.inflight();
        if best.is_none_or(|(_, least)| load < least) {
            best = Some((backend, load));
        }
    }
    best.and_then(|(backend, _)| backend.try_claim())
}

/// Assembles a [`RouteTable`].
#[derive(Debug, Default)]
pub struct RouteTableBuilder {
    hold_timeout: Option<Duration>,
    long_lived: Option<LongLivedSettings>,
    router: Router,
    apps: Vec<Option<AppEntry>>,
    /// Set apart from `apps` so [`RouteTableBuilder::upstream`] (and the
    /// split, mode and pages) may come before or after
    /// [`RouteTableBuilder::app`].
    upstreams: Vec<(AppId, UpstreamProtocol)>,
    splits: Vec<(AppId, Split)>,
    modes: Vec<(AppId, AppMode)>,
    pages: Vec<(AppId, Arc<ErrorPages>)>,
}

impl RouteTableBuilder {
    /// Adds an app with its ready backends (possibly none: requests for it
    /// are then held until a table gives it one).
    pub fn app(
        &mut self,
        id: AppId,
        name: impl Into<Arc<str>>,
        backends: Vec<Arc<Backend>>,
        metrics: Arc<AppMetrics>,
    ) -> &mut Self {
        let index = id.0 as usize;
        if self.apps.len() <= index {
            self.apps.resize_with(index + 1, || None);
        }
        self.apps[index] = Some(AppEntry {
            name: name.into(),
            backends,
            metrics,
            upstream: UpstreamProtocol::Http1,
            cursor: AtomicUsize::new(0),
            split: None,
            mode: AppMode::Serving,
            error_pages: None,
        });
        self
    }

    /// Splits an app's new requests between its backends (stable) and
    /// `split.canary`. The last call for an app wins; ignored for an id
    /// without [`RouteTableBuilder::app`].
    pub fn split(&mut self, id: AppId, split: Split) -> &mut Self {
        self.splits.push((id, split));
        self
    }

    /// Sets an app's mode (default [`AppMode::Serving`]).
    pub fn mode(&mut self, id: AppId, mode: AppMode) -> &mut Self {
        self.modes.push((id, mode));
        self
    }

    /// Sets the pages of an app's error answers (default: built-in).
    pub fn error_pages(&mut self, id: AppId, pages: Arc<ErrorPages>) -> &mut Self {
        self.pages.push((id, pages));
        self
    }

    /// Sets how the proxy speaks to an app's instances (default:
    /// [`UpstreamProtocol::Http1`]).
    pub fn upstream(&mut self, id: AppId, protocol: UpstreamProtocol) -> &mut Self {
        self.upstreams.push((id, protocol));
        self
    }

    /// Adds a route to an app.
    pub fn route(&mut self, host: HostMatch, path: &str, app: AppId) -> Result<&mut Self, DuplicateRoute> {
        self.router.insert(host, path, app)?;
        Ok(self)
    }

    /// Sets how long requests may wait for a ready backend.
    pub fn hold_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.hold_timeout = Some(timeout);
        self
    }

    /// Sets how WebSocket and SSE connections are closed on drain.
    pub fn long_lived(&mut self, settings: LongLivedSettings) -> &mut Self {
        self.long_lived = Some(settings);
        self
    }

    /// The finished table (generation 0 until published).
    pub fn build(mut self) -> RouteTable {
        for (id, protocol) in self.upstreams {
            if let Some(Some(entry)) = self.apps.get_mut(id.0 as usize) {
                entry.upstream = protocol;
            }
        }
        for (id, split) in self.splits {
            if let Some(Some(entry)) = self.apps.get_mut(id.0 as usize) {
                entry.split = Some(SplitEntry::new(&entry.name, split));
            }
        }
        for (id, mode) in self.modes {
            if let Some(Some(entry)) = self.apps.get_mut(id.0 as usize) {
                entry.mode = mode;
            }
        }
        for (id, pages) in self.pages {
            if let Some(Some(entry)) = self.apps.get_mut(id.0 as usize) {
                entry.error_pages = Some(pages);
            }
        }
        RouteTable {
            generation: 0,
            hold_timeout: self.hold_timeout,
            long_lived: self.long_lived,
            router: self.router,
            apps: self.apps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ProxyMetrics;

    fn entry(backends: Vec<Arc<Backend>>) -> RouteTable {
        let metrics = ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
        let mut b = RouteTable::builder();
        b.app(AppId(0), "web", backends, metrics.app("web"));
        b.route(HostMatch::Any, "/", AppId(0)).unwrap();
        b.build()
    }

    fn backend(port: u16, generation: u64) -> Arc<Backend> {
        Backend::new(([127, 0, 0, 1], port).into(), format!("web-{port}"), generation)
    }

    #[test]
    fn picks_least_inflight() {
        let (a, b) = (backend(1, 1), backend(2, 2));
        let table = entry(vec![a.clone(), b.clone()]);
        let app = table.app(AppId(0)).unwrap();
        let _busy = a.try_claim().unwrap();
        for _ in 0..4 {
            let g = app.pick(&[]).unwrap();
            assert_eq!(g.backend().generation(), 2);
        }
    }

    #[test]
    fn ties_rotate() {
        let table = entry(vec![backend(1, 1), backend(2, 2)]);
        let app = table.app(AppId(0)).unwrap();
        let first = app.pick(&[]).unwrap().backend().generation();
        let second = app.pick(&[]).unwrap().backend().generation();
        assert_ne!(first, second);
    }

    #[test]
    fn skips_excluded_generations() {
        let table = entry(vec![backend(1, 1), backend(2, 2)]);
        let app = table.app(AppId(0)).unwrap();
        for _ in 0..4 {
            assert_eq!(app.pick(&[1]).unwrap().backend().generation(), 2);
        }
        assert!(app.pick(&[1, 2]).is_none());
    }

    #[test]
    fn draining_backend_is_not_picked() {
        let a = backend(1, 1);
        let table = entry(vec![a.clone()]);
        a.start_draining();
        assert!(table.app(AppId(0)).unwrap().pick(&[]).is_none());
        assert_eq!(a.inflight(), 0);
    }

    #[test]
    fn upstream_protocol_is_per_app_in_any_order() {
        let metrics = ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
        let mut b = RouteTable::builder();
        b.upstream(AppId(1), UpstreamProtocol::H2c);
        b.app(AppId(0), "web", vec![], metrics.app("web"));
        b.app(AppId(1), "grpc", vec![], metrics.app("grpc"));
        b.upstream(AppId(7), UpstreamProtocol::H2c); // no such app: ignored
        let table = b.build();
        assert_eq!(table.app(AppId(0)).unwrap().upstream(), UpstreamProtocol::Http1);
        assert_eq!(table.app(AppId(1)).unwrap().upstream(), UpstreamProtocol::H2c);
        assert!(table.app(AppId(7)).is_none());
    }

    #[test]
    fn unknown_app_is_none() {
        let table = entry(vec![]);
        assert!(table.app(AppId(7)).is_none());
        assert!(table.app(AppId(0)).unwrap().pick(&[]).is_none());
    }
}
