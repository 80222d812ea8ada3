//! Rollback and the blue-green warm set through the real controller, with
//! real app processes (`python3 -m http.server` answering `GET /health`
//! from a file) and the real supervisor, journal and route table:
//! - a rollback deploys the journal's previous version, recorded as a
//!   `rollback` operation, and a second one goes forward again;
//! - a blue-green deploy swaps once, keeps the previous set warm, and a
//!   rollback inside the window swaps back (the newer set stops);
//! - the warm set drains and stops once `keep_previous` is over;
//! - a canary (measured through a test split) waits at its manual pause,
//!   shows its status and metrics, and is promoted or aborted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover_control::config::{AppConfig, Config, Strategy};
use cutover_control::deploy::canary::traffic::{Measure, Measurements, Pair, SplitEnd, Traffic};
use cutover_control::deploy::metrics::DeployMetrics;
use cutover_control::deploy::phase::Outcome;
use cutover_control::deploy::record::{Deployment, Operation};
use cutover_control::deploy::{Controller, DeployError, DeploymentRef};
use cutover_control::journal::Journal;
use cutover_control::routing::Routing;
use cutover_control::supervisor::instance::{Instance, InstanceState, Role};
use cutover_control::supervisor::{orphans, pidfile, Supervisor};
use cutover_proxy::{ProxyMetrics, RouteTable, TableHandle};

/// Every wait on a condition gives up after this.
const WAIT: Duration = Duration::from_secs(60);

