//! End-to-end controller guarantees (issue 9, "Controller and journal"):
//! one serialised path for push and deploy, refusals that change nothing,
//! the outcome always at the end of the events stream, instance names never
//! reused, and `interrupted` for a deployment cut by a stop or a kill.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{App, Cutover};

/// `text` (a config) with `app_yaml` added as one more app.
fn with_app(text: &str, app_yaml: &str) -> String {
    let at = text.find("routes:").expect("a routes section");
    format!("{}{app_yaml}{}", &text[..at], &text[at..])
}

/// A second demo app's YAML block.
fn extra_app(name: &str) -> String {
    format!(
        "  {name}:\n    command: [\"{}\"]\n    instances: 1\n    health: {{ path: /health, interval: 100ms, timeout: 1s, start_timeout: 20s }}\n    stop_timeout: 3s\n    env:\n      APP_VERSION: \"{name}\"\n      DEMO_TICK_MS: \"0\"\n",
        support::demo_app()
    )
}

/// `POST` on the admin API (a YAML body for `/push`, JSON otherwise):
/// (status, JSON body).
fn post(cutover: &Cutover, path: &str, body: &[u8]) -> (u16, Value) {
    let content_type = if path.starts_with("/push") {
        "application/yaml"
    } else {
        "application/json"
    };
    let resp = cutover.admin_send("POST", path, &[("Content-Type", content_type)], body);
    let json = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, json)
}

fn journal(cutover: &Cutover) -> Value {
    let text = std::fs::read_to_string(cutover.dir.path().join("state/journal.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Waits until deployment `id` has an outcome and returns it.
fn wait_outcome(cutover: &Cutover, id: &str) -> String {
    cutover.wait_until(Duration::from_secs(60), "the deployment to finish", |c| {
        c.deployment(id)["outcome"].is_string()
    });
    cutover.deployment(id)["outcome"].as_str().unwrap().to_string()
}

/// Running instance processes whose name starts with `prefix`.
fn processes_named(cutover: &Cutover, prefix: &str) -> Vec<String> {
    cutover
        .running_instances()
        .into_iter()
        .map(|(_, name)| name)
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
fn concurrent_pushes_adding_the_same_app_start_it_once() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let mut config = cutover.config_text();
    for round in 0..4 {
        let name = format!("extra{round}");
        config = with_app(&config, &extra_app(&name));
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let pushes: Vec<_> = (0..4)
                .map(|_| s.spawn(|| post(&cutover, "/push", config.as_bytes()).0))
                .collect();
            pushes.into_iter().map(|p| p.join().unwrap()).collect()
        });
        assert!(statuses.iter().all(|s| *s == 200 || *s == 202), "{statuses:?}");
        cutover.wait_all_ready(Duration::from_secs(30));
        let running = processes_named(&cutover, &format!("{name}-"));
        assert_eq!(running, [format!("{name}-0")], "{name} started once");
        assert_eq!(cutover.instances(&name).len(), 1);
    }
}

#[test]
fn a_push_during_a_deploy_that_restates_the_old_definition_is_refused_and_changes_nothing() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").yaml("hooks: { build: 'sleep 3' }"))
        .route("*", "/", "web")
        .start();
    let v1 = cutover.config_text();
    let (status, body) = post(&cutover, "/push", cutover.config_with_version("v1", "v2").as_bytes());
    assert_eq!(status, 202, "{body}");
    let id = body["deployments"][0]["id"].as_str().expect("a deployment").to_string();

    let generation = cutover.status()["route_table_generation"].clone();
    let journal_before = journal(&cutover);
    let deployments_before = cutover.deployments().len();
    // The old definition again, plus a new app and a new route: all or nothing.
    let refused = with_app(&v1, &extra_app("api")) + "  - { host: \"api\", path: \"/\", app: api }\n";
    let (status, body) = post(&cutover, "/push", refused.as_bytes());
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["id"], id.as_str());
    // Another change of the app is refused the same way.
    let (status, _) = post(&cutover, "/push", cutover.config_with_version("v1", "v3").as_bytes());
    assert_eq!(status, 409);

    assert_eq!(cutover.status()["route_table_generation"], generation);
    assert_eq!(journal(&cutover), journal_before, "the journal did not change");
    assert!(processes_named(&cutover, "api").is_empty(), "no app started");
    assert!(cutover.instances("api").is_empty());
    assert_eq!(cutover.deployments().len(), deployments_before);

    // The definition the deployment brings the app to is not a change.
    let (status, body) = post(&cutover, "/push", cutover.config_with_version("v1", "v2").as_bytes());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unchanged"][0], "web");

    assert_eq!(wait_outcome(&cutover, &id), "succeeded");
    assert!(cutover.get("t", "/").text().starts_with("v2 "));
}

