//! The supervisor's side of `cutover upgrade`, with real app processes
//! (`python3 -m http.server` answering `GET /health` from a file): freeze,
//! thaw and release in the old process; verification, adoption and
//! filling in a second `Supervisor` on the same state_dir standing for the
//! new process.
//!
//! Both supervisors live in this one test process, whose port reservations
//! are process-wide: the old supervisor releases its instances (which
//! drops its reservations) before the new one adopts them, where two real
//! processes would adopt first and release after.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_control::config::AppConfig;
use cutover_control::routing::Routing;
use cutover_control::supervisor::instance::{Instance, Role};
use cutover_control::supervisor::process::signal_group;
use cutover_control::supervisor::{orphans, pidfile, reap_except, verify, InstanceRecord, Supervisor};
use cutover_proxy::{ProxyMetrics, RouteTable, TableHandle};
use nix::sys::signal::Signal;

/// Every wait on a condition gives up after this.
const WAIT: Duration = Duration::from_secs(30);

/// A state_dir with a `health` file for the app to serve; whatever is left
/// running with its marker is reaped when dropped.
struct Fixture {
    dir: PathBuf,
    config: cutover_control::config::Config,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        orphans::reap(&self.dir.join("run"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `instances` of app `web`; `post_start` as given.
fn fixture(tag: &str, instances: u32, post_start: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("cutover-adopt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/health"), "ok\n").unwrap();
    let dir = pidfile::canonical(&dir);
    // A grandchild in the group: stopping must reach the whole group.
    let source = format!(
        "apps:\n  web:\n    command: 'sleep 300 & exec python3 -m http.server --bind 127.0.0.1 \"$PORT\"'\n    cwd: {www}\n    instances: {instances}\n    health: {{ path: /health, interval: 100ms, timeout: 1s, start_timeout: 20s }}\n    stop_timeout: 2s\n    hooks: {{ post_start: {post_start:?} }}\nroutes:\n  - {{ host: \"*\", path: /, app: web }}\n",
        www = dir.join("www").display(),
    );
    let config = cutover_control::config::parse(&source, "deploy.yaml", &dir).unwrap();
    Fixture { dir, config }
}

impl Fixture {
    fn app(&self) -> Arc<AppConfig> {
        Arc::new(self.config.apps["web"].clone())
    }

    /// A supervisor on this state_dir with its own route table.
    fn supervisor(&self) -> (Arc<Supervisor>, Arc<TableHandle>) {
        let table = TableHandle::new(RouteTable::default());
        let metrics = ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
        let routing = Routing::new(Arc::clone(&table), metrics);
        routing.configure(&self.config.routes, &self.config.proxy, self.config.apps.values());
        (Arc::new(Supervisor::new(routing, &self.dir)), table)
    }

    fn pid_file(&self, name: &str) -> Option<u32> {
        pidfile::read_pid(&self.dir.join("run").join(format!("{name}.pid")))
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now().checked_add(WAIT).unwrap();
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn all_ready(instances: &[Arc<Instance>]) {
    for instance in instances {
        let ready = tokio::time::timeout(WAIT, instance.ready()).await;
        assert!(matches!(ready, Ok(Ok(_))), "{} ready: {ready:?}", instance.name());
    }
}

/// `(instance, port)` of every backend the table routes `web` to.
fn routed(table: &TableHandle) -> BTreeSet<(String, u16)> {
    let table = table.load();
    table
        .apps()
        .filter(|(_, app)| &**app.name() == "web")
        .flat_map(|(_, app)| app.backends().to_vec())
        .map(|b| (b.instance().to_string(), b.addr().port()))
        .collect()
}

/// `/proc/<pid>/stat` fields after the command: state, ppid, pgrp.
fn stat(pid: u32) -> Option<(String, u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields[0].to_string(), fields[1].parse().ok()?, fields[2].parse().ok()?))
}

/// Runs and is no zombie.
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _, _)| !state.starts_with(['Z', 'X']))
}