struct Fixture {
    dir: PathBuf,
    controller: Arc<Controller>,
    supervisor: Arc<Supervisor>,
    journal: Arc<Journal>,
    table: Arc<TableHandle>,
    registry: prometheus::Registry,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        orphans::reap(&self.dir.join("run"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `deploy.yaml` with app `web` at `version` (its env), deployed with
/// `strategy`, keeping a previous blue-green set for `keep`.
fn source(dir: &std::path::Path, version: &str, strategy: &str, keep: &str) -> String {
    format!(
        "apps:\n  web:\n    command: 'exec python3 -m http.server --bind 127.0.0.1 \"$PORT\"'\n    cwd: {www}\n    \
         env: {{ APP_VERSION: {version} }}\n    instances: 1\n    \
         health: {{ path: /health, interval: 100ms, timeout: 1s, start_timeout: 20s }}\n    \
         drain_timeout: 3s\n    stop_timeout: 2s\n    deploy_strategy: {strategy}\n    \
         bluegreen: {{ keep_previous: {keep} }}\n    \
         canary: {{ steps: [{{ weight: 10, pause: 0s }}, {{ weight: 50, pause: manual }}], analysis: {{ min_requests: 0 }} }}\n\
         routes:\n  - {{ host: \"*\", path: /, app: web }}\n",
        www = dir.join("www").display(),
    )
}

fn parse(dir: &std::path::Path, text: &str) -> Config {
    cutover_control::config::parse(text, "deploy.yaml", dir).unwrap()
}

/// A running `web` at v1 under a controller.
async fn fixture(tag: &str, strategy: &str, keep: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("cutover-progressive-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/health"), "ok\n").unwrap();
    let dir = pidfile::canonical(&dir);
    let text = source(&dir, "v1", strategy, keep);
    let config = parse(&dir, &text);
    let registry = prometheus::Registry::new();
    let table = TableHandle::new(RouteTable::default());
    let routing = Routing::new(Arc::clone(&table), ProxyMetrics::new(&registry).unwrap());
    routing.configure(&config.routes, &config.proxy, config.apps.values());
    let supervisor = Arc::new(Supervisor::new(routing, &dir));
    let journal = Arc::new(Journal::open(&dir).unwrap());
    let metrics = DeployMetrics::new(&registry).unwrap();
    metrics.app_configured("web");
    let web = supervisor.start_app(Arc::new(config.apps["web"].clone()));
    for instance in &web {
        tokio::time::timeout(WAIT, instance.ready()).await.unwrap().unwrap();
    }
    let controller = Controller::new(
        Arc::clone(&supervisor),
        Arc::clone(&journal),
        metrics,
        dir.clone(),
        config,
        BTreeMap::from([("web".to_string(), text)]),
    );
    Fixture {
        dir,
        controller,
        supervisor,
        journal,
        table,
        registry,
    }
}

impl Fixture {
    /// Stages `web` at `version` and deploys it; returns the finished record.
    async fn deploy(&self, version: &str, strategy: &str, keep: &str) -> Deployment {
        let id = self.start(version, strategy, keep);
        self.finished(&id).await
    }

    /// Stages `web` at `version` and starts deploying it; returns the id.
    fn start(&self, version: &str, strategy: &str, keep: &str) -> String {
        let text = source(&self.dir, version, strategy, keep);
        let app: AppConfig = parse(&self.dir, &text).apps.remove("web").unwrap();
        self.controller.restore_staged(vec![(Arc::new(app), text)]);
        self.controller.deploy(Some("web"), None).unwrap().remove(0).id
    }

    /// `name{labels}`'s value in the metrics.
    fn metric(&self, series: &str) -> Option<f64> {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap();
        text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    async fn finished(&self, id: &str) -> Deployment {
        let Some(DeploymentRef::Live(log)) = self.controller.deployment(id) else {
            panic!("no live deployment {id}");
        };
        let mut changes = log.subscribe();
        tokio::time::timeout(WAIT, async {
            while !log.is_finished() {
                let _ = changes.changed().await;
            }
        })
        .await
        .expect("the deployment ends");
        // The app is free once the record says so (same step).
        log.snapshot()
    }

    fn version(&self) -> String {
        self.supervisor.app("web").unwrap().config.version()
    }

    fn originals(&self) -> Vec<Arc<Instance>> {
        self.supervisor.app("web").unwrap().originals
    }

    fn previous(&self) -> Vec<Arc<Instance>> {
        self.supervisor.app("web").unwrap().previous
    }

    /// The instances named in the published table for `web`.
    fn in_table(&self) -> Vec<String> {
        let table = self.table.load();
        let mut names: Vec<String> = table
            .apps()
            .filter(|(_, app)| &**app.name() == "web")
            .flat_map(|(_, app)| {
                app.backends()
                    .iter()
                    .map(|b| b.instance().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        names.sort();
        names
    }
}

fn names(instances: &[Arc<Instance>]) -> Vec<String> {
    instances.iter().map(|i| i.name().to_string()).collect()
}

fn stopped(instance: &Instance) -> bool {
    matches!(instance.state(), InstanceState::Stopped)
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now().checked_add(WAIT).unwrap();
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_deploys_the_journals_previous_version_and_is_recorded_as_one() {
    let f = fixture("rollback", "stopstart", "5m").await;
    let v1 = f.version();
    assert!(
        matches!(f.controller.rollback(Some("web")), Err(DeployError::NothingToRollBack(app)) if app == "web"),
        "nothing to roll back to before any deploy"
    );
    let deployed = f.deploy("v2", "stopstart", "5m").await;
    assert_eq!(deployed.outcome, Some(Outcome::Succeeded));
    let v2 = f.version();
    assert_ne!(v1, v2);
    assert_eq!(f.journal.state().previous["web"].version, v1);

    let started = f.controller.rollback(Some("web")).unwrap();
    assert!(
        matches!(f.controller.rollback(Some("web")), Err(DeployError::Conflict { id, .. }) if id == started[0].id),
        "one operation per app at a time"
    );
    let record = f.finished(&started[0].id).await;
    assert_eq!(record.operation, Operation::Rollback);
    assert_eq!(record.strategy, Strategy::Stopstart, "the app's strategy");
    assert_eq!(
        (record.from_version.as_str(), record.to_version.as_str()),
        (v2.as_str(), v1.as_str())
    );
    assert_eq!(record.outcome, Some(Outcome::Succeeded));
    assert_eq!(f.version(), v1);
    let state = f.journal.state();
    assert_eq!(state.current["web"].version, v1);
    assert_eq!(
        state.previous["web"].version, v2,
        "a second rollback goes forward again"
    );
    // The history line follows the outcome (see `Controller::finished`).
    eventually("the rollback in the history", || {
        f.journal
            .history()
            .iter()
            .any(|d| d.id == started[0].id && d.operation == Operation::Rollback)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bluegreen_keeps_the_previous_set_warm_and_a_rollback_swaps_back() {
    let f = fixture("bluegreen", "bluegreen", "5m").await;
    let v1 = f.version();
    let blue = f.originals();
    assert_eq!(names(&blue), ["web-0"]);

    let record = f.deploy("v2", "bluegreen", "5m").await;
    assert_eq!(record.outcome, Some(Outcome::Succeeded), "{:#?}", record.events);
    let phases: Vec<_> = record.phases.iter().map(|p| p.phase.as_str()).collect();
    assert_eq!(phases, ["build", "green", "swap", "done"]);
    let green = f.originals();
    assert_eq!(names(&green), ["web-green-0"]);
    assert_eq!(
        green[0].role().as_str(),
        "original",
        "green is the app's own after the swap"
    );
    assert_eq!(f.in_table(), ["web-green-0"]);
    // The previous set: running, ready, out of the table.
    assert_eq!(names(&f.previous()), ["web-0"]);
    assert!(blue[0].state().ready_backend().is_some());
    assert!(f.controller.has_warm("web"));

    let started = f.controller.rollback(Some("web")).unwrap();
    let back = f.finished(&started[0].id).await;
    assert_eq!(back.operation, Operation::Rollback);
    assert_eq!(back.strategy, Strategy::Bluegreen);
    assert_eq!(back.outcome, Some(Outcome::Succeeded));
    assert_eq!(f.version(), v1);
    assert_eq!(names(&f.originals()), ["web-0"], "the very same processes serve again");
    assert_eq!(f.in_table(), ["web-0"]);
    assert!(stopped(&green[0]), "the newer set drained and stopped");
    assert!(!f.controller.has_warm("web"));
    assert_eq!(f.journal.state().current["web"].version, v1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_set_stops_once_keep_previous_is_over() {
    let f = fixture("expiry", "bluegreen", "1s").await;
    let blue = f.originals();
    let record = f.deploy("v2", "bluegreen", "1s").await;
    assert_eq!(record.outcome, Some(Outcome::Succeeded));
    eventually("the previous set to stop", || stopped(&blue[0])).await;
    assert!(!f.controller.has_warm("web"));
    assert!(f.previous().is_empty());
    assert_eq!(names(&f.originals()), ["web-green-0"]);
    // Without the warm set a rollback deploys the previous version anew,
    // with a fresh green set (names are never reused).
    let started = f.controller.rollback(Some("web")).unwrap();
    let back = f.finished(&started[0].id).await;
    assert_eq!(back.outcome, Some(Outcome::Succeeded));
    assert_eq!(
        back.phases.iter().map(|p| p.phase.as_str()).collect::<Vec<_>>(),
        ["build", "green", "swap", "done"]
    );
    assert_eq!(names(&f.originals()), ["web-green-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_deploy_retires_the_warm_set_first() {
    let f = fixture("redeploy", "bluegreen", "5m").await;
    let blue = f.originals();
    f.deploy("v2", "bluegreen", "5m").await;
    assert!(f.controller.has_warm("web"));
    let record = f.deploy("v3", "bluegreen", "5m").await;
    assert_eq!(record.outcome, Some(Outcome::Succeeded));
    assert!(stopped(&blue[0]), "the oldest set is gone");
    assert_eq!(
        names(&f.previous()),
        ["web-green-0"],
        "the set just replaced is the warm one now"
    );
}

/// A split that records its weights, measures a healthy canary, and ends
/// through the route table.
struct TestSplit {
    routing: Arc<Routing>,
    weights: Mutex<Vec<u16>>,
    canaries: Mutex<Vec<String>>,
}

struct Healthy;

impl Measure for Healthy {
    fn mark(&self) {}

    fn read(&self) -> Pair {
        let side = Measurements {
            requests: 100,
            server_errors: 0,
            connect_failures: 0,
            p99: Some(Duration::from_millis(10)),
        };
        Pair {
            stable: side,
            canary: side,
        }
    }
}

impl Traffic for TestSplit {
    fn set_split(
        &self,
        _app: &str,
        canaries: &[Arc<Instance>],
        weight_bp: u16,
        _sticky: bool,
    ) -> Result<Arc<dyn Measure>, String> {
        self.weights.lock().unwrap().push(weight_bp);
        *self.canaries.lock().unwrap() = names(canaries);
        Ok(Arc::new(Healthy))
    }

    fn end_split(&self, app: &str, keep: SplitEnd) -> u64 {
        Traffic::end_split(&*self.routing, app, keep)
    }
}

fn test_split(f: &Fixture) -> Arc<TestSplit> {
    let split = Arc::new(TestSplit {
        routing: Arc::clone(f.supervisor.routing()),
        weights: Mutex::new(Vec::new()),
        canaries: Mutex::new(Vec::new()),
    });
    f.controller.set_traffic(Arc::clone(&split) as Arc<dyn Traffic>);
    split
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_waits_at_its_manual_pause_then_promote_makes_it_the_app() {
    let f = fixture("canary", "canary", "5m").await;
    let split = test_split(&f);
    let stable = f.originals();
    assert_eq!(
        f.metric("cutover_canary_weight{app=\"web\"}"),
        Some(0.0),
        "present from start-up"
    );
    let id = f.start("v2", "canary", "5m");
    eventually("the manual pause", || {
        f.controller.canary_status("web").is_some_and(|s| s.waiting.is_some())
    })
    .await;
    let status = f.controller.canary_status("web").unwrap();
    assert_eq!(
        (status.deployment.as_str(), status.step, status.steps),
        (id.as_str(), 2, 2)
    );
    assert_eq!(status.weight, 50.0);
    assert_eq!(status.waiting.as_deref(), Some("manual"));
    let metrics: Vec<_> = status
        .analysis
        .iter()
        .map(|a| (a.metric.as_str(), a.value, a.limit))
        .collect();
    assert_eq!(
        metrics,
        [
            ("error_rate", 0.0, 0.01),
            ("latency_ratio", 1.0, 1.5),
            ("requests", 100.0, 0.0)
        ]
    );
    assert_eq!(*split.weights.lock().unwrap(), [1000, 5000]);
    assert_eq!(*split.canaries.lock().unwrap(), ["web-canary-0"]);
    let candidates = f.supervisor.app("web").unwrap().candidates;
    assert_eq!(candidates[0].role(), Role::Canary);
    assert_eq!(f.metric("cutover_canary_weight{app=\"web\"}"), Some(50.0));
    assert_eq!(
        f.metric("cutover_deployment_analysis{app=\"web\",metric=\"requests\"}"),
        Some(100.0)
    );
    assert!(matches!(
        f.controller.deploy(Some("web"), None),
        Err(DeployError::Conflict { id: running, .. }) if running == id
    ));

    f.controller.promote(&id, false).unwrap();
    let record = f.finished(&id).await;
    assert_eq!(record.outcome, Some(Outcome::Succeeded), "{:#?}", record.events);
    let phases: Vec<_> = record.phases.iter().map(|p| p.phase.as_str()).collect();
    assert_eq!(phases, ["build", "canary", "steps", "promote", "done"]);
    assert_eq!(names(&f.originals()), ["web-canary-0"]);
    assert_eq!(f.originals()[0].role(), Role::Original);
    assert_eq!(f.in_table(), ["web-canary-0"]);
    assert!(stopped(&stable[0]), "the stable instances drained and stopped");
    assert!(f.controller.canary_status("web").is_none());
    assert_eq!(f.metric("cutover_canary_weight{app=\"web\"}"), Some(0.0));
    assert!(matches!(
        f.controller.promote(&id, false),
        Err(DeployError::Ended { .. })
    ));
    assert!(matches!(
        f.controller.abort("web-999"),
        Err(DeployError::UnknownDeployment(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_of_a_canary_removes_it_and_the_stable_version_serves_on() {
    let f = fixture("abort", "canary", "5m").await;
    test_split(&f);
    let stable = f.originals();
    let id = f.start("v2", "canary", "5m");
    assert!(
        matches!(f.controller.promote(&id, false), Err(DeployError::NotAtPause { .. })),
        "not at a pause while the canaries start"
    );
    eventually("the manual pause", || {
        f.controller.canary_status("web").is_some_and(|s| s.waiting.is_some())
    })
    .await;
    let canary = f.supervisor.app("web").unwrap().candidates;
    f.controller.abort(&id).unwrap();
    let record = f.finished(&id).await;
    assert_eq!(record.outcome, Some(Outcome::Aborted));
    assert!(stopped(&canary[0]), "the canary drained and stopped");
    assert_eq!(names(&f.originals()), ["web-0"]);
    assert!(
        Arc::ptr_eq(&f.originals()[0], &stable[0]),
        "the stable processes never stopped"
    );
    assert_eq!(f.in_table(), ["web-0"]);
    assert_eq!(f.version(), stable[0].spec().app.version());
    assert!(!f.journal.state().previous.contains_key("web"), "nothing was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_of_a_paused_app_fails_before_starting_anything() {
    let f = fixture("paused", "canary", "5m").await;
    test_split(&f);
    let stable = f.originals();
    f.controller.pause("web", Duration::from_secs(60)).unwrap();
    let id = f.start("v2", "canary", "5m");
    let record = f.finished(&id).await;
    assert_eq!(record.outcome, Some(Outcome::Failed), "{:#?}", record.events);
    assert!(
        record.reason.as_deref().is_some_and(|r| r.contains("paused")),
        "{:?}",
        record.reason
    );
    assert!(f.supervisor.app("web").unwrap().candidates.is_empty());
    assert!(Arc::ptr_eq(&f.originals()[0], &stable[0]), "nothing changed");
    // Resumed, the same canary can run.
    f.controller.resume("web").unwrap();
    let id = f.start("v3", "canary", "5m");
    eventually("the manual pause", || {
        f.controller.canary_status("web").is_some_and(|s| s.waiting.is_some())
    })
    .await;
    f.controller.abort(&id).unwrap();
    assert_eq!(f.finished(&id).await.outcome, Some(Outcome::Aborted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_died_at_its_pause_is_not_promoted_into_an_empty_table() {
    let f = fixture("died", "canary", "5m").await;
    test_split(&f);
    let stable = f.originals();
    let id = f.start("v2", "canary", "5m");
    eventually("the manual pause", || {
        f.controller.canary_status("web").is_some_and(|s| s.waiting.is_some())
    })
    .await;
    // The canary is stopped behind the deployment's back: promote must not
    // make an instance that is not ready the app's only one.
    let canary = f.supervisor.app("web").unwrap().candidates;
    canary[0].stop().await;
    f.controller.promote(&id, true).unwrap();
    let record = f.finished(&id).await;
    assert_eq!(record.outcome, Some(Outcome::RolledBack), "{:#?}", record.events);
    assert!(
        record.reason.as_deref().is_some_and(|r| r.contains("not ready")),
        "{:?}",
        record.reason
    );
    assert!(
        Arc::ptr_eq(&f.originals()[0], &stable[0]),
        "the stable version serves on"
    );
    assert_eq!(f.in_table(), ["web-0"]);
}
