//! cutover upgrading itself (issue 11; SPEC §2 `cutover upgrade`, §5
//! `POST /upgrade`, §10): the new process inherits the listeners and adopts
//! the running apps, so under load no request fails and no connect is
//! refused, the apps keep their pids, and history survives; a new binary
//! that fails or hangs is stopped while the old process serves on; SIGKILL
//! of either process mid hand-over leaves a state `cutover up` serves from
//! with no orphan and no duplicate; long-lived clients get their notices;
//! deploys and upgrades exclude each other (409); SIGUSR2 is an upgrade.

mod support;

#[path = "support/upgrade.rs"]
mod upgrade;

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::load::{Load, LoadReport, LoadSpec, Req};
use support::{children_of, process_alive, App, Cutover};
use upgrade::{
    app_pids, broken_binary, copy_of_cutover, exe_of, hanging_binary, last_event, long_lived, marked_pids, next_text,
    parent_of, post_upgrade, says_any, spawn_upgrade, sse_read, until_close, upgrade_events, upgrades_total,
    wait_command, wait_exit, wait_first_exit, wait_hanging_pid, wait_pid_change, ws_connect,
};

/// How long a `cutover upgrade` may take here, the 30 s a hanging binary
/// is given included.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(120);

/// cutover with `instances` demo-app instances behind `*`.
fn start(instances: u32) -> Cutover {
    Cutover::builder()
        .app(App::demo("web", "v1").instances(instances).yaml("drain_timeout: 10s"))
        .route("*", "/", "web")
        .proxy_yaml("long_lived: { spread: 300ms, close_grace: 1s, idle_timeout: 1h }")
        .start()
}

/// Keep-alive and new-connection clients, GETs, POSTs and slow requests.
fn load_spec() -> LoadSpec {
    LoadSpec {
        keepalive_clients: 6,
        fresh_clients: 4,
        mix: vec![
            Req::Get("/"),
            Req::Post("/", 4096),
            Req::Get("/slow?ms=200"),
            Req::Get("/"),
        ],
        timeout: Duration::from_secs(30),
    }
}

/// `cutover upgrade --binary binary`, bounded: (exit code, output).
fn run_upgrade(cutover: &Cutover, binary: &std::path::Path) -> (i32, String) {
    wait_command(spawn_upgrade(cutover, binary), UPGRADE_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "cutover upgrade did not end within {UPGRADE_TIMEOUT:?}; log:\n{}",
            cutover.log()
        )
    })
}

fn assert_no_failure(report: &LoadReport, context: &str, cutover: &Cutover) {
    assert!(report.ok() > 0, "{context}: the load ran");
    assert_eq!(
        report.connect_errors,
        0,
        "{context}: refused connects; {:?}\nlog:\n{}",
        report.samples,
        cutover.log()
    );
    assert_eq!(
        report.failures(),
        0,
        "{context}: failed requests {:?}, statuses {:?}\nlog:\n{}",
        report.samples,
        report.by_status,
        cutover.log()
    );
}

