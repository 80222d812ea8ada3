//! The canary and blue-green paths of the driver, and abort on every
//! strategy, with the fake operations and a fake split whose measurements
//! the test feeds (short pauses, a short analysis tick).

use std::sync::Arc;
use std::time::Duration;

use super::analysis::Verdict;
use super::{PromoteRefused, Steering};
use crate::config::{AnalysisConfig, CanaryConfig, CanaryStep, StepPause, Strategy};
use crate::deploy::fake::{FakeMeasure, FakeOps};
use crate::deploy::phase::Outcome;
use crate::deploy::record::{Deployment, DeploymentLog, EventKind};
use crate::deploy::run::execute;

const TICK: Duration = Duration::from_millis(5);
/// Every wait on a condition gives up after this.
const WAIT: Duration = Duration::from_secs(20);

fn step(weight: u8, pause: StepPause) -> CanaryStep {
    CanaryStep { weight, pause }
}

fn timed(weight: u8, ms: u64) -> CanaryStep {
    step(weight, StepPause::For(Duration::from_millis(ms)))
}

fn canary(steps: Vec<CanaryStep>, min_requests: u64) -> CanaryConfig {
    CanaryConfig {
        steps,
        sticky: true,
        analysis: AnalysisConfig {
            max_error_rate_bp: 100,
            max_latency_ratio_milli: 1500,
            min_requests,
        },
    }
}

