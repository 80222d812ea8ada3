//! The demo app (`src/bin/demo-app.rs`) behaves as SPEC §4b and its doc
//! comment say: each test starts the real binary on a free port and talks to
//! it over real sockets.

use std::{
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use tokio::{
    net::TcpStream,
    process::{Child, Command},
    time::{sleep, timeout},
};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{client::IntoClientRequest, protocol::frame::coding::CloseCode, Message},
    MaybeTlsStream, WebSocketStream,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const BIN: &str = env!("CARGO_BIN_EXE_demo-app");

// === harness ===

/// How to start one demo app; the environment is cleared first so the
/// caller's `PORT` or `APP_VERSION` cannot leak in.
struct DemoBuilder {
    env: Vec<(&'static str, String)>,
}

fn demo() -> DemoBuilder {
    DemoBuilder { env: Vec::new() }
}

impl DemoBuilder {
    fn env(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.env.push((name, value.into()));
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts the app on a free port without waiting for it.
    fn spawn(self) -> DemoApp {
        let port = free_port();
        let child = self
            .env("PORT", port.to_string())
            .command()
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("demo-app starts");
        DemoApp { child, port }
    }

    /// Starts the app and waits until it answers.
    async fn start(self) -> DemoApp {
        let app = self.spawn();
        app.wait_ready().await;
        app
    }

    /// Runs the app to its exit (it is expected to exit on its own).
    async fn run_to_exit(self) -> Output {
        let run = self.command().kill_on_drop(true).output();
        timeout(Duration::from_secs(10), run)
            .await
            .expect("demo-app exits within 10 s")
            .expect("demo-app runs")
    }
}

/// A running demo app; killed when dropped, so no test leaks a process.
struct DemoApp {
    child: Child,
    port: u16,
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl DemoApp {
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while fetch(self.port, Method::GET, "/", Bytes::new()).await.is_err() {
            assert!(Instant::now() < deadline, "demo-app did not answer within 10 s");
            sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = self.child.id().expect("demo-app is still running");
        let pid = Pid::from_raw(i32::try_from(pid).expect("pid fits i32"));
        kill(pid, signal).expect("signal delivered");
    }

    async fn exit_code_within(&mut self, limit: Duration) -> Option<i32> {
        let status = timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("demo-app did not exit within {limit:?}"))
            .expect("wait for demo-app");
        status.code()
    }

    async fn get(&self, path: &str) -> Reply {
        fetch(self.port, Method::GET, path, Bytes::new())
            .await
            .expect("GET answered")
    }

    async fn websocket(&self, protocols: Option<&'static str>) -> (Ws, Option<String>) {
        let url = format!("ws://127.0.0.1:{}/ws", self.port);
        let mut request = url.into_client_request().expect("valid ws url");
        if let Some(protocols) = protocols {
            let value = HeaderValue::from_static(protocols);
            request.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        let (ws, response) = connect_async(request).await.expect("websocket handshake");
        let chosen = response.headers().get(header::SEC_WEBSOCKET_PROTOCOL);
        let chosen = chosen.and_then(|v| v.to_str().ok()).map(str::to_string);
        (ws, chosen)
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

async fn send(port: u16, request: Request<Full<Bytes>>) -> Result<http::Response<Incoming>, BoxError> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(request).await?)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn fetch(port: u16, method: Method, path: &str, body: Bytes) -> Result<Reply, BoxError> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, format!("127.0.0.1:{port}"))
        .body(Full::new(body))?;
    let response = send(port, request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec())?,
    })
}

/// The next text or binary message that is not a tick.
async fn next_reply(ws: &mut Ws) -> Message {
    loop {
        let msg = timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a websocket message within 5 s")
            .expect("websocket still open")
            .expect("websocket message");
        match &msg {
            Message::Text(text) if text.starts_with("tick ") => continue,
            Message::Text(_) | Message::Binary(_) => return msg,
            _ => continue,
        }
    }
}

// === plain HTTP ===

#[tokio::test]
async fn root_names_version_instance_and_role() {
    let app = demo()
        .env("APP_VERSION", "v7")
        .env("CUTOVER_INSTANCE", "web-1")
        .env("CUTOVER_ROLE", "clone")
        .start()
        .await;
    let reply = app.get("/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "v7 web-1 clone\n");
    assert_eq!(reply.headers["x-app-version"], "v7");
    assert_eq!(reply.headers["x-instance"], "web-1");
}

#[tokio::test]
async fn root_defaults_to_dev_demo_original() {
    let app = demo().start().await;
    assert_eq!(app.get("/").await.body, "dev demo original\n");
}

#[tokio::test]
async fn post_counts_the_body_bytes() {
    let app = demo().env("APP_VERSION", "v2").start().await;
    let body = Bytes::from(vec![b'x'; 300_000]);
    let reply = fetch(app.port, Method::POST, "/", body).await.expect("POST answered");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "v2 demo original\nreceived 300000 bytes\n");
}

#[tokio::test]
async fn unknown_path_is_404() {
    let app = demo().start().await;
    assert_eq!(app.get("/nope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_is_ok_by_default() {
    let app = demo().start().await;
    let reply = app.get("/health").await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ok\n"));
}

#[tokio::test]
async fn health_is_503_with_demo_health_fail() {
    let app = demo().env("DEMO_HEALTH", "fail").start().await;
    assert_eq!(app.get("/health").await.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn health_fail_file_toggles_health() {
    let file = std::env::temp_dir().join(format!("demo-app-unhealthy-{}-{}", std::process::id(), free_port()));
    let app = demo()
        .env("DEMO_HEALTH_FAIL_FILE", file.to_string_lossy())
        .start()
        .await;
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    std::fs::write(&file, b"").expect("create the fail file");
    assert_eq!(app.get("/health").await.status, StatusCode::SERVICE_UNAVAILABLE);
    std::fs::remove_file(&file).expect("remove the fail file");
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
}

#[tokio::test]
async fn slow_sleeps_for_the_asked_milliseconds() {
    let app = demo().env("APP_VERSION", "v3").start().await;
    let started = Instant::now();
    let reply = app.get("/slow?ms=200").await;
    assert!(started.elapsed() >= Duration::from_millis(200), "answered too soon");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "v3 demo slept 200ms\n");
}

#[tokio::test]
async fn slow_without_whole_ms_is_400() {
    let app = demo().start().await;
    for path in ["/slow?ms=x", "/slow", "/slow?ms=-5"] {
        assert_eq!(app.get(path).await.status, StatusCode::BAD_REQUEST, "{path}");
    }
}

// === WebSocket and SSE ===

#[tokio::test]
async fn websocket_echoes_text_and_a_1_mib_binary_message() {
    let app = demo().start().await;
    let (mut ws, _) = app.websocket(None).await;
    ws.send(Message::text("hello")).await.expect("send text");
    assert_eq!(next_reply(&mut ws).await, Message::text("hello"));
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.expect("send 1 MiB");
    assert_eq!(next_reply(&mut ws).await, Message::binary(big));
}

#[tokio::test]
async fn websocket_ticks_name_the_version() {
    let app = demo()
        .env("APP_VERSION", "v5")
        .env("CUTOVER_INSTANCE", "web-2")
        .env("DEMO_TICK_MS", "100")
        .start()
        .await;
    let (mut ws, _) = app.websocket(None).await;
    let msg = timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a tick within 5 s")
        .expect("websocket open")
        .expect("websocket message");
    assert_eq!(msg, Message::text("tick v5 web-2 0"));
}

#[tokio::test]
async fn websocket_negotiates_the_first_known_subprotocol_offered() {
    let app = demo().start().await;
    assert_eq!(app.websocket(Some("chat")).await.1.as_deref(), Some("chat"));
    assert_eq!(app.websocket(Some("x, chat, demo.v1")).await.1.as_deref(), Some("chat"));
    assert_eq!(app.websocket(Some("demo.v1, chat")).await.1.as_deref(), Some("demo.v1"));
    // (tungstenite refuses a handshake that selects none of its offers, so an
    // unknown offer cannot be checked from here; no offer selects none.)
    assert_eq!(app.websocket(None).await.1, None);
}

#[tokio::test]
async fn websocket_answers_a_client_close() {
    let app = demo().env("DEMO_TICK_MS", "0").start().await;
    let (mut ws, _) = app.websocket(None).await;
    ws.close(None).await.expect("send close");
    let end = timeout(Duration::from_secs(5), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Close(_) = msg {
                return true;
            }
        }
        false
    });
    assert!(end.await.expect("close reply within 5 s"), "no close reply");
}

#[tokio::test]
async fn events_streams_tick_events() {
    let app = demo().env("APP_VERSION", "v4").env("DEMO_SSE_MS", "100").start().await;
    let request = Request::get("/events")
        .header(header::HOST, "demo")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = send(app.port, request).await.expect("GET /events");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = response.into_body();
    let mut text = String::new();
    while text.matches("\n\n").count() < 2 {
        let frame = timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event within 5 s")
            .expect("stream still open")
            .expect("body frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).expect("utf-8 events"));
        }
    }
    let events: Vec<&str> = text.split("\n\n").take(2).collect();
    assert_eq!(
        events,
        [
            "event: tick\ndata: v4 demo 0\nid: 0",
            "event: tick\ndata: v4 demo 1\nid: 1"
        ]
    );
}

// === start, crash and stop ===

#[tokio::test]
async fn start_delay_delays_readiness() {
    let started = Instant::now();
    let app = demo().env("DEMO_START_DELAY_MS", "600").spawn();
    app.wait_ready().await;
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "ready after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn fail_start_exits_1_with_a_message() {
    let out = demo()
        .env("PORT", free_port().to_string())
        .env("DEMO_FAIL_START", "1")
        .run_to_exit()
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEMO_FAIL_START"));
}

#[tokio::test]
async fn missing_or_invalid_port_exits_2_naming_port() {
    for port in [None, Some("http"), Some("70000")] {
        let builder = match port {
            Some(port) => demo().env("PORT", port),
            None => demo(),
        };
        let out = builder.run_to_exit().await;
        assert_eq!(out.status.code(), Some(2), "PORT={port:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("PORT"), "PORT={port:?}");
    }
}

#[tokio::test]
async fn exit_after_ms_crashes_with_code_3() {
    let mut app = demo().env("DEMO_EXIT_AFTER_MS", "300").start().await;
    assert_eq!(app.exit_code_within(Duration::from_secs(5)).await, Some(3));
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let mut app = demo().start().await;
    let port = app.port;
    let in_flight = tokio::spawn(async move {
        let started = Instant::now();
        let reply = fetch(port, Method::GET, "/slow?ms=500", Bytes::new()).await;
        (reply, started.elapsed())
    });
    sleep(Duration::from_millis(150)).await;
    app.signal(Signal::SIGTERM);

    // No new connections once the signal is handled.
    let deadline = Instant::now() + Duration::from_secs(1);
    while TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting 1 s after SIGTERM");
        sleep(Duration::from_millis(20)).await;
    }

    let (reply, took) = in_flight.await.expect("request task");
    let reply = reply.expect("in-flight request answered");
    assert_eq!(reply.status, StatusCode::OK);
    assert!(took >= Duration::from_millis(500));
    assert_eq!(app.exit_code_within(Duration::from_secs(3)).await, Some(0));
}

#[tokio::test]
async fn sigterm_is_not_held_up_by_websocket_and_sse() {
    let mut app = demo().env("DEMO_TICK_MS", "50").env("DEMO_SSE_MS", "50").start().await;
    let (mut ws, _) = app.websocket(None).await;
    let request = Request::get("/events")
        .header(header::HOST, "demo")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let events = send(app.port, request).await.expect("GET /events");
    next_reply_or_tick(&mut ws).await;

    let signalled = Instant::now();
    app.signal(Signal::SIGTERM);
    assert_eq!(app.exit_code_within(Duration::from_secs(5)).await, Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "took {:?}",
        signalled.elapsed()
    );

    // What the sockets see does not matter to cutover, but they must end.
    let ws_end = timeout(Duration::from_secs(2), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Close(Some(frame)) = msg {
                assert_eq!(frame.code, CloseCode::Away);
            }
        }
    });
    ws_end.await.expect("websocket ended");
    let sse_end = timeout(Duration::from_secs(2), events.into_body().collect());
    let _ = sse_end.await.expect("event stream ended");
}

