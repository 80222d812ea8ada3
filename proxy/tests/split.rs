//! SPEC §4 "canary" in the data plane alone: the canary gets its share of
//! new requests (exactly, over a window), a set with no ready backend
//! hands its requests to the other one, the sticky cookie keeps a client
//! on its version and never reaches the backend, and each version's
//! answers, 5xx, failed connections and latency are measured apart.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use cutover_proxy::{Backend, Split, SplitStats};
use futures_util::future::join_all;
use harness::{dead_backend, settings, Behaviour, Edge, TestBackend, APP};

fn split(canary: Vec<Arc<Backend>>, weight_bp: u16, sticky: bool, stats: &Arc<SplitStats>) -> Split {
    Split {
        canary,
        weight_bp,
        sticky,
        stable_tag: "v1".into(),
        canary_tag: "v2".into(),
        stats: Arc::clone(stats),
    }
}

/// A stable and a canary backend (echo), an edge on the stable one.
async fn start() -> (Edge, TestBackend, TestBackend) {
    let stable = TestBackend::start("stable", 1, Behaviour::Echo).await;
    let canary = TestBackend::start("canary", 2, Behaviour::Echo).await;
    let edge = Edge::start(settings(), vec![Arc::clone(&stable.backend)]).await;
    (edge, stable, canary)
}

