//! The operator's switches (SPEC §2 `pause`/`resume`/`maintenance`, §4,
//! §9), `error_pages` pushes and what a push says of settings it cannot
//! apply (`proxy.tuning`), through a real controller: a real journal
//! in a temporary state_dir, a real supervisor running `sleep` instances,
//! real routing publishing to a real table handle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cutover_control::api::progressive::AppSwitches;
use cutover_control::certs::CertManager;
use cutover_control::config::{self, Config};
use cutover_control::deploy::boot;
use cutover_control::deploy::metrics::DeployMetrics;
use cutover_control::deploy::phase::Outcome;
use cutover_control::deploy::record::{EventKind, Operation};
use cutover_control::deploy::switches::Wanted;
use cutover_control::deploy::{Controller, DeployError};
use cutover_control::journal::Journal;
use cutover_control::routing::Routing;
use cutover_control::supervisor::{orphans, pidfile, Supervisor};
use cutover_proxy::{ProxyMetrics, RouteTable, TableHandle};

/// An app whose instances run (and never pass a health check: nothing
/// here needs traffic), and a second one to remove.
fn source(web_extra: &str, with_api: bool) -> String {
    let api = if with_api {
        "  api:\n    command: [\"sleep\", \"300\"]\n    stop_timeout: 1s\n"
    } else {
        ""
    };
    let api_route = if with_api {
        "  - { host: \"*\", path: /api, app: api }\n"
    } else {
        ""
    };
    format!(
        "apps:\n  web:\n    command: [\"sleep\", \"300\"]\n    stop_timeout: 1s\n    health: {{ start_timeout: 60s }}\n{web_extra}{api}routes:\n  - {{ host: \"*\", path: /, app: web }}\n{api_route}"
    )
}

/// A state_dir; whatever is left running with its marker is reaped when
/// dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cutover-switches-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(pidfile::canonical(&dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        orphans::reap(&self.0.join("run"));
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A controller over a state_dir, as `cutover up` builds it.
struct Fixture {
    dir: PathBuf,
    journal: Arc<Journal>,
    routing: Arc<Routing>,
    table: Arc<TableHandle>,
    supervisor: Arc<Supervisor>,
    controller: Arc<Controller>,
    config: Config,
}

/// Starts a controller on `dir` (whose journal may hold an earlier run's
/// state), restoring what the journal says like `cutover up` does.
fn start(dir: &Path, text: &str) -> Fixture {
    let dir = dir.to_path_buf();
    let config = config::parse(text, "deploy.yaml", &dir).unwrap();
    let journal = Arc::new(Journal::open(&dir).unwrap());
    let registry = prometheus::Registry::new();
    let restored = boot::restore(&journal, &config, text, &dir);
    let table = TableHandle::new(RouteTable::default());
    let routing = Routing::new(Arc::clone(&table), ProxyMetrics::new(&registry).unwrap());
    routing.configure(
        &restored.config.routes,
        &restored.config.proxy,
        restored.config.apps.values(),
    );
    boot::restore_switches(&journal, &routing, &restored.config);
    routing.publish();
    let supervisor = Arc::new(Supervisor::new(Arc::clone(&routing), &dir));
    for app in restored.config.apps.values() {
        supervisor.start_app(Arc::new(app.clone()));
    }
    let controller = Controller::new(
        Arc::clone(&supervisor),
        Arc::clone(&journal),
        DeployMetrics::new(&registry).unwrap(),
        dir.clone(),
        restored.config.clone(),
        restored.sources.clone(),
    );
    Fixture {
        dir,
        journal,
        routing,
        table,
        supervisor,
        controller,
        config: restored.config,
    }
}

impl Fixture {
    async fn stop(&self) {
        self.controller.stop_deployments().await;
        self.supervisor.stop_all().await;
    }

    fn generation(&self) -> u64 {
        self.table.load().generation()
    }

    fn journaled(&self) -> BTreeMap<String, AppSwitches> {
        Journal::open(&self.dir).unwrap().state().switches
    }

