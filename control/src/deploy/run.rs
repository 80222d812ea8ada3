//! The driver: walks the state machine of [`super::phase`], doing each
//! phase's work through [`DeployOps`]. The real operations act on the
//! supervisor and the route table (`super::ops`); tests use a fake.

use std::sync::Arc;

use async_trait::async_trait;

use super::canary::traffic::Measure;
use super::canary::{steps, Steering};
use super::phase::{abortable, transition, Flags, Next, Outcome, Phase};
use super::record::DeploymentLog;
use crate::config::{CanaryConfig, Strategy};
use crate::supervisor::instance::Role;

/// Which definition of the app an operation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The one serving before the deployment.
    Previous,
    /// The one being deployed.
    Target,
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Build,
    PostDeploy,
}

/// The side effects of a deployment. Every method reports progress on the
/// log it was built with; every failure leaves nothing half-started.
#[async_trait]
pub trait DeployOps: Send + Sync {
    /// Runs a hook of the target version (nothing if not configured).
    async fn hook(&self, kind: HookKind) -> Result<(), String>;
    /// Starts one clone per original on the previous version and waits
    /// until each is ready. On failure, stops every clone it started.
    async fn start_clones(&self) -> Result<(), String>;
    /// One table swap: the app's traffic goes to the clones.
    async fn route_to_clones(&self);
    /// One table swap: the app leaves the table (requests are held).
    async fn route_to_none(&self);
    /// Drains (bounded by `drain_timeout`) and stops the originals.
    async fn retire_originals(&self);
    /// Starts the originals (same names, same ports when free) on
    /// `version`, waits until ready, and (target only) runs `hooks.deploy`.
    /// On failure, stops what it started.
    async fn start_originals(&self, version: Version) -> Result<(), String>;
    /// One table swap: the app's traffic goes to the originals.
    async fn route_to_originals(&self);
    /// Drains and stops the clones.
    async fn retire_clones(&self);
    /// The rollback failed: the clones stay and become the originals.
    async fn promote_clones(&self);
    /// stopstart's last resort: start the previous version and keep
    /// retrying in the background.
    async fn revive_previous(&self);
    /// Records which version now serves.
    async fn commit(&self, serving: Version);

    /// canary, bluegreen: starts the target's instances beside the
    /// serving ones with `role` (`canary` or `green`), as many as the
    /// target has, waits until each is ready and runs `hooks.deploy`. On
    /// failure, stops what it started.
    async fn start_candidates(&self, role: Role) -> Result<(), String>;
    /// canary: one table swap: `weight_bp` of new requests to the canaries.
    async fn split(&self, weight_bp: u16, sticky: bool) -> Result<Arc<dyn Measure>, String>;
    /// canary, bluegreen: the candidates leave the table (one swap, when
    /// they were in it), drain and stop.
    async fn retire_candidates(&self);
    /// canary: one table swap: the canaries serve alone and become the
    /// app's instances; the stable instances drain and stop.
    async fn promote_canaries(&self);
    /// bluegreen: one table swap: the green set serves and becomes the
    /// app's instances; the previous set stays warm (no traffic) for
    /// `keep_previous`, held by the controller.
    async fn swap_to_green(&self);
    /// canary, bluegreen: every candidate is ready right now, or becomes
    /// ready again within its `start_timeout` (one that crashed since its
    /// start is restarting): checked just before the candidates take all
    /// traffic, which may be minutes after they first got ready.
    async fn confirm_candidates_ready(&self) -> Result<(), String> {
        Ok(())
    }
    /// The target's `canary:` settings.
    fn canary(&self) -> CanaryConfig;
}

/// Runs a deployment to its end and returns the outcome. Every phase
/// start, end and the outcome go to `log`.
pub async fn execute(strategy: Strategy, ops: &dyn DeployOps, log: &DeploymentLog, steering: &Steering) -> Outcome {
    let outcome = drive(strategy, ops, log, steering).await;
    log.finish(outcome);
    outcome
}

/// Runs a deployment's phases and returns the outcome, leaving the log
/// unfinished: the caller records the outcome (the controller frees the
/// app in the same step, see `gate::RunningGuard`). `steering` carries
/// the verbs' requests (abort, promote) and the canary's progress.
pub async fn drive(strategy: Strategy, ops: &dyn DeployOps, log: &DeploymentLog, steering: &Steering) -> Outcome {
    let mut phase = Phase::Build;
    let mut flags = Flags::default();
    let outcome = loop {
        log.phase_started(phase);
        let ok = match run_phase(strategy, phase, flags, ops, log, steering).await {
            Ok(()) => true,
            Err(reason) => {
                log.error(None, format!("{} failed: {reason}", phase.as_str()));
                false
            }
        };
        log.phase_finished(phase, ok);
        if phase == Phase::Rollback && ok {
            flags.rolling_back = true;
        }
        if !flags.aborting && steering.abort_requested() && abortable(strategy, phase) {
            flags.aborting = true;
            log.warn(None, "aborted by cutover abort: going back to the previous version");
        }
        match transition(strategy, phase, ok, flags) {
            Next::Phase(next) => phase = next,
            Next::Finish(outcome) => break outcome,
        }
    };
    outcome
}

