//! Deployment metrics (SPEC §6): how many, how long, which phase now.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::canary::Progress;
use super::phase::{Outcome, Phase};
use super::record::Deployment;
use crate::config::{AnalysisConfig, Strategy};

/// The analysis' metrics, as `cutover_deployment_analysis{metric}` names them.
pub const ANALYSIS_METRICS: [&str; 3] = ["error_rate", "latency_ratio", "requests"];

/// Deployment metric families.
#[derive(Clone)]
pub struct DeployMetrics {
    total: IntCounterVec,
    duration: HistogramVec,
    phase: IntGaugeVec,
    canary_weight: GaugeVec,
    analysis: GaugeVec,
    analysis_limit: GaugeVec,
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
            canary_weight: GaugeVec::new(
                Opts::new(
                    "cutover_canary_weight",
                    "Percent of the app's new requests a running canary gets; 0 without one.",
                ),
                &["app"],
            )?,
            analysis: GaugeVec::new(
                Opts::new(
                    "cutover_deployment_analysis",
                    "What the canary analysis last saw: error_rate (a fraction), latency_ratio (new p99 over \
                     stable p99), requests (reached the new version in the current step).",
                ),
                &["app", "metric"],
            )?,
            analysis_limit: GaugeVec::new(
                Opts::new(
                    "cutover_deployment_analysis_limit",
                    "The canary analysis' limits from the app's config, for the same metrics: \
                     max_error_rate (a fraction), max_latency_ratio, min_requests.",
                ),
                &["app", "metric"],
            )?,
        };
        registry.register(Box::new(metrics.canary_weight.clone()))?;
        registry.register(Box::new(metrics.analysis.clone()))?;
        registry.register(Box::new(metrics.analysis_limit.clone()))?;
        registry.register(Box::new(metrics.total.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.phase.clone()))?;
        Ok(metrics)
    }

    /// Creates `app`'s series at 0 (SPEC §6: every family present from
    /// start-up, so a dashboard shows 0 rather than "no data"): each
    /// strategy and outcome, each phase.
    pub fn app_configured(&self, app: &str) {
        self.canary_weight.with_label_values(&[app]);
        for metric in ANALYSIS_METRICS {
            self.analysis.with_label_values(&[app, metric]);
            self.analysis_limit.with_label_values(&[app, metric]);
        }
        for strategy in Strategy::ALL.map(Strategy::as_str) {
            for outcome in Outcome::ALL {
                self.total.with_label_values(&[app, strategy, outcome.as_str()]);
            }
            self.duration.with_label_values(&[app, strategy]);
        }
        for phase in Phase::ALL {
            self.phase.with_label_values(&[app, phase.as_str()]);
        }
    }

    /// Deletes `app`'s series: a removed app leaves nothing behind (SPEC §6
    /// "label sets of removed instances are deleted"; the same for apps).
    pub fn app_removed(&self, app: &str) {
        let _ = self.canary_weight.remove_label_values(&[app]);
        for metric in ANALYSIS_METRICS {
            let _ = self.analysis.remove_label_values(&[app, metric]);
            let _ = self.analysis_limit.remove_label_values(&[app, metric]);
        }
        for strategy in Strategy::ALL.map(Strategy::as_str) {
            for outcome in Outcome::ALL {
                let _ = self.total.remove_label_values(&[app, strategy, outcome.as_str()]);
            }
            let _ = self.duration.remove_label_values(&[app, strategy]);
        }
        for phase in Phase::ALL {
            let _ = self.phase.remove_label_values(&[app, phase.as_str()]);
        }
    }

    /// Sets the phase gauge of `app`: 1 for `current`, 0 for the rest.
    pub fn phase(&self, app: &str, current: Option<Phase>) {
        for phase in Phase::ALL {
            self.phase
                .with_label_values(&[app, phase.as_str()])
                .set(i64::from(Some(phase) == current));
        }
    }

    /// The analysis limits `app` is held to (its definition's
    /// `canary.analysis`), shown next to the values on the dashboard.
    pub fn analysis_limits(&self, app: &str, limits: &AnalysisConfig) {
        let values = [
            limits.max_error_rate(),
            limits.max_latency_ratio(),
            limits.min_requests as f64,
        ];
        for (metric, value) in ANALYSIS_METRICS.into_iter().zip(values) {
            self.analysis_limit.with_label_values(&[app, metric]).set(value);
        }
    }

    /// A canary's progress: its weight now (0 once over) and what the
    /// analysis last saw (kept after the canary ended: the last values).
    pub fn canary_progress(&self, app: &str, progress: Option<&Progress>) {
        let weight = progress.map_or(0.0, |p| f64::from(p.weight));
        self.canary_weight.with_label_values(&[app]).set(weight);
        if let Some(judgement) = progress.and_then(|p| p.judgement.as_ref()) {
            let values = [
                judgement.error_rate,
                judgement.latency_ratio.unwrap_or(0.0),
                judgement.requests as f64,
            ];
            for (metric, value) in ANALYSIS_METRICS.into_iter().zip(values) {
                self.analysis.with_label_values(&[app, metric]).set(value);
            }
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
    record.strategy.as_str()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::canary::analysis::{Judgement, Verdict};

    fn scrape(registry: &Registry) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap_or_default()
    }

    #[test]
    fn canary_series_exist_at_zero_follow_the_canary_and_leave_with_the_app() {
        let registry = Registry::new();
        let metrics = DeployMetrics::new(&registry).unwrap();
        metrics.app_configured("web");
        let text = scrape(&registry);
        assert!(text.contains("cutover_canary_weight{app=\"web\"} 0"), "{text}");
        for metric in ANALYSIS_METRICS {
            let series = format!("cutover_deployment_analysis{{app=\"web\",metric=\"{metric}\"}} 0");
            assert!(text.contains(&series), "{series} in {text}");
        }
        for strategy in ["canary", "bluegreen"] {
            let series =
                format!("cutover_deployments_total{{app=\"web\",outcome=\"aborted\",strategy=\"{strategy}\"}} 0");
            assert!(text.contains(&series), "{series} in {text}");
        }

        let progress = Progress {
            step: 1,
            steps: 3,
            weight: 25,
            waiting_manual: false,
            judgement: Some(Judgement {
                error_rate: 0.002,
                latency_ratio: Some(1.25),
                requests: 80,
                verdict: Verdict::Healthy,
            }),
        };
        metrics.canary_progress("web", Some(&progress));
        let text = scrape(&registry);
        assert!(text.contains("cutover_canary_weight{app=\"web\"} 25"), "{text}");
        assert!(text.contains("cutover_deployment_analysis{app=\"web\",metric=\"latency_ratio\"} 1.25"));
        assert!(text.contains("cutover_deployment_analysis{app=\"web\",metric=\"requests\"} 80"));
        metrics.canary_progress("web", None);
        let text = scrape(&registry);
        assert!(text.contains("cutover_canary_weight{app=\"web\"} 0"), "{text}");
        assert!(
            text.contains("cutover_deployment_analysis{app=\"web\",metric=\"requests\"} 80"),
            "the last values the analysis saw stay"
        );

        metrics.app_removed("web");
        let text = scrape(&registry);
        assert!(!text.contains("app=\"web\""), "{text}");
    }
}
