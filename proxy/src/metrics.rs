//! The data plane's Prometheus metrics.
//!
//! Label handles are resolved once per app ([`AppMetrics`], carried in the
//! route table), so the request path only increments atomics: no label hash
//! and no lock per request.
//!
//! Every family is present from start-up (SPEC §6): [`ProxyMetrics::app`]
//! creates each app's series at 0, and `cutover_long_lived_connections`
//! reports each serving instance × kind at 0 (see [`LongLivedFamily`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

use crate::longlived::{CloseReason, Kind};

/// Status codes with a pre-resolvable counter slot: 100..=599.
const CODES: usize = 500;

/// The code whose series every app has from the start, so the request rate
/// reads 0 before the first request.
const FIRST_CODE: u16 = 200;

/// Every `kind` label: the takeover's kinds ([`Kind`]) and gRPC calls.
const KINDS: [&str; 3] = ["websocket", "sse", crate::grpc::KIND];

/// Every `reason` label.
const REASONS: [CloseReason; 7] = [
    CloseReason::Drain,
    CloseReason::Shutdown,
    CloseReason::Upgrade,
    CloseReason::Client,
    CloseReason::Backend,
    CloseReason::Idle,
    CloseReason::Error,
];

/// Fails to compile when a kind or reason is added without being listed
/// above (the series at 0 would be missing for it).
const _: fn(Kind, CloseReason) = |kind, reason| {
    match kind {
        Kind::WebSocket | Kind::Sse => debug_assert!(KINDS.contains(&kind.as_str())),
    }
    match reason {
        CloseReason::Drain
        | CloseReason::Shutdown
        | CloseReason::Upgrade
        | CloseReason::Client
        | CloseReason::Backend
        | CloseReason::Idle
        | CloseReason::Error => {}
    }
};

/// Every metric family the data plane owns.
#[derive(Clone)]
pub struct ProxyMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    connect_errors: IntCounterVec,
    retries: IntCounterVec,
    held: IntGaugeVec,
    long_lived: LongLivedFamily,
    long_lived_closed: IntCounterVec,
}

