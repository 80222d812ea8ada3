//! SPEC §2/§9 `pause` and `maintenance` in the data plane alone: a paused
//! app's new requests wait (counted as held) and go on once a table
//! without the pause arrives, or get 503 with `Retry-After` after
//! `max_pause`; an app in maintenance answers 503 with its page on every
//! path (pingora's, WebSocket/SSE, gRPC) and nothing reaches a backend;
//! requests already at a backend are never affected.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use cutover_proxy::{AppMode, ErrorPages};
use harness::{settings, wait_until, Behaviour, Edge, TestBackend, APP};

const HELD: &str = "cutover_held_requests{app=\"web\"}";

fn paused(max_pause: Duration) -> AppMode {
    AppMode::Paused { max_pause }
}

fn maintenance(message: &str) -> AppMode {
    AppMode::Maintenance {
        message: Some(message.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_app_holds_new_requests_until_a_table_without_the_pause() {
    let web = TestBackend::start("web-0", 1, Behaviour::Slow(Duration::from_millis(300))).await;
    let edge = Arc::new(Edge::start(settings(), vec![Arc::clone(&web.backend)]).await);

    // In flight when the pause comes: finishes as if nothing happened.
    let in_flight = tokio::spawn({
        let edge = Arc::clone(&edge);
        async move { edge.get("/", &[]).await }
    });
    wait_until("the first request at the backend", || web.requests() == 1).await;
    edge.publish(vec![Arc::clone(&web.backend)], |b| {
        b.mode(APP, paused(Duration::from_secs(30)));
    });
    let held = tokio::spawn({
        let edge = Arc::clone(&edge);
        async move { edge.get("/", &[]).await }
    });
    edge.wait_metric(HELD, 1.0).await;
    assert_eq!(in_flight.await.unwrap().status, 200);
    assert_eq!(web.requests(), 1, "the held request reached no backend");
    assert!(!held.is_finished());

    // Resume: one table swap without the pause.
    edge.publish(vec![Arc::clone(&web.backend)], |_| {});
    let answer = held.await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(web.requests(), 2);
    edge.wait_metric(HELD, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_paused_past_max_pause_gets_503_with_retry_after() {
    let web = TestBackend::start("web-0", 1, Behaviour::Echo).await;
    let edge = Edge::start(settings(), vec![Arc::clone(&web.backend)]).await;
    edge.publish(vec![Arc::clone(&web.backend)], |b| {
        b.mode(APP, paused(Duration::from_millis(300)));
    });
    let started = tokio::time::Instant::now();
    let answer = edge.get("/", &[]).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(answer.body, "the app is paused: try again shortly\n");
    // A JSON client gets JSON.
    let json = edge.get("/", &["Accept: application/json"]).await;
    let value: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(value["status"], 503);
    assert_eq!(web.requests(), 0);
    assert_eq!(edge.metric(HELD), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_answers_503_with_the_page_and_nothing_reaches_the_backend() {
    let web = TestBackend::start("web-0", 1, Behaviour::Echo).await;
    let edge = Edge::start(settings(), vec![Arc::clone(&web.backend)]).await;
    edge.publish(vec![Arc::clone(&web.backend)], |b| {
        b.mode(APP, maintenance("back at 5 <b>&</b>"));
    });

    // A browser: the built-in page naming the message, escaped.
    let html = edge
        .get("/", &["Accept: text/html,application/xhtml+xml,*/*;q=0.8"])
        .await;
    assert_eq!(html.status, 503);
    assert_eq!(html.header("retry-after"), Some("30"));
    assert_eq!(html.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(
        html.body.contains("back at 5 &lt;b&gt;&amp;&lt;/b&gt;"),
        "{}",
        html.body
    );
    assert!(!html.body.contains("<b>"));

    // JSON for an API client.
    let json = edge.get("/api", &["Accept: application/json"]).await;
    assert_eq!(
        (json.status, json.header("content-type")),
        (503, Some("application/json"))
    );
    assert!(json.header("retry-after").is_some());
    let value: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(value["status"], 503);
    assert_eq!(value["message"], "back at 5 <b>&</b>");
    assert!(value["error"].as_str().unwrap().contains("maintenance"));

    // Plain text for everything else.
    let plain = edge.get("/", &[]).await;
    assert_eq!(plain.status, 503);
    assert_eq!(plain.body, "the app is down for maintenance: back at 5 <b>&</b>\n");
    assert!(plain.header("retry-after").is_some());

    // The app's own maintenance.html, its {{message}} filled in.
    let dir = std::env::temp_dir().join(format!("cutover-maintenance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("maintenance.html"), "<h1>Be right back</h1><p>{{message}}</p>").unwrap();
    let pages = Arc::new(ErrorPages::from_dir(&dir).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    edge.publish(vec![Arc::clone(&web.backend)], |b| {
        b.mode(APP, maintenance("<b>soon</b>"));
        b.error_pages(APP, pages);
    });
    let page = edge.get("/", &["Accept: text/html"]).await;
    assert_eq!(page.status, 503);
    assert_eq!(page.body, "<h1>Be right back</h1><p>&lt;b&gt;soon&lt;/b&gt;</p>");

    assert_eq!(web.connections(), 0, "nothing reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sse_and_grpc_get_the_maintenance_answer_and_reach_no_backend() {
    let web = TestBackend::start("web-0", 1, Behaviour::Echo).await;
    let edge = Edge::start(settings(), vec![Arc::clone(&web.backend)]).await;
    edge.publish(vec![Arc::clone(&web.backend)], |b| {
        b.mode(APP, maintenance("upgrading 100% of it"));
    });
    let upgrade = edge
        .get(
            "/ws",
            &[
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
            ],
        )
        .await;
    assert_eq!(upgrade.status, 503, "{upgrade:?}");
    assert!(upgrade.header("retry-after").is_some());
    let events = edge.get("/events", &["Accept: text/event-stream"]).await;
    assert_eq!(events.status, 503, "{events:?}");

    // A gRPC call: a proper gRPC status, UNAVAILABLE, with the message.
    let tcp = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let call = http::Request::post("http://shop.test/demo.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, _) = send.send_request(call, true).unwrap();
    let response = tokio::time::timeout(harness::WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "14");
    let message = response.headers()["grpc-message"].to_str().unwrap();
    assert!(message.ends_with("upgrading 100%25 of it"), "{message}");

    assert_eq!(web.connections(), 0, "nothing reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_gets_the_maintenance_answer_when_maintenance_starts() {
    let web = TestBackend::start("web-0", 1, Behaviour::Echo).await;
    let edge = Arc::new(Edge::start(settings(), vec![Arc::clone(&web.backend)]).await);
    edge.publish(vec![Arc::clone(&web.backend)], |b| {
        b.mode(APP, paused(Duration::from_secs(30)));
    });
    let held = tokio::spawn({
        let edge = Arc::clone(&edge);
        async move { edge.get("/", &["Accept: application/json"]).await }
    });
    edge.wait_metric(HELD, 1.0).await;
    edge.publish(vec![Arc::clone(&web.backend)], |b| {
        b.mode(APP, maintenance("db migration"));
    });
    let answer = held.await.unwrap();
    assert_eq!(answer.status, 503);
    let value: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(value["message"], "db migration");
    assert_eq!(web.connections(), 0);
}
