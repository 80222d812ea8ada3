//! `apps.<name>.canary:` and `apps.<name>.bluegreen:` — how the progressive
//! strategies walk (SPEC §3).

use super::Check;
use crate::config::bounds;
use crate::config::model::{AnalysisConfig, BluegreenConfig, CanaryConfig, CanaryStep, StepPause};
use crate::config::problem::join_key;
use crate::config::raw::{RawAnalysis, RawBluegreen, RawCanary, RawCanaryStep, RawPercent};

impl Check<'_> {
    pub(super) fn canary(&mut self, at: &str, raw: Option<&RawCanary>) -> CanaryConfig {
        let defaults = CanaryConfig::default();
        let Some(raw) = raw else { return defaults };
        let steps = match &raw.steps {
            None => defaults.steps,
            Some(steps) => self.steps(&join_key(at, "steps"), steps),
        };
        CanaryConfig {
            steps,
            sticky: raw.sticky.unwrap_or(defaults.sticky),
            analysis: self.analysis(
                &join_key(at, "analysis"),
                raw.analysis.as_ref().unwrap_or(&RawAnalysis::default()),
            ),
        }
    }

    /// Steps: 1..=20 of them, weights 1..=100 and never decreasing (a
    /// canary only ever gains traffic; going back is an abort). The last
    /// step may stay below 100: after it the new version takes everything.
    fn steps(&mut self, at: &str, raw: &[RawCanaryStep]) -> Vec<CanaryStep> {
        let (min, max) = bounds::CANARY_STEPS;
        if raw.len() < min {
            self.push(
                at,
                "no steps; give at least one, e.g. [{ weight: 10, pause: 1m }], or leave steps out for the default",
            );
            return CanaryConfig::default().steps;
        }
        if raw.len() > max {
            self.push(at, format!("at most {max} steps, got {}", raw.len()));
        }
        let mut steps = Vec::with_capacity(raw.len());
        let mut previous: Option<u8> = None;
        for (i, step) in raw.iter().enumerate() {
            let item = format!("{at}[{i}]");
            let weight = self.weight(&join_key(&item, "weight"), step.weight, previous);
            previous = Some(weight.max(previous.unwrap_or(0)));
            let pause = self.pause(&join_key(&item, "pause"), step.pause.as_ref().map(|p| p.0.as_str()));
            steps.push(CanaryStep { weight, pause });
        }
        steps
    }

    fn weight(&mut self, at: &str, raw: Option<i64>, previous: Option<u8>) -> u8 {
        let (min, max) = bounds::CANARY_WEIGHT;
        let Some(weight) = raw else {
            self.push(
                at,
                "missing key \"weight\": the percent of new requests the new version gets, e.g. 10",
            );
            return 1;
        };
        let Some(weight) = u8::try_from(weight)
            .ok()
            .filter(|w| (min..=max).contains(&i64::from(*w)))
        else {
            self.push(
                at,
                format!("weight must be between {min} and {max} (percent), got {weight}"),
            );
            return 1;
        };
        if let Some(previous) = previous.filter(|p| weight < *p) {
            self.push(
                at,
                format!(
                    "weight {weight} is below the previous step's {previous}; weights may only grow \
                     (the new version only ever gains traffic)"
                ),
            );
        }
        weight
    }

    fn pause(&mut self, at: &str, raw: Option<&str>) -> StepPause {
        match raw.map(str::trim) {
            None => {
                self.push(
                    at,
                    "missing key \"pause\": a duration such as 30s, or manual to wait for cutover promote",
                );
                StepPause::Manual
            }
            Some("manual") => StepPause::Manual,
            Some(text) => match crate::config::rules::duration(text, bounds::STEP_PAUSE) {
                Ok(d) => StepPause::For(d),
                Err(message) => {
                    self.push(at, format!("{message}; or manual to wait for cutover promote"));
                    StepPause::Manual
                }
            },
        }
    }

    fn analysis(&mut self, at: &str, raw: &RawAnalysis) -> AnalysisConfig {
        let defaults = AnalysisConfig::default();
        let max_error_rate_bp = match &raw.max_error_rate {
            None => defaults.max_error_rate_bp,
            Some(RawPercent(text)) => match percent_bp(text) {
                Ok(bp) => bp,
                Err(message) => {
                    self.push(join_key(at, "max_error_rate"), message);
                    defaults.max_error_rate_bp
                }
            },
        };
        let (low, high) = bounds::LATENCY_RATIO;
        let max_latency_ratio_milli = match raw.max_latency_ratio {
            None => defaults.max_latency_ratio_milli,
            Some(ratio) if ratio.is_finite() && (low..=high).contains(&ratio) => (ratio * 1000.0).round() as u32,
            Some(ratio) => {
                self.push(
                    join_key(at, "max_latency_ratio"),
                    format!(
                        "max_latency_ratio must be between {low} and {high} (new p99 over stable p99), got {ratio}"
                    ),
                );
                defaults.max_latency_ratio_milli
            }
        };
        let (min, max) = bounds::MIN_REQUESTS;
        let min_requests = match raw.min_requests {
            None => defaults.min_requests,
            Some(n) if (min..=max).contains(&n) => n.unsigned_abs(),
            Some(n) => {
                self.push(
                    join_key(at, "min_requests"),
                    format!("min_requests must be between {min} and {max}, got {n}"),
                );
                defaults.min_requests
            }
        };
        AnalysisConfig {
            max_error_rate_bp,
            max_latency_ratio_milli,
            min_requests,
        }
    }

    pub(super) fn bluegreen(&mut self, at: &str, raw: Option<&RawBluegreen>) -> BluegreenConfig {
        let defaults = BluegreenConfig::default();
        let Some(raw) = raw else { return defaults };
        BluegreenConfig {
            keep_previous: self.duration(
                &join_key(at, "keep_previous"),
                raw.keep_previous.as_ref(),
                defaults.keep_previous,
                bounds::KEEP_PREVIOUS,
            ),
        }
    }
}

