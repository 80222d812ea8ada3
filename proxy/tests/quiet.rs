//! Closes that cutover makes on purpose, or that clients make in the
//! ordinary course (no close_notify, an unknown name, a handshake timeout,
//! an idle HTTP/2 connection), log no ERROR line: pingora logs failed
//! requests at ERROR, so none of these may reach it as a failure. (Errors
//! raised under `proxy.limits` carry `CLOSED_BY_LIMITS`, which the binary's
//! log filter drops; they are left out here the same way.)

mod support;

use std::sync::Mutex;
use std::time::Duration;

use cutover_proxy::limits::CLOSED_BY_LIMITS;
use support::{client, connect_tls, entry, get, h2_client, h2_get, settings, until_closed, Ca, Edge};
use tokio::io::AsyncWriteExt;

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Error
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!("{}: {}", record.target(), record.args());
            self.0.lock().unwrap().push(line);
        }
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_and_deliberate_closes_over_tls_and_http2_log_no_error() {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Error);
    let ca = Ca::new();
    let leaf = ca.issue(&["a.test"]);
    let mut settings = settings(&[entry(&["a.test"], &leaf)]);
    settings.limits.header_timeout = Duration::from_millis(500);
    settings.limits.keepalive_timeout = Duration::from_millis(1000);
    settings.h2c = true;
    let edge = Edge::start(settings).await;

    // HTTP/1.1 over TLS, then a close without close_notify.
    let mut tls = connect_tls(client(&ca, &[b"http/1.1"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    assert_eq!(get(&mut tls, "a.test", "/", "").await.status(), 200);
    drop(tls);
    // HTTP/2 over TLS, then the same; and one left to idle out.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let tls = connect_tls(client(&ca, &[b"h2"]), edge.tls, Some("a.test"))
            .await
            .unwrap();
        let (mut h2, closed) = h2_client(tls).await;
        assert_eq!(h2_get(&mut h2, "https://a.test/").await.0, 200);
        idle.push((h2, closed));
    }
    // The first closed by the client, the other left to cutover's idle
    // timeout (its handle is kept until the end).
    drop(idle.remove(0));
    // h2c, closed by the client.
    let (mut h2, _) = h2_client(tokio::net::TcpStream::connect(edge.plain).await.unwrap()).await;
    assert_eq!(h2_get(&mut h2, "http://plain.test/").await.0, 200);
    drop(h2);
    // An unknown name, no TLS at all, a silent client, half a head over TLS.
    assert!(connect_tls(client(&ca, &[b"http/1.1"]), edge.tls, Some("x.test"))
        .await
        .is_err());
    let mut plaintext = tokio::net::TcpStream::connect(edge.tls).await.unwrap();
    plaintext.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    until_closed(&mut plaintext).await;
    let mut silent = tokio::net::TcpStream::connect(edge.tls).await.unwrap();
    until_closed(&mut silent).await;
    let mut slow = connect_tls(client(&ca, &[b"http/1.1"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n").await.unwrap();
    let answer = String::from_utf8(until_closed(&mut slow).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Every connection is gone, so everything that would log has logged.
    for listener in [edge.plain, edge.tls] {
        edge.wait_metric(&format!("cutover_client_connections{{listener=\"{listener}\"}}"), 0.0)
            .await;
    }
    drop(idle);
    let errors: Vec<String> = CAPTURE
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|line| !line.contains(CLOSED_BY_LIMITS))
        // pingora's upstream pool logs this when a pooled backend
        // connection is still referenced by its idle watcher at checkout
        // (`connectors/mod.rs`, `reused_stream`): a backend-side race of
        // pingora's, unrelated to client connections; it opens a new one.
        .filter(|line| !line.contains("failed to acquire reusable stream"))
        .cloned()
        .collect();
    assert!(errors.is_empty(), "ERROR lines: {errors:#?}");
}