/// (id, outcome) of every deployment record.
fn history(cutover: &Cutover) -> Vec<(String, String)> {
    cutover
        .deployments()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap_or("").to_string(),
                d["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The canonical path of a file (what `/proc/<pid>/exe` shows).
fn canonical(path: &std::path::Path) -> std::path::PathBuf {
    path.canonicalize().unwrap()
}

#[test]
fn five_upgrades_in_a_row_under_load_fail_no_request_and_restart_no_app() {
    let mut cutover = start(2);
    // A deploy first, so there is history to keep.
    let v2 = cutover.config_with_version("v1", "v2");
    let (code, out, err) = cutover.push(&v2, &["--deploy-strategy", "rolling"]);
    assert_eq!(code, 0, "{out}\n{err}");
    cutover.wait_all_ready(Duration::from_secs(30));
    let history_before = history(&cutover);
    assert_eq!(history_before.len(), 1, "{history_before:?}");
    let apps = app_pids(&cutover);
    assert_eq!(apps.len(), 2, "{apps:?}");
    let marked = marked_pids(&cutover);
    let first = cutover.pid();
    assert_eq!(cutover.status_pid(), Some(first), "/status names cutover's pid");
    assert_eq!(cutover.lock_pid(), Some(first), "the lock names its holder");

    let load = Load::start(cutover.proxy, load_spec());
    load.wait_for_more(100, Duration::from_secs(60));
    let mut old = first;
    for n in 1..=5 {
        let binary = copy_of_cutover(&cutover, &format!("cutover-new-{n}"));
        let (code, out) = run_upgrade(&cutover, &binary);
        assert_eq!(code, 0, "upgrade {n}: {out}\nlog:\n{}", cutover.log());
        assert!(!out.trim().is_empty(), "upgrade {n} printed its progress");
        let new = wait_pid_change(&cutover, old, Duration::from_secs(10));
        assert_eq!(
            exe_of(new),
            Some(canonical(&binary)),
            "upgrade {n}: the new process runs the new binary"
        );
        assert_eq!(
            cutover.lock_pid(),
            Some(new),
            "upgrade {n}: the lock names the new holder"
        );
        wait_exit(&cutover, old, Duration::from_secs(60));
        assert_eq!(
            cutover.status_pid(),
            Some(new),
            "upgrade {n}: the new process answers /status"
        );
        assert_eq!(app_pids(&cutover), apps, "upgrade {n}: no app was restarted");
        load.wait_for_more(100, Duration::from_secs(60));
        old = new;
    }
    let report = load.stop();
    assert_no_failure(&report, "5 upgrades", &cutover);
    println!("5 upgrades: {} requests, statuses {:?}", report.total, report.by_status);
    let exit = wait_first_exit(&mut cutover, Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0), "the old process exits 0: {exit}");

    cutover.wait_all_ready(Duration::from_secs(10));
    assert_eq!(app_pids(&cutover), apps, "the same instances after 5 upgrades");
    assert_eq!(marked_pids(&cutover), marked, "no app process was started or left over");
    assert_eq!(history(&cutover), history_before, "the history survived");
    assert_eq!(cutover.cutover_processes(), vec![old], "one cutover runs");
    let served = cutover.get("any", "/");
    assert_eq!(served.status, 200);
    assert!(served.text().starts_with("v2 "), "{}", served.text());

    // The new process runs deploys as before.
    let v3 = cutover.config_with_version("v1", "v3");
    let (code, out, err) = cutover.push(&v3, &["--deploy-strategy", "rolling"]);
    assert_eq!(
        code,
        0,
        "deploy after the upgrades: {out}\n{err}\nlog:\n{}",
        cutover.log()
    );
    assert!(cutover.get("any", "/").text().starts_with("v3 "));
}

#[test]
fn an_instance_killed_after_an_upgrade_is_restarted_by_the_new_process() {
    let cutover = start(2);
    let apps = app_pids(&cutover);
    let first = cutover.pid();
    let binary = copy_of_cutover(&cutover, "cutover-new");
    let (code, out) = run_upgrade(&cutover, &binary);
    assert_eq!(code, 0, "{out}\nlog:\n{}", cutover.log());
    let new = wait_pid_change(&cutover, first, Duration::from_secs(10));
    wait_exit(&cutover, first, Duration::from_secs(60));
    assert_eq!(app_pids(&cutover), apps, "adopted, not restarted");

    let victim = apps["web-0"];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    cutover.wait_until(Duration::from_secs(30), "web-0 restarted and ready", |c| {
        c.instances("web").iter().any(|i| {
            i["name"] == "web-0" && i["state"] == "ready" && i["pid"].as_u64().is_some_and(|p| p != victim as u64)
        })
    });
    let restarted = app_pids(&cutover)["web-0"];
    assert_eq!(parent_of(restarted), Some(new), "the new cutover started it");
    assert_eq!(
        app_pids(&cutover)["web-1"],
        apps["web-1"],
        "the other instance was left alone"
    );
    assert_eq!(marked_pids(&cutover).len(), 2, "no duplicate instance");
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let answer = cutover.get("any", "/");
        assert_eq!(answer.status, 200, "{}", answer.text());
        seen.insert(answer.text().split_whitespace().nth(1).unwrap_or("").to_string());
        if seen.contains("web-0") {
            break;
        }
    }
    assert!(seen.contains("web-0"), "the restarted instance serves: {seen:?}");
}

