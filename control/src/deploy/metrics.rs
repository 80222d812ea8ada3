//! Deployment metrics (SPEC §6): how many, how long, which phase now.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::phase::{Outcome, Phase};
use super::record::Deployment;

/// Deployment metric families.
#[derive(Clone)]
pub struct DeployMetrics {
    total: IntCounterVec,
    duration: HistogramVec,
    phase: IntGaugeVec,
}

impl DeployMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            total: IntCounterVec::new(
                Opts::new(
                    "cutover_deployments_total",
                    "Finished deployments by app, strategy and outcome.",
                ),
                &["app", "strategy", "outcome"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new("cutover_deployment_duration_seconds", "How long deployments took.")
                    .buckets(vec![0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
                &["app", "strategy"],
            )?,
            phase: IntGaugeVec::new(
                Opts::new(
                    "cutover_deployment_phase",
                    "1 for the phase a deployment of the app is in, 0 for every other phase.",
                ),
                &["app", "phase"],
            )?,
        };
        registry.register(Box::new(metrics.total.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.phase.clone()))?;
        Ok(metrics)
    }

    /// Sets the phase gauge of `app`: 1 for `current`, 0 for the rest.
    pub fn phase(&self, app: &str, current: Option<Phase>) {
        for phase in Phase::ALL {
            self.phase
                .with_label_values(&[app, phase.as_str()])
                .set(i64::from(Some(phase) == current));
        }
    }

    /// Counts a finished deployment.
    pub fn finished(&self, record: &Deployment, outcome: Outcome) {
        let strategy = strategy_label(record);
        self.total
            .with_label_values(&[record.app.as_str(), strategy, outcome.as_str()])
            .inc();
        if let Some(ms) = record.duration_ms {
            self.duration
                .with_label_values(&[record.app.as_str(), strategy])
                .observe(ms as f64 / 1000.0);
        }
        self.phase(&record.app, None);
    }
}

fn strategy_label(record: &Deployment) -> &'static str {
    match record.strategy {
        crate::config::Strategy::Rolling => "rolling",
        crate::config::Strategy::Stopstart => "stopstart",
    }
}

/// Test helper: the sum of `cutover_deployments_total` with `outcome`.
#[cfg(test)]
pub(crate) fn outcome_count(registry: &Registry, outcome: &str) -> f64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_default();
    let label = format!("outcome=\"{outcome}\"");
    text.lines()
        .filter(|l| l.starts_with("cutover_deployments_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