    fn version(&self) -> String {
        self.config.apps["web"].version()
    }
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn pause_resume_and_maintenance_are_journaled_swapped_and_recorded() {
    let dir = Scratch::new("verbs");
    let f = start(&dir.0, &source("", false));
    let before = f.generation();

    let paused = f.controller.pause("web", MINUTE).unwrap();
    let pause = paused.paused.clone().expect("paused");
    assert_eq!(pause.max_pause_ms, 60_000);
    assert_eq!(paused.maintenance, None);
    assert_eq!(f.controller.switches("web"), paused);
    assert_eq!(f.journaled()["web"], paused, "journaled");
    assert!(f.generation() > before, "one table swap");
    assert_eq!(Wanted::of(&paused), Wanted::Paused { max_pause: MINUTE });

    // Pausing again changes max_pause; the pause keeps its start.
    let again = f.controller.pause("web", Duration::from_secs(30)).unwrap();
    let second = again.paused.clone().unwrap();
    assert_eq!(second.max_pause_ms, 30_000);
    assert_eq!(second.since, pause.since);

    let maintained = f
        .controller
        .maintenance("web", true, Some("back at 10:00".into()))
        .unwrap();
    assert_eq!(maintained.paused, again.paused);
    let maintenance = maintained.maintenance.clone().unwrap();
    assert_eq!(maintenance.message.as_deref(), Some("back at 10:00"));
    assert_eq!(
        Wanted::of(&maintained),
        Wanted::Maintenance {
            message: Some(Arc::from("back at 10:00"))
        },
        "maintenance wins over the pause"
    );

    let resumed = f.controller.resume("web").unwrap();
    assert_eq!(resumed.paused, None);
    assert_eq!(resumed.maintenance, maintained.maintenance, "maintenance stays on");

    // A call that changes nothing answers the state and records nothing.
    let records = f.journal.history().len();
    let generation = f.generation();
    assert_eq!(f.controller.resume("web").unwrap(), resumed);
    assert_eq!(f.journal.history().len(), records);
    assert_eq!(f.journaled()["web"], resumed);
    assert!(f.generation() >= generation);

    let off = f.controller.maintenance("web", false, None).unwrap();
    assert_eq!(off, AppSwitches::default());
    assert_eq!(Wanted::of(&off), Wanted::Serving);
    assert!(f.journaled().is_empty(), "an app with no switch is not in the journal");
    assert_eq!(f.routing.switches("web"), AppSwitches::default());

    // Every change is in the history: its operation, the current version
    // both sides, succeeded, one event saying what changed.
    let history = f.journal.history();
    let operations: Vec<Operation> = history.iter().map(|d| d.operation).collect();
    assert_eq!(
        operations,
        [
            Operation::Pause,
            Operation::Pause,
            Operation::MaintenanceOn,
            Operation::Resume,
            Operation::MaintenanceOff
        ]
    );
    let mut numbers = Vec::new();
    for record in &history {
        assert_eq!(record.app, "web");
        assert_eq!(record.outcome, Some(Outcome::Succeeded));
        assert_eq!(record.from_version, f.version());
        assert_eq!(record.to_version, f.version());
        let info: Vec<&str> = record
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Info)
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(info.len(), 1, "{info:?}");
        assert_eq!(record.events.last().map(|e| e.kind), Some(EventKind::Outcome));
        numbers.push(record.id.strip_prefix("web-").unwrap().parse::<u64>().unwrap());
    }
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    assert_eq!(history[0].events[0].message, "paused; requests held up to 1m");
    assert_eq!(
        history[1].events[0].message,
        "pause changed; requests held up to 30s (was 1m)"
    );
    assert!(history[2].events[0].message.contains("back at 10:00"));
    // This run's list has them too (what /deployments shows).
    let listed: Vec<String> = f.controller.deployments().into_iter().map(|d| d.id).collect();
    assert!(history.iter().all(|r| listed.contains(&r.id)));
    // A later deployment takes the next number.
    let started = f.controller.deploy(Some("web"), None).unwrap();
    let next: u64 = started[0].id.strip_prefix("web-").unwrap().parse().unwrap();
    assert!(next > *numbers.last().unwrap());
    f.stop().await;
}

#[tokio::test]
async fn switches_survive_a_restart_and_removed_apps_lose_theirs() {
    let dir = Scratch::new("restart");
    let text = source("", true);
    let f = start(&dir.0, &text);
    f.controller.pause("web", MINUTE).unwrap();
    f.controller.maintenance("api", true, None).unwrap();
    let web = f.controller.switches("web");
    f.stop().await;

    // Restarted with both apps: both switches are back before the first
    // table is published.
    let again = start(&dir.0, &text);
    assert_eq!(again.routing.switches("web"), web);
    assert!(again.routing.switches("api").maintenance.is_some());
    assert_eq!(again.controller.switches("web"), web);
    again.stop().await;

    // Restarted without `api` in deploy.yaml (and no journaled definition
    // of it): its switches go.
    assert!(Journal::open(&dir.0).unwrap().state().current.is_empty());
    let third = start(&dir.0, &source("", false));
    assert_eq!(third.routing.switches("web"), web);
    assert!(!third.journaled().contains_key("api"));
    assert_eq!(third.journaled()["web"], web);
    third.stop().await;
}

