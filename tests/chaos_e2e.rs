//! Kill-anywhere chaos (issue 9; SPEC §7 "cutover killed with SIGKILL
//! mid-deploy and restarted"), and the guarantees it rests on: one cutover
//! per state_dir, no secret in a child's environment.
//!
//! The chaos run: under traffic, deploy (rolling or stopstart, some with
//! slow hooks, some with slow-starting apps), SIGKILL cutover at a random
//! moment, restart it on the same state_dir, and check that no child of
//! the killed run survives, exactly the configured instances run, the last
//! committed version serves, the killed deployment is closed in the
//! history, the next deploy succeeds, and no request failed while cutover
//! was up. `CHAOS_SEED` replays a run; `CHAOS_KILLS` sets the number of
//! kill points (default 20).

mod support;

#[path = "support/chaos.rs"]
mod chaos;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chaos::{marked_processes, processes_with, Traffic};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::{App, Cutover};

/// Instances of the app under test.
const INSTANCES: usize = 2;
/// Hooks that make every phase of a deploy last (kills land inside them).
/// `build` and `deploy` outlast a restart, so one the killed cutover left
/// running is still there to be found (or not) when the new one is up.
const SLOW_HOOKS: &str = r#"    hooks: { build: "sleep 2", deploy: "sleep 2", post_start: "sleep 1" }"#;
/// Exit code of `cutover up` on a state_dir another cutover holds.
const BUSY_EXIT_CODE: i32 = 75;

/// How the deployment that gets killed is made slow.
#[derive(Debug, Clone, Copy)]
struct Shape {
    rolling: bool,
    slow_hooks: bool,
    slow_start: bool,
}

impl Shape {
    fn strategy(self) -> &'static str {
        if self.rolling {
            "rolling"
        } else {
            "stopstart"
        }
    }

    /// Long enough for the kill to land anywhere in the deployment, or just
    /// after it.
    fn kill_window(self) -> Duration {
        let mut ms = 1500;
        if self.slow_hooks {
            ms += 5000;
        }
        if self.slow_start {
            ms += 1000;
        }
        Duration::from_millis(ms)
    }
}

/// The config `base` (version `v1`, no hooks) at version `label`.
fn config_at(base: &str, label: &str, shape: Option<Shape>) -> String {
    let from = "APP_VERSION: \"v1\"";
    assert!(base.contains(from), "{base}");
    let mut to = format!("APP_VERSION: \"{label}\"");
    if shape.is_some_and(|s| s.slow_start) {
        to.push_str("\n      DEMO_START_DELAY_MS: \"700\"");
    }
    let mut config = base.replacen(from, &to, 1);
    if shape.is_some_and(|s| s.slow_hooks) {
        config = config.replacen("routes:\n", &format!("{SLOW_HOOKS}\nroutes:\n"), 1);
    }
    config
}

fn state_dir(cutover: &Cutover) -> PathBuf {
    cutover.dir.path().join("state").canonicalize().unwrap()
}

