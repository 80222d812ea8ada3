//! 5,000 idle WebSockets through a release cutover (run by hand, not in
//! CI): RSS per idle connection, then a rolling deploy drains their backend
//! and we time how long until every one received 1012 and closed.
//!
//! Run: `make bench-websocket` (= `cargo build --release --bins && cargo
//! bench --bench websocket_drain`). Knob: `CONNECTIONS` (default 5000).

use std::time::{Duration, Instant};

mod common;

use common::{request, rss_kib, Running};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let connections: usize = std::env::var("CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let cutover = Running::start("websocket", &["--access-log", "off"], |proxy, admin, demo| {
        format!(
            r#"proxy:
  listen: ["{proxy}"]
  threads: 1
  long_lived: {{ spread: 2s, close_grace: 1s, idle_timeout: 1h }}
admin: {{ listen: "{admin}" }}
state_dir: state
apps:
  web:
    command: ["{demo}"]
    env: {{ APP_VERSION: v1, DEMO_TICK_MS: "0" }}
    health: {{ path: /health, interval: 100ms, timeout: 1s, start_timeout: 20s }}
    drain_timeout: 30s
routes:
  - {{ host: "*", path: /, app: web }}
"#
        )
    });
    let (proxy, admin, pid) = (cutover.proxy, cutover.admin, cutover.pid());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let rss_before = rss_kib(pid);
        let mut sockets = Vec::with_capacity(connections);
        let opening = Instant::now();
        for _ in 0..connections {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{proxy}/ws"))
                .await
                .expect("websocket");
            sockets.push(ws);
        }
        let opened_in = opening.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_after = rss_kib(pid);

        let start = Instant::now();
        let waiters: Vec<_> = sockets
            .into_iter()
            .map(|mut ws| {
                tokio::spawn(async move {
                    while let Some(msg) = ws.next().await {
                        if let Ok(Message::Close(Some(frame))) = msg {
                            return (u16::from(frame.code), Instant::now());
                        }
                        if msg.is_err() {
                            break;
                        }
                    }
                    (0, Instant::now())
                })
            })
            .collect();
        let answer = request(admin, "POST", "/deploy", r#"{"app":"web","strategy":"rolling"}"#);
        assert!(answer.contains("\"id\""), "deploy refused: {answer}");
        let mut got_1012 = 0;
        let mut last = start;
        for w in waiters {
            let (code, at) = w.await.unwrap();
            if code == 1012 {
                got_1012 += 1;
            }
            last = last.max(at);
        }
        println!("websocket drain: {connections} idle WebSockets through cutover (1 worker thread)");
        println!("  opened in            {:>8.2} s", opened_in.as_secs_f64());
        println!("  cutover RSS before   {:>8} KiB", rss_before);
        println!("  cutover RSS after    {:>8} KiB", rss_after);
        println!(
            "  RSS per connection   {:>8.1} KiB",
            (rss_after.saturating_sub(rss_before)) as f64 / connections as f64
        );
        println!("  got 1012             {:>8} of {connections}", got_1012);
        println!(
            "  all closed after     {:>8.2} s (spread 2s, close_grace 1s)",
            (last - start).as_secs_f64()
        );
    });
    drop(cutover);
}
