//! End-to-end deploys (SPEC §4): rolling and stopstart under load, drains,
//! rollbacks, aborts, staging, conflicts, bad pushes, restarts.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::load::{Load, LoadSpec};
use support::{App, Cutover};

fn version_line(v: &str) -> String {
    format!("APP_VERSION: \"{v}\"")
}

/// Phases of a deployment, in order.
fn phases(record: &Value) -> Vec<String> {
    record["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap().to_string())
        .collect()
}

/// The newest deployment, with its events.
fn last_deployment(cutover: &Cutover) -> Value {
    let newest = cutover.deployments().last().cloned().expect("a deployment");
    cutover.deployment(newest["id"].as_str().unwrap())
}

/// Waits until `web`'s instances have `n` requests in flight (the slow
/// request reached its backend), instead of guessing with a sleep.
fn wait_in_flight(cutover: &Cutover, n: u64) {
    cutover.wait_until(Duration::from_secs(10), "the request in flight", |c| {
        c.instances("web")
            .iter()
            .map(|i| i["inflight"].as_u64().unwrap_or(0))
            .sum::<u64>()
            >= n
    });
}

fn assert_no_clone_and(cutover: &Cutover, originals: usize) {
    cutover.wait_until(Duration::from_secs(10), "only the originals run", |c| {
        let running = c.running_instances();
        running.len() == originals && running.iter().all(|(_, name)| !name.contains("clone"))
    });
    let instances = cutover.instances("web");
    assert_eq!(instances.len(), originals, "{instances:?}");
    assert!(instances.iter().all(|i| i["role"] == "original"), "{instances:?}");
}

#[test]
fn rolling_deploy_under_load_fails_no_request() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").instances(2).yaml("drain_timeout: 10s"))
        .route("*", "/", "web")
        .start();
    let load = Load::start(cutover.proxy, LoadSpec::default());
    load.wait_for_more(50, Duration::from_secs(20));
    for (from, to) in [("v1", "v2"), ("v2", "v3"), ("v3", "v4")] {
        let (code, out, err) = cutover.push(
            &cutover.config_with_version(from, to),
            &["--deploy-strategy", "rolling"],
        );
        assert_eq!(code, 0, "push {to}: {out}\n{err}\nlog:\n{}", cutover.log());
        assert!(out.contains("succeeded"), "{out}");
        std::fs::write(&cutover.config, cutover.config_with_version(from, to)).unwrap();
        let record = last_deployment(&cutover);
        assert_eq!(
            phases(&record),
            ["build", "clone", "route", "upgrade", "switch", "done"],
            "{record}"
        );
        assert_eq!(record["outcome"], "succeeded");
        load.wait_for_more(30, Duration::from_secs(20));
    }
    load.wait_for_more(30, Duration::from_secs(20));
    let report = load.stop();
    assert_eq!(
        report.failures(),
        0,
        "failed requests: {:?}\n{report:?}",
        report.samples
    );
    assert!(report.ok() > 100, "the load ran: {}", report.ok());
    assert!(
        report.versions_only_move_forward(&["v1", "v2", "v3", "v4"]),
        "{:?}",
        report.versions
    );
    assert!(report
        .versions
        .iter()
        .any(|v| v.last().map(String::as_str) == Some("v4")));
    assert_no_clone_and(&cutover, 2);
    assert!(cutover.get("t", "/").text().starts_with("v4 web-"));
}

#[test]
fn a_slow_request_started_before_the_route_swap_completes_on_the_old_instance() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").yaml("drain_timeout: 10s"))
        .route("*", "/", "web")
        .start();
    let proxy = cutover.proxy;
    let slow = std::thread::spawn(move || support::http::get(proxy, "t", "/slow?ms=2000"));
    wait_in_flight(&cutover, 1);
    let (code, out, err) = cutover.push(
        &cutover.config_with_version("v1", "v2"),
        &["--deploy-strategy", "rolling"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let resp = slow.join().unwrap().expect("the slow request completed");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.text(),
        "v1 web-0 slept 2000ms\n",
        "served by the original it started on"
    );
    let record = last_deployment(&cutover);
    let events = record["events"].to_string();
    assert!(events.contains("draining 1 in-flight"), "{events}");
}

