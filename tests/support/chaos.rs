//! For the kill-anywhere chaos test: blocking traffic whose every failure
//! carries its time (so failures after cutover was killed can be told
//! apart), and the processes a cutover's children leave in `/proc`.
//! Included by `tests/chaos_e2e.rs` with `#[path]`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::http::Client;

/// One failed request: when it started and ended, and what happened.
#[derive(Debug, Clone)]
pub struct Failure {
    pub started: Instant,
    pub ended: Instant,
    pub what: String,
}

/// What the traffic saw.
#[derive(Debug, Default)]
pub struct TrafficReport {
    pub ok: u64,
    pub failures: Vec<Failure>,
}

impl TrafficReport {
    /// Failures of requests that ended before `until` (cutover was up and
    /// ready for all of their life).
    pub fn failures_before(&self, until: Instant) -> Vec<&Failure> {
        self.failures.iter().filter(|f| f.ended < until).collect()
    }
}

/// Clients sending `GET /` in a closed loop: half keep their connection,
/// half open one per request.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<TrafficReport>>,
}

impl Traffic {
    pub fn start(proxy: SocketAddr, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|i| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || client(proxy, i % 2 == 0, &stop))
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops every client after its current request.
    pub fn stop(self) -> TrafficReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut report = TrafficReport::default();
        for thread in self.threads {
            let part = thread.join().unwrap();
            report.ok += part.ok;
            report.failures.extend(part.failures);
        }
        report
    }
}

fn client(proxy: SocketAddr, keepalive: bool, stop: &AtomicBool) -> TrafficReport {
    let mut report = TrafficReport::default();
    let mut conn: Option<Client> = None;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let result = match conn.take() {
            Some(c) => Ok(c),
            None => Client::connect(proxy),
        }
        .and_then(|mut c| c.get("chaos", "/").map(|r| (c, r)));
        let ended = Instant::now();
        match result {
            Ok((c, response)) if response.status == 200 => {
                report.ok += 1;
                if keepalive && response.header("connection") != Some("close") {
                    conn = Some(c);
                }
            }
            Ok((_, response)) => report.failures.push(Failure {
                started,
                ended,
                what: format!("{} {}", response.status, response.text().trim()),
            }),
            Err(e) => {
                report.failures.push(Failure {
                    started,
                    ended,
                    what: e.to_string(),
                });
                // Cutover is down (killed): do not spin.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    report
}

/// A live process from `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub command: String,
    /// `CUTOVER_INSTANCE` or `CUTOVER_HOOK`.
    pub name: String,
}

/// Every live (not zombie) process whose environment carries
/// `CUTOVER_STATE_DIR=<state_dir>`: all children, instances and hooks,
/// any cutover on that state_dir started.
pub fn marked_processes(state_dir: &Path) -> Vec<Proc> {
    processes_with(&format!("CUTOVER_STATE_DIR={}", state_dir.display()))
}

/// Every live (not zombie) process whose environment has the entry
/// `marker` (`NAME=value`), e.g. a variable in the app's `env`, which every
/// instance and hook inherits whatever cutover adds.
pub fn processes_with(marker: &str) -> Vec<Proc> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.iter().any(|v| *v == marker) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() < 3 || fields[0] == "Z" || fields[0] == "X" {
            continue;
        }
        let name = ["CUTOVER_HOOK=", "CUTOVER_INSTANCE="]
            .iter()
            .find_map(|p| vars.iter().find_map(|v| v.strip_prefix(p)))
            .unwrap_or("")
            .to_string();
        found.push(Proc {
            pid,
            ppid: fields[1].parse().unwrap_or(0),
            pgrp: fields[2].parse().unwrap_or(0),
            command: head.split_once('(').map_or("", |(_, c)| c).to_string(),
            name,
        });
    }
    found
}

/// `NAME=value` entries of a process's environment.
pub fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The parent of a live process.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first().is_some_and(|s| *s == "Z" || *s == "X") {
        return None;
    }
    fields.get(1)?.parse().ok()
}