impl ProxyMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        // 0.5 ms doubling up to ~32 s: fits both a proxy's own overhead and
        // a slow upstream.
        let buckets = exponential_buckets(0.0005, 2.0, 17)?;
        let metrics = Self {
            requests: IntCounterVec::new(
                Opts::new("cutover_requests_total", "Requests answered, by app and status code."),
                &["app", "code"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "cutover_request_duration_seconds",
                    "Time from request start to the end of the response, by app.",
                )
                .buckets(buckets),
                &["app"],
            )?,
            connect_errors: IntCounterVec::new(
                Opts::new(
                    "cutover_upstream_connect_errors_total",
                    "Failed connection attempts to an app's instances.",
                ),
                &["app"],
            )?,
            retries: IntCounterVec::new(
                Opts::new("cutover_retries_total", "Requests retried on another backend."),
                &["app"],
            )?,
            held: IntGaugeVec::new(
                Opts::new(
                    "cutover_held_requests",
                    "Requests waiting for a ready backend right now.",
                ),
                &["app"],
            )?,
            long_lived: LongLivedFamily::new()?,
            long_lived_closed: IntCounterVec::new(
                Opts::new(
                    "cutover_long_lived_closed_total",
                    "Closed WebSocket and SSE connections and gRPC calls, by app, kind and why they closed.",
                ),
                &["app", "kind", "reason"],
            )?,
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.connect_errors.clone()))?;
        registry.register(Box::new(metrics.retries.clone()))?;
        registry.register(Box::new(metrics.held.clone()))?;
        registry.register(Box::new(metrics.long_lived.clone()))?;
        registry.register(Box::new(metrics.long_lived_closed.clone()))?;
        Ok(metrics)
    }

    /// Label handles for one app, its series created at 0. Call once per
    /// app and keep the `Arc`.
    pub fn app(&self, app: &str) -> Arc<AppMetrics> {
        let metrics = self.handles(app);
        metrics.ensure_code(FIRST_CODE);
        for kind in KINDS {
            for reason in REASONS {
                self.long_lived_closed.with_label_values(&[app, kind, reason.as_str()]);
            }
        }
        metrics
    }

    fn handles(&self, app: &str) -> Arc<AppMetrics> {
        Arc::new(AppMetrics {
            app: app.into(),
            requests: self.requests.clone(),
            by_code: (0..CODES).map(|_| OnceLock::new()).collect(),
            duration: self.duration.with_label_values(&[app]),
            connect_errors: self.connect_errors.with_label_values(&[app]),
            retries: self.retries.with_label_values(&[app]),
            held: self.held.with_label_values(&[app]),
        })
    }

    /// Handles for requests that matched no route (`app=""`); its series
    /// appear with the first such request.
    pub fn unrouted(&self) -> Arc<AppMetrics> {
        self.handles("")
    }

    /// The instances serving `app` now: each one's
    /// `cutover_long_lived_connections` series reads 0 until it has a
    /// connection. Instances no longer named keep their series only while
    /// connections to them remain.
    pub fn serving_instances(&self, app: &str, instances: Vec<String>) {
        self.long_lived.serving(app, instances);
    }

    /// Deletes every series of an app that is gone, so the series count
    /// stays bounded however often apps come and go.
    pub fn remove_app(&self, app: &str) {
        let _ = self.duration.remove_label_values(&[app]);
        let _ = self.connect_errors.remove_label_values(&[app]);
        let _ = self.retries.remove_label_values(&[app]);
        let _ = self.held.remove_label_values(&[app]);
        for code in 100..600u16 {
            let _ = self.requests.remove_label_values(&[app, &code.to_string()]);
        }
        for kind in KINDS {
            for reason in REASONS {
                let _ = self
                    .long_lived_closed
                    .remove_label_values(&[app, kind, reason.as_str()]);
            }
        }
        self.long_lived.forget(app);
    }
}

impl ProxyMetrics {
    /// Counts an open long-lived connection until [`LongLivedMetric::closed`]
    /// (or drop, counted as `error`).
    pub fn long_lived_opened(&self, app: &str, instance: &str, kind: &'static str) -> LongLivedMetric {
        self.long_lived.opened(app, instance, kind);
        // Only the two handles it needs: it lives as long as the
        // connection, and thousands of those may be open.
        LongLivedMetric {
            open: Arc::clone(&self.long_lived.open),
            closed_total: self.long_lived_closed.clone(),
            labels: [app.to_string(), instance.to_string()],
            kind,
            reason: None,
        }
    }
}

/// One open long-lived connection in the metrics.
pub struct LongLivedMetric {
    open: OpenCounts,
    closed_total: IntCounterVec,
    labels: [String; 2],
    kind: &'static str,
    reason: Option<&'static str>,
}

impl LongLivedMetric {
    /// Records why the connection closed.
    pub fn closed(&mut self, reason: &'static str) {
        self.reason = Some(reason);
    }
}

impl Drop for LongLivedMetric {
    fn drop(&mut self) {
        let [app, instance] = &self.labels;
        count_closed(&self.open, app, instance, self.kind);
        self.closed_total
            .with_label_values(&[app.as_str(), self.kind, self.reason.unwrap_or("error")])
            .inc();
    }
}

/// Open long-lived connections per (app, instance, kind), non-zero only.
type OpenCounts = Arc<Mutex<BTreeMap<[String; 3], i64>>>;

/// One of `open`'s connections closed.
fn count_closed(open: &Mutex<BTreeMap<[String; 3], i64>>, app: &str, instance: &str, kind: &str) {
    let mut open = lock(open);
    let key = [app.to_string(), instance.to_string(), kind.to_string()];
    if let Some(count) = open.get_mut(&key) {
        *count -= 1;
        if *count <= 0 {
            open.remove(&key);
        }
    }
}