async fn run_phase(
    strategy: Strategy,
    phase: Phase,
    flags: Flags,
    ops: &dyn DeployOps,
    log: &DeploymentLog,
    steering: &Steering,
) -> Result<(), String> {
    let rolling_back = flags.rolling_back || flags.aborting;
    match (strategy, phase) {
        (_, Phase::Build) => ops.hook(HookKind::Build).await,
        (_, Phase::Clone) => ops.start_clones().await,
        (_, Phase::Route) => {
            ops.route_to_clones().await;
            ops.retire_originals().await;
            Ok(())
        }
        (_, Phase::Upgrade) => ops.start_originals(Version::Target).await,
        (_, Phase::Switch) => {
            ops.route_to_originals().await;
            ops.retire_clones().await;
            // After a rollback the traffic went back to the old version:
            // the new version's post_deploy has nothing to follow up on.
            if !rolling_back {
                post_deploy(ops, log).await;
            }
            Ok(())
        }
        (_, Phase::Stop) => {
            ops.route_to_none().await;
            ops.retire_originals().await;
            Ok(())
        }
        (_, Phase::Start) => {
            ops.start_originals(Version::Target).await?;
            ops.route_to_originals().await;
            post_deploy(ops, log).await;
            Ok(())
        }
        (Strategy::Canary, Phase::Rollback) | (Strategy::Bluegreen, Phase::Rollback) => {
            steering.set_progress(None);
            ops.retire_candidates().await;
            Ok(())
        }
        (Strategy::Rolling, Phase::Rollback) => {
            if flags.aborting {
                // Aborted after the upgrade started the new version: its
                // instances (out of the table) make room for the old one.
                ops.retire_originals().await;
            }
            rolling_rollback(ops, log).await
        }
        (_, Phase::Canary) => ops.start_candidates(Role::Canary).await,
        (_, Phase::Steps) => {
            steps::walk(&ops.canary(), ops, steering, log).await?;
            ops.confirm_candidates_ready().await
        }
        (_, Phase::Promote) => {
            steering.set_progress(None);
            ops.promote_canaries().await;
            post_deploy(ops, log).await;
            Ok(())
        }
        (_, Phase::Green) => ops.start_candidates(Role::Green).await,
        (_, Phase::Swap) => {
            ops.swap_to_green().await;
            post_deploy(ops, log).await;
            Ok(())
        }
        (_, Phase::Rollback) => match ops.start_originals(Version::Previous).await {
            Ok(()) => {
                ops.route_to_originals().await;
                Ok(())
            }
            Err(reason) => {
                ops.revive_previous().await;
                Err(reason)
            }
        },
        (_, Phase::Done) => {
            // `rolled back` is known from the log: a finished rollback
            // phase; an honoured abort went back too.
            let rolled_back = flags.aborting
                || log
                    .snapshot()
                    .phases
                    .iter()
                    .any(|t| t.phase == Phase::Rollback && t.ok == Some(true));
            ops.commit(if rolled_back {
                Version::Previous
            } else {
                Version::Target
            })
            .await;
            Ok(())
        }
    }
}

/// rolling's way back: the previous version in the original slots; if
/// even that fails, the clones stay as the originals.
async fn rolling_rollback(ops: &dyn DeployOps, log: &DeploymentLog) -> Result<(), String> {
    match ops.start_originals(Version::Previous).await {
        Ok(()) => Ok(()),
        Err(reason) => {
            log.warn(
                None,
                "the previous version did not start either: the clones stay as the originals",
            );
            ops.promote_clones().await;
            ops.commit(Version::Previous).await;
            Err(reason)
        }
    }
}

