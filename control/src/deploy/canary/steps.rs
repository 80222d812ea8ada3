//! Walking a canary's steps (the `steps` phase).
//!
//! Each step sets the split to its weight (one table swap) and starts a
//! fresh measurement window; the analysis then judges that window every
//! tick until the step passes, a limit is breached, or the operator
//! aborts. A step passes when:
//! - timed (`pause: 30s`): its pause has elapsed **and** `min_requests`
//!   reached the new version in it. A quiet step whose pause elapsed first
//!   waits on (judged all the while) until it has them: passing on too few
//!   requests would promote a version nobody tried;
//! - `manual`: `cutover promote` was given while it waited (the operator
//!   decides; a breach still rolls back at once).
//!
//! `cutover promote --full` ends the walk at once: the new version takes
//! every request next.

use super::analysis::{judge, Verdict};
use super::{Progress, Steering};
use crate::config::{CanaryConfig, StepPause};
use crate::deploy::record::DeploymentLog;
use crate::deploy::run::DeployOps;

/// Why the walk stopped short.
pub const ABORTED: &str = "aborted by cutover abort";

/// Walks `config`'s steps; `Ok` once the last one passed (or a full
/// promote), `Err` with the reason on a breach or an abort.
pub async fn walk(
    config: &CanaryConfig,
    ops: &dyn DeployOps,
    steering: &Steering,
    log: &DeploymentLog,
) -> Result<(), String> {
    let mut signals = steering.subscribe();
    let steps = config.steps.len();
    for (index, step) in config.steps.iter().enumerate() {
        if steering.signals().full {
            break;
        }
        let weight_bp = u16::from(step.weight).saturating_mul(100);
        let measure = ops.split(weight_bp, config.sticky).await?;
        measure.mark();
        let manual = step.pause == StepPause::Manual;
        steering.set_progress(Some(Progress {
            step: index,
            steps,
            weight: step.weight,
            waiting_manual: manual,
            judgement: None,
        }));
        log.info(
            None,
            match step.pause {
                StepPause::For(pause) => format!(
                    "step {}/{steps}: {}% of new requests to the new version for {}",
                    index + 1,
                    step.weight,
                    humantime::format_duration(pause)
                ),
                StepPause::Manual => format!(
                    "step {}/{steps}: {}% of new requests to the new version until cutover promote",
                    index + 1,
                    step.weight
                ),
            },
        );
        let started = tokio::time::Instant::now();
        let mut said_waiting = false;
        loop {
            let judgement = judge(&config.analysis, &measure.read());
            let verdict = judgement.verdict.clone();
            steering.update_progress(|p| p.judgement = Some(judgement.clone()));
            if let Verdict::Breach(reason) = verdict {
                return Err(reason);
            }
            let now = steering.signals();
            if now.abort {
                return Err(ABORTED.to_string());
            }
            if now.full {
                log.info(None, "promoted: the new version takes every request");
                break;
            }
            let passed = match step.pause {
                StepPause::Manual => now.promoted == Some(index),
                StepPause::For(pause) => {
                    let elapsed = started.elapsed() >= pause;
                    if elapsed && verdict == Verdict::TooFew && !said_waiting {
                        said_waiting = true;
                        log.info(
                            None,
                            format!(
                                "step {}: pause over; waiting until {} requests reached the new version ({} so far)",
                                index + 1,
                                config.analysis.min_requests,
                                judgement.requests
                            ),
                        );
                    }
                    elapsed && verdict == Verdict::Healthy
                }
            };
            if passed {
                log.info(
                    None,
                    format!(
                        "step {} passed: error rate {:.2}%, {} requests",
                        index + 1,
                        judgement.error_rate * 100.0,
                        judgement.requests
                    ),
                );
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(steering.tick) => {}
                // A closed channel cannot happen (the steering outlives
                // the walk); sleeping the tick then is still right.
                changed = signals.changed() => if changed.is_err() {
                    tokio::time::sleep(steering.tick).await;
                },
            }
        }
    }
    Ok(())
}