#[tokio::test]
async fn a_push_that_removes_an_app_drops_its_switches() {
    let dir = Scratch::new("push-remove");
    let f = start(&dir.0, &source("", true));
    f.controller.pause("api", MINUTE).unwrap();
    let certs = CertManager::new(&f.config, "deploy.yaml").unwrap();
    let report = f.controller.push(&source("", false), None, &certs).unwrap();
    assert_eq!(report.removed, ["api"]);
    assert!(f.journaled().is_empty());
    assert_eq!(f.routing.switches("api"), AppSwitches::default());
    assert!(matches!(
        f.controller.pause("api", MINUTE),
        Err(DeployError::UnknownApp(app)) if app == "api"
    ));
    f.stop().await;
}

#[tokio::test]
async fn switches_are_refused_while_a_deployment_of_the_app_runs() {
    // The build hook keeps the deployment running, touching nothing.
    let dir = Scratch::new("busy");
    let f = start(&dir.0, &source("    hooks: { build: \"sleep 60\" }\n", false));
    let started = f.controller.deploy(Some("web"), None).unwrap();
    let id = started[0].id.clone();
    let busy = |result: Result<AppSwitches, DeployError>| match result {
        Err(DeployError::Conflict { app, id: running }) => {
            assert_eq!(app, "web");
            assert_eq!(running, id);
        }
        other => panic!("expected 409, got {other:?}"),
    };
    busy(f.controller.pause("web", MINUTE));
    busy(f.controller.resume("web"));
    busy(f.controller.maintenance("web", true, None));
    busy(f.controller.maintenance("web", false, None));
    assert!(f.journaled().is_empty(), "nothing journaled");
    assert_eq!(f.controller.switches("web"), AppSwitches::default());
    assert!(f.journal.history().is_empty(), "nothing recorded");

    // Once cutover stops, no switch either.
    f.stop().await;
    assert!(matches!(f.controller.pause("web", MINUTE), Err(DeployError::Stopping)));
}

#[tokio::test]
async fn unknown_apps_and_bad_values_are_refused_and_change_nothing() {
    let dir = Scratch::new("refused");
    let f = start(&dir.0, &source("", false));
    assert!(matches!(
        f.controller.pause("nope", MINUTE),
        Err(DeployError::UnknownApp(app)) if app == "nope"
    ));
    assert!(matches!(f.controller.resume("nope"), Err(DeployError::UnknownApp(_))));
    assert!(matches!(
        f.controller.maintenance("nope", true, None),
        Err(DeployError::UnknownApp(_))
    ));

    let refused = |result: Result<AppSwitches, DeployError>, wanted: &str| match result {
        Err(DeployError::InvalidConfig(message)) => assert!(message.contains(wanted), "{message}"),
        other => panic!("expected 400, got {other:?}"),
    };
    refused(
        f.controller.pause("web", Duration::from_millis(50)),
        "max_pause must be between 100ms and 1h, got 50ms",
    );
    refused(f.controller.pause("web", Duration::from_secs(7200)), "got 2h");
    refused(
        f.controller.maintenance("web", true, Some("x".repeat(1025))),
        "1025 bytes; it may be at most 1024",
    );
    refused(
        f.controller.maintenance("web", true, Some("two\nlines".into())),
        "control character U+000A",
    );
    refused(
        f.controller.maintenance("web", false, Some("bye".into())),
        "only goes with maintenance on",
    );
    assert!(f.journaled().is_empty());
    assert!(f.journal.history().is_empty());

    // The bounds themselves are accepted; a blank message is none.
    assert!(f.controller.pause("web", Duration::from_secs(1)).is_ok());
    assert!(f.controller.pause("web", Duration::from_secs(3600)).is_ok());
    let on = f.controller.maintenance("web", true, Some("  ".into())).unwrap();
    assert_eq!(on.maintenance.unwrap().message, None);
    let full = f.controller.maintenance("web", true, Some("é".repeat(512))).unwrap();
    assert_eq!(full.maintenance.unwrap().message.map(|m| m.len()), Some(1024));
    f.stop().await;
}

/// `dir` with a 503 page.
fn pages(dir: &Path, name: &str) -> PathBuf {
    let pages = dir.join(name);
    std::fs::create_dir_all(&pages).unwrap();
    std::fs::write(pages.join("503.html"), format!("<h1>{name}</h1>")).unwrap();
    pages
}

