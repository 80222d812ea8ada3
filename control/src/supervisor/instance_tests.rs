//! Tests of the instance task (`task.rs`).

use super::*;
use crate::supervisor::instance::Role;

#[test]
fn backoff_doubles_up_to_a_cap() {
    assert_eq!(backoff(0), Duration::from_millis(100));
    assert_eq!(backoff(1), Duration::from_millis(200));
    assert_eq!(backoff(3), Duration::from_millis(800));
    assert_eq!(backoff(30), Duration::from_secs(10));
}

#[test]
fn deadlines_never_overflow() {
    let far = deadline_after(Duration::MAX);
    assert!(far > Instant::now() + Duration::from_secs(300 * 24 * 3600));
    let soon = deadline_after(Duration::from_secs(1));
    assert!(soon <= Instant::now() + Duration::from_secs(1));
}

/// `start_timeout` far beyond what an `Instant` can hold: the task used
/// to panic on `Instant + Duration`, so it never reached `Stopped` and
/// its child ran on unaccounted for.
#[tokio::test]
async fn a_huge_start_timeout_does_not_kill_the_task() {
    let dir = std::env::temp_dir().join(format!("cutover-huge-{}", std::process::id()));
    let config = crate::config::parse(
        "apps: { web: { command: [sleep, \"300\"] } }\nroutes: [{ app: web }]\n",
        "deploy.yaml",
        &dir,
    )
    .unwrap();
    let mut app = config.apps["web"].clone();
    app.cwd = std::env::temp_dir();
    app.health.start_timeout = Duration::MAX;
    app.stop_timeout = Duration::from_secs(1);
    let spec = InstanceSpec {
        app: Arc::new(app),
        name: "web-0".into(),
        role: Role::Original,
        preferred_port: None,
        log: dir.join("logs/web-0.log"),
        pid_file: Some(dir.join("run/web-0.pid")),
        retry_first_start: false,
    };
    let instance = Instance::spawn(spec, Arc::new(|| {}), false);
    let started = tokio::time::timeout(Duration::from_secs(5), async {
        while instance.pid().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(started.is_ok(), "the process starts");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(instance.state().name(), "starting", "the task is alive and waiting");
    let stopped = tokio::time::timeout(Duration::from_secs(5), instance.stop()).await;
    assert!(stopped.is_ok(), "stop() returns: the task is alive");
    assert_eq!(instance.pid(), None);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_exit_during_start_on_a_port_someone_else_holds_is_retried_elsewhere() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let exited = || crashed(format!("{EXITED_DURING_START} (exit status: 1)"), false);
    assert!(matches!(port_taken_or(exited(), port), Exit::PortTaken { .. }));
    let not_ready = || crashed("not ready within start_timeout".into(), false);
    assert!(
        matches!(port_taken_or(not_ready(), port), Exit::Crashed { .. }),
        "only an exit (the app gave up) points at the port"
    );
    drop(squatter);
    let free = ports::lease(None).unwrap();
    assert!(matches!(port_taken_or(exited(), free.port()), Exit::Crashed { .. }));
}

#[test]
fn a_lease_is_kept_while_free_and_renewed_when_taken() {
    let mut lease = None;
    let first = renew_lease(&mut lease, None).unwrap();
    assert_eq!(renew_lease(&mut lease, None).unwrap(), first, "kept across restarts");
    let squatter = std::net::TcpListener::bind(("127.0.0.1", first)).unwrap();
    let second = renew_lease(&mut lease, Some(first)).unwrap();
    assert_ne!(second, first, "a port someone else bound is given up");
    drop(squatter);
}