/// `n` requests, `concurrency` at a time, each from a new client (no
/// cookie); how many the canary answered.
async fn canary_answers(edge: &Edge, n: usize, concurrency: usize, extra: &[&str]) -> usize {
    let mut canary = 0;
    for _ in 0..n / concurrency {
        let answers = join_all((0..concurrency).map(|_| edge.get("/", extra))).await;
        for answer in answers {
            assert_eq!(answer.status, 200, "{answer:?}");
            canary += usize::from(answer.backend() == "canary");
        }
    }
    canary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_gets_its_share_at_5_25_and_50_percent() {
    let (edge, stable, canary) = start().await;
    for (weight, sticky) in [(500u16, false), (2500, true), (5000, false)] {
        let stats = SplitStats::new();
        edge.publish(vec![Arc::clone(&stable.backend)], |b| {
            b.split(APP, split(vec![Arc::clone(&canary.backend)], weight, sticky, &stats));
        });
        let n = 400;
        let got = canary_answers(&edge, n, 8, &[]).await;
        let expected = n * usize::from(weight) / 10_000;
        // Concurrent clients, new ones each time (with `sticky`, each gets
        // its cookie): the share holds to within 1% of the requests.
        assert!(
            got.abs_diff(expected) <= n / 100,
            "weight {weight}: {got} of {n}, expected {expected}"
        );
        assert_eq!(stats.canary().snapshot().requests as usize, got);
        assert_eq!(stats.stable().snapshot().requests as usize, n - got);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_share_is_exact_over_a_window_of_sequential_requests() {
    let (edge, stable, canary) = start().await;
    let stats = SplitStats::new();
    edge.publish(vec![Arc::clone(&stable.backend)], |b| {
        b.split(APP, split(vec![Arc::clone(&canary.backend)], 500, false, &stats));
    });
    // 5%: exactly one request in 20, each window of 20.
    for window in 0..5 {
        let got = canary_answers(&edge, 20, 1, &[]).await;
        assert_eq!(got, 1, "window {window}");
    }
    // The sequence survives a table swap with the same split.
    edge.publish(vec![Arc::clone(&stable.backend)], |b| {
        b.split(APP, split(vec![Arc::clone(&canary.backend)], 500, false, &stats));
    });
    assert_eq!(canary_answers(&edge, 20, 1, &[]).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_without_a_ready_backend_hands_its_requests_to_the_other() {
    let (edge, stable, canary) = start().await;
    let stats = SplitStats::new();
    // A hold would end in 503 after 50 ms: the fallback must not hold.
    let short_hold = |b: &mut cutover_proxy::RouteTableBuilder| {
        b.hold_timeout(Duration::from_millis(50));
    };
    // Everything weighted to a canary that has no backend: the stable
    // answers.
    edge.publish(vec![Arc::clone(&stable.backend)], |b| {
        short_hold(b);
        b.split(APP, split(vec![], 10_000, false, &stats));
    });
    assert_eq!(canary_answers(&edge, 10, 2, &[]).await, 0);
    // Everything weighted to a stable set that has no backend: the
    // canary answers.
    edge.publish(vec![], |b| {
        short_hold(b);
        b.split(APP, split(vec![Arc::clone(&canary.backend)], 0, false, &stats));
    });
    assert_eq!(canary_answers(&edge, 10, 2, &[]).await, 10);
    // A draining canary counts as none.
    let draining = TestBackend::start("draining", 3, Behaviour::Echo).await;
    draining.backend.start_draining();
    edge.publish(vec![Arc::clone(&stable.backend)], |b| {
        short_hold(b);
        b.split(APP, split(vec![Arc::clone(&draining.backend)], 10_000, false, &stats));
    });
    assert_eq!(canary_answers(&edge, 10, 2, &[]).await, 0);
    assert_eq!(draining.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sticky_cookie_is_set_once_honoured_reissued_and_never_seen_by_the_backend() {
    let (edge, stable, canary) = start().await;
    let stats = SplitStats::new();
    edge.publish(vec![Arc::clone(&stable.backend)], |b| {
        b.split(APP, split(vec![Arc::clone(&canary.backend)], 5000, true, &stats));
    });

    // A new client gets its version's cookie; the backend's own cookie
    // stays.
    let first = edge.get("/", &[]).await;
    let cookie = first.sticky_cookie().expect("a sticky cookie").to_owned();
    let tag = if first.backend() == "canary" { "v2" } else { "v1" };
    assert_eq!(cookie, format!("cutover-web={tag}; Path=/; HttpOnly; SameSite=Lax"));
    assert!(first.all("set-cookie").contains(&"app=1"), "{first:?}");
    // Never cached for everyone by a shared cache in front.
    assert_eq!(first.all("cache-control"), ["private"], "{first:?}");

    // With it, every request goes to that version, and no new cookie.
    let header = format!("Cookie: a=1; cutover-web={tag}; b=2");
    for _ in 0..10 {
        let again = edge.get("/", &[&header]).await;
        assert_eq!(again.backend(), first.backend());
        assert_eq!(again.sticky_cookie(), None, "{again:?}");
        // Stripped; the client's other cookies kept.
        assert_eq!(again.cookies_seen(), "a=1; b=2");
    }
    // The other version's cookie sends the client there.
    let other_tag = if tag == "v1" { "v2" } else { "v1" };
    let other = edge.get("/", &[&format!("Cookie: cutover-web={other_tag}")]).await;
    assert_ne!(other.backend(), first.backend());
    // Only our cookie: no Cookie header at all reaches the backend.
    assert_eq!(other.cookies_seen(), "-");

    // A tag no version has (an aborted canary): ignored, re-issued.
    let unknown = edge.get("/", &["Cookie: cutover-web=v0"]).await;
    assert!(unknown.sticky_cookie().is_some(), "{unknown:?}");
    assert_eq!(unknown.cookies_seen(), "-");

    // Several Cookie headers: each stripped, the others kept.
    let several = edge
        .get(
            "/",
            &[
                "Cookie: a=1",
                &format!("Cookie: cutover-web={tag}"),
                "Cookie: b=2; cutover-web=v1",
            ],
        )
        .await;
    assert_eq!(several.cookies_seen(), "a=1 | b=2");

    // Another app's cookie is not ours.
    let foreign = edge.get("/", &["Cookie: cutover-api=v2"]).await;
    assert_eq!(foreign.cookies_seen(), "cutover-api=v2");
    assert!(foreign.sticky_cookie().is_some());

    // Without a split: nothing set, the cookie still stripped.
    edge.publish(vec![Arc::clone(&stable.backend)], |_| {});
    let plain = edge.get("/", &["Cookie: cutover-web=v2; a=1"]).await;
    assert_eq!(plain.sticky_cookie(), None);
    assert_eq!(plain.cookies_seen(), "a=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_split_cookies_are_stripped_and_honoured() {
    let (edge, stable, canary) = start().await;
    let stats = SplitStats::new();
    edge.publish(vec![Arc::clone(&stable.backend)], |b| {
        b.split(APP, split(vec![Arc::clone(&canary.backend)], 0, true, &stats));
    });
    let tcp = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    for _ in 0..3 {
        let mut send = send.clone().ready().await.unwrap();
        // HTTP/2 clients send each cookie in its own field (RFC 9113 §8.2.3).
        let request = http::Request::get("http://shop.test/")
            .header("cookie", "a=1")
            .header("cookie", "cutover-web=v2")
            .header("cookie", "b=2")
            .body(())
            .unwrap();
        let (response, _) = send.send_request(request, true).unwrap();
        let response = tokio::time::timeout(harness::WAIT, response).await.unwrap().unwrap();
        assert!(response
            .headers()
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.as_bytes().starts_with(b"cutover-web")));
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(text).unwrap();
        // Weight 0, but the cookie names the canary.
        assert!(text.starts_with("canary\n"), "{text}");
        let seen = text.lines().nth(1).unwrap();
        assert!(!seen.contains("cutover-web"), "{seen}");
        assert!(seen.contains("a=1") && seen.contains("b=2"), "{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_version_counts_its_5xx_and_failed_connections() {
    let stable = TestBackend::start("stable", 1, Behaviour::Echo).await;
    let failing = TestBackend::start("canary", 2, Behaviour::Status(503)).await;
    let edge = Edge::start(settings(), vec![Arc::clone(&stable.backend)]).await;

    // 5xx answers: counted for the canary only.
    let stats = SplitStats::new();
    edge.publish(vec![Arc::clone(&stable.backend)], |b| {
        b.split(APP, split(vec![Arc::clone(&failing.backend)], 5000, false, &stats));
    });
    let answers = join_all((0..20).map(|_| edge.get("/", &[]))).await;
    assert_eq!(answers.iter().filter(|a| a.status == 503).count(), 10);
    let (s, c) = (stats.stable().snapshot(), stats.canary().snapshot());
    assert_eq!((s.requests, s.server_errors, s.connect_failures), (10, 0, 0));
    assert_eq!((c.requests, c.server_errors, c.connect_failures), (10, 10, 0));
    assert_eq!(c.error_rate(), 1.0);
    assert_eq!(s.error_rate(), 0.0);

    // Refused connections: retried on the stable set, counted as the
    // canary's failures; every client gets 200.
    let stats = SplitStats::new();
    edge.publish(vec![Arc::clone(&stable.backend)], |b| {
        b.split(APP, split(vec![dead_backend("dead", 3)], 5000, false, &stats));
    });
    for _ in 0..10 {
        assert_eq!(edge.get("/", &[]).await.status, 200);
    }
    let (s, c) = (stats.stable().snapshot(), stats.canary().snapshot());
    assert_eq!((s.requests, s.connect_failures), (10, 0));
    assert_eq!(c.requests, 0);
    assert!(c.connect_failures >= 5, "{c:?}");

    // Connections dropped before an answer: the GET is replayed on the
    // stable set; the drop is the canary's failure.
    let dropping = TestBackend::start("dropping", 4, Behaviour::Drop).await;
    let stats = SplitStats::new();
    edge.publish(vec![Arc::clone(&stable.backend)], |b| {
        b.split(APP, split(vec![Arc::clone(&dropping.backend)], 5000, false, &stats));
    });
    for _ in 0..10 {
        assert_eq!(edge.get("/", &[]).await.status, 200);
    }
    let c = stats.canary().snapshot();
    assert!(dropping.requests() >= 5);
    assert_eq!(c.connect_failures as usize, dropping.requests(), "{c:?}");
    assert_eq!(c.requests, 0);

    // Nothing is counted once the split left the table.
    edge.publish(vec![Arc::clone(&stable.backend)], |_| {});
    let before = stats.stable().snapshot();
    edge.get("/", &[]).await;
    assert_eq!(stats.stable().snapshot(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_canary_shows_in_its_p99() {
    let stable = TestBackend::start("stable", 1, Behaviour::Echo).await;
    let slow = TestBackend::start("canary", 2, Behaviour::Slow(Duration::from_millis(300))).await;
    let edge = Edge::start(settings(), vec![Arc::clone(&stable.backend)]).await;
    let stats = SplitStats::new();
    edge.publish(vec![Arc::clone(&stable.backend)], |b| {
        b.split(APP, split(vec![Arc::clone(&slow.backend)], 5000, false, &stats));
    });
    let start = stats.canary().snapshot();
    join_all((0..20).map(|_| edge.get("/", &[]))).await;
    let canary = stats.canary().snapshot().since(&start);
    let stable = stats.stable().snapshot();
    assert_eq!((canary.requests, stable.requests), (10, 10));
    let (slow_p99, fast_p99) = (canary.p99().unwrap(), stable.p99().unwrap());
    assert!(slow_p99 >= Duration::from_millis(300), "{slow_p99:?}");
    assert!(fast_p99 < slow_p99, "stable {fast_p99:?} vs canary {slow_p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_sse_requests_take_the_split_and_its_cookie_too() {
    let (edge, stable, canary) = start().await;
    let stats = SplitStats::new();
    edge.publish(vec![Arc::clone(&stable.backend)], |b| {
        b.split(APP, split(vec![Arc::clone(&canary.backend)], 0, true, &stats));
    });
    let upgrade = [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ];
    // These backends answer 200 rather than 101: the takeover forwards the
    // answer as it is, with the cookie the client lacks.
    let first = edge.get("/ws", &upgrade).await;
    assert_eq!((first.status, first.backend()), (200, "stable"), "{first:?}");
    assert_eq!(
        first.sticky_cookie(),
        Some("cutover-web=v1; Path=/; HttpOnly; SameSite=Lax")
    );
    // A client holding the canary's cookie goes there, and the backend
    // never sees the cookie.
    let mut with_cookie = upgrade.to_vec();
    with_cookie.push("Cookie: a=1; cutover-web=v2");
    let second = edge.get("/ws", &with_cookie).await;
    assert_eq!((second.backend(), second.cookies_seen()), ("canary", "a=1"));
    assert_eq!(second.sticky_cookie(), None);
    let events = edge
        .get("/events", &["Accept: text/event-stream", "Cookie: cutover-web=v2"])
        .await;
    assert_eq!((events.backend(), events.cookies_seen()), ("canary", "-"));
    // Counted for each version like any request.
    assert_eq!(stats.stable().snapshot().requests, 1);
    assert_eq!(stats.canary().snapshot().requests, 2);
}