/// `cutover_long_lived_connections{app,instance,kind}`: the open
/// connections counted per (app, instance, kind), plus a 0 for every
/// kind of every serving instance, merged when Prometheus scrapes.
///
/// Counts live only while non-zero, so instances that are gone leave no
/// series behind however many deploys run; the serving instances are
/// told by the control plane at each table publish. Opening and closing
/// take a lock (once per long-lived connection, never per request), so a
/// count is never lost to a series being removed at the same moment.
#[derive(Clone)]
pub struct LongLivedFamily {
    open: OpenCounts,
    serving: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    /// Filled at each scrape from the two maps above.
    view: Arc<Mutex<IntGaugeVec>>,
    desc: Vec<Desc>,
}

impl LongLivedFamily {
    fn new() -> prometheus::Result<Self> {
        let view = IntGaugeVec::new(
            Opts::new(
                "cutover_long_lived_connections",
                "Open WebSocket and SSE connections and gRPC calls, by app, instance and kind.",
            ),
            &["app", "instance", "kind"],
        )?;
        let desc = view.desc().into_iter().cloned().collect();
        Ok(Self {
            open: Arc::default(),
            serving: Arc::default(),
            view: Arc::new(Mutex::new(view)),
            desc,
        })
    }

    fn opened(&self, app: &str, instance: &str, kind: &str) {
        let mut open = lock(&self.open);
        *open.entry([app.into(), instance.into(), kind.into()]).or_insert(0) += 1;
    }

    fn serving(&self, app: &str, instances: Vec<String>) {
        lock(&self.serving).insert(app.to_string(), instances);
    }

    fn forget(&self, app: &str) {
        lock(&self.serving).remove(app);
    }

    /// The count of open connections (tests).
    #[cfg(test)]
    fn count(&self, app: &str, instance: &str, kind: &str) -> i64 {
        let key = [app.to_string(), instance.to_string(), kind.to_string()];
        lock(&self.open).get(&key).copied().unwrap_or(0)
    }
}

impl Collector for LongLivedFamily {
    fn desc(&self) -> Vec<&Desc> {
        self.desc.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let view = lock(&self.view);
        view.reset();
        for (app, instances) in lock(&self.serving).iter() {
            for instance in instances {
                for kind in KINDS {
                    view.with_label_values(&[app.as_str(), instance.as_str(), kind]);
                }
            }
        }
        for ([app, instance, kind], count) in lock(&self.open).iter() {
            view.with_label_values(&[app.as_str(), instance.as_str(), kind.as_str()])
                .set(*count);
        }
        view.collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pre-resolved handles for one app.
pub struct AppMetrics {
    app: Box<str>,
    requests: IntCounterVec,
    /// Index `code - 100`; filled on first use of a code.
    by_code: Box<[OnceLock<IntCounter>]>,
    duration: Histogram,
    connect_errors: IntCounter,
    retries: IntCounter,
    held: IntGauge,
}

impl std::fmt::Debug for AppMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppMetrics").field("app", &self.app).finish()
    }
}

impl AppMetrics {
    /// The app's name (empty for unrouted requests).
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Counts one answered request.
    #[inline]
    pub fn observe(&self, code: u16, seconds: f64) {
        self.duration.observe(seconds);
        match self.by_code.get(usize::from(code).wrapping_sub(100)) {
            Some(slot) => slot
                .get_or_init(|| self.requests.with_label_values(&[&*self.app, &code.to_string()]))
                .inc(),
            None => self.requests.with_label_values(&[&*self.app, &code.to_string()]).inc(),
        }
    }

    /// Creates the `cutover_requests_total` series for `code` at 0.
    fn ensure_code(&self, code: u16) {
        match self.by_code.get(usize::from(code).wrapping_sub(100)) {
            Some(slot) => {
                slot.get_or_init(|| self.requests.with_label_values(&[&*self.app, &code.to_string()]));
            }
            None => {
                self.requests.with_label_values(&[&*self.app, &code.to_string()]);
            }
        }
    }