/// `hooks.post_deploy` runs after traffic reached the new version; its
/// failure is reported but changes nothing (the version already serves).
async fn post_deploy(ops: &dyn DeployOps, log: &DeploymentLog) {
    if let Err(reason) = ops.hook(HookKind::PostDeploy).await {
        log.warn(None, format!("post_deploy hook failed: {reason}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::fake::FakeOps;
    use crate::deploy::record::Deployment;

    async fn run(strategy: Strategy, fail: &[&'static str]) -> (Outcome, Vec<String>, Deployment) {
        let ops = FakeOps::failing(fail);
        let log = DeploymentLog::new(Deployment::new("t-1".into(), "web", strategy, "a".into(), "b".into()));
        let outcome = execute(strategy, &ops, &log, &Steering::default()).await;
        (outcome, ops.calls(), log.snapshot())
    }

    #[tokio::test]
    async fn rolling_happy_path_does_every_step_in_order() {
        let (outcome, calls, record) = run(Strategy::Rolling, &[]).await;
        assert_eq!(outcome, Outcome::Succeeded);
        assert_eq!(
            calls,
            [
                "build",
                "start_clones",
                "route_to_clones",
                "retire_originals",
                "start_target",
                "route_to_originals",
                "retire_clones",
                "post_deploy",
                "commit_target"
            ]
        );
        let phases: Vec<_> = record.phases.iter().map(|p| p.phase.as_str()).collect();
        assert_eq!(phases, ["build", "clone", "route", "upgrade", "switch", "done"]);
        assert!(record.phases.iter().all(|p| p.duration_ms.is_some()));
        assert_eq!(record.outcome, Some(Outcome::Succeeded));
        assert_eq!(record.events.last().unwrap().outcome, Some(Outcome::Succeeded));
    }

    #[tokio::test]
    async fn rolling_build_failure_touches_nothing() {
        let (outcome, calls, _) = run(Strategy::Rolling, &["build"]).await;
        assert_eq!(outcome, Outcome::Failed);
        assert_eq!(calls, ["build"]);
    }

    #[tokio::test]
    async fn rolling_clone_failure_touches_no_original() {
        let (outcome, calls, _) = run(Strategy::Rolling, &["start_clones"]).await;
        assert_eq!(outcome, Outcome::Failed);
        assert_eq!(calls, ["build", "start_clones"]);
    }

    #[tokio::test]
    async fn rolling_upgrade_failure_rolls_back_and_switches_to_the_old_version() {
        let (outcome, calls, record) = run(Strategy::Rolling, &["start_target"]).await;
        assert_eq!(outcome, Outcome::RolledBack);
        assert_eq!(
            calls,
            [
                "build",
                "start_clones",
                "route_to_clones",
                "retire_originals",
                "start_target",
                "start_previous",
                "route_to_originals",
                "retire_clones",
                "commit_previous"
            ]
        );
        assert!(record.events.iter().any(|e| e.message.contains("start_target broke")));
        assert!(
            !calls.iter().any(|c| c == "post_deploy"),
            "post_deploy after a rollback: {calls:?}"
        );
    }

    #[tokio::test]
    async fn rolling_failed_rollback_promotes_the_clones() {
        let (outcome, calls, _) = run(Strategy::Rolling, &["start_target", "start_previous"]).await;
        assert_eq!(outcome, Outcome::RolledBack);
        assert_eq!(
            calls,
            [
                "build",
                "start_clones",
                "route_to_clones",
                "retire_originals",
                "start_target",
                "start_previous",
                "promote_clones",
                "commit_previous"
            ]
        );
    }

    #[tokio::test]
    async fn post_deploy_failure_is_a_warning_only() {
        let (outcome, _, record) = run(Strategy::Rolling, &["post_deploy"]).await;
        assert_eq!(outcome, Outcome::Succeeded);
        assert!(record
            .events
            .iter()
            .any(|e| e.message.contains("post_deploy hook failed")));
    }

    #[tokio::test]
    async fn stopstart_paths() {
        let (outcome, calls, _) = run(Strategy::Stopstart, &[]).await;
        assert_eq!(outcome, Outcome::Succeeded);
        assert_eq!(
            calls,
            [
                "build",
                "route_to_none",
                "retire_originals",
                "start_target",
                "route_to_originals",
                "post_deploy",
                "commit_target"
            ]
        );

        let (outcome, calls, _) = run(Strategy::Stopstart, &["start_target"]).await;
        assert_eq!(outcome, Outcome::RolledBack);
        assert_eq!(
            &calls[3..],
            [
                "start_target",
                "start_previous",
                "route_to_originals",
                "commit_previous"
            ]
        );

        let (outcome, calls, _) = run(Strategy::Stopstart, &["start_target", "start_previous"]).await;
        assert_eq!(outcome, Outcome::Failed);
        assert_eq!(calls.last().unwrap(), "revive_previous");

        let (outcome, calls, _) = run(Strategy::Stopstart, &["build"]).await;
        assert_eq!(outcome, Outcome::Failed);
        assert_eq!(calls, ["build"]);
    }
}
