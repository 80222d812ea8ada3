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
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.connect_errors.clone()))?;
        registry.register(Box::new(metrics.retries.clone()))?;
        registry.register(Box::new(metrics.held.clone()))?;
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