/// An upgrade to `binary` that must fail: non-zero exit naming one of
/// `reason_words`, the old process serving on under load, no app touched;
/// then a good upgrade still works.
fn failed_upgrade_under_load(cutover: &Cutover, binary: &std::path::Path, reason_words: &[&str]) -> String {
    let apps = app_pids(cutover);
    let marked = marked_pids(cutover);
    let old = cutover.pid();
    let failed_before = upgrades_total(cutover, "failed").expect("upgrades_total{outcome=failed} from start-up");
    assert_eq!(upgrades_total(cutover, "succeeded"), Some(0.0), "from start-up");
    let load = Load::start(cutover.proxy, load_spec());
    load.wait_for_more(50, Duration::from_secs(60));
    let (code, out) = run_upgrade(cutover, binary);
    assert_ne!(code, 0, "a failed upgrade exits non-zero: {out}");
    assert!(
        says_any(&out, reason_words),
        "the reason ({reason_words:?}) is given: {out}"
    );
    assert_eq!(cutover.pid(), old, "the old process serves on");
    assert!(process_alive(old));
    load.wait_for_more(50, Duration::from_secs(60));
    let report = load.stop();
    assert_no_failure(&report, "failed upgrade", cutover);
    assert_eq!(app_pids(cutover), apps, "no app was restarted");
    assert_eq!(marked_pids(cutover), marked, "no app process was started or left over");
    assert_eq!(cutover.cutover_processes(), vec![old], "the new process is gone");
    assert_eq!(
        upgrades_total(cutover, "failed"),
        Some(failed_before + 1.0),
        "the failure is counted"
    );
    cutover.wait_all_ready(Duration::from_secs(10));
    out
}

/// After a failed upgrade, a good one still works.
fn good_upgrade_after(cutover: &Cutover) {
    let apps = app_pids(cutover);
    let old = cutover.pid();
    let binary = copy_of_cutover(cutover, "cutover-good");
    let (code, out) = run_upgrade(cutover, &binary);
    assert_eq!(code, 0, "{out}\nlog:\n{}", cutover.log());
    let new = wait_pid_change(cutover, old, Duration::from_secs(10));
    assert_eq!(exe_of(new), Some(canonical(&binary)));
    wait_exit(cutover, old, Duration::from_secs(60));
    assert_eq!(app_pids(cutover), apps);
    assert_eq!(cutover.get("any", "/").status, 200);
}

#[test]
fn a_binary_that_exits_at_start_is_stopped_and_the_old_process_serves_on() {
    let cutover = start(2);
    let binary = broken_binary(&cutover);
    failed_upgrade_under_load(&cutover, &binary, &["exit", "status 1", "code 1"]);
    good_upgrade_after(&cutover);
}

#[test]
fn a_binary_that_hangs_is_stopped_after_30s_and_the_old_process_serves_on() {
    let cutover = start(2);
    let (binary, pid_file) = hanging_binary(&cutover);
    failed_upgrade_under_load(&cutover, &binary, &["30", "ready", "time"]);
    let hung = wait_hanging_pid(&pid_file, Duration::from_secs(1));
    cutover.wait_until(Duration::from_secs(10), "the hanging binary stopped", |_| {
        !process_alive(hung)
    });
    good_upgrade_after(&cutover);
}

/// Which process of the hand-over gets SIGKILLed.
#[derive(Debug, Clone, Copy)]
enum Victim {
    Old,
    New,
}