/// Live members of process group `pgid`.
fn group_members(pgid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(state, _, pgrp)| pgrp == pgid && !state.starts_with(['Z', 'X'])))
        .count()
}

/// A process group of ours with `env` (no cutover marker unless given),
/// as a foreign process a record might name.
fn foreign(env: &[(&str, &str)]) -> u32 {
    let mut child = std::process::Command::new("sleep")
        .arg("300")
        .envs(env.iter().copied())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::spawn(move || child.wait());
    pid
}

async fn get_health(port: u16) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        Some(answer.starts_with("HTTP/1.0 200"))
    };
    tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_instances_run_on_unsupervised_and_released_ones_outlive_their_tasks() {
    let f = fixture("freeze", 2, "");
    let (old, table) = f.supervisor();
    let instances = old.start_app(f.app());
    all_ready(&instances).await;
    eventually("both routed", || routed(&table).len() == 2).await;
    let pids: Vec<u32> = instances.iter().map(|i| i.pid().unwrap()).collect();

    let records = old.freeze().await;
    let expected: Vec<InstanceRecord> = instances
        .iter()
        .map(|i| InstanceRecord {
            app: "web".into(),
            name: i.name().to_string(),
            role: Role::Original,
            pid: i.pid().unwrap(),
            port: i.port().unwrap(),
        })
        .collect();
    assert_eq!(records, expected, "every ready instance, with its pid and port");
    assert_eq!(routed(&table).len(), 2, "the table stays as it is");

    // Killed while frozen: not restarted, the table untouched.
    signal_group(pids[0], Signal::SIGKILL);
    eventually("web-0 dead", || !alive(pids[0])).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // > backoff + several probe intervals
    assert_eq!(instances[0].pid(), Some(pids[0]), "no restart while frozen");
    assert_eq!(instances[0].state().name(), "ready", "no state change while frozen");
    assert_eq!(routed(&table).len(), 2, "nothing published while frozen");

    old.release().await;
    // The task is over: a stop returns at once and touches nothing.
    let stopped = tokio::time::timeout(Duration::from_secs(2), old.stop_all()).await;
    assert!(stopped.is_ok(), "stop_all returns at once after a release");
    assert!(alive(pids[1]), "a released process runs on");
    assert_eq!(group_members(pids[1]), 2, "its whole group does");
    assert_eq!(f.pid_file("web-1"), Some(pids[1]), "its pid file still names it");
    assert!(get_health(instances[1].port().unwrap()).await, "and it still serves");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        instances[0].pid(),
        Some(pids[0]),
        "the dead one is not restarted after the release either"
    );
    signal_group(pids[1], Signal::SIGKILL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thaw_restarts_what_died_while_frozen() {
    let f = fixture("thaw", 1, "");
    let (old, table) = f.supervisor();
    let instances = old.start_app(f.app());
    all_ready(&instances).await;
    let pid = instances[0].pid().unwrap();
    assert_eq!(old.freeze().await.len(), 1);
    signal_group(pid, Signal::SIGKILL);
    eventually("web-0 dead", || !alive(pid)).await;
    old.thaw().await;
    eventually("web-0 restarted and ready", || {
        instances[0].pid().is_some_and(|p| p != pid) && instances[0].state().name() == "ready"
    })
    .await;
    let new_pid = instances[0].pid().unwrap();
    assert_eq!(f.pid_file("web-0"), Some(new_pid));
    eventually("routed again", || routed(&table).len() == 1).await;
    old.stop_all().await;
    assert!(!alive(new_pid));
}

/// An instance unhealthy at the freeze rejoins the table at its first
/// passing probe after a thaw (the failure count survives the freeze).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_unhealthy_at_the_freeze_rejoins_after_a_thaw() {
    let f = fixture("unhealthy", 1, "");
    let (old, table) = f.supervisor();
    let instances = old.start_app(f.app());
    all_ready(&instances).await;
    std::fs::remove_file(f.dir.join("www/health")).unwrap();
    eventually("web-0 unhealthy", || instances[0].state().name() == "unhealthy").await;
    eventually("out of the table", || routed(&table).is_empty()).await;
    let records = old.freeze().await;
    assert_eq!(records.len(), 1, "an unhealthy instance is handed over too");
    std::fs::write(f.dir.join("www/health"), "ok\n").unwrap();
    // The upgrade failed.
    old.thaw().await;
    eventually("ready again", || instances[0].state().name() == "ready").await;
    eventually("routed again", || routed(&table).len() == 1).await;
    old.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_stops_a_starting_instance_and_its_post_start_hook() {
    let f = fixture("starting", 1, "");
    let marker = f.dir.join("hook.pid");
    // post_start never ends: the instance stays starting.
    let mut app = (*f.app()).clone();
    app.hooks.post_start = Some(format!("echo $$ > {}; sleep 300 & wait", marker.display()));
    let (old, table) = f.supervisor();
    let instances = old.start_app(Arc::new(app));
    eventually("post_start running", || pidfile::read_pid(&marker).is_some()).await;
    let hook = pidfile::read_pid(&marker).unwrap();
    let pid = instances[0].pid().unwrap();
    assert_eq!(instances[0].state().name(), "starting");
    // The marker is written before the hook forks its `sleep`.
    eventually("the hook and its child run", || group_members(hook) == 2).await;

    let records = old.freeze().await;
    assert!(
        records.is_empty(),
        "a starting instance is not handed over: {records:?}"
    );
    assert!(!alive(pid), "the freeze stopped the starting process");
    eventually("the hook's group is gone", || group_members(hook) == 0).await;
    assert_eq!(instances[0].pid(), None);
    assert!(routed(&table).is_empty());

    // Thawed: started again at once (post_start hangs again).
    std::fs::remove_file(&marker).unwrap();
    old.thaw().await;
    eventually("restarted on thaw", || {
        instances[0].pid().is_some_and(|p| p != pid) && pidfile::read_pid(&marker).is_some()
    })
    .await;
    let hook = pidfile::read_pid(&marker).unwrap();
    old.stop_all().await;
    eventually("the new hook's group is gone", || group_members(hook) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_supervisor_adopts_restarts_and_stops_the_released_instances() {
    let f = fixture("adopt", 2, "");
    let starts = f.dir.join("post_start.log");
    let mut app = (*f.app()).clone();
    app.hooks.post_start = Some(format!("echo \"$CUTOVER_INSTANCE\" >> {}", starts.display()));
    let app = Arc::new(app);
    let post_starts = || std::fs::read_to_string(&starts).unwrap_or_default().lines().count();
    let (old, _old_table) = f.supervisor();
    let originals = old.start_app(Arc::clone(&app));
    all_ready(&originals).await;
    assert_eq!(post_starts(), 2);
    let records = old.freeze().await;
    assert_eq!(records.len(), 2);
    old.release().await;

    let (new, table) = f.supervisor();
    let keep: BTreeSet<u32> = records.iter().map(|r| r.pid).collect();
    assert!(
        reap_except(&f.dir.join("run"), &keep).is_empty(),
        "nothing else to reap"
    );
    let adopted = new.adopt_app(Arc::clone(&app), &records);
    assert_eq!(adopted.len(), 2);
    all_ready(&adopted).await;
    assert_eq!(post_starts(), 2, "no post_start for an adopted instance");
    for (instance, record) in adopted.iter().zip(&records) {
        assert_eq!(instance.name(), record.name);
        assert_eq!(instance.pid(), Some(record.pid), "adopted, not restarted");
        assert_eq!(instance.port(), Some(record.port));
    }
    let expected: BTreeSet<(String, u16)> = records.iter().map(|r| (r.name.clone(), r.port)).collect();
    // `ready()` returns as the state changes, the table follows at once.
    eventually("the adopted instances in the new table", || routed(&table) == expected).await;
    assert_eq!(new.status()[0].instances.len(), 2);

    // Dies under the new supervisor: restarted as its own child.
    let dead = records[0].pid;
    signal_group(dead, Signal::SIGKILL);
    eventually("web-0 restarted by the new supervisor", || {
        adopted[0].pid().is_some_and(|p| p != dead) && adopted[0].state().name() == "ready"
    })
    .await;
    let restarted = adopted[0].pid().unwrap();
    assert_eq!(post_starts(), 3, "a restart is a normal start");
    assert_eq!(
        stat(restarted).map(|s| s.1),
        Some(std::process::id()),
        "a child of the new one"
    );
    assert_eq!(f.pid_file("web-0"), Some(restarted));
    let log = std::fs::read_to_string(f.dir.join("logs/web-0.log")).unwrap();
    assert!(log.contains("adopted web-0"), "{log}");
    assert!(log.contains("exit status unknown"), "an adopted exit says so: {log}");
    eventually("the restarted one is routed", || {
        routed(&table).contains(&("web-0".to_string(), adopted[0].port().unwrap()))
    })
    .await;

    // stop_all stops the adopted process (whole group) and the restarted one.
    let still_adopted = records[1].pid;
    assert_eq!(group_members(still_adopted), 2);
    tokio::time::timeout(WAIT, new.stop_all())
        .await
        .expect("stop_all returns");
    assert_eq!(group_members(still_adopted), 0, "the adopted group is stopped");
    assert!(!alive(restarted));
    assert_eq!(f.pid_file("web-1"), None, "the new owner removed the adopted pid file");
    assert_eq!(f.pid_file("web-0"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_are_not_ours_are_refused_and_fill_app_starts_the_rest() {
    let f = fixture("refuse", 2, "");
    let mut one = (*f.app()).clone();
    one.instances = 1;
    let (old, _old_table) = f.supervisor();
    let originals = old.start_app(Arc::new(one));
    all_ready(&originals).await;
    let records = old.freeze().await;
    old.release().await;
    let good = records[0].clone();
    let run = f.dir.join("run");

    // Another instance's name on our process: its pid file names it, the
    // environment does not.
    let renamed = InstanceRecord {
        name: "web-1".into(),
        ..good.clone()
    };
    std::fs::write(run.join("web-1.pid"), format!("{}\n", good.pid)).unwrap();
    let err = verify(&renamed, &f.dir).unwrap_err();
    assert!(err.contains("CUTOVER_INSTANCE"), "{err}");
    // A process without the marker (a reused pid).
    let port = good.port.to_string();
    let stranger = foreign(&[("PORT", port.as_str()), ("CUTOVER_APP", "web")]);
    std::fs::write(run.join("web-2.pid"), format!("{stranger}\n")).unwrap();
    let unmarked = InstanceRecord {
        name: "web-2".into(),
        pid: stranger,
        ..good.clone()
    };
    let err = verify(&unmarked, &f.dir).unwrap_err();
    assert!(err.contains("CUTOVER_STATE_DIR"), "{err}");
    // A dead pid.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(run.join("web-3.pid"), format!("{gone_pid}\n")).unwrap();
    let dead = InstanceRecord {
        name: "web-3".into(),
        pid: gone_pid,
        ..good.clone()
    };
    assert!(verify(&dead, &f.dir).is_err());
    // Another app, a pid file naming someone else.
    let err = verify(
        &InstanceRecord {
            app: "api".into(),
            ..good.clone()
        },
        &f.dir,
    )
    .unwrap_err();
    assert!(err.contains("CUTOVER_APP"), "{err}");
    let err = verify(
        &InstanceRecord {
            pid: stranger,
            ..good.clone()
        },
        &f.dir,
    )
    .unwrap_err();
    assert!(err.contains("names pid"), "{err}");
    verify(&good, &f.dir).expect("the real record passes");

    let (new, table) = f.supervisor();
    let adopted = new.adopt_app(f.app(), &[renamed, unmarked, dead, good.clone()]);
    assert_eq!(adopted.len(), 1, "only the real one is adopted");
    assert_eq!(adopted[0].pid(), Some(good.pid));
    assert!(alive(stranger), "a refused process is left alone");
    all_ready(&adopted).await;
    let log = std::fs::read_to_string(f.dir.join("logs/web-2.log")).unwrap();
    assert!(log.contains("not adopted"), "{log}");

    // The app wants 2: fill_app starts web-1 (web-0 is taken), ready-gated.
    let started = new.fill_app("web");
    assert_eq!(started.iter().map(|i| i.name()).collect::<Vec<_>>(), ["web-1"]);
    all_ready(&started).await;
    assert_ne!(started[0].pid(), Some(good.pid));
    eventually("both routed", || routed(&table).len() == 2).await;
    assert!(new.fill_app("web").is_empty(), "complete: nothing more to start");
    tokio::time::timeout(WAIT, new.stop_all())
        .await
        .expect("stop_all returns");
    assert!(!alive(good.pid));
    signal_group(stranger, Signal::SIGKILL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_adopted_fill_app_starts_every_instance() {
    let f = fixture("fill", 2, "");
    let (new, table) = f.supervisor();
    assert!(new.adopt_app(f.app(), &[]).is_empty());
    assert!(routed(&table).is_empty(), "nothing routed until filled");
    let started = new.fill_app("web");
    assert_eq!(started.iter().map(|i| i.name()).collect::<Vec<_>>(), ["web-0", "web-1"]);
    all_ready(&started).await;
    eventually("both routed", || routed(&table).len() == 2).await;
    new.stop_all().await;
    assert!(new.fill_app("nope").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_waiting_to_restart_stays_waiting_while_frozen() {
    let f = fixture("backoff", 1, "");
    let mut app = (*f.app()).clone();
    app.command = cutover_control::config::Command::Shell("exit 1".into());
    let (old, _table) = f.supervisor();
    let instances = old.start_app(Arc::new(app));
    let log = f.dir.join("logs/web-0.log");
    let starts = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("starting web-0")
            .count()
    };
    eventually("crash-looping", || starts() >= 2).await;
    assert!(old.freeze().await.is_empty(), "nothing ready to hand over");
    let frozen_at = starts();
    tokio::time::sleep(Duration::from_millis(1500)).await; // > several backoffs
    assert_eq!(starts(), frozen_at, "no restart while frozen");
    assert_eq!(instances[0].pid(), None);
    old.thaw().await;
    eventually("restarting again after the thaw", || starts() > frozen_at).await;
    old.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_process_not_ready_in_time_is_stopped_and_started_afresh() {
    let f = fixture("unready", 1, "");
    let mut app = (*f.app()).clone();
    app.health.start_timeout = Duration::from_millis(500);
    let app = Arc::new(app);
    // Ours by every check, but it answers no health check.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let state_dir = f.dir.to_string_lossy().into_owned();
    let port_text = port.to_string();
    let mute = foreign(&[
        ("CUTOVER_STATE_DIR", state_dir.as_str()),
        ("CUTOVER_INSTANCE", "web-0"),
        ("CUTOVER_APP", "web"),
        ("PORT", port_text.as_str()),
    ]);
    std::fs::create_dir_all(f.dir.join("run")).unwrap();
    std::fs::write(f.dir.join("run/web-0.pid"), format!("{mute}\n")).unwrap();
    let record = InstanceRecord {
        app: "web".into(),
        name: "web-0".into(),
        role: Role::Original,
        pid: mute,
        port,
    };
    let (new, table) = f.supervisor();
    let adopted = new.adopt_app(app, &[record]);
    assert_eq!(adopted.len(), 1);
    eventually("the mute process stopped", || !alive(mute)).await;
    eventually("started afresh and ready", || {
        adopted[0].pid().is_some_and(|p| p != mute) && adopted[0].state().name() == "ready"
    })
    .await;
    eventually("routed", || routed(&table).len() == 1).await;
    new.stop_all().await;
}
