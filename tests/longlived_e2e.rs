//! WebSocket and SSE through cutover, and what they get when their backend
//! drains: a 1012 close frame at a frame boundary, or `retry:` after the
//! event in flight; spread over time; counted in metrics.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::{App, Cutover};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(cutover: &Cutover, protocols: Option<&str>) -> Ws {
    let mut request = format!("ws://{}/ws", cutover.proxy).into_client_request().unwrap();
    if let Some(p) = protocols {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket through cutover");
    assert_eq!(response.status(), 101);
    ws
}

/// The next text message (ticks included), within 10 s.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time")
        {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame; (code, reason). Then reads on so
/// the close handshake completes, and asserts the stream ends cleanly.
async fn until_close(ws: &mut Ws, within: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + within;
    let frame = loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a close frame in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let (code, reason) = frame
        .map(|f| (u16::from(f.code), f.reason.to_string()))
        .unwrap_or((1005, String::new()));
    // tungstenite answers the close; the connection must then end without a reset.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the socket closes")
        {
            None => break,
            Some(Ok(_)) => continue,
            Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => break,
            Some(Err(e)) => panic!("the close handshake did not complete cleanly: {e}"),
        }
    }
    (code, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_pass_both_ways() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let mut ws = connect(&cutover, Some("chat")).await;

    ws.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hello");

    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::Binary(big.clone().into())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() {
        Some(Ok(Message::Binary(b))) => assert!(b[..] == big[..], "1 MiB echoed intact"),
        other => panic!("{other:?}"),
    }

    // A fragmented message, with a ping between its fragments.
    ws.send(Message::Frame(Frame::message(
        b"frag".to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    ws.send(Message::Frame(Frame::message(
        b"mented".to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    let mut saw_pong = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], b"p");
                saw_pong = true;
            }
            Some(Ok(Message::Text(t))) => {
                assert_eq!(t.as_str(), "fragmented");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(saw_pong, "ping answered");
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subprotocol_is_negotiated_through_the_proxy() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let mut request = format!("ws://{}/ws", cutover.proxy).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "demo.v1, chat".parse().unwrap());
    let (_ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "demo.v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_gets_1012_when_backend_drains_and_reconnects_to_the_new_instance() {
    let cutover = Cutover::builder()
        .app(
            App::demo("web", "v1")
                .env("DEMO_TICK_MS", "100")
                .yaml("drain_timeout: 10s"),
        )
        .route("*", "/", "web")
        .proxy_yaml("long_lived: { spread: 300ms, close_grace: 1s, idle_timeout: 1h }")
        .start();
    let mut ws = connect(&cutover, None).await;
    assert!(next_text(&mut ws).await.starts_with("tick v1 web-0"));

    let v2 = cutover.config_with_version("v1", "v2");
    let dir = cutover.dir.path().to_path_buf();
    let admin = cutover.admin;
    let deploy = tokio::task::spawn_blocking(move || {
        std::fs::write(dir.join("push.yaml"), v2).unwrap();
        std::process::Command::new(support::cutover_bin())
            .args([
                "push",
                "push.yaml",
                "--deploy-strategy",
                "rolling",
                "--admin",
                &format!("http://{admin}"),
            ])
            .current_dir(&dir)
            .output()
            .unwrap()
    });

    // The route phase drains the original: 1012, then a clean close.
    let (code, reason) = until_close(&mut ws, Duration::from_secs(15)).await;
    assert_eq!(code, 1012, "service restart");
    assert!(!reason.is_empty(), "with a reason");
    // A reconnect right away lands on the clone.
    let mut ws = connect(&cutover, None).await;
    let tick = next_text(&mut ws).await;
    assert!(tick.starts_with("tick v1 web-clone-0"), "{tick}");
    // The switch phase drains the clone: 1012 again; then the upgraded original.
    let (code, _) = until_close(&mut ws, Duration::from_secs(15)).await;
    assert_eq!(code, 1012);
    let mut ws = connect(&cutover, None).await;
    let tick = next_text(&mut ws).await;
    assert!(tick.starts_with("tick v2 web-0"), "{tick}");

    let out = deploy.await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let metrics = cutover.admin_get("/metrics").text();
    assert!(
        metrics.contains(r#"cutover_long_lived_closed_total{app="web",kind="websocket",reason="drain"} 2"#),
        "{metrics}"
    );
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_websockets_all_get_1012_spread_over_time() {
    const N: usize = 1000;
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1").yaml("drain_timeout: 20s"))
        .route("*", "/", "web")
        .proxy_yaml("long_lived: { spread: 2s, close_grace: 1s, idle_timeout: 1h }")
        .start();
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        clients.push(connect(&cutover, None).await);
    }
    cutover.wait_until(Duration::from_secs(10), "all connections counted", |c| {
        c.instances("web")[0]["long_lived"].as_u64() == Some(N as u64)
    });
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let (code, _) = until_close(&mut ws, Duration::from_secs(30)).await;
                (code, Instant::now())
            })
        })
        .collect();
    let v2 = cutover.config_with_version("v1", "v2");
    let (code, out, err) = tokio::task::block_in_place(|| cutover.push(&v2, &["--deploy-strategy", "rolling"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let mut times = Vec::new();
    for t in tasks {
        let (code, at) = t.await.unwrap();
        assert_eq!(code, 1012);
        times.push(at);
    }
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    assert!(
        last - first > Duration::from_millis(500),
        "closes are spread, not simultaneous: {:?}",
        last - first
    );
    assert!(last - started < Duration::from_secs(20), "all within the drain window");
    // Not all in any one 50 ms window.
    let in_one_window = times
        .iter()
        .map(|t| {
            times
                .iter()
                .filter(|u| **u >= *t && **u < *t + Duration::from_millis(50))
                .count()
        })
        .max()
        .unwrap();
    assert!(in_one_window < N / 4, "{in_one_window} of {N} closed within 50 ms");
    let metrics = cutover.admin_get("/metrics").text();
    assert!(
        metrics.contains(&format!(
            r#"cutover_long_lived_closed_total{{app="web",kind="websocket",reason="drain"}} {N}"#
        )),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("long_lived"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_is_closed_after_idle_timeout_and_not_before() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .proxy_yaml("long_lived: { spread: 1s, close_grace: 500ms, idle_timeout: 1500ms }")
        .start();
    let mut ws = connect(&cutover, None).await;
    let opened = Instant::now();
    // Traffic resets the clock.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    ws.send(Message::Text("still here".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "still here");
    let active = Instant::now();
    let (code, reason) = until_close(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(code, 1001, "{reason}");
    assert!(reason.contains("idle"), "{reason}");
    assert!(
        active.elapsed() >= Duration::from_millis(1400),
        "not closed before idle_timeout"
    );
    assert!(opened.elapsed() < Duration::from_secs(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_idle_longer_than_pingoras_60s_default_stays_open() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let mut ws = connect(&cutover, None).await;
    tokio::time::sleep(Duration::from_secs(62)).await;
    ws.send(Message::Text("after a minute".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "after a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_the_backend_starts_passes_through_once() {
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let mut ws = connect(&cutover, None).await;
    ws.send(Message::Text("close-me".into())).await.unwrap();
    let (code, reason) = until_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(code, 4000);
    assert_eq!(reason, "closed by the app");
    // until_close read to the end: no second close frame arrived.
    let metrics = cutover.admin_get("/metrics").text();
    assert!(
        metrics.contains(r#"cutover_long_lived_closed_total{app="web",kind="websocket",reason="backend"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_1001() {
    let mut cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .proxy_yaml("long_lived: { spread: 200ms, close_grace: 500ms, idle_timeout: 1h }")
        .start();
    let mut ws = connect(&cutover, None).await;
    let stopping = tokio::task::spawn_blocking(move || {
        let status = cutover.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20));
        (status, cutover)
    });
    let (code, _) = until_close(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(code, 1001, "going away");
    let (status, _cutover) = stopping.await.unwrap();
    assert!(status.success());
}

/// Reads one SSE response to its end: (head, body).
fn read_sse(cutover: &Cutover) -> support::Response {
    support::Client::connect(cutover.proxy)
        .unwrap()
        .send("GET", "t", "/events", &[("Accept", "text/event-stream")], &[])
        .expect("the stream ends cleanly (chunked terminator)")
}

#[test]
fn sse_gets_retry_after_the_event_in_flight_and_a_clean_end_on_drain() {
    let cutover = Cutover::builder()
        .app(
            App::demo("web", "v1")
                .env("DEMO_SSE_MS", "50")
                .yaml("drain_timeout: 10s"),
        )
        .route("*", "/", "web")
        .proxy_yaml("long_lived: { spread: 500ms, close_grace: 1s, idle_timeout: 1h }")
        .start();
    let stream = std::thread::scope(|scope| {
        let reader = scope.spawn(|| read_sse(&cutover));
        // The stream is open through the proxy before the deploy starts.
        cutover.wait_until(Duration::from_secs(10), "the SSE stream open", |c| {
            c.instances("web").iter().any(|i| i["long_lived"].as_u64() >= Some(1))
        });
        let (code, out, err) = cutover.push(
            &cutover.config_with_version("v1", "v2"),
            &["--deploy-strategy", "rolling", "--no-wait"],
        );
        assert_eq!(code, 0, "{out}\n{err}");
        reader.join().unwrap()
    });
    assert_eq!(stream.status, 200);
    assert!(stream.header("content-type").unwrap().starts_with("text/event-stream"));
    let body = stream.text();
    let (events, tail) = body.rsplit_once("retry: ").expect("a retry field");
    assert!(
        events.ends_with("\n\n"),
        "the event in flight was finished first: {events:?}"
    );
    assert!(events.contains("data: v1 web-0"), "{events}");
    let retry: u64 = tail.trim_end().parse().expect("retry is a number of ms");
    assert!(tail.ends_with("\n\n") && (100..=600).contains(&retry), "{tail:?}");
    // The reconnect gets 200 (never 5xx), from the serving instance.
    let mut probe = std::net::TcpStream::connect(cutover.proxy).unwrap();
    use std::io::{Read, Write};
    probe
        .write_all(b"GET /events HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 512];
    let n = probe.read(&mut head).unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    cutover.wait_until(Duration::from_secs(20), "the deploy to finish", |c| {
        c.deployments().last().is_some_and(|d| d["outcome"].is_string())
    });
    let metrics = cutover.admin_get("/metrics").text();
    assert!(
        metrics.contains(r#"cutover_long_lived_closed_total{app="web",kind="sse",reason="drain"}"#),
        "{metrics}"
    );
}

/// The tunnel runs after pingora let go of the connection, so bytes the
/// client sent with its handshake would be stranded in pingora: RFC 6455
/// forbids them before the 101, and they get 400. The connection before
/// it, and a proper handshake after it, are served; the tunnel is counted
/// as a 101 in `requests_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_with_bytes_after_it_gets_400_and_a_proper_one_is_counted_as_101() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let handshake = "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut early = tokio::net::TcpStream::connect(cutover.proxy).await.unwrap();
    // A masked text frame "hi" right behind the handshake.
    let mut bytes = handshake.as_bytes().to_vec();
    bytes.extend_from_slice(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
    early.write_all(&bytes).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), early.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    let mut ws = connect(&cutover, None).await;
    ws.send(Message::Text("after".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "after");
    let upgrades = cutover
        .metrics()
        .into_iter()
        .find(|s| s.name == "cutover_requests_total" && s.labels.get("code").map(String::as_str) == Some("101"))
        .map(|s| s.value);
    assert_eq!(upgrades, Some(1.0), "the 400 is not a 101, the tunnel is");
    ws.close(None).await.unwrap();
}

/// A handshake that also says `Connection: close` still becomes a tunnel
/// (the tunnel's end closes the connection anyway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_saying_connection_close_still_gets_its_tunnel() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .start();
    let mut s = tokio::net::TcpStream::connect(cutover.proxy).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: close\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    // A masked text frame "hi"; the demo app echoes it unmasked.
    s.write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
        .await
        .unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echo, [0x81, 2, b'h', b'i']);
}