/// The new cutover process once `old` has started it (a child of `old`
/// running `up` on this config), polled every millisecond.
fn wait_new_child(cutover: &Cutover, old: u32, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    loop {
        let running = cutover.cutover_processes();
        if let Some((pid, _)) = children_of(old).into_iter().find(|(p, _)| running.contains(p)) {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "cutover {old} started no new process; log:\n{}",
            cutover.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// After `cutover up`: exactly the configured instances run, each a child
/// of the one cutover, and nothing else carries the state_dir's marker.
fn assert_no_orphan_no_duplicate(cutover: &Cutover, instances: usize, context: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pid = cutover.pid();
        let expected: BTreeSet<u32> = app_pids(cutover).into_values().collect();
        let marked: BTreeSet<u32> = marked_pids(cutover).into_iter().collect();
        let running = cutover.cutover_processes();
        let good = marked == expected
            && expected.len() == instances
            && running == vec![pid]
            && marked.iter().all(|p| parent_of(*p) == Some(pid));
        if good {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: marked processes {marked:?}, status instances {expected:?}, cutovers {running:?} (current {pid})\nlog:\n{}",
            cutover.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigkill_mid_hand_over(victim: Victim) {
    const INSTANCES: u32 = 2;
    let mut cutover = start(INSTANCES);
    let binary = copy_of_cutover(&cutover, "cutover-new");
    // The hand-over takes some 50-100 ms here (debug build): dense kill
    // points inside it, a few after it.
    for delay_ms in [0u64, 2, 5, 10, 20, 35, 50, 75, 150, 400, 1500] {
        let context = format!("{victim:?} killed {delay_ms} ms after the new process appeared");
        cutover.wait_all_ready(Duration::from_secs(60));
        let old = cutover.pid();
        let upgrade = spawn_upgrade(&cutover, &binary);
        let new = wait_new_child(&cutover, old, Duration::from_secs(30));
        // The delay is the kill point itself, not a synchronisation.
        std::thread::sleep(Duration::from_millis(delay_ms));
        let target = match victim {
            Victim::Old => old,
            Victim::New => new,
        };
        kill(Pid::from_raw(target as i32), Signal::SIGKILL).unwrap();
        let ended = wait_command(upgrade, UPGRADE_TIMEOUT);
        assert!(
            ended.is_some(),
            "{context}: cutover upgrade did not end; log:\n{}",
            cutover.log()
        );

        // Stop whatever cutover still runs, as an operator would.
        let survivors = cutover.cutover_processes();
        for pid in &survivors {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
        }
        cutover.wait_until(
            Duration::from_secs(30),
            &format!("{context}: survivors {survivors:?} stop on SIGTERM"),
            |c| c.cutover_processes().is_empty(),
        );
        cutover.restart();
        cutover.wait_all_ready(Duration::from_secs(60));
        assert_no_orphan_no_duplicate(&cutover, INSTANCES as usize, &context);
        let answer = cutover.get("any", "/");
        assert_eq!(answer.status, 200, "{context}: {}", answer.text());
    }
}

#[test]
fn sigkill_of_the_old_process_mid_hand_over_then_up_serves_with_no_orphan() {
    sigkill_mid_hand_over(Victim::Old);
}

#[test]
fn sigkill_of_the_new_process_mid_hand_over_then_up_serves_with_no_orphan() {
    sigkill_mid_hand_over(Victim::New);
}

#[test]
fn sigusr2_upgrades_to_the_running_binary() {
    let mut cutover = start(2);
    let apps = app_pids(&cutover);
    let first = cutover.pid();
    kill(Pid::from_raw(first as i32), Signal::SIGUSR2).unwrap();
    let new = wait_pid_change(&cutover, first, Duration::from_secs(60));
    wait_exit(&cutover, first, Duration::from_secs(60));
    let exit = wait_first_exit(&mut cutover, Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0), "{exit}");
    assert_eq!(
        exe_of(new),
        Some(canonical(std::path::Path::new(support::cutover_bin())))
    );
    assert_eq!(app_pids(&cutover), apps, "no app was restarted");
    assert_eq!(cutover.status_pid(), Some(new));
    assert_eq!(cutover.get("any", "/").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_sse_clients_get_their_notices_and_reconnect_to_the_new_process() {
    let cutover = Cutover::builder()
        .app(
            App::demo("web", "v1")
                .env("DEMO_TICK_MS", "100")
                .env("DEMO_SSE_MS", "50")
                .yaml("drain_timeout: 10s"),
        )
        .route("*", "/", "web")
        .proxy_yaml("long_lived: { spread: 300ms, close_grace: 1s, idle_timeout: 1h }")
        .start();
    let proxy = cutover.proxy;
    let mut ws = ws_connect(proxy).await;
    assert!(next_text(&mut ws).await.starts_with("tick v1 web-0"));
    // Read until the chunked stream's end: the drain ends it after `retry:`.
    let sse =
        tokio::task::spawn_blocking(move || sse_read(proxy, Duration::from_secs(90), |s| s.contains("\r\n0\r\n\r\n")));
    cutover.wait_until(Duration::from_secs(10), "both long-lived clients open", |c| {
        long_lived(c, "websocket") == 1.0 && long_lived(c, "sse") == 1.0
    });

    let old = cutover.pid();
    let binary = copy_of_cutover(&cutover, "cutover-new");
    let upgrade = spawn_upgrade(&cutover, &binary);
    let upgrade = tokio::task::spawn_blocking(move || wait_command(upgrade, UPGRADE_TIMEOUT));
    let (code, reason) = until_close(&mut ws, Duration::from_secs(60)).await;
    assert_eq!(code, 1012, "service restart: {reason}");
    let body = sse.await.unwrap();
    assert!(body.contains("data: v1 web-0"), "{body}");
    let (_, tail) = body
        .rsplit_once("retry: ")
        .unwrap_or_else(|| panic!("a retry field: {body}"));
    assert!(tail.contains("\r\n0\r\n\r\n"), "then a clean end: {tail:?}");
    let (code, out) = upgrade.await.unwrap().expect("cutover upgrade ended");
    assert_eq!(code, 0, "{out}\nlog:\n{}", cutover.log());
    let new = wait_pid_change(&cutover, old, Duration::from_secs(10));
    wait_exit(&cutover, old, Duration::from_secs(60));

    // Both reconnect, to the new process (the only one left).
    let mut ws = ws_connect(proxy).await;
    assert!(next_text(&mut ws).await.starts_with("tick v1 web-0"));
    let sse = tokio::task::spawn_blocking(move || {
        let body = sse_read(proxy, Duration::from_secs(10), |s| s.contains("data: v1 web-0"));
        assert!(body.contains("data: v1 web-0"), "{body}");
        // Keep the stream open while the new process is asked about it.
        let mut stream = std::net::TcpStream::connect(proxy).unwrap();
        stream
            .write_all(b"GET /events HTTP/1.1\r\nHost: sse\r\nAccept: text/event-stream\r\n\r\n")
            .unwrap();
        stream
    });
    let _held = sse.await.unwrap();
    cutover.wait_until(Duration::from_secs(10), "the new process serves both", |c| {
        long_lived(c, "websocket") == 1.0 && long_lived(c, "sse") == 1.0
    });
    assert_eq!(cutover.status_pid(), Some(new));
    ws.close(None).await.unwrap();
}

#[test]
fn post_upgrade_checks_the_binary_and_streams_the_outcome() {
    let cutover = start(1);
    assert_eq!(upgrades_total(&cutover, "succeeded"), Some(0.0), "from start-up");
    assert_eq!(upgrades_total(&cutover, "failed"), Some(0.0), "from start-up");
    let old = cutover.pid();
    assert_eq!(cutover.status_pid(), Some(old));

    let plain = cutover.dir.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    let dir = cutover.dir.path().display().to_string();
    for bad in [
        "cutover".to_string(),
        "/no/such/binary".into(),
        dir,
        plain.display().to_string(),
    ] {
        let (status, json) = post_upgrade(&cutover, &serde_json::json!({ "binary": bad }).to_string());
        assert_eq!(status, 400, "{bad}: {json}");
        assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{bad}: {json}");
    }
    assert_eq!(cutover.pid(), old);

    let broken = broken_binary(&cutover);
    let (status, json) = post_upgrade(&cutover, &serde_json::json!({ "binary": broken }).to_string());
    assert_eq!(status, 202, "{json}");
    let id = json["id"].as_str().expect("an id").to_string();
    assert!(id.starts_with("upgrade-"), "{id}");
    let events = upgrade_events(&cutover, &id);
    let last = last_event(&events);
    assert!(last.contains("failed"), "the last event carries the outcome: {events}");
    assert_eq!(cutover.pid(), old);
    assert_eq!(upgrades_total(&cutover, "failed"), Some(1.0));

    // No binary: the running one's.
    let (status, json) = post_upgrade(&cutover, "{}");
    assert_eq!(status, 202, "{json}");
    let id = json["id"].as_str().expect("an id").to_string();
    assert!(last_event(&upgrade_events(&cutover, &id)).contains("succeeded"));
    let new = wait_pid_change(&cutover, old, Duration::from_secs(10));
    assert_eq!(
        exe_of(new),
        Some(canonical(std::path::Path::new(support::cutover_bin())))
    );
    wait_exit(&cutover, old, Duration::from_secs(60));
    assert_eq!(cutover.get("any", "/").status, 200);
}

#[test]
fn an_upgrade_during_a_deploy_gets_409() {
    let cutover = start(1);
    let slow = cutover.config_with_version("v1", "v2").replacen(
        "routes:\n",
        "    hooks: { build: \"sleep 4\" }\nroutes:\n",
        1,
    );
    let (code, out, err) = cutover.push(&slow, &["--deploy-strategy", "rolling", "--no-wait"]);
    assert_eq!(code, 0, "{out}\n{err}");
    cutover.wait_until(Duration::from_secs(10), "the deploy running", |c| {
        c.status()["deployments"].as_array().is_some_and(|d| !d.is_empty())
    });
    let binary = copy_of_cutover(&cutover, "cutover-new");
    let old = cutover.pid();
    let (status, json) = post_upgrade(&cutover, &serde_json::json!({ "binary": binary }).to_string());
    assert_eq!(status, 409, "{json}");
    assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{json}");
    let (code, out) = run_upgrade(&cutover, &binary);
    assert_ne!(code, 0, "{out}");
    assert!(says_any(&out, &["deploy"]), "the reason names the deploy: {out}");
    assert_eq!(cutover.pid(), old);

    cutover.wait_until(Duration::from_secs(60), "the deploy done", |c| {
        c.status()["deployments"].as_array().is_some_and(|d| d.is_empty())
    });
    let (code, out) = run_upgrade(&cutover, &binary);
    assert_eq!(code, 0, "once the deploy is done: {out}\nlog:\n{}", cutover.log());
    assert!(cutover.get("any", "/").text().starts_with("v2 "));
}

#[test]
fn a_deploy_push_or_upgrade_during_an_upgrade_gets_409() {
    let cutover = start(1);
    let (hanging, pid_file) = hanging_binary(&cutover);
    let old = cutover.pid();
    let (status, json) = post_upgrade(&cutover, &serde_json::json!({ "binary": hanging }).to_string());
    assert_eq!(status, 202, "{json}");
    let id = json["id"].as_str().expect("an id").to_string();
    let hung = wait_hanging_pid(&pid_file, Duration::from_secs(30));

    let deploy = cutover.admin_post_json("/deploy", br#"{"app":"web"}"#);
    assert_eq!(deploy.status, 409, "{}", deploy.text());
    let push = cutover.admin_send(
        "POST",
        "/push",
        &[("Content-Type", "application/yaml")],
        cutover.config_with_version("v1", "v2").as_bytes(),
    );
    assert_eq!(push.status, 409, "{}", push.text());
    let (status, json) = post_upgrade(&cutover, "{}");
    assert_eq!(status, 409, "a second upgrade: {json}");
    for refused in [&deploy, &push] {
        let json: Value = serde_json::from_slice(&refused.body).unwrap_or(Value::Null);
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}",
            refused.text()
        );
    }

    // The hanging binary is given 30 s, then stopped.
    let events = upgrade_events(&cutover, &id);
    assert!(last_event(&events).contains("failed"), "{events}");
    cutover.wait_until(Duration::from_secs(10), "the hanging binary stopped", |_| {
        !process_alive(hung)
    });
    assert_eq!(cutover.pid(), old);
    let deploy = cutover.admin_post_json("/deploy", br#"{"app":"web"}"#);
    assert_eq!(deploy.status, 202, "after the upgrade: {}", deploy.text());
}

/// A removed app's instances drain in the background and belong to no app:
/// nothing would hand them over, and the new process would reap them under
/// their requests. The upgrade waits (409) until they are gone.
#[test]
fn an_upgrade_while_a_removed_app_drains_gets_409() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .app(App::demo("old", "v1").yaml("drain_timeout: 20s"))
        .route("web.test", "/", "web")
        .route("old.test", "/", "old")
        .start();
    let proxy = cutover.proxy;
    let slow = std::thread::spawn(move || support::http::get(proxy, "old.test", "/slow?ms=3000"));
    cutover.wait_until(Duration::from_secs(10), "the slow request in flight", |c| {
        c.metrics().iter().any(|s| {
            s.name == "cutover_inflight_requests" && s.labels.get("app").is_some_and(|a| a == "old") && s.value > 0.0
        })
    });
    let (code, out, err) = cutover.push(&cutover.config_without_app("old"), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let binary = copy_of_cutover(&cutover, "cutover-new");
    let old = cutover.pid();
    let (status, json) = post_upgrade(&cutover, &serde_json::json!({ "binary": binary }).to_string());
    assert_eq!(status, 409, "{json}");
    assert!(json["error"].as_str().is_some_and(|e| e.contains("old")), "{json}");
    assert_eq!(cutover.pid(), old);
    let answer = slow.join().unwrap().expect("the draining request is answered");
    assert_eq!(answer.status, 200, "{}", answer.text());
    // Once it is gone, the upgrade goes through.
    cutover.wait_until(Duration::from_secs(30), "the removed app stopped", |c| {
        post_upgrade(c, &serde_json::json!({ "binary": binary }).to_string()).0 == 202
    });
    wait_pid_change(&cutover, old, UPGRADE_TIMEOUT);
}
