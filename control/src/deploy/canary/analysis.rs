//! The canary analysis: the new version's measurements against the limits
//! of `canary.analysis` (SPEC §3), on one step's window.
//!
//! - **error rate** (5xx answers and failed connections over answers and
//!   failed connections):
//!   breached once it is above `max_error_rate` with at least
//!   `min_requests` requests, or earlier once the failures alone are
//!   more than `max_error_rate` of `min_requests`, so that no further
//!   success could bring the rate back under the limit at `min_requests`
//!   (one failure among the first requests of a `1%`/`50` canary breaches
//!   at once; a healthy canary is never judged on a handful of requests).
//! - **latency ratio** (new p99 over stable p99): judged only once the new
//!   version has `min_requests` answers (and at least
//!   [`LATENCY_MIN_ANSWERS`]), both sets have a p99 above zero, and the new
//!   p99 is slower by [`LATENCY_MARGIN`] or more; a p99 over a handful of
//!   answers, or a millisecond on a fast app, is noise.
//! - **requests**: a step can pass only once `min_requests` reached the
//!   new version in it.

use std::time::Duration;

use super::traffic::Pair;
use crate::config::AnalysisConfig;

/// What the analysis saw and decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The new version's error rate (a fraction).
    pub error_rate: f64,
    /// New p99 over stable p99, when both are known.
    pub latency_ratio: Option<f64>,
    /// Requests the new version answered in the window.
    pub requests: u64,
    pub verdict: Verdict,
}

/// The analysis' decision on one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A limit is breached: the reason, e.g. `error rate 4.2% > 1%`.
    Breach(String),
    /// Within the limits, but fewer than `min_requests` requests so far.
    TooFew,
    /// Within the limits with enough requests: the step may pass.
    Healthy,
}

/// The fewest answers of the new version in a step before its p99 is
/// compared (whatever `min_requests` says).
pub const LATENCY_MIN_ANSWERS: u64 = 20;
/// How much slower (p99) the new version must be before the ratio can
/// breach: below it, the difference is noise no user sees.
pub const LATENCY_MARGIN: Duration = Duration::from_millis(10);

/// Judges `pair` (one step's window) against `limits`.
pub fn judge(limits: &AnalysisConfig, pair: &Pair) -> Judgement {
    let canary = &pair.canary;
    let error_rate = canary.error_rate();
    let failures = canary.server_errors.saturating_add(canary.connect_failures);
    let enough = canary.requests >= limits.min_requests;
    let latency_ratio = match (canary.p99, pair.stable.p99) {
        (Some(new), Some(stable)) if stable > Duration::ZERO => Some(new.as_secs_f64() / stable.as_secs_f64()),
        _ => None,
    };
    // A p99 over a few dozen answers is their slowest one (a cold pooled
    // connection, a first request warming a cache), and a fast app's p99 is
    // a millisecond or two: the ratio is judged only with enough answers,
    // and only when the new version is slower by a margin a user would see.
    let latency_judged = canary.requests >= limits.min_requests.max(LATENCY_MIN_ANSWERS)
        && match (canary.p99, pair.stable.p99) {
            (Some(new), Some(stable)) => new.saturating_sub(stable) >= LATENCY_MARGIN,
            _ => false,
        };
    // Integer form of "failures / min_requests > max_error_rate": no
    // rounding decides a breach.
    let inevitable =
        u128::from(failures) * 10_000 > u128::from(limits.max_error_rate_bp) * u128::from(limits.min_requests);
    let breached = if enough {
        error_rate > limits.max_error_rate()
    } else {
        inevitable
    };
    let verdict = if failures > 0 && breached {
        Verdict::Breach(format!(
            "error rate {} > {} ({failures} of {} requests failed)",
            percent(error_rate),
            percent(limits.max_error_rate()),
            canary.requests.saturating_add(canary.connect_failures)
        ))
    } else if let Some(ratio) = latency_ratio.filter(|r| latency_judged && *r > limits.max_latency_ratio()) {
        Verdict::Breach(format!(
            "latency ratio {ratio:.2} > {} (p99 {} against {})",
            limits.max_latency_ratio(),
            millis(canary.p99),
            millis(pair.stable.p99)
        ))
    } else if enough {
        Verdict::Healthy
    } else {
        Verdict::TooFew
    };
    Judgement {
        error_rate,
        latency_ratio,
        requests: canary.requests,
        verdict,
    }
}

