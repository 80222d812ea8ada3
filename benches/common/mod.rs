//! What the by-hand harnesses share: ports, waiting for cutover, and a
//! one-shot HTTP request to the admin API. Each harness uses a part.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `proxy` answers `GET /` with 200.
pub fn wait_ready(proxy: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(proxy) {
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("cutover did not serve within 30 s");
}

/// One request on a fresh connection; the response body.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// A release cutover on a generated config, stopped (SIGTERM) and cleaned
/// up on drop.
pub struct Running {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Running {
    /// Starts `target/release/cutover up` on the config `yaml` builds from
    /// (proxy address, admin address, demo-app path); waits until it serves.
    pub fn start(tag: &str, args: &[&str], yaml: impl Fn(SocketAddr, SocketAddr, &str) -> String) -> Self {
        let bin = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release");
        assert!(
            bin.join("cutover").exists() && bin.join("demo-app").exists(),
            "build the release binaries first: cargo build --release --bins"
        );
        let dir = std::env::temp_dir().join(format!("cutover-{tag}-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = dir.join("deploy.yaml");
        std::fs::write(&config, yaml(proxy, admin, &bin.join("demo-app").display().to_string())).unwrap();
        let child = std::process::Command::new(bin.join("cutover"))
            .arg("up")
            .args(args)
            .arg("-c")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("cutover.log")).unwrap())
            .spawn()
            .expect("cutover starts");
        wait_ready(proxy);
        Self {
            proxy,
            admin,
            dir,
            child,
        }
    }

    /// cutover's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Latencies (µs) split by whether they were measured inside one of
/// `windows` (a deploy, an upgrade): `(outside, inside)`.
pub fn split_by_windows(latencies: &[(Instant, u64)], windows: &[(Instant, Instant)]) -> (Vec<u64>, Vec<u64>) {
    let mut split = (Vec::new(), Vec::new());
    for (at, us) in latencies {
        if windows.iter().any(|(s, e)| at >= s && at <= e) {
            split.1.push(*us);
        } else {
            split.0.push(*us);
        }
    }
    split
}

/// Prints one line: p50 and p99 (ms) of `values` (µs) under `label`.
pub fn print_percentiles(label: &str, values: &mut [u64]) {
    println!(
        "  {label:<10} p50 {:>7.2} ms  p99 {:>7.2} ms  ({} requests)",
        pct(values, 50.0),
        pct(values, 99.0),
        values.len()
    );
}

/// The `p`th percentile of `values` (µs), in ms; 0 when empty.
pub fn pct(values: &mut [u64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let i = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[i] as f64 / 1000.0
}

/// A numeric knob from the environment, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Raises this process's soft limit on open files to its hard limit (what
/// children inherit too); the new soft limit. std has no wrapper and the
/// bench's dependencies do not bring one, so this calls libc directly.
pub fn raise_nofile_limit() -> u64 {
    #[repr(C)]
    struct Rlimit {
        cur: u64,
        max: u64,
    }
    extern "C" {
        fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7; // Linux, every architecture we build for
    let mut lim = Rlimit { cur: 0, max: 0 };
    // SAFETY: `lim` is a valid, writable `struct rlimit` (two rlim_t, u64 on
    // 64-bit Linux) for the duration of both calls.
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.cur < lim.max {
            let raised = Rlimit {
                cur: lim.max,
                max: lim.max,
            };
            if setrlimit(RLIMIT_NOFILE, &raised) == 0 {
                lim.cur = lim.max;
            }
        }
    }
    lim.cur
}

/// `/proc/<pid>/stat` after the command name: field 3 (state) onwards.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// When `pid` started (clock ticks after boot): with the pid, what names
/// one process even after its pid is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Every living descendant of `pid` (children, their children, …).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(ppid) = stat_fields(p).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// Sum of the resident memory of `pids`, in KiB.
pub fn rss_sum_kib(pids: &[u32]) -> u64 {
    pids.iter().map(|p| rss_kib(*p)).sum()
}

/// The resident memory of what `pids` names once it has settled: sampled
/// every 200 ms until two samples in a row agree within 1 %, or 3 s went by
/// (then the last sample). `pids` is asked each time (nginx's worker may be
/// replaced, a process may exit).
pub fn settled_rss_kib(pids: impl Fn() -> Vec<u32>) -> u64 {
    let start = Instant::now();
    let mut last = rss_sum_kib(&pids());
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = rss_sum_kib(&pids());
        if now.abs_diff(last) * 100 <= now.max(1) || start.elapsed() >= Duration::from_secs(3) {
            return now;
        }
        last = now;
    }
}

/// A process the harness started, with everything it started in turn:
/// SIGTERM on drop, SIGKILL after `grace`, then SIGKILL to any of its
/// descendants still alive (found before the SIGTERM, matched by start time
/// so a reused pid is left alone). Drops on panic too.
pub struct Spawned {
    pub name: String,
    child: std::process::Child,
    grace: Duration,
}

impl Spawned {
    pub fn new(name: &str, child: std::process::Child, grace: Duration) -> Self {
        Self {
            name: name.to_string(),
            child,
            grace,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (with its status, for a message).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let tree: Vec<(u32, Option<u64>)> = descendants(self.pid())
            .into_iter()
            .map(|p| (p, start_time(p)))
            .collect();
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + self.grace;
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // What it started stops with it, normally; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        let alive = |&(p, st): &(u32, Option<u64>)| st.is_some() && start_time(p) == st;
        while tree.iter().any(alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for &(p, _) in tree.iter().filter(|t| alive(t)) {
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
        }
    }
}

/// A directory removed (with its contents) on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cutover-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `addr` answers `GET path` with 200 within `within`.
pub fn serves(addr: SocketAddr, path: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.1 200") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
