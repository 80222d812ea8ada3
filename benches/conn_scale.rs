//! Connection scale in one run (by hand, not in CI): for nginx, HAProxy and
//! cutover (and `before`, an older cutover build, for an A/B of memory work),
//! each on ONE worker in front of the same demo-app:
//!
//! 1. keep-alive: `KEEPALIVE` client connections, each after one `GET /`,
//!    idle; RSS per connection, then RSS once the clients closed them all
//!    (what the allocator keeps);
//! 2. WebSocket: `WEBSOCKETS` idle WebSockets to `/ws`; RSS per connection;
//! 3. then, for cutover and `before`, a rolling deploy of the app: each
//!    WebSocket must get 1012 within `spread` + `close_grace`; RSS sampled
//!    every 100 ms meanwhile (the peak) and after. nginx and HAProxy have no
//!    deploy: the clients close their WebSockets and we read RSS after.
//!
//! Each phase starts the proxy afresh, so the WebSocket figures do not reuse
//! memory the keep-alive phase left in the proxy's pools and allocator.
//! `SAME_PROCESS=1` runs both phases on one process instead: HAProxy's
//! WebSocket figure then drops by about its keep-alive one (~1.2 KiB, the
//! objects it pooled), to the 3.4 KiB of the anchor in SPEC §7. RSS is the
//! proxy's own processes only (nginx: master + worker; not cutover's app),
//! read from `/proc/<pid>/status` once settled. Every process started here is stopped
//! on exit (panics included) and the temporary directories removed; every
//! phase has a time limit and says "timed out" rather than hang.
//!
//! Run: `make bench-scale` (= `cargo build --release --bins && cargo bench
//! --bench conn_scale`). Knobs (env): `PEERS` (default `nginx haproxy
//! cutover`), `KEEPALIVE` (10000), `WEBSOCKETS` (8000), `BEFORE` (path to an
//! older cutover binary: adds the `before` column), `CUTOVER_BIN` (default
//! `target/release/cutover`), `DEMO_BIN` (default `target/release/demo-app`),
//! `SAME_PROCESS=1` (see above).
//! Output: a table on stdout, written with the raw figures to
//! `benches/results/conn-scale/<UTC timestamp>.txt`.

#[path = "conn_scale/clients.rs"]
mod clients;
mod common;
#[path = "conn_scale/peers.rs"]
mod peers;
#[path = "conn_scale/report.rs"]
mod report;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clients::{keepalive_connection, open_many, wait_close, websocket, Ws};
use common::{raise_nofile_limit, request, rss_sum_kib};
use peers::{ensure_installed, Kind, Peer};
use report::{table, timestamp};

/// cutover's `proxy.long_lived`, and how late the last close may come on top.
const SPREAD: Duration = Duration::from_secs(2);
const CLOSE_GRACE: Duration = Duration::from_secs(1);
const CLOSE_MARGIN: Duration = Duration::from_secs(1);
/// One connection attempt, and how many before giving that connection up.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPTS: u32 = 5;
/// Opens in flight at once: below every listener's accept backlog.
const KEEPALIVE_CONCURRENCY: usize = 64;
const WEBSOCKET_CONCURRENCY: usize = 32;
/// From the deploy request until every WebSocket must have been closed.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the clients' close may take to show in RSS.
const AFTER_CLOSE: Duration = Duration::from_secs(2);

// === knobs ===

struct Knobs {
    peers: Vec<String>,
    keepalive: usize,
    websockets: usize,
    before: Option<PathBuf>,
    cutover_bin: PathBuf,
    demo_bin: PathBuf,
    /// Open files each process may hold (raised to the hard limit).
    nofile: u64,
    /// Both phases on one proxy process: the WebSockets then reuse what the
    /// keep-alive phase left in the proxy's pools and allocator.
    same_process: bool,
}

