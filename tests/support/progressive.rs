//! For the progressive-delivery tests (issue 12; SPEC §2–§6, §9): apps
//! configured for `canary` and `bluegreen`, pushes that return the
//! deployment's id, what `/status` and `/metrics` say about an app's canary
//! and switches. Included by the `tests/progressive_*.rs` files with
//! `#[path]`; the canary tests' traffic recorder is `support/canary.rs`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::{process_alive, prom, App, Cutover};

/// The app every progressive test deploys.
pub const APP: &str = "web";

/// How long any single deployment of these tests may take.
pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);

/// The sticky cookie's name for `app` (`cutover-<app>`).
pub fn cookie_name(app: &str) -> String {
    format!("cutover-{app}")
}

/// A demo app deployed with the canary strategy. `steps` and `analysis`
/// are YAML flow text, e.g. `[{ weight: 20, pause: 2s }]` and
/// `{ max_error_rate: "5%", max_latency_ratio: 100, min_requests: 20 }`.
pub fn canary_app(version: &str, steps: &str, analysis: &str) -> App {
    App::demo(APP, version)
        .yaml("deploy_strategy: canary")
        .yaml("drain_timeout: 5s")
        .yaml(&format!(
            "canary: {{ steps: {steps}, sticky: true, analysis: {analysis} }}"
        ))
}

/// Analysis bounds that a healthy canary on a busy 2-core machine always
/// passes: the latency ratio of two fast versions is noise (a 1 ms p99
/// against a 20 ms one), so only the tests about latency bound it tightly.
pub const LENIENT_ANALYSIS: &str = "{ max_error_rate: \"1%\", max_latency_ratio: 100, min_requests: 10 }";

/// A demo app deployed with the bluegreen strategy.
pub fn bluegreen_app(version: &str, keep_previous: &str) -> App {
    App::demo(APP, version)
        .yaml("deploy_strategy: bluegreen")
        .yaml("drain_timeout: 5s")
        .yaml(&format!("bluegreen: {{ keep_previous: {keep_previous} }}"))
}

/// The running config with `APP_VERSION` changed from `from` to `to` and
/// `env` added to the new version's environment.
pub fn new_version(cutover: &Cutover, from: &str, to: &str, env: &[(&str, &str)]) -> String {
    let line = format!("APP_VERSION: \"{to}\"");
    let mut with_env = line.clone();
    for (k, v) in env {
        with_env.push_str(&format!("\n      {k}: \"{v}\""));
    }
    cutover.config_with_version(from, to).replacen(&line, &with_env, 1)
}

/// `cutover push --no-wait` of `yaml`; the id of the deployment it started
/// (the client prints `{id}: started`). The config on disk becomes `yaml`,
/// so the next [`new_version`] starts from it.
pub fn push_no_wait(cutover: &Cutover, yaml: &str) -> String {
    let (code, out, err) = cutover.push(yaml, &["--no-wait"]);
    assert_eq!(code, 0, "push: {out}\n{err}\nlog:\n{}", cutover.log());
    std::fs::write(&cutover.config, yaml).unwrap();
    out.lines()
        .find_map(|l| l.strip_suffix(": started"))
        .unwrap_or_else(|| panic!("push started a deployment: {out}\n{err}"))
        .trim()
        .to_string()
}

/// `cutover push` of `yaml`, followed to its end: (exit code, stdout). The
/// config on disk becomes `yaml`.
pub fn push_and_follow(cutover: &Cutover, yaml: &str) -> (i32, String) {
    let (code, out, err) = cutover.push(yaml, &[]);
    std::fs::write(&cutover.config, yaml).unwrap();
    (code, format!("{out}\n{err}"))
}

/// Waits until deployment `id` has an outcome; its record, events included.
pub fn wait_outcome(cutover: &Cutover, id: &str, timeout: Duration) -> Value {
    let mut record = Value::Null;
    cutover.wait_until(timeout, &format!("deployment {id} to end"), |c| {
        record = c.deployment(id);
        record["outcome"].is_string()
    });
    record
}

/// The newest record of the history (with its events).
pub fn newest_record(cutover: &Cutover) -> Value {
    let newest = cutover.deployments().last().cloned().expect("a record in the history");
    cutover.deployment(newest["id"].as_str().unwrap())
}

/// `app`'s entry in `/status`.
pub fn app_status(cutover: &Cutover, app: &str) -> Value {
    app_in(&cutover.status(), app)
}

/// `app`'s entry in a `/status` answer (null when absent).
pub fn app_in(status: &Value, app: &str) -> Value {
    status["apps"]
        .as_array()
        .and_then(|apps| apps.iter().find(|a| a["name"] == app))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The running canary of `app` as `/status` shows it, if one runs.
pub fn canary_of(cutover: &Cutover, app: &str) -> Option<Value> {
    Some(app_status(cutover, app)["canary"].clone()).filter(|c| c.is_object())
}

/// Waits until `app`'s canary status satisfies `check`; that status.
pub fn wait_canary(cutover: &Cutover, what: &str, mut check: impl FnMut(&Value) -> bool) -> Value {
    let mut seen = Value::Null;
    cutover.wait_until(DEPLOY_TIMEOUT, what, |c| match canary_of(c, APP) {
        Some(canary) if check(&canary) => {
            seen = canary;
            true
        }
        _ => false,
    });
    seen
}

/// True when a canary status is waiting for `cutover promote` at `step`.
pub fn waiting_at(canary: &Value, step: u64) -> bool {
    canary["step"] == step && canary["waiting"] == "manual"
}

/// `app`'s switches (`paused`, `maintenance`) from `/status`.
pub fn switches_of(cutover: &Cutover, app: &str) -> Value {
    app_status(cutover, app)["switches"].clone()
}

/// True when a switches object holds switch `name` (`paused`,
/// `maintenance`): present and not null.
pub fn is_on(switches: &Value, name: &str) -> bool {
    switches.get(name).is_some_and(|v| !v.is_null())
}

/// One metric's value.
pub fn metric(cutover: &Cutover, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    prom::value(&cutover.metrics(), name, labels)
}

/// `n` GETs of `/` on fresh connections without cookies: how many each
/// version answered (by `x-app-version`); any other answer than 200 fails
/// the test.
pub fn versions_answering(cutover: &Cutover, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let resp = cutover.get("t", "/");
        assert_eq!(resp.status, 200, "{}", resp.text());
        let version = resp.header("x-app-version").unwrap_or("none").to_string();
        *seen.entry(version).or_default() += 1;
    }
    seen
}

/// Asserts that only `version` answers `/` now (20 requests).
pub fn only_version_answers(cutover: &Cutover, version: &str) {
    let seen = versions_answering(cutover, 20);
    assert_eq!(seen.keys().collect::<Vec<_>>(), [version], "{seen:?}");
}

/// Pids of `app`'s instance processes cutover runs now (from the process
/// table, not from `/status`).
pub fn running_pids(cutover: &Cutover) -> Vec<u32> {
    let mut pids: Vec<u32> = cutover.running_instances().into_iter().map(|(p, _)| p).collect();
    pids.sort_unstable();
    pids
}

/// Waits until every pid of `pids` has exited.
pub fn wait_pids_gone(cutover: &Cutover, pids: &[u32], what: &str) {
    cutover.wait_until(DEPLOY_TIMEOUT, what, |_| pids.iter().all(|p| !process_alive(*p)));
}

/// The text of every event of a record, one per line.
pub fn event_text(record: &Value) -> String {
    record["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["message"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}