/// The version label `GET /` answers with (the demo app's
/// `"{version} {instance} {role}"`), the same on `tries` fresh connections.
fn served_label(cutover: &Cutover, tries: usize) -> String {
    let labels: BTreeSet<String> = (0..tries)
        .map(|_| {
            let response = cutover.get("chaos", "/");
            assert_eq!(response.status, 200, "{}", response.text());
            response.text().split_whitespace().next().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(labels.len(), 1, "one version serves: {labels:?}");
    labels.into_iter().next().unwrap()
}

/// Deployment ids of the history (and any running one).
fn deployment_ids(cutover: &Cutover) -> BTreeSet<String> {
    cutover
        .deployments()
        .iter()
        .filter_map(|d| d["id"].as_str().map(str::to_string))
        .collect()
}

/// The journal's current config for the app: what a restarted cutover
/// serves. Copied into deploy.yaml before a restart, as an operator's
/// deploy.yaml would match what was deployed (otherwise the restart would
/// apply deploy.yaml's difference like a push).
fn journaled_config(cutover: &Cutover) -> String {
    let journal: Value =
        serde_json::from_slice(&std::fs::read(cutover.dir.path().join("state/journal.json")).unwrap()).unwrap();
    journal["current"]["web"]["config"].as_str().unwrap().to_string()
}

/// After a (re)start: the processes carrying the test's `marker` (in the
/// app's env, so every instance and hook has it, and in cutover's own
/// marker for the state_dir) are exactly the running cutover's configured
/// instances, all ready, its children: no instance or hook of a killed run
/// survived.
fn assert_only_configured_instances(cutover: &Cutover, marker: &str, context: &str) {
    let state_dir = state_dir(cutover);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = cutover.status();
        let instances = cutover.instances("web");
        let expected: BTreeSet<(u32, String)> = instances
            .iter()
            .filter_map(|i| Some((i["pid"].as_u64()? as u32, i["name"].as_str()?.to_string())))
            .collect();
        let marked = processes_with(marker);
        let found: BTreeSet<(u32, String)> = marked.iter().map(|p| (p.pid, p.name.clone())).collect();
        let by_state_dir: BTreeSet<(u32, String)> = marked_processes(&state_dir)
            .iter()
            .map(|p| (p.pid, p.name.clone()))
            .collect();
        let names: BTreeSet<&str> = instances.iter().filter_map(|i| i["name"].as_str()).collect();
        let wanted: BTreeSet<String> = (0..INSTANCES).map(|i| format!("web-{i}")).collect();
        let good = found == expected
            && by_state_dir == expected
            && names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>() == wanted
            && instances
                .iter()
                .all(|i| i["state"] == "ready" && i["role"] == "original")
            && marked.iter().all(|p| p.ppid == cutover.pid());
        if good {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: processes with this state_dir's marker {marked:#?}\nare not exactly the configured instances {status:#}\nlog:\n{}",
            cutover.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Right after a restart (the reaper runs before cutover listens), every
/// process carrying the test's `marker` belongs to the new run: its process
/// group leader is a child of the new cutover. A child of the killed run
/// (its leader reparented, or gone) is an orphan, even one that would end
/// by itself a moment later (a `sleep 1` hook).
fn assert_no_orphan_after_restart(cutover: &Cutover, marker: &str, context: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let orphans: Vec<_> = processes_with(marker)
            .into_iter()
            .filter(|p| chaos::parent_of(p.pgrp) != Some(cutover.pid()))
            .collect();
        if orphans.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: children of the killed cutover still run after the restart: {orphans:#?}\nlog:\n{}",
            cutover.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_anywhere_during_deploys_under_load() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let kills: usize = std::env::var("CHAOS_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("chaos: CHAOS_SEED={seed} CHAOS_KILLS={kills}");
    eprintln!("chaos: CHAOS_SEED={seed} CHAOS_KILLS={kills}");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let marker_value = format!("{}-{seed}-{nanos}", std::process::id());
    let marker = format!("CHAOS_MARK={marker_value}");

    let mut cutover = Cutover::builder()
        .app(
            App::demo("web", "v1")
                .instances(INSTANCES as u32)
                .env("CHAOS_MARK", &marker_value),
        )
        .route("*", "/", "web")
        .start();
    let base = cutover.config_text();
    let mut committed = "v1".to_string();
    let mut next = 2u32;
    let mut requests = 0u64;
    let mut outcomes: Vec<String> = Vec::new();

    for round in 0..kills {
        let shape = Shape {
            rolling: rng.random_bool(0.5),
            slow_hooks: rng.random_bool(0.4),
            slow_start: rng.random_bool(0.4),
        };
        let context = format!("seed {seed}, round {round}, {shape:?}");
        assert_only_configured_instances(&cutover, &marker, &context);
        assert_eq!(served_label(&cutover, 4), committed, "{context}");
        let traffic = Traffic::start(cutover.proxy, 4);

        // The next deploy succeeds (fast, so the round stays short).
        let label = format!("v{next}");
        next += 1;
        let strategy = if rng.random_bool(0.5) { "rolling" } else { "stopstart" };
        let (code, out, err) = cutover.push(&config_at(&base, &label, None), &["--deploy-strategy", strategy]);
        assert_eq!(
            code,
            0,
            "{context}: deploy after restart: {out}\n{err}\nlog:\n{}",
            cutover.log()
        );
        committed = label;
        assert_eq!(served_label(&cutover, 2), committed, "{context}");

        // The deploy that gets killed.
        let target = format!("v{next}");
        next += 1;
        let known = deployment_ids(&cutover);
        let (code, out, err) = cutover.push(
            &config_at(&base, &target, Some(shape)),
            &["--deploy-strategy", shape.strategy(), "--no-wait"],
        );
        assert_eq!(code, 0, "{context}: push {target}: {out}\n{err}");
        let delay = rng.random_range(Duration::ZERO..shape.kill_window());
        std::thread::sleep(delay);
        let killed_at = Instant::now();
        cutover.kill9();
        let report = traffic.stop();
        let failed = report.failures_before(killed_at);
        assert!(
            failed.is_empty(),
            "{context}: {} requests failed while cutover was up: {:?}\nlog:\n{}",
            failed.len(),
            failed.iter().take(5).collect::<Vec<_>>(),
            cutover.log()
        );
        assert!(report.ok > 0, "{context}: the traffic ran");
        requests += report.ok;

        std::fs::write(&cutover.config, journaled_config(&cutover)).unwrap();
        cutover.restart();
        assert_no_orphan_after_restart(&cutover, &marker, &format!("{context}, killed after {delay:?}"));
        cutover.wait_all_ready(Duration::from_secs(60));
        assert_only_configured_instances(&cutover, &marker, &format!("{context}, killed after {delay:?}"));

        // The killed deployment is closed consistently with what serves:
        // the target when it had committed (`succeeded`), else the
        // previous version (`interrupted`).
        let served = served_label(&cutover, 4);
        assert!(
            served == committed || served == target,
            "{context}: {served} serves, expected {committed} or {target}"
        );
        let records: Vec<Value> = cutover
            .deployments()
            .into_iter()
            .filter(|d| d["id"].as_str().is_some_and(|id| !known.contains(id)))
            .collect();
        assert_eq!(records.len(), 1, "{context}: one new deployment: {records:#?}");
        let outcome = records[0]["outcome"].as_str().unwrap_or("(none)").to_string();
        let expected = if served == target { "succeeded" } else { "interrupted" };
        assert_eq!(
            outcome, expected,
            "{context}, killed after {delay:?}: {served} serves; record {:#}",
            records[0]
        );
        outcomes.push(format!("{}:{}:{outcome}", shape.strategy(), delay.as_millis()));
        committed = served;
    }

    // And after the last restart, a deploy still succeeds under traffic.
    assert_only_configured_instances(&cutover, &marker, "final");
    let traffic = Traffic::start(cutover.proxy, 4);
    let label = format!("v{next}");
    let (code, out, err) = cutover.push(&config_at(&base, &label, None), &["--deploy-strategy", "rolling"]);
    assert_eq!(code, 0, "final deploy: {out}\n{err}\nlog:\n{}", cutover.log());
    let report = traffic.stop();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(served_label(&cutover, 2), label);
    println!(
        "chaos: {kills} kills, {} requests, {:?}; outcomes {outcomes:?}",
        requests + report.ok,
        started.elapsed()
    );
}

/// A second `cutover up` on a state_dir in use refuses at once and touches
/// nothing (it used to stop the first one's live instances as "left behind
/// by a previous run", then fail on the busy admin port).
#[test]
fn a_second_up_on_the_same_state_dir_refuses_and_touches_nothing() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").instances(2))
        .route("*", "/", "web")
        .start();
    let before = cutover.instance_pids();
    assert_eq!(before.len(), 2);
    let traffic = Traffic::start(cutover.proxy, 2);
    let out = Command::new(support::cutover_bin())
        .args(["up", "-c"])
        .arg(&cutover.config)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(BUSY_EXIT_CODE), "{stderr}");
    assert!(
        stderr.contains("is in use by another cutover") && stderr.contains(&format!("pid {}", cutover.pid())),
        "{stderr}"
    );
    assert!(!stderr.contains("left behind"), "{stderr}");
    std::thread::sleep(Duration::from_millis(300));
    let report = traffic.stop();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(
        cutover.instance_pids(),
        before,
        "the first cutover's instances are untouched"
    );
    assert!(before.iter().all(|p| support::process_alive(*p)));
    assert_eq!(
        cutover
            .instances("web")
            .iter()
            .filter(|i| i["state"] == "ready")
            .count(),
        2
    );
}

/// The admin token (from the configured `token_env`) is in cutover's
/// environment but in no child's: neither an instance's nor a hook's.
#[test]
fn the_admin_token_is_in_no_child_environment() {
    let token = "chaos-secret-token-1234";
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .admin_token("CHAOS_ADMIN_TOKEN", token)
        .start();
    let leaks = |pid: u32| -> Vec<String> {
        chaos::environ(pid)
            .into_iter()
            .filter(|v| {
                v.contains(token) || v.starts_with("CHAOS_ADMIN_TOKEN=") || v.starts_with("CUTOVER_ADMIN_TOKEN=")
            })
            .collect()
    };
    assert!(
        chaos::environ(cutover.pid()).iter().any(|v| v.contains(token)),
        "the test gives cutover the token"
    );
    let instance = cutover.instance_pids()[0];
    let env = chaos::environ(instance);
    assert!(env.iter().any(|v| v == "CUTOVER_INSTANCE=web-0"), "{env:?}");
    assert!(env.iter().any(|v| v == "APP_VERSION=v1"), "{env:?}");
    assert_eq!(leaks(instance), Vec::<String>::new());

    // A hook, caught while it runs.
    let base = cutover.config_text();
    let slow_build = base.replacen("routes:\n", "    hooks: { build: \"sleep 5\" }\nroutes:\n", 1);
    let (code, out, err) = cutover.push(&slow_build, &["--no-wait"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let state_dir = state_dir(&cutover);
    let mut hook = None;
    cutover.wait_until(Duration::from_secs(10), "the build hook runs", |_| {
        hook = marked_processes(&state_dir)
            .into_iter()
            .find(|p| p.name.starts_with("hook-build-"));
        hook.is_some()
    });
    let hook = hook.unwrap();
    let env = chaos::environ(hook.pid);
    assert!(env.iter().any(|v| v == "CUTOVER_APP=web"), "{env:?}");
    assert_eq!(leaks(hook.pid), Vec::<String>::new(), "{hook:?}");
    // Written right after the spawn: the hook may be seen running first.
    let pid_file = state_dir.join("run").join(format!("{}.pid", hook.name));
    cutover.wait_until(Duration::from_secs(10), "the hook's pid file", |_| pid_file.exists());
}