/// Feeds `measure` until dropped: every tick, `stable` and `canary`
/// requests (errors, p99 in ms) per round.
struct Load(tokio::task::JoinHandle<()>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn load(measure: &Arc<FakeMeasure>, canary: (u64, u64, u64), stable: (u64, u64, u64)) -> Load {
    let measure = Arc::clone(measure);
    Load(tokio::spawn(async move {
        loop {
            measure.stable(stable.0, stable.1, Some(stable.2));
            measure.canary(canary.0, canary.1, Some(canary.2));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }))
}

fn log(strategy: Strategy) -> Arc<DeploymentLog> {
    Arc::new(DeploymentLog::new(Deployment::new(
        "web-1".into(),
        "web",
        strategy,
        "a".into(),
        "b".into(),
    )))
}

/// Runs a deployment in the background; returns its steering, log and task.
fn start(
    strategy: Strategy,
    ops: FakeOps,
) -> (
    Arc<Steering>,
    Arc<DeploymentLog>,
    Arc<FakeOps>,
    tokio::task::JoinHandle<Outcome>,
) {
    let steering = Arc::new(Steering::new(TICK, None));
    start_with(strategy, ops, steering)
}

fn start_with(
    strategy: Strategy,
    ops: FakeOps,
    steering: Arc<Steering>,
) -> (
    Arc<Steering>,
    Arc<DeploymentLog>,
    Arc<FakeOps>,
    tokio::task::JoinHandle<Outcome>,
) {
    let ops = Arc::new(ops);
    let log = log(strategy);
    let task = {
        let (ops, log, steering) = (Arc::clone(&ops), Arc::clone(&log), Arc::clone(&steering));
        tokio::spawn(async move { execute(strategy, &*ops, &log, &steering).await })
    };
    (steering, log, ops, task)
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn finish(task: tokio::task::JoinHandle<Outcome>) -> Outcome {
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the deployment ends")
        .unwrap()
}

fn errors(log: &DeploymentLog) -> Vec<String> {
    log.snapshot()
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Error)
        .map(|e| e.message.clone())
        .collect()
}

#[tokio::test]
async fn a_healthy_canary_walks_every_step_then_serves_alone() {
    let ops = FakeOps::with_canary(canary(vec![timed(5, 10), timed(25, 10), timed(50, 0)], 5));
    let _load = load(&ops.measure, (1, 0, 10), (10, 0, 10));
    let (_, log, ops, task) = start(Strategy::Canary, ops);
    assert_eq!(finish(task).await, Outcome::Succeeded);
    assert_eq!(
        ops.calls(),
        [
            "build",
            "start_canaries",
            "split 500",
            "split 2500",
            "split 5000",
            "promote_canaries",
            "post_deploy",
            "commit_target"
        ]
    );
    let phases: Vec<_> = log.snapshot().phases.iter().map(|p| p.phase.as_str()).collect();
    assert_eq!(phases, ["build", "canary", "steps", "promote", "done"]);
}

#[tokio::test]
async fn an_error_rate_breach_rolls_back_at_once_with_the_reason() {
    let ops = FakeOps::with_canary(canary(vec![timed(10, 3_600_000)], 10));
    // 1 request in 5 fails on the canary: 20% > 1%.
    let _load = load(&ops.measure, (5, 1, 10), (10, 0, 10));
    let (_, log, ops, task) = start(Strategy::Canary, ops);
    assert_eq!(finish(task).await, Outcome::RolledBack);
    assert_eq!(
        ops.calls(),
        ["build", "start_canaries", "split 1000", "retire_candidates"],
        "the canaries leave, drain and stop; nothing is committed"
    );
    let errors = errors(&log);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("steps failed: error rate 20% > 1%")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_slow_canary_breaches_the_latency_ratio() {
    let ops = FakeOps::with_canary(canary(vec![timed(10, 3_600_000)], 10));
    let _load = load(&ops.measure, (5, 0, 300), (10, 0, 100));
    let (_, log, ops, task) = start(Strategy::Canary, ops);
    assert_eq!(finish(task).await, Outcome::RolledBack);
    assert_eq!(ops.calls().last().map(String::as_str), Some("retire_candidates"));
    let errors = errors(&log);
    assert!(
        errors.iter().any(|e| e.contains("latency ratio 3.00 > 1.5")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_timed_step_waits_for_min_requests_after_its_pause() {
    let ops = FakeOps::with_canary(canary(vec![timed(10, 0)], 20));
    let measure = Arc::clone(&ops.measure);
    let (steering, _log, ops, task) = start(Strategy::Canary, ops);
    eventually("the step to start", || steering.progress().is_some()).await;
    // The pause (0s) is over at once, but no request reached the canary.
    tokio::time::sleep(TICK * 10).await;
    assert!(!task.is_finished(), "passed on too few requests: {:?}", ops.calls());
    let seen = steering.progress().and_then(|p| p.judgement);
    assert_eq!(seen.map(|j| j.verdict), Some(Verdict::TooFew));
    measure.stable(100, 0, Some(10));
    measure.canary(20, 0, Some(10));
    assert_eq!(finish(task).await, Outcome::Succeeded);
}

#[tokio::test]
async fn a_manual_step_waits_for_promote() {
    let ops = FakeOps::with_canary(canary(vec![timed(10, 0), step(50, StepPause::Manual)], 0));
    let (steering, _log, ops, task) = start(Strategy::Canary, ops);
    eventually("the manual pause", || {
        steering.progress().is_some_and(|p| p.waiting_manual)
    })
    .await;
    tokio::time::sleep(TICK * 10).await;
    assert!(!task.is_finished(), "a manual pause passed alone: {:?}", ops.calls());
    assert_eq!(steering.progress().map(|p| (p.step, p.weight)), Some((1, 50)));
    steering.promote(false).unwrap();
    assert_eq!(finish(task).await, Outcome::Succeeded);
    assert!(ops.calls().contains(&"promote_canaries".to_string()));
}

#[tokio::test]
async fn promote_is_refused_outside_a_manual_pause_but_full_promote_is_not() {
    let ops = FakeOps::with_canary(canary(vec![timed(10, 3_600_000), timed(20, 3_600_000)], 0));
    let (steering, _log, ops, task) = start(Strategy::Canary, ops);
    assert_eq!(
        steering.promote(false),
        Err(PromoteRefused::NotAtPause),
        "not in the steps yet"
    );
    eventually("the first step", || steering.progress().is_some()).await;
    assert_eq!(steering.promote(false), Err(PromoteRefused::NotAtPause));
    steering.promote(true).unwrap();
    assert_eq!(finish(task).await, Outcome::Succeeded);
    assert_eq!(
        ops.calls(),
        [
            "build",
            "start_canaries",
            "split 1000",
            "promote_canaries",
            "post_deploy",
            "commit_target"
        ],
        "a full promote skips every remaining step"
    );
}

#[tokio::test]
async fn a_full_promote_at_a_manual_pause_skips_the_rest() {
    let manual = StepPause::Manual;
    let ops = FakeOps::with_canary(canary(vec![step(10, manual), step(20, manual), step(30, manual)], 0));
    let (steering, _log, ops, task) = start(Strategy::Canary, ops);
    eventually("the manual pause", || {
        steering.progress().is_some_and(|p| p.waiting_manual)
    })
    .await;
    steering.promote(true).unwrap();
    assert_eq!(finish(task).await, Outcome::Succeeded);
    assert_eq!(ops.calls().iter().filter(|c| c.starts_with("split")).count(), 1);
}

#[tokio::test]
async fn abort_during_the_steps_ends_aborted_and_removes_the_canaries() {
    let ops = FakeOps::with_canary(canary(vec![timed(10, 3_600_000)], 0));
    let (steering, log, ops, task) = start(Strategy::Canary, ops);
    eventually("the first step", || steering.progress().is_some()).await;
    steering.abort();
    assert_eq!(finish(task).await, Outcome::Aborted);
    assert_eq!(ops.calls().last().map(String::as_str), Some("retire_candidates"));
    assert!(steering.progress().is_none(), "no canary once it ended");
    assert_eq!(log.snapshot().outcome, Some(Outcome::Aborted));
}

#[tokio::test]
async fn bluegreen_swaps_once_and_abort_before_the_swap_stops_the_green_set() {
    let (_, _, ops, task) = start(Strategy::Bluegreen, FakeOps::default());
    assert_eq!(finish(task).await, Outcome::Succeeded);
    assert_eq!(
        ops.calls(),
        ["build", "start_green", "swap_to_green", "post_deploy", "commit_target"]
    );

    let steering = Arc::new(Steering::new(TICK, None));
    let ops = FakeOps::aborting_at("start_green", &steering);
    let (_, _, ops, task) = start_with(Strategy::Bluegreen, ops, steering);
    assert_eq!(finish(task).await, Outcome::Aborted);
    assert_eq!(ops.calls(), ["build", "start_green", "retire_candidates"]);
}

#[tokio::test]
async fn abort_of_a_rolling_deploy_takes_the_rollback_path() {
    let steering = Arc::new(Steering::new(TICK, None));
    let ops = FakeOps::aborting_at("start_target", &steering);
    let (_, _, ops, task) = start_with(Strategy::Rolling, ops, steering);
    assert_eq!(finish(task).await, Outcome::Aborted);
    assert_eq!(
        ops.calls(),
        [
            "build",
            "start_clones",
            "route_to_clones",
            "retire_originals",
            "start_target",
            "retire_originals",
            "start_previous",
            "route_to_originals",
            "retire_clones",
            "commit_previous"
        ]
    );
}

#[tokio::test]
async fn abort_of_a_stopstart_deploy_restarts_the_previous_version() {
    let steering = Arc::new(Steering::new(TICK, None));
    let ops = FakeOps::aborting_at("retire_originals", &steering);
    let (_, _, ops, task) = start_with(Strategy::Stopstart, ops, steering);
    assert_eq!(finish(task).await, Outcome::Aborted);
    assert_eq!(
        ops.calls(),
        [
            "build",
            "route_to_none",
            "retire_originals",
            "start_previous",
            "route_to_originals",
            "commit_previous"
        ]
    );
}

#[tokio::test]
async fn an_abort_after_the_new_version_serves_alone_changes_nothing() {
    let steering = Arc::new(Steering::new(TICK, None));
    let ops = FakeOps::aborting_at("post_deploy", &steering);
    let (_, _, ops, task) = start_with(Strategy::Stopstart, ops, steering);
    assert_eq!(finish(task).await, Outcome::Succeeded);
    assert_eq!(ops.calls().last().map(String::as_str), Some("commit_target"));
}