/// `0.042` → `4.2%`; `0.01` → `1%`.
fn percent(fraction: f64) -> String {
    let text = format!("{:.2}", fraction * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn millis(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.1}ms", d.as_secs_f64() * 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::canary::traffic::Measurements;

    fn limits() -> AnalysisConfig {
        AnalysisConfig {
            max_error_rate_bp: 100,
            max_latency_ratio_milli: 1500,
            min_requests: 50,
        }
    }

    fn measured(requests: u64, server_errors: u64, p99_ms: Option<u64>) -> Measurements {
        Measurements {
            requests,
            server_errors,
            connect_failures: 0,
            p99: p99_ms.map(Duration::from_millis),
        }
    }

    fn pair(stable: Measurements, canary: Measurements) -> Pair {
        Pair { stable, canary }
    }

    #[test]
    fn an_error_rate_above_the_limit_is_a_breach_with_its_reason() {
        let j = judge(
            &limits(),
            &pair(measured(1000, 0, Some(10)), measured(500, 21, Some(10))),
        );
        assert_eq!(
            j.verdict,
            Verdict::Breach("error rate 4.2% > 1% (21 of 500 requests failed)".into())
        );
        assert!((j.error_rate - 0.042).abs() < 1e-9);
    }

    #[test]
    fn an_error_rate_at_the_limit_passes() {
        let j = judge(&limits(), &pair(measured(1000, 0, None), measured(200, 2, None)));
        assert_eq!(j.verdict, Verdict::Healthy);
    }

    #[test]
    fn failures_no_success_could_dilute_breach_before_min_requests() {
        // 1 failure is 2% of the 50 requests the step needs: inevitable.
        let j = judge(&limits(), &pair(measured(10, 0, None), measured(3, 1, None)));
        assert!(
            matches!(j.verdict, Verdict::Breach(ref r) if r.starts_with("error rate 33.33% > 1%")),
            "{j:?}"
        );
        // With a 5% limit one failure in the first requests is not yet fatal.
        let lenient = AnalysisConfig {
            max_error_rate_bp: 500,
            ..limits()
        };
        let j = judge(&lenient, &pair(measured(10, 0, None), measured(3, 1, None)));
        assert_eq!(j.verdict, Verdict::TooFew);
    }

    #[test]
    fn connect_failures_count_as_errors() {
        let mut canary = measured(100, 0, None);
        canary.connect_failures = 5;
        let j = judge(&limits(), &pair(measured(100, 0, None), canary));
        assert!(matches!(j.verdict, Verdict::Breach(_)));
    }

    #[test]
    fn a_slow_canary_breaches_the_latency_ratio() {
        let j = judge(
            &limits(),
            &pair(measured(1000, 0, Some(100)), measured(100, 0, Some(231))),
        );
        assert_eq!(
            j.verdict,
            Verdict::Breach("latency ratio 2.31 > 1.5 (p99 231.0ms against 100.0ms)".into())
        );
    }

    #[test]
    fn latency_is_judged_only_with_both_sides_and_enough_requests() {
        // No stable p99: nothing to compare with.
        let j = judge(&limits(), &pair(measured(0, 0, None), measured(100, 0, Some(500))));
        assert_eq!((j.latency_ratio, j.verdict), (None, Verdict::Healthy));
        // A stable p99 of zero: no ratio.
        let zero = Measurements {
            p99: Some(Duration::ZERO),
            ..measured(100, 0, None)
        };
        assert_eq!(
            judge(&limits(), &pair(zero, measured(100, 0, Some(5)))).latency_ratio,
            None
        );
        // Too few canary requests: a slow first request is not a breach.
        let j = judge(&limits(), &pair(measured(1000, 0, Some(10)), measured(3, 0, Some(900))));
        assert_eq!(j.verdict, Verdict::TooFew);
    }

    #[test]
    fn min_requests_gates_a_healthy_step() {
        let j = judge(&limits(), &pair(measured(1000, 0, Some(10)), measured(49, 0, Some(10))));
        assert_eq!(j.verdict, Verdict::TooFew);
        let j = judge(&limits(), &pair(measured(1000, 0, Some(10)), measured(50, 0, Some(10))));
        assert_eq!(j.verdict, Verdict::Healthy);
        let none = AnalysisConfig {
            min_requests: 0,
            ..limits()
        };
        assert_eq!(judge(&none, &Pair::default()).verdict, Verdict::Healthy);
    }

    #[test]
    fn percentages_read_like_the_config() {
        assert_eq!(percent(0.01), "1%");
        assert_eq!(percent(0.042), "4.2%");
        assert_eq!(percent(0.005), "0.5%");
        assert_eq!(percent(0.0), "0%");
    }

    #[test]
    fn a_version_that_refuses_every_connection_breaches_even_with_no_minimum() {
        let no_minimum = AnalysisConfig {
            min_requests: 0,
            ..limits()
        };
        let refused = Measurements {
            connect_failures: 5,
            ..measured(0, 0, None)
        };
        let j = judge(&no_minimum, &pair(measured(100, 0, Some(5)), refused));
        assert_eq!(
            j.verdict,
            Verdict::Breach("error rate 100% > 1% (5 of 5 requests failed)".into())
        );
    }

    #[test]
    fn a_fast_app_a_millisecond_slower_is_not_a_latency_breach() {
        // 2ms against 1ms is a ratio of 2 but no user sees it.
        let j = judge(&limits(), &pair(measured(1000, 0, Some(1)), measured(100, 0, Some(2))));
        assert_eq!(j.verdict, Verdict::Healthy);
        // 40ms against 10ms is.
        let j = judge(
            &limits(),
            &pair(measured(1000, 0, Some(10)), measured(100, 0, Some(40))),
        );
        assert!(
            matches!(j.verdict, Verdict::Breach(ref r) if r.starts_with("latency ratio 4.00 > 1.5")),
            "{j:?}"
        );
        // Not on fewer answers than LATENCY_MIN_ANSWERS, whatever min_requests says.
        let few = AnalysisConfig {
            min_requests: 1,
            ..limits()
        };
        let j = judge(&few, &pair(measured(1000, 0, Some(10)), measured(5, 0, Some(40))));
        assert_eq!(j.verdict, Verdict::Healthy);
    }
}