impl Knobs {
    fn from_env() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let path = |name: &str, default: &str| {
            std::env::var(name)
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join(default))
        };
        let mut peers: Vec<String> = std::env::var("PEERS")
            .unwrap_or_else(|_| "nginx haproxy cutover".into())
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let before = std::env::var("BEFORE")
            .ok()
            .filter(|b| !b.is_empty())
            .map(PathBuf::from);
        if before.is_some() && !peers.iter().any(|p| p == "before") {
            peers.push("before".into());
        }
        Self {
            peers,
            keepalive: common::env_or("KEEPALIVE", 10_000),
            websockets: common::env_or("WEBSOCKETS", 8_000),
            before,
            cutover_bin: path("CUTOVER_BIN", "target/release/cutover"),
            demo_bin: path("DEMO_BIN", "target/release/demo-app"),
            nofile: raise_nofile_limit(),
            same_process: std::env::var("SAME_PROCESS").is_ok_and(|v| v == "1"),
        }
    }

    /// Connections a proxy must accept at once.
    fn max_connections(&self) -> usize {
        self.keepalive.max(self.websockets) + 64
    }

    /// Whether the sizes fit the descriptor limit: this process holds one
    /// per client connection, a proxy two per WebSocket (client + backend).
    fn check_fit(&self) -> Result<(), String> {
        let spare = 256;
        let client = self.keepalive.max(self.websockets) as u64 + spare;
        let proxy = 2 * self.websockets as u64 + spare;
        if client > self.nofile || proxy > self.nofile {
            return Err(format!(
                "KEEPALIVE={} WEBSOCKETS={} do not fit {} open files per process: the harness needs {client}, \
                 a proxy {proxy} (two per WebSocket). Lower them (WEBSOCKETS <= {}) or raise `ulimit -n`.",
                self.keepalive,
                self.websockets,
                self.nofile,
                (self.nofile.saturating_sub(spare)) / 2
            ));
        }
        Ok(())
    }
}
// === the phases ===

/// What the deploy did to the open WebSockets (cutover and `before`).
struct Notify {
    got_1012: usize,
    closed: usize,
    first: Option<Duration>,
    last: Option<Duration>,
    before: u64,
    peak: u64,
    after: u64,
    samples: Vec<u64>,
}

impl Notify {
    /// Every WebSocket closed, the last within `spread` + `close_grace` +
    /// a margin of the first (the drain's start; the new instance's start
    /// comes before it).
    fn in_time(&self, n: usize) -> bool {
        match (self.first, self.last) {
            (Some(f), Some(l)) => self.closed == n && l - f <= SPREAD + CLOSE_GRACE + CLOSE_MARGIN,
            _ => false,
        }
    }
}

/// Everything measured on one peer; `None` where the phase did not get there.
#[derive(Default)]
struct Figures {
    name: String,
    ka_idle: Option<u64>,
    ka_loaded: Option<u64>,
    ka_opened: usize,
    ka_timed_out: bool,
    ka_after_close: Option<u64>,
    ws_idle: Option<u64>,
    ws_loaded: Option<u64>,
    ws_opened: usize,
    ws_timed_out: bool,
    ws_after_close: Option<u64>,
    notify: Option<Notify>,
    raw: Vec<String>,
    /// What went wrong (a failed start, a time limit hit), shown under the table.
    problems: Vec<String>,
}

impl Figures {
    fn ka_per_conn(&self) -> Option<f64> {
        per_conn(self.ka_idle?, self.ka_loaded?, self.ka_opened)
    }

    fn ws_per_conn(&self) -> Option<f64> {
        per_conn(self.ws_idle?, self.ws_loaded?, self.ws_opened)
    }

    /// Prints a line and keeps it for the results file.
    fn log(&mut self, line: String) {
        println!("  [{}] {line}", self.name);
        self.raw.push(line);
    }

    /// Logs a line and lists it under the table too.
    fn problem(&mut self, line: String) {
        self.problems.push(format!("{}: {line}", self.name));
        self.log(line);
    }
}

fn per_conn(idle: u64, loaded: u64, n: usize) -> Option<f64> {
    (n > 0).then(|| loaded.saturating_sub(idle) as f64 / n as f64)
}

fn measure(name: &str, kind: &Kind, knobs: &Knobs, rt: &tokio::runtime::Runtime) -> Figures {
    let mut f = Figures {
        name: name.to_string(),
        ..Figures::default()
    };
    match Peer::start(name, kind, knobs) {
        Err(e) => f.problem(format!("keep-alive phase: {e}")),
        Ok(peer) => {
            keepalive_phase(&peer, knobs, rt, &mut f);
            if knobs.same_process {
                websocket_phase(&peer, knobs, rt, &mut f);
                return f;
            }
        }
    }
    match Peer::start(name, kind, knobs) {
        Err(e) => f.problem(format!("WebSocket phase: {e}")),
        Ok(peer) => websocket_phase(&peer, knobs, rt, &mut f),
    }
    f
}

