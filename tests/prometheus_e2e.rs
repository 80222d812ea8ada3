//! The metrics and the shipped dashboard against a real Prometheus
//! (Debian's `prometheus` package, installed by `make deps`): `promtool
//! check metrics` passes, and every expression of
//! `dashboards/cutover.json` returns data after traffic and a deploy.

mod support;
#[path = "support/certs.rs"]
mod tls_files;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{App, Cutover};

fn require(tool: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{tool} is not installed: run `make deps` (it installs Debian's prometheus package)"
    );
    String::from_utf8_lossy(&found.stdout).trim().to_string()
}

/// A Prometheus server that is killed on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query(prometheus: SocketAddr, expr: &str) -> Value {
    let resp = support::http::get(
        prometheus,
        "prometheus",
        &format!("/api/v1/query?query={}", encode(expr)),
    )
    .expect("prometheus answers");
    assert_eq!(resp.status, 200, "{expr}: {}", resp.text());
    serde_json::from_slice(&resp.body).unwrap()
}

/// Waits (up to `timeout`) until `expr` returns at least one series from
/// Prometheus: synchronising on what it scraped, not on a guessed time.
async fn wait_for_data(prometheus: SocketAddr, expr: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = tokio::task::block_in_place(|| query(prometheus, expr));
        if answer["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no data for {expr} within {timeout:?}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn promtool_accepts_the_metrics() {
    let promtool = require("promtool");
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    for _ in 0..3 {
        cutover.get("t", "/");
    }
    let metrics = cutover.admin_get("/metrics").text();
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_expression_returns_data_from_a_real_prometheus() {
    let binary = require("prometheus");
    // A TLS listener with a certificate file, for the TLS panels.
    let certs = support::TempDir::new("prometheus-certs");
    let cert = tls_files::CertFiles::write(certs.path(), "a", &["a.test"], 2000, 2100);
    let tls_listen = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").yaml("drain_timeout: 5s"))
        .route("*", "/", "web")
        .proxy_yaml("long_lived: { spread: 200ms, close_grace: 500ms, idle_timeout: 1h }")
        .proxy_yaml(&tls_files::tls_yaml(tls_listen, &[cert.yaml(&["a.test"])]))
        .start();

    // The shipped scrape config, pointed at this cutover and scraping fast.
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/prometheus.yml")).unwrap();
    let config = shipped
        .replace("127.0.0.1:9180", &cutover.admin.to_string())
        .replace("scrape_interval: 5s", "scrape_interval: 500ms");
    let dir = cutover.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let address = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prometheus = Prometheus(
        Command::new(binary)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = support::http::get(address, "prometheus", "/api/v1/query?query=up%7Bjob%3D%22cutover%22%7D")
            .ok()
            .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok());
        if up.is_some_and(|v| v["data"]["result"][0]["value"][1] == "1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped cutover:\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Traffic, a WebSocket the deploy will close, and a rolling deploy.
    let load = support::load::Load::start(
        cutover.proxy,
        support::load::LoadSpec {
            keepalive_clients: 2,
            fresh_clients: 1,
            ..Default::default()
        },
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", cutover.proxy))
        .await
        .unwrap();
    let closed = tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = ws.next().await {}
    });
    // Prometheus has seen the traffic (two scrapes, so a rate) before the deploy.
    wait_for_data(
        address,
        "sum(rate(cutover_requests_total[1m])) > 0",
        Duration::from_secs(30),
    )
    .await;
    let v2 = cutover.config_with_version("v1", "v2");
    let (code, out, err) = tokio::task::block_in_place(|| cutover.push(&v2, &["--deploy-strategy", "rolling"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let _ = tokio::time::timeout(Duration::from_secs(10), closed).await;
    // ...and the deploy and the WebSocket it closed, with the load running.
    wait_for_data(
        address,
        "sum(increase(cutover_deployments_total{outcome=\"succeeded\"}[1h])) > 0",
        Duration::from_secs(30),
    )
    .await;
    wait_for_data(
        address,
        "sum(cutover_long_lived_closed_total{reason=\"drain\"}) > 0",
        Duration::from_secs(30),
    )
    .await;
    let report = load.stop();
    assert_eq!(report.failures(), 0, "{:?}", report.samples);

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/cutover.json")).unwrap(),
    )
    .unwrap();
    // Every expression returns data once Prometheus has scraped what the
    // test did; poll until then (bounded), never a fixed wait.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut checked = 0;
        let mut empty = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            // Rows group panels and query nothing.
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap();
                let answer = tokio::task::block_in_place(|| query(address, expr));
                assert_eq!(answer["status"], "success", "{expr}: {answer}");
                if answer["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
                    empty.push(format!("{} / {expr}", panel["title"]));
                }
                checked += 1;
            }
        }
        assert!(checked >= 20, "the dashboard has its panels");
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expressions with no data:\n{}",
            empty.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