    /// Counts a failed connection attempt.
    #[inline]
    pub fn connect_error(&self) {
        self.connect_errors.inc();
    }

    /// Counts a retry on another backend.
    #[inline]
    pub fn retry(&self) {
        self.retries.inc();
    }

    /// Counts a request as held until the returned guard drops.
    pub fn hold(self: &Arc<Self>) -> HeldGuard {
        self.held.inc();
        HeldGuard(Arc::clone(self))
    }
}

/// Decrements `cutover_held_requests` on drop.
pub struct HeldGuard(Arc<AppMetrics>);

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.0.held.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    fn scrape(registry: &Registry) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_family_has_each_apps_series_at_zero_before_any_traffic() {
        let registry = Registry::new();
        let metrics = ProxyMetrics::new(&registry).unwrap();
        let _web = metrics.app("web");
        metrics.serving_instances("web", vec!["web-0".into()]);
        let text = scrape(&registry);
        for series in [
            "cutover_requests_total{app=\"web\",code=\"200\"} 0",
            "cutover_request_duration_seconds_count{app=\"web\"} 0",
            "cutover_upstream_connect_errors_total{app=\"web\"} 0",
            "cutover_retries_total{app=\"web\"} 0",
            "cutover_held_requests{app=\"web\"} 0",
            "cutover_long_lived_connections{app=\"web\",instance=\"web-0\",kind=\"websocket\"} 0",
            "cutover_long_lived_connections{app=\"web\",instance=\"web-0\",kind=\"sse\"} 0",
            "cutover_long_lived_connections{app=\"web\",instance=\"web-0\",kind=\"grpc\"} 0",
            "cutover_long_lived_closed_total{app=\"web\",kind=\"grpc\",reason=\"drain\"} 0",
            "cutover_long_lived_closed_total{app=\"web\",kind=\"sse\",reason=\"drain\"} 0",
            "cutover_long_lived_closed_total{app=\"web\",kind=\"websocket\",reason=\"error\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
    }

    #[test]
    fn long_lived_counts_follow_connections_and_gone_instances_vanish() {
        let registry = Registry::new();
        let metrics = ProxyMetrics::new(&registry).unwrap();
        let _web = metrics.app("web");
        metrics.serving_instances("web", vec!["web-0".into()]);
        let mut first = metrics.long_lived_opened("web", "web-0", "websocket");
        let second = metrics.long_lived_opened("web", "web-0", "websocket");
        assert_eq!(metrics.long_lived.count("web", "web-0", "websocket"), 2);
        assert!(scrape(&registry)
            .contains("cutover_long_lived_connections{app=\"web\",instance=\"web-0\",kind=\"websocket\"} 2"));
        // The instance leaves the table (drain): its open connections
        // still show, then nothing once they close.
        metrics.serving_instances("web", vec!["web-1".into()]);
        first.closed("drain");
        drop(first);
        let text = scrape(&registry);
        assert!(text.contains("instance=\"web-0\",kind=\"websocket\"} 1"), "{text}");
        assert!(!text.contains("instance=\"web-0\",kind=\"sse\""), "{text}");
        drop(second);
        let text = scrape(&registry);
        assert!(!text.contains("instance=\"web-0\""), "{text}");
        assert!(text.contains("instance=\"web-1\",kind=\"sse\"} 0"), "{text}");
        assert!(text.contains("cutover_long_lived_closed_total{app=\"web\",kind=\"websocket\",reason=\"drain\"} 1"));
        assert!(text.contains("cutover_long_lived_closed_total{app=\"web\",kind=\"websocket\",reason=\"error\"} 1"));
        // A removed app leaves no series.
        metrics.remove_app("web");
        let text = scrape(&registry);
        assert!(!text.contains("app=\"web\""), "{text}");
    }
}