fn keepalive_phase(peer: &Peer, knobs: &Knobs, rt: &tokio::runtime::Runtime, f: &mut Figures) {
    let n = knobs.keepalive;
    let idle = peer.settled_rss();
    f.ka_idle = Some(idle);
    f.log(format!(
        "keep-alive: pids {:?}, idle RSS {idle} KiB, {} fds",
        peer.pids(),
        peer.open_fds()
    ));
    let limit = Duration::from_secs(60) + Duration::from_millis(10) * n as u32;
    let proxy = peer.proxy;
    let opened = rt.block_on(open_many(n, KEEPALIVE_CONCURRENCY, limit, || {
        keepalive_connection(proxy)
    }));
    if opened.items.len() < n {
        f.problem(format!("keep-alive: {}", opened.describe(n)));
    } else {
        f.log(format!("keep-alive: {}", opened.describe(n)));
    }
    f.ka_opened = opened.items.len();
    f.ka_timed_out = opened.timed_out;
    let loaded = peer.settled_rss();
    f.ka_loaded = Some(loaded);
    f.log(format!(
        "keep-alive: RSS with {} open {loaded} KiB: {:.2} KiB each; {} fds",
        f.ka_opened,
        f.ka_per_conn().unwrap_or(0.0),
        peer.open_fds()
    ));
    drop(opened);
    std::thread::sleep(AFTER_CLOSE);
    let after = peer.settled_rss();
    f.ka_after_close = Some(after);
    f.log(format!(
        "keep-alive: RSS after the clients closed {after} KiB; {} fds",
        peer.open_fds()
    ));
    let tail = peer.log_tail(5);
    if !tail.trim().is_empty() {
        f.log(format!("keep-alive: the proxy's log ends with:\n{tail}"));
    }
}

fn websocket_phase(peer: &Peer, knobs: &Knobs, rt: &tokio::runtime::Runtime, f: &mut Figures) {
    let n = knobs.websockets;
    let idle = peer.settled_rss();
    f.ws_idle = Some(idle);
    f.log(format!(
        "WebSocket: pids {:?}, idle RSS {idle} KiB, {} fds",
        peer.pids(),
        peer.open_fds()
    ));
    let limit = Duration::from_secs(60) + Duration::from_millis(20) * n as u32;
    let proxy = peer.proxy;
    let opened = rt.block_on(open_many(n, WEBSOCKET_CONCURRENCY, limit, || websocket(proxy)));
    if opened.items.len() < n {
        f.problem(format!("WebSocket: {}", opened.describe(n)));
    } else {
        f.log(format!("WebSocket: {}", opened.describe(n)));
    }
    f.ws_opened = opened.items.len();
    f.ws_timed_out = opened.timed_out;
    let loaded = peer.settled_rss();
    f.ws_loaded = Some(loaded);
    f.log(format!(
        "WebSocket: RSS with {} open {loaded} KiB: {:.2} KiB each; {} fds",
        f.ws_opened,
        f.ws_per_conn().unwrap_or(0.0),
        peer.open_fds()
    ));
    match peer.kind {
        Kind::Cutover(_) => {
            let notify = rt.block_on(deploy_closes(peer, opened.items, loaded, f));
            f.ws_after_close = Some(notify.after);
            f.notify = Some(notify);
        }
        Kind::Nginx | Kind::Haproxy => {
            drop(opened);
            std::thread::sleep(AFTER_CLOSE);
            let after = peer.settled_rss();
            f.ws_after_close = Some(after);
            f.log(format!(
                "WebSocket: RSS after the clients closed {after} KiB; {} fds",
                peer.open_fds()
            ));
        }
    }
    let tail = peer.log_tail(5);
    if !tail.trim().is_empty() {
        f.log(format!("WebSocket: the proxy's log ends with:\n{tail}"));
    }
}

