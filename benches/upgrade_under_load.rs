//! Self-upgrade under load (run by hand, not in CI; SPEC §7 "5 `cutover
//! upgrade`s in a row under sustained load fail no request and restart no
//! app"): sustained closed-loop load (keep-alive and new-connection
//! clients, GETs and POSTs) through a release cutover while it replaces
//! itself 5 times back to back, each time by a fresh copy of its binary.
//! Prints total requests, failures (must be 0), refused connects, p50/p99
//! latency in steady state and during upgrades, and each upgrade's
//! duration. Fails on any failed request, any upgrade that did not succeed,
//! any app restarted, or a cutover pid that did not change.
//!
//! Run: `make bench-upgrade` (= `cargo build --release --bins && cargo
//! bench --bench upgrade_under_load`). Knobs: `UPGRADES` (default 5),
//! `CLIENTS` (default 16).

mod common;

#[path = "../tests/support/load.rs"]
#[allow(dead_code)]
mod load;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{env_or, print_percentiles, request, split_by_windows, Running};
use load::{Load, LoadSpec, Req};

fn main() {
    let upgrades: usize = env_or("UPGRADES", 5);
    let clients: usize = env_or("CLIENTS", 16);
    let cutover = Running::start("upgrade", &["--access-log", "off"], |proxy, admin, demo| {
        format!(
            r#"proxy: {{ listen: ["{proxy}"], threads: 1 }}
admin: {{ listen: "{admin}" }}
state_dir: state
apps:
  web:
    command: ["{demo}"]
    instances: 2
    env: {{ APP_VERSION: v1, DEMO_TICK_MS: "0" }}
    health: {{ path: /health, interval: 50ms, timeout: 1s, start_timeout: 20s }}
    drain_timeout: 10s
routes:
  - {{ host: "*", path: /, app: web }}
"#
        )
    });
    let (proxy, admin) = (cutover.proxy, cutover.admin);
    let config = cutover.dir.join("deploy.yaml");
    let release = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/cutover");
    let apps_before = app_pids(admin);
    assert_eq!(apps_before.len(), 2, "both instances run: {apps_before:?}");

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
    let mut problems = Vec::new();
    let mut current = cutover.pid();
    for n in 1..=upgrades {
        let binary = copy_binary(&release, &cutover.dir, n);
        let start = Instant::now();
        let out = std::process::Command::new(&release)
            .args(["upgrade", "--binary"])
            .arg(&binary)
            .args(["--admin", &format!("http://{admin}")])
            .output()
            .expect("cutover upgrade runs");
        // The upgrade is over for the clients once the old process is gone
        // (it drains after the new one serves).
        let next = lock_pid(&cutover.dir);
        let old_gone = wait_gone(current, Duration::from_secs(60));
        windows.push((start, Instant::now()));
        if !out.status.success() {
            problems.push(format!(
                "upgrade {n} exited {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        match next {
            Some(pid) if pid != current => current = pid,
            other => problems.push(format!("upgrade {n}: the lock names {other:?}, not a new process")),
        }
        if !old_gone {
            problems.push(format!("upgrade {n}: the old process is still running after 60 s"));
        }
        let apps = app_pids(admin);
        if apps != apps_before {
            problems.push(format!("upgrade {n}: apps {apps_before:?} became {apps:?}"));
        }
        std::fs::remove_file(&binary).ok();
        std::thread::sleep(Duration::from_secs(2));
    }
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    stop_current(&config, current);
    drop(cutover);

    let (mut steady, mut during) = split_by_windows(&report.latencies, &windows);
    println!("upgrade under load: {upgrades} upgrades, {clients} clients (closed loop)");
    println!("  requests   {:>9}", report.total);
    println!("  failures   {:>9}  {:?}", report.failures(), report.samples);
    println!("  refused    {:>9}", report.connect_errors);
    println!("  statuses   {:?}", report.by_status);
    print_percentiles("steady", &mut steady);
    print_percentiles("upgrading", &mut during);
    let durations: Vec<u128> = windows.iter().map(|(s, e)| (*e - *s).as_millis()).collect();
    println!("  upgrade durations (ms, command start to old process gone): {durations:?}");
    assert_eq!(report.failures(), 0, "upgrades failed requests");
    assert!(problems.is_empty(), "UPGRADES DID NOT SUCCEED: {problems:#?}");
}

/// A copy of the release binary: each upgrade's "new" binary is a new file.
fn copy_binary(release: &Path, dir: &Path, n: usize) -> PathBuf {
    let path = dir.join(format!("cutover-{n}"));
    std::fs::copy(release, &path).expect("copy the release binary");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Instance name -> pid, from `/status`.
fn app_pids(admin: std::net::SocketAddr) -> BTreeMap<String, u64> {
    let status: serde_json::Value = serde_json::from_str(&request(admin, "GET", "/status", "")).unwrap_or_default();
    status["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["instances"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| Some((i["name"].as_str()?.to_string(), i["pid"].as_u64()?)))
        .collect()
}

/// The pid in `state_dir/lock`: the cutover holding the state_dir.
fn lock_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("state/lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().chars().next()))
        .is_some_and(|state| !matches!(state, Some('Z') | Some('X')))
}

/// Waits until `pid` is gone; false after `timeout`.
fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Stops the cutover an upgrade started (not the harness's child, so
/// `Running`'s drop cannot): SIGTERM, which also stops its apps.
fn stop_current(config: &Path, pid: u32) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains(&config.display().to_string()) {
        return;
    }
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    if !wait_gone(pid, Duration::from_secs(30)) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}
