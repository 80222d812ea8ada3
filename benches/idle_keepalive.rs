//! Memory at idle and with 5,000 idle keep-alive client connections (run by
//! hand, not in CI), for cutover on one and on two worker threads.
//!
//! Run: `make bench-idle` (= `cargo build --release --bins && cargo bench
//! --bench idle_keepalive`). Knob: `CONNECTIONS` (default 5000).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{rss_kib, Running};

fn main() {
    let connections: usize = std::env::var("CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    println!("idle keep-alive: {connections} client connections, each after one request");
    for threads in [1, 2] {
        let cutover = Running::start("idle", &["--access-log", "off"], |proxy, admin, demo| {
            format!(
                "proxy: {{ listen: [\"{proxy}\"], threads: {threads} }}\nadmin: {{ listen: \"{admin}\" }}\nstate_dir: state\napps:\n  web:\n    command: [\"{demo}\"]\n    env: {{ APP_VERSION: v1 }}\nroutes:\n  - {{ host: \"*\", path: /, app: web }}\n"
            )
        });
        let proxy = cutover.proxy;
        std::thread::sleep(Duration::from_millis(500));
        let idle = rss_kib(cutover.pid());
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
        let loaded = rss_kib(cutover.pid());
        println!(
            "  {threads} thread(s): RSS idle {idle} KiB, with {connections} idle keep-alive connections {loaded} KiB, {:.1} KiB each",
            loaded.saturating_sub(idle) as f64 / connections as f64
        );
        drop(open);
        drop(cutover);
    }
}