#[test]
fn a_request_longer_than_drain_timeout_is_cut_and_counted_and_the_deploy_completes() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").yaml("drain_timeout: 500ms"))
        // The notice window must fit in the drain (spread + close_grace).
        .proxy_yaml("long_lived: { spread: 200ms, close_grace: 300ms }")
        .route("*", "/", "web")
        .start();
    let proxy = cutover.proxy;
    let slow = std::thread::spawn(move || support::http::get(proxy, "t", "/slow?ms=5000"));
    wait_in_flight(&cutover, 1);
    let (code, out, err) = cutover.push(
        &cutover.config_with_version("v1", "v2"),
        &["--deploy-strategy", "rolling"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let resp = slow.join().unwrap();
    assert!(resp.map(|r| r.status != 200).unwrap_or(true), "the request was cut");
    let record = last_deployment(&cutover);
    assert_eq!(record["outcome"], "succeeded");
    assert!(
        record["events"]
            .to_string()
            .contains("1 requests still running at drain_timeout"),
        "{record}"
    );
    assert!(
        cutover.log().contains("request cut"),
        "the proxy logged the cut request:\n{}",
        cutover.log()
    );
    let cut = cutover
        .log()
        .lines()
        .find(|l| l.contains("request cut"))
        .unwrap_or_default()
        .to_string();
    assert!(cut.contains("/slow"), "with its path: {cut}");
}

#[test]
fn a_new_version_failing_its_health_check_rolls_back_without_a_failed_request() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").yaml("drain_timeout: 5s"))
        .route("*", "/", "web")
        .start();
    let load = Load::start(
        cutover.proxy,
        LoadSpec {
            keepalive_clients: 4,
            fresh_clients: 2,
            ..LoadSpec::default()
        },
    );
    // v2 never passes its health check, and gives up after 2 s.
    let broken = cutover
        .config_with_version("v1", "v2")
        .replace("start_timeout: 20s", "start_timeout: 2s")
        .replace(
            &version_line("v2"),
            &format!("{}\n      DEMO_HEALTH: \"fail\"", version_line("v2")),
        );
    let (code, out, err) = cutover.push(&broken, &["--deploy-strategy", "rolling"]);
    assert_eq!(code, 2, "rolled back is a non-zero exit: {out}\n{err}");
    assert!(out.contains("rolled_back"), "{out}");
    let record = last_deployment(&cutover);
    assert_eq!(record["outcome"], "rolled_back");
    assert_eq!(
        phases(&record),
        ["build", "clone", "route", "upgrade", "rollback", "switch", "done"]
    );
    load.wait_for_more(30, Duration::from_secs(20));
    let report = load.stop();
    assert_eq!(report.failures(), 0, "{:?}", report.samples);
    assert!(
        report.versions.iter().all(|v| v.iter().all(|x| x == "v1")),
        "{:?}",
        report.versions
    );
    assert_no_clone_and(&cutover, 1);
    assert!(cutover.get("t", "/").text().starts_with("v1 web-0"));
    assert_eq!(
        cutover.status()["apps"][0]["version"],
        cutover.instances("web")[0]["version"]
    );
}

#[test]
fn a_clone_that_fails_to_start_aborts_with_nothing_changed() {
    let cutover = Cutover::builder()
        .app(
            App::demo("web", "v1")
                .yaml("hooks: { post_start: 'test \"$CUTOVER_ROLE\" != clone' }")
                .yaml("health: { path: /health, interval: 100ms, timeout: 1s, start_timeout: 3s }"),
        )
        .route("*", "/", "web")
        .start();
    let before = cutover.instances("web")[0]["pid"].clone();
    let (code, out, err) = cutover.push(
        &cutover.config_with_version("v1", "v2"),
        &["--deploy-strategy", "rolling"],
    );
    assert_eq!(code, 1, "failed is a non-zero exit: {out}\n{err}");
    let record = last_deployment(&cutover);
    assert_eq!(record["outcome"], "failed");
    assert_eq!(phases(&record), ["build", "clone"]);
    assert_eq!(
        cutover.instances("web")[0]["pid"],
        before,
        "the original was not touched"
    );
    assert_no_clone_and(&cutover, 1);
    assert!(cutover.get("t", "/").text().starts_with("v1 "));
}