/// Any one message, to know the session is up.
async fn next_reply_or_tick(ws: &mut Ws) {
    timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message within 5 s")
        .expect("websocket open")
        .expect("websocket message");
}

/// `DEMO_LINGER_MS`: the process a supervisor watches exits at once and
/// frees the port, while a child keeps answering on connections already
/// open, as the old version, until the linger time is over.
#[tokio::test]
async fn linger_frees_the_port_but_keeps_answering_open_connections() {
    let mut app = demo()
        .env("APP_VERSION", "old")
        .env("DEMO_LINGER_MS", "2000")
        .start()
        .await;
    let port = app.port;
    let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let get = || {
        Request::get("/")
            .header(header::HOST, format!("127.0.0.1:{port}"))
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let first = sender.send_request(get()).await.expect("first answer");
    let body = first.into_body().collect().await.expect("body").to_bytes();
    assert!(body.starts_with(b"old "), "{body:?}");

    app.signal(Signal::SIGTERM);
    assert_eq!(app.exit_code_within(Duration::from_secs(5)).await, Some(0));
    // The port is free for a successor: take it, as a new process would.
    let successor = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free once the parent exited");

    sender.ready().await.expect("the open connection still works");
    let again = sender
        .send_request(get())
        .await
        .expect("answered after the parent exited");
    let body = again.into_body().collect().await.expect("body").to_bytes();
    assert!(body.starts_with(b"old "), "still the old version: {body:?}");

    // Then the lingering child ends its connections and exits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sender.is_closed() {
        assert!(Instant::now() < deadline, "the lingering child never closed");
        sleep(Duration::from_millis(50)).await;
    }
    drop(successor);
}