#[tokio::test]
async fn a_push_changing_only_error_pages_swaps_the_table_and_deploys_nothing() {
    let dir = Scratch::new("pages");
    // Manual deployments: a definition change would be staged, so nothing
    // is deployed or staged below unless the definition changed.
    let manual = "    manual_deployments: true\n";
    let f = start(&dir.0, &source(manual, false));
    let blue = pages(&f.dir, "blue");
    let green = pages(&f.dir, "green");
    let certs = CertManager::new(&f.config, "deploy.yaml").unwrap();
    assert_eq!(f.routing.error_pages("web"), None);

    let text = source(&format!("{manual}    error_pages: blue\n"), false);
    let before = f.generation();
    let report = f.controller.push(&text, None, &certs).unwrap();
    assert!(report.deployments.is_empty(), "{report:?}");
    assert!(report.staged.is_empty(), "{report:?}");
    assert_eq!(report.unchanged, ["web"]);
    assert!(report.routes_changed, "applied by a table swap");
    assert!(f.generation() > before);
    assert_eq!(f.routing.error_pages("web"), Some(blue.clone()));
    assert!(f.controller.running().is_empty());
    assert!(f.controller.staged().is_empty());
    let runtime = f.supervisor.app("web").unwrap().config;
    assert_eq!(runtime.error_pages, Some(blue.clone()));
    assert_eq!(runtime.version(), f.version(), "the same version");

    // Pushing it again changes nothing.
    let report = f.controller.push(&text, None, &certs).unwrap();
    assert!(!report.routes_changed);

    // A bad directory refuses the push (400) and changes nothing.
    let missing = f.controller.push(
        &source(&format!("{manual}    error_pages: nowhere\n"), false),
        None,
        &certs,
    );
    match missing {
        Err(DeployError::InvalidConfig(message)) => {
            assert!(message.contains("apps.web.error_pages"), "{message}");
            assert!(message.contains("does not exist"), "{message}");
        }
        other => panic!("expected 400, got {other:?}"),
    }
    assert_eq!(f.routing.error_pages("web"), Some(blue.clone()));

    // With a definition change, the change is staged and the pages apply
    // at once all the same.
    let changed = source(
        &format!("{manual}    error_pages: green\n    env: {{ V: \"2\" }}\n"),
        false,
    );
    let report = f.controller.push(&changed, None, &certs).unwrap();
    assert_eq!(report.staged, ["web"], "{report:?}");
    assert!(report.routes_changed);
    assert_eq!(f.routing.error_pages("web"), Some(green.clone()));
    // Pages alone while a change is staged: the staged definition
    // follows (so deploying it later keeps the pages the table has), and
    // stays staged.
    let report = f.controller.push(&text, None, &certs).unwrap();
    assert!(report.staged.is_empty() && report.routes_changed, "{report:?}");
    assert_eq!(f.controller.staged().len(), 1);
    assert_eq!(f.routing.error_pages("web"), Some(blue.clone()));
    let back = source(
        &format!("{manual}    error_pages: blue\n    env: {{ V: \"2\" }}\n"),
        false,
    );
    let started = f.controller.deploy(Some("web"), None).unwrap();
    assert_eq!(started.len(), 1);
    // While it runs, restating its definition is no conflict (so it
    // carries blue); other pages would be lost by it: 409.
    let report = f.controller.push(&back, None, &certs).unwrap();
    assert!(report.deployments.is_empty() && !report.routes_changed, "{report:?}");
    let report = f.controller.push(&changed, None, &certs);
    assert!(matches!(report, Err(DeployError::Conflict { .. })), "{report:?}");
    assert_eq!(f.routing.error_pages("web"), Some(blue.clone()));
    f.stop().await;

    // A restart takes the last pushed pages from the journal, even if the
    // directory is gone by then (the proxy's built-in pages serve).
    std::fs::remove_dir_all(&blue).unwrap();
    let journal = Journal::open(&f.dir).unwrap();
    let restored = boot::restore(&journal, &f.config, &source(manual, false), &f.dir);
    assert_eq!(restored.config.apps["web"].error_pages, Some(blue));
    assert_eq!(
        restored.config.apps["web"].version(),
        f.version(),
        "the serving definition"
    );
    assert_eq!(restored.staged.len(), 1, "the staged change is back too");
    assert_eq!(
        restored.staged[0].0.error_pages,
        restored.config.apps["web"].error_pages
    );
    drop(green);
}

#[tokio::test]
async fn a_push_changing_proxy_tuning_says_it_applies_at_the_next_start() {
    let dir = Scratch::new("tuning");
    let f = start(&dir.0, &source("", false));
    let certs = CertManager::new(&f.config, "deploy.yaml").unwrap();
    let tuned = format!("proxy:\n  tuning: {{ listener_tasks: 4 }}\n{}", source("", false));
    let report = f.controller.push(&tuned, None, &certs).unwrap();
    assert_eq!(
        report.warnings,
        ["proxy.tuning applies at the next start of cutover"],
        "{report:?}"
    );
    assert!(report.deployments.is_empty() && report.staged.is_empty(), "{report:?}");
    assert!(!report.routes_changed, "no table swap: {report:?}");
    // The same tuning, its other keys spelled out at their defaults: no change.
    let spelled = format!(
        "proxy:\n  tuning: {{ l4_read_buffer: 0, listener_tasks: 4, upstream_pool: 256 }}\n{}",
        source("", false)
    );
    let report = f.controller.push(&spelled, None, &certs).unwrap();
    assert!(report.warnings.is_empty(), "{report:?}");
    f.stop().await;
}