#[test]
fn a_failing_build_hook_aborts_before_anything_starts() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let before = cutover.instances("web")[0]["pid"].clone();
    let broken = cutover.config_with_version("v1", "v2").replace(
        "    stop_timeout: 3s",
        "    stop_timeout: 3s\n    hooks: { build: 'echo compiling; exit 3' }",
    );
    let (code, out, _) = cutover.push(&broken, &["--deploy-strategy", "rolling"]);
    assert_eq!(code, 1, "{out}");
    let record = last_deployment(&cutover);
    assert_eq!(record["outcome"], "failed");
    assert_eq!(phases(&record), ["build"]);
    assert!(
        record["events"].to_string().contains("compiling"),
        "hook output is in the events"
    );
    assert_eq!(cutover.instances("web")[0]["pid"], before);
    assert!(
        cutover.instance_log("web-clone-0").is_empty(),
        "no clone was ever started"
    );
}

#[test]
fn stopstart_under_load_holds_requests_and_fails_none() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").env("DEMO_START_DELAY_MS", "1000"))
        .route("*", "/", "web")
        .hold_timeout("10s")
        .start();
    let load = Load::start(
        cutover.proxy,
        LoadSpec {
            keepalive_clients: 4,
            fresh_clients: 4,
            ..LoadSpec::default()
        },
    );
    load.wait_for_more(30, Duration::from_secs(20));
    let (code, out, err) = cutover.push(
        &cutover.config_with_version("v1", "v2"),
        &["--deploy-strategy", "stopstart"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(phases(&last_deployment(&cutover)), ["build", "stop", "start", "done"]);
    load.wait_for_more(30, Duration::from_secs(20));
    let report = load.stop();
    assert_eq!(report.failures(), 0, "{:?}", report.samples);
    assert!(report.versions_only_move_forward(&["v1", "v2"]));
    assert!(cutover.get("t", "/").text().starts_with("v2 "));
}

#[test]
fn stopstart_slower_than_hold_timeout_answers_503_with_retry_after_never_502() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .hold_timeout("300ms")
        .start();
    let slow = cutover.config_with_version("v1", "v2").replace(
        &version_line("v2"),
        &format!("{}\n      DEMO_START_DELAY_MS: \"2500\"", version_line("v2")),
    );
    let (code, out, err) = cutover.push(&slow, &["--deploy-strategy", "stopstart", "--no-wait"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut saw_503 = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = cutover.get("t", "/");
        assert_ne!(resp.status, 502, "never 502");
        if resp.status == 503 {
            assert!(resp.header("retry-after").is_some());
            saw_503 = true;
        }
        if resp.status == 200 && resp.text().starts_with("v2 ") {
            break;
        }
        assert!(Instant::now() < deadline, "v2 never served");
    }
    assert!(saw_503, "the gap was longer than hold_timeout");
}

#[test]
fn manual_deployments_stage_a_push_until_deploy() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").yaml("manual_deployments: true"))
        .route("*", "/", "web")
        .start();
    let (code, out, err) = cutover.push(&cutover.config_with_version("v1", "v2"), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("staged"), "{out}");
    let status = cutover.status();
    assert!(
        status["staged"]["web"].is_string(),
        "status shows the staged version: {status}"
    );
    assert!(cutover.get("t", "/").text().starts_with("v1 "), "nothing deployed yet");
    let (code, _, _) = cutover.cli(&["status"]);
    assert_eq!(code, 0);

    let (code, out, err) = cutover.cli(&["deploy", "web", "--strategy", "rolling"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(cutover.get("t", "/").text().starts_with("v2 "));
    assert!(cutover.status()["staged"].as_object().unwrap().is_empty());
}

#[test]
fn a_second_deploy_of_the_same_app_gets_409_with_the_running_id() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").env("DEMO_START_DELAY_MS", "1500"))
        .route("*", "/", "web")
        .start();
    let first = cutover.admin_post_json("/deploy", br#"{"app": "web", "strategy": "rolling"}"#);
    assert_eq!(first.status, 202, "{}", first.text());
    let id = serde_json::from_slice::<Value>(&first.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = cutover.admin_post_json("/deploy", br#"{"app": "web"}"#);
    assert_eq!(second.status, 409, "{}", second.text());
    let body: Value = serde_json::from_slice(&second.body).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert!(body["error"].as_str().unwrap().contains(&id));
    let (code, _, err) = cutover.cli(&["deploy", "web"]);
    assert_ne!(code, 0);
    assert!(err.contains(&id), "{err}");
    cutover.wait_until(Duration::from_secs(30), "the first deploy to finish", |c| {
        c.deployment(&id)["outcome"].is_string()
    });
}

#[test]
fn an_invalid_push_is_refused_with_its_location_and_changes_nothing() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let generation = cutover.status()["route_table_generation"].clone();
    let bad = cutover
        .config_with_version("v1", "v2")
        .replace("app: web }", "app: nope }");
    let resp = cutover.admin_send("POST", "/push", &[("Content-Type", "application/yaml")], bad.as_bytes());
    assert_eq!(resp.status, 400, "{}", resp.text());
    let error = serde_json::from_slice::<Value>(&resp.body).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("routes[0].app") && error.contains("nope"), "{error}");
    assert!(
        error.chars().next().unwrap().is_ascii_digit(),
        "starts with line:col: {error}"
    );
    let (code, _, err) = cutover.push(&bad, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("nope"), "{err}");
    assert_eq!(cutover.status()["route_table_generation"], generation);
    assert!(cutover.get("t", "/").text().starts_with("v1 "));
    assert!(cutover.deployments().is_empty());
}

#[test]
fn a_restarted_cutover_serves_the_last_deployed_version_and_leaves_no_orphan() {
    let mut cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    // Deploy v2 by push only: deploy.yaml on disk still says v1.
    let (code, out, err) = cutover.push(
        &cutover.config_with_version("v1", "v2"),
        &["--deploy-strategy", "rolling"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let old_pids: Vec<u32> = cutover.running_instances().iter().map(|(p, _)| *p).collect();
    assert_eq!(old_pids.len(), 1);

    // Killed without a chance to stop its apps: they are orphans now.
    cutover.kill9();
    assert!(old_pids.iter().all(|p| support::process_alive(*p)));
    // deploy.yaml is what it was at the first start (v1) plus nothing: the
    // journal says v2 serves, and a v1 deploy.yaml is applied like a push.
    cutover.restart();
    cutover.wait_all_ready(Duration::from_secs(30));
    for pid in &old_pids {
        assert!(
            !support::process_alive(*pid),
            "orphan {pid} from the previous run survived"
        );
    }
    cutover.wait_until(Duration::from_secs(30), "deploy.yaml's v1 applied like a push", |c| {
        c.deployments().iter().any(|d| {
            d["to_version"] != d["from_version"] && d["outcome"] == "succeeded" && d["strategy"] == "stopstart"
        })
    });
}

#[test]
fn restart_without_config_change_keeps_the_pushed_version() {
    let mut cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let v2 = cutover.config_with_version("v1", "v2");
    let (code, out, err) = cutover.push(&v2, &["--deploy-strategy", "rolling"]);
    assert_eq!(code, 0, "{out}\n{err}");
    std::fs::write(&cutover.config, &v2).unwrap();
    let status = cutover.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20));
    assert!(status.success());
    cutover.restart();
    cutover.wait_all_ready(Duration::from_secs(30));
    assert!(cutover.get("t", "/").text().starts_with("v2 "));
    let history = cutover.deployments();
    assert_eq!(
        history.len(),
        1,
        "the history survived and nothing was redeployed: {history:?}"
    );
    let (code, out, _) = cutover.cli(&["history"]);
    assert_eq!(code, 0);
    assert!(out.contains("web-1") && out.contains("succeeded"), "{out}");
}