/// `1%`, `0.5%`, `100%` → basis points (at most two decimals).
fn percent_bp(text: &str) -> Result<u32, String> {
    let written = text.trim();
    let Some(number) = written.strip_suffix('%').map(str::trim_end) else {
        return Err(format!(
            "max_error_rate must be a percentage such as 1% or 0.5%, got {written}"
        ));
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let valid = digits(whole) && (fraction.is_empty() || (digits(fraction) && fraction.len() <= 2));
    let bp = valid
        .then(|| {
            let whole: u32 = whole.parse().ok().filter(|w| *w <= 100)?;
            let fraction: u32 = format!("{fraction:0<2}").parse().ok()?;
            Some(whole * 100 + fraction)
        })
        .flatten();
    match bp {
        Some(bp) if bp <= 10_000 => Ok(bp),
        _ if valid => Err(format!("max_error_rate must be at most 100%, got {written}")),
        _ => Err(format!(
            "max_error_rate must be a percentage between 0% and 100% with at most two decimals, e.g. 1% or 0.5%, got {written}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::percent_bp;

    #[test]
    fn percentages_become_basis_points() {
        assert_eq!(percent_bp("1%"), Ok(100));
        assert_eq!(percent_bp("0.5%"), Ok(50));
        assert_eq!(percent_bp("0.05%"), Ok(5));
        assert_eq!(percent_bp("100%"), Ok(10_000));
        assert_eq!(percent_bp(" 2 %"), Ok(200));
        assert!(percent_bp("0.01").unwrap_err().contains("percentage such as 1%"));
        assert!(percent_bp("101%").unwrap_err().contains("at most 100%"));
        assert!(percent_bp("0.001%").is_err());
        assert!(percent_bp("-1%").is_err());
        assert!(percent_bp("x%").is_err());
        assert!(percent_bp("99999999999999%").is_err());
    }
}