#[test]
fn the_events_stream_always_ends_with_the_outcome() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    for round in 0..12 {
        let strategy = if round % 2 == 0 { "stopstart" } else { "rolling" };
        let (code, out, err) = cutover.cli(&["deploy", "web", "--strategy", strategy]);
        assert_eq!(code, 0, "round {round}:\n{out}\n{err}");
        assert!(out.contains("succeeded"), "round {round}: {out}");
    }
    // A finished deployment's stream: every event, the outcome last.
    let id = cutover.deployments().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = cutover.admin_get(&format!("/deployments/{id}/events"));
    let text = resp.text();
    let last = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .next_back()
        .expect("events");
    let last: Value = serde_json::from_str(last.trim()).unwrap();
    assert_eq!(last["kind"], "outcome", "{text}");
}

#[test]
fn no_instance_name_is_reused_across_rolling_deploys_and_restarts() {
    let mut cutover = Cutover::builder()
        .app(App::demo("web", "v1").instances(2))
        .route("*", "/", "web")
        .start();
    let mut clones = Vec::new();
    for round in 0..4 {
        if round == 2 {
            // The numbering survives a restart.
            let status = cutover.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(30));
            assert!(status.success());
            cutover.restart();
            cutover.wait_all_ready(Duration::from_secs(30));
        }
        let (code, out, err) = cutover.cli(&["deploy", "web", "--strategy", "rolling"]);
        assert_eq!(code, 0, "{out}\n{err}");
        let id = cutover.deployments().last().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let record = cutover.deployment(&id);
        let names: BTreeSet<String> = record["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["instance"].as_str())
            .filter(|n| n.contains("clone"))
            .map(str::to_string)
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        clones.extend(names);
    }
    let distinct: BTreeSet<&String> = clones.iter().collect();
    assert_eq!(distinct.len(), clones.len(), "clone names reused: {clones:?}");
    for name in &clones {
        assert!(
            cutover
                .dir
                .path()
                .join("state/logs")
                .join(format!("{name}.log"))
                .exists(),
            "{name} has its own log"
        );
    }
    // Pid files: exactly the running instances', no clone's left.
    let mut pid_files: Vec<String> = std::fs::read_dir(cutover.dir.path().join("state/run"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pid"))
        .collect();
    pid_files.sort();
    assert_eq!(pid_files, ["web-0.pid", "web-1.pid"]);
}

/// Starts `cutover push FILE` (following the deployment) in the background.
fn push_in_background(cutover: &Cutover, yaml: &str) -> std::process::Child {
    let file = cutover.dir.path().join("slow.yaml");
    std::fs::write(&file, yaml).unwrap();
    Command::new(support::cutover_bin())
        .args(["push", file.to_str().unwrap()])
        .env("CUTOVER_ADMIN", format!("http://{}", cutover.admin))
        .env("CUTOVER_ADMIN_TOKEN", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until a deployment of `app` runs and returns its id.
fn running_deployment(cutover: &Cutover) -> String {
    cutover.wait_until(Duration::from_secs(30), "a running deployment", |c| {
        c.status()["deployments"].as_array().is_some_and(|d| !d.is_empty())
    });
    cutover.status()["deployments"][0]["id"].as_str().unwrap().to_string()
}

#[test]
fn sigterm_during_a_slow_deploy_is_interrupted_and_the_restart_serves_the_last_committed_version() {
    let mut cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    // v2 is committed, and deploy.yaml says so.
    let v2 = cutover.config_with_version("v1", "v2");
    let (code, out, err) = cutover.push(&v2, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    std::fs::write(&cutover.config, &v2).unwrap();

    // v3 builds for a long time; cutover is stopped meanwhile.
    let slow = cutover.config_with_version("v2", "v3").replace(
        "    stop_timeout: 3s\n",
        "    stop_timeout: 3s\n    hooks: { build: 'sleep 60' }\n",
    );
    let follower = push_in_background(&cutover, &slow);
    let id = running_deployment(&cutover);
    let status = cutover.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let followed = follower.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&followed.stdout);
    assert_ne!(followed.status.code(), Some(0), "{out}");
    assert!(out.contains("interrupted"), "the follower saw the outcome: {out}");

    cutover.restart();
    cutover.wait_all_ready(Duration::from_secs(30));
    assert!(cutover.get("t", "/").text().starts_with("v2 "));
    assert_eq!(cutover.deployment(&id)["outcome"], "interrupted");
    let (code, out, _) = cutover.cli(&["history"]);
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("interrupted"), "{out}");
    // Nothing is replayed at the next start.
    let status = cutover.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(30));
    assert!(status.success());
    cutover.restart();
    cutover.wait_all_ready(Duration::from_secs(30));
    let closed: Vec<Value> = cutover
        .deployments()
        .into_iter()
        .filter(|d| d["id"] == id.as_str())
        .collect();
    assert_eq!(closed.len(), 1, "{closed:?}");
}

#[test]
fn a_deploy_cut_by_a_kill_is_interrupted_at_the_next_start_and_counted() {
    let mut cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let slow = cutover.config_with_version("v1", "v2").replace(
        "    stop_timeout: 3s\n",
        "    stop_timeout: 3s\n    hooks: { build: 'sleep 2' }\n",
    );
    let (status, body) = post(&cutover, "/push", slow.as_bytes());
    assert_eq!(status, 202, "{body}");
    let id = running_deployment(&cutover);
    cutover.kill9();
    cutover.restart();
    cutover.wait_all_ready(Duration::from_secs(30));
    assert!(cutover.get("t", "/").text().starts_with("v1 "));
    assert_eq!(cutover.deployment(&id)["outcome"], "interrupted");
    let interrupted = support::prom::value(
        &cutover.metrics(),
        "cutover_deployments_total",
        &[("app", "web"), ("strategy", "stopstart"), ("outcome", "interrupted")],
    );
    assert_eq!(interrupted, Some(1.0));
    // The app is free again: the next deploy runs and succeeds.
    let (code, out, err) = cutover.cli(&["deploy", "web"]);
    assert_eq!(code, 0, "{out}\n{err}");
}

/// Regression (issue 9 review): an app removed by a push drains in the
/// background; pushing it back before its instances are gone would start a
/// second `api-0` while the first still runs (same name, pid file, log,
/// labels). That push is refused with 409 until the retirement ends.
#[test]
fn an_app_pushed_back_while_its_removed_instances_still_stop_is_refused_until_they_are_gone() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .app(App::demo("api", "v1").yaml("drain_timeout: 10s"))
        .route("web.test", "/", "web")
        .route("api.test", "/", "api")
        .start();
    let with_api = cutover.config_text();
    let without_api = cutover.config_without_app("api");

    // A slow request keeps the removed app's instance draining.
    let proxy = cutover.proxy;
    let slow = std::thread::spawn(move || support::http::get(proxy, "api.test", "/slow?ms=2500"));
    cutover.wait_until(Duration::from_secs(10), "the slow request in flight", |c| {
        c.instances("api").first().is_some_and(|i| i["inflight"] == 1)
    });
    let (status, body) = post(&cutover, "/push", without_api.as_bytes());
    assert_eq!(status, 200, "{body}");

    let (status, body) = post(&cutover, "/push", with_api.as_bytes());
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("still stopping"),
        "{body}"
    );
    assert_eq!(processes_named(&cutover, "api-").len(), 1, "only the retiring api-0");

    assert_eq!(
        slow.join().unwrap().unwrap().status,
        200,
        "the drained request finished"
    );
    cutover.wait_until(Duration::from_secs(20), "the removed app to stop", |c| {
        processes_named(c, "api-").is_empty()
    });
    cutover.wait_until(Duration::from_secs(10), "the push to be accepted", |c| {
        post(c, "/push", with_api.as_bytes()).0 == 200
    });
    cutover.wait_until(Duration::from_secs(20), "api to serve again", |c| {
        c.instances("api").first().is_some_and(|i| i["state"] == "ready")
    });
    assert_eq!(processes_named(&cutover, "api-").len(), 1);
}
