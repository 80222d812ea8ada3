//! Memory at idle and with 5,000 idle keep-alive client connections (run by
//! hand, not in CI), for cutover on one and on two worker threads.
//!
//! Run: `make bench-idle` (= `cargo build --release --bins && cargo bench
//! --bench idle_keepalive`). Knob: `CONNECTIONS` (default 5000).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_ready};

fn main() {
    let connections: usize = std::env::var("CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join("target/release");
    assert!(
        bin.join("cutover").exists(),
        "build the release binaries first: cargo build --release --bins"
    );
    println!("idle keep-alive: {connections} client connections, each after one request");
    for threads in [1, 2] {
        let dir = std::env::temp_dir().join(format!("cutover-idle-bench-{}-{threads}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = dir.join("deploy.yaml");
        std::fs::write(
            &config,
            format!(
                "proxy: {{ listen: [\"{proxy}\"], threads: {threads} }}\nadmin: {{ listen: \"{admin}\" }}\nstate_dir: state\napps:\n  web:\n    command: [\"{}\"]\n    env: {{ APP_VERSION: v1 }}\nroutes:\n  - {{ host: \"*\", path: /, app: web }}\n",
                bin.join("demo-app").display()
            ),
        )
        .unwrap();
        let mut cutover = Command::new(bin.join("cutover"))
            .args(["up", "--access-log", "off", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cutover starts");
        wait_ready(proxy);
        std::thread::sleep(Duration::from_millis(500));
        let idle = rss_kib(cutover.id());
        let mut open = Vec::with_capacity(connections);
        for _ in 0..connections {
            let mut s = TcpStream::connect(proxy).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            open.push(s);
        }
        std::thread::sleep(Duration::from_millis(500));
        let loaded = rss_kib(cutover.id());
        println!(
            "  {threads} thread(s): RSS idle {idle} KiB, with {connections} idle keep-alive connections {loaded} KiB, {:.1} KiB each",
            loaded.saturating_sub(idle) as f64 / connections as f64
        );
        drop(open);
        let _ = Command::new("kill").arg(cutover.id().to_string()).status();
        let _ = cutover.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
