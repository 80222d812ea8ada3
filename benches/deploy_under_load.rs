//! Deploy under load (run by hand, not in CI): sustained closed-loop load
//! through a release cutover while 20 rolling deploys run back to back.
//! Prints total requests, failures (must be 0), p50/p99 latency in steady
//! state and during deploys, and each deploy's phase timings. Fails unless
//! every request succeeded *and* every deploy's outcome is `succeeded` (a
//! deploy that rolled back fails no request, so counting requests alone
//! would pass with the feature broken).
//!
//! Run: `make bench-deploy` (= `cargo build --release --bins && cargo bench
//! --bench deploy_under_load`). Knobs: `DEPLOYS` (default 20), `CLIENTS`
//! (default 16).

mod common;

#[path = "../tests/support/load.rs"]
#[allow(dead_code)]
mod load;

use std::time::{Duration, Instant};

use common::{env_or, print_percentiles, request, split_by_windows, Running};
use load::{Load, LoadSpec, Req};

fn main() {
    let deploys: usize = env_or("DEPLOYS", 20);
    let clients: usize = env_or("CLIENTS", 16);
    let cutover = Running::start("deploy", &["--access-log", "off"], |proxy, admin, demo| {
        format!(
            r#"proxy: {{ listen: ["{proxy}"], threads: 1 }}
admin: {{ listen: "{admin}" }}
state_dir: state
apps:
  web:
    command: ["{demo}"]
    env: {{ APP_VERSION: v1, DEMO_TICK_MS: "0" }}
    health: {{ path: /health, interval: 50ms, timeout: 1s, start_timeout: 20s }}
    drain_timeout: 10s
routes:
  - {{ host: "*", path: /, app: web }}
"#
        )
    });
    let (proxy, admin) = (cutover.proxy, cutover.admin);

    let spec = LoadSpec {
        keepalive_clients: clients * 3 / 4,
        fresh_clients: clients / 4,
        mix: vec![
            Req::Get("/"),
            Req::Post("/", 1024),
            Req::Get("/"),
            Req::Get("/slow?ms=20"),
        ],
        timeout: Duration::from_secs(30),
    };
    let load = Load::start(proxy, spec);
    std::thread::sleep(Duration::from_secs(3));
    let mut windows = Vec::new();
    let mut records = Vec::new();
    for _ in 0..deploys {
        let start = Instant::now();
        let answer = request(admin, "POST", "/deploy", r#"{"app":"web","strategy":"rolling"}"#);
        let id = match json_field(&answer, "id") {
            Some(id) if json_field(&answer, "error").is_none() => id,
            _ => panic!("deploy {} was refused: {answer}", records.len() + 1),
        };
        let record = loop {
            let record = request(admin, "GET", &format!("/deployments/{id}"), "");
            if record.contains("\"outcome\":\"") {
                break record;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        windows.push((start, Instant::now()));
        records.push(record);
        // The outcome is recorded a moment before the app's slot is free.
        while !request(admin, "GET", "/status", "").contains("\"deployments\":[]") {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let report = load.stop();
    drop(cutover);

    let (mut steady, mut during) = split_by_windows(&report.latencies, &windows);
    println!("deploy under load: {deploys} rolling deploys, {clients} clients (closed loop)");
    println!("  requests   {:>9}", report.total);
    println!("  failures   {:>9}  {:?}", report.failures(), report.samples);
    println!("  statuses   {:?}", report.by_status);
    print_percentiles("steady", &mut steady);
    print_percentiles("deploying", &mut during);
    let outcomes: Vec<String> = records
        .iter()
        .map(|r| json_field(r, "outcome").unwrap_or_else(|| "unknown".into()))
        .collect();
    let not_succeeded: Vec<(usize, &String)> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.as_str() != "succeeded")
        .map(|(i, o)| (i + 1, o))
        .collect();
    println!(
        "  deploys    {:>9}  succeeded {}, other {:?}",
        outcomes.len(),
        outcomes.len() - not_succeeded.len(),
        not_succeeded
    );
    let phases = ["build", "clone", "route", "upgrade", "switch", "done"];
    println!("  phase medians (ms):");
    for phase in phases {
        let mut ms: Vec<u64> = records.iter().filter_map(|r| phase_ms(r, phase)).collect();
        ms.sort_unstable();
        let median = ms.get(ms.len() / 2).copied().unwrap_or(0);
        println!("    {phase:<8} {median:>6}");
    }
    let mut totals: Vec<u64> = records.iter().filter_map(|r| json_u64(r, "duration_ms")).collect();
    totals.sort_unstable();
    println!("    total    {:>6}", totals.get(totals.len() / 2).copied().unwrap_or(0));
    assert_eq!(report.failures(), 0, "a deploy failed requests");
    assert!(
        not_succeeded.is_empty(),
        "DEPLOYS DID NOT SUCCEED: {} of {deploys} (deploy number, outcome): {not_succeeded:?}",
        not_succeeded.len()
    );
}

fn json_field(json: &str, key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v[key].as_str().map(str::to_string)
}

fn json_u64(json: &str, key: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v[key].as_u64()
}

fn phase_ms(record: &str, phase: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(record).ok()?;
    v["phases"].as_array()?.iter().find(|p| p["phase"] == phase)?["duration_ms"].as_u64()
}
