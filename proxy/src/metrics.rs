//! The data plane's Prometheus metrics.
//!
//! Label handles are resolved once per app ([`AppMetrics`], carried in the
//! route table), so the request path only increments atomics: no label hash
//! and no lock per request.

use std::sync::{Arc, OnceLock};

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

/// Status codes with a pre-resolvable counter slot: 100..=599.
const CODES: usize = 500;

/// Every metric family the data plane owns.
#[derive(Clone)]
pub struct ProxyMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    connect_errors: IntCounterVec,
    retries: IntCounterVec,
    held: IntGaugeVec,
    long_lived: IntGaugeVec,
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
            long_lived: IntGaugeVec::new(
                Opts::new(
                    "cutover_long_lived_connections",
                    "Open WebSocket and SSE connections, by app, instance and kind.",
                ),
                &["app", "instance", "kind"],
            )?,
            long_lived_closed: IntCounterVec::new(
                Opts::new(
                    "cutover_long_lived_closed_total",
                    "Closed WebSocket and SSE connections, by app, kind and why they closed.",
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

    /// Label handles for one app. Call once per app and keep the `Arc`.
    pub fn app(&self, app: &str) -> Arc<AppMetrics> {
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

    /// Handles for requests that matched no route (`app=""`).
    pub fn unrouted(&self) -> Arc<AppMetrics> {
        self.app("")
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
    }
}

impl ProxyMetrics {
    /// Counts an open long-lived connection until [`LongLivedMetric::closed`]
    /// (or drop, counted as `error`).
    pub fn long_lived_opened(&self, app: &str, instance: &str, kind: &'static str) -> LongLivedMetric {
        let gauge = self.long_lived.with_label_values(&[app, instance, kind]);
        gauge.inc();
        LongLivedMetric {
            metrics: self.clone(),
            gauge,
            labels: [app.to_string(), instance.to_string()],
            kind,
            reason: None,
        }
    }
}

/// One open long-lived connection in the metrics.
pub struct LongLivedMetric {
    metrics: ProxyMetrics,
    gauge: IntGauge,
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
        self.gauge.dec();
        let [app, instance] = &self.labels;
        self.metrics
            .long_lived_closed
            .with_label_values(&[app.as_str(), self.kind, self.reason.unwrap_or("error")])
            .inc();
        // The instance's series goes with its last connection, so removed
        // instances leave no series behind.
        if self.gauge.get() == 0 {
            let _ = self
                .metrics
                .long_lived
                .remove_label_values(&[app.as_str(), instance.as_str(), self.kind]);
        }
    }
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
