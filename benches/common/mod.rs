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