/// A rolling deploy of the app behind `sockets`: when each got its close,
/// with what code, and cutover's RSS meanwhile (every 100 ms) and after.
async fn deploy_closes(peer: &Peer, sockets: Vec<Ws>, before: u64, f: &mut Figures) -> Notify {
    let n = sockets.len();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, pids) = (stop.clone(), peer.pids());
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push(rss_sum_kib(&pids));
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        })
    };
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + NOTIFY_TIMEOUT;
    let waiters: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(wait_close(ws, deadline)))
        .collect();
    let admin = peer.admin;
    let answer =
        tokio::task::spawn_blocking(move || request(admin, "POST", "/deploy", r#"{"app":"web","strategy":"rolling"}"#))
            .await
            .unwrap_or_default();
    if !answer.contains("\"id\"") {
        f.problem(format!("deploy refused: {answer}"));
    }
    let mut got_1012 = 0;
    let mut other_codes = std::collections::BTreeMap::new();
    // When each close came, in µs after the deploy request.
    let mut times: Vec<u64> = Vec::with_capacity(n);
    for w in waiters {
        if let Ok(Some((code, at))) = w.await {
            if code == 1012 {
                got_1012 += 1;
            } else {
                *other_codes.entry(code).or_insert(0) += 1;
            }
            times.push((at - start).as_micros() as u64);
        }
    }
    let closed = times.len();
    let first = times.iter().min().map(|us| Duration::from_micros(*us));
    let last = times.iter().max().map(|us| Duration::from_micros(*us));
    tokio::time::sleep(AFTER_CLOSE).await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    let after = peer.settled_rss();
    let notify = Notify {
        got_1012,
        closed,
        first,
        last,
        before,
        peak: samples.iter().copied().max().unwrap_or(0),
        after,
        samples,
    };
    f.log(format!(
        "deploy: {got_1012}/{n} got 1012, {closed}/{n} closed{}{}, first {:.2} s, last {:.2} s after the request; \
         RSS before {before} KiB, peak {} KiB, after {after} KiB",
        if closed < n { " (the rest timed out)" } else { "" },
        if other_codes.is_empty() {
            String::new()
        } else {
            format!(", other codes {other_codes:?}")
        },
        first.unwrap_or_default().as_secs_f64(),
        last.unwrap_or_default().as_secs_f64(),
        notify.peak
    ));
    if closed < n {
        f.problem(format!(
            "deploy: {} of {n} WebSockets not closed within {NOTIFY_TIMEOUT:?}: timed out",
            n - closed
        ));
    }
    f.log(format!(
        "deploy: closes after the request, s: p10 {:.2}, p50 {:.2}, p90 {:.2}, p99 {:.2}",
        common::pct(&mut times, 10.0) / 1000.0,
        common::pct(&mut times, 50.0) / 1000.0,
        common::pct(&mut times, 90.0) / 1000.0,
        common::pct(&mut times, 99.0) / 1000.0
    ));
    f.log(format!("deploy: {} fds once all closed", peer.open_fds()));
    f.log(format!("deploy: RSS samples every 100 ms (KiB): {:?}", notify.samples));
    notify
}
// === main ===

fn main() {
    let knobs = Knobs::from_env();
    if let Err(e) = knobs.check_fit() {
        eprintln!("conn_scale: {e}");
        std::process::exit(2);
    }
    for bin in [&knobs.cutover_bin, &knobs.demo_bin] {
        if !bin.exists() {
            eprintln!(
                "conn_scale: {} is missing; build it (cargo build --release --bins) or set CUTOVER_BIN / DEMO_BIN",
                bin.display()
            );
            std::process::exit(2);
        }
    }
    let started = Instant::now();
    let head = format!(
        "connection scale: {} keep-alive connections, {} WebSockets; one worker each; open files {}; {}; \
         cutover {}, before {}, demo-app {}",
        knobs.keepalive,
        knobs.websockets,
        knobs.nofile,
        if knobs.same_process {
            "both phases on one proxy process (SAME_PROCESS=1)"
        } else {
            "a fresh proxy process per phase"
        },
        knobs.cutover_bin.display(),
        knobs.before.as_ref().map_or("-".into(), |b| b.display().to_string()),
        knobs.demo_bin.display()
    );
    println!("{head}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Sockets dropped outside `block_on` deregister from this runtime.
    let _in_runtime = rt.enter();
    let mut figures = Vec::new();
    let mut skipped = Vec::new();
    for name in &knobs.peers {
        let kind = match name.as_str() {
            "nginx" => Kind::Nginx,
            "haproxy" => Kind::Haproxy,
            "cutover" => Kind::Cutover(knobs.cutover_bin.clone()),
            "before" => match &knobs.before {
                Some(b) => Kind::Cutover(b.clone()),
                None => {
                    skipped.push("before: skipped (set BEFORE=/path/to/an/older/cutover)".to_string());
                    continue;
                }
            },
            other => {
                skipped.push(format!(
                    "{other}: skipped (unknown peer; known: nginx haproxy cutover before)"
                ));
                continue;
            }
        };
        if matches!(kind, Kind::Nginx | Kind::Haproxy) && !ensure_installed(name) {
            skipped.push(format!(
                "{name}: skipped (not installed, and apt-get could not install it)"
            ));
            continue;
        }
        println!("{name}:");
        let peer_start = Instant::now();
        let mut f = measure(name, &kind, &knobs, &rt);
        f.log(format!("took {:.1} s", peer_start.elapsed().as_secs_f64()));
        figures.push(f);
    }
    let table = table(&figures, &knobs);
    let mut notes: Vec<String> = skipped;
    notes.extend(figures.iter().flat_map(|f| f.problems.iter().cloned()));
    let notes: String = notes.iter().map(|n| format!("{n}\n")).collect();
    let took = format!("whole run: {:.1} s", started.elapsed().as_secs_f64());
    println!("\n{head}\n{table}{notes}{took}");

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results/conn-scale");
    let file = dir.join(format!("{}.txt", timestamp()));
    let mut text = format!("{head}\n\n{table}{notes}{took}\n");
    for f in &figures {
        let _ = writeln!(text, "\n## {}", f.name);
        for line in &f.raw {
            let _ = writeln!(text, "{line}");
        }
    }
    match std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&file, text)) {
        Ok(()) => println!("written to {}", file.display()),
        Err(e) => eprintln!("could not write {}: {e}", file.display()),
    }
}
