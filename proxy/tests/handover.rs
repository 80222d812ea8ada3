//! SPEC §10: a self-upgrade refuses no connection and fails no request.
//!
//! Data plane A serves; B starts on A's listening sockets
//! (`DataPlane::listener_fds` → `DataPlane::start_inheriting`); A hands
//! over (`DataPlane::hand_over`). A's backends answer `A`, B's answer `B`,
//! so the tests can tell who served.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_proxy::{
    AppId, Backend, DataPlane, DataPlaneConfig, DataPlaneError, HostMatch, LongLivedSettings, ProxyMetrics,
    ProxySettings, RouteTable, TableHandle,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Everything a test waits for is bounded by this.
const PATIENCE: Duration = Duration::from_secs(20);

// === backends: each answers with its side's name ===

async fn spawn<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// Keep-alive HTTP/1.1: reads each request and its `Content-Length` body,
/// answers `<name> <body length>`.
async fn http_backend(name: &'static str, stream: TcpStream) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match stream.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                }
            }
        }
        let mut body = vec![0u8; length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let text = format!("{name} {length}");
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len());
        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// WebSocket: answers each text message with `<name>:<message>`.
async fn ws_backend(name: &'static str, stream: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if message.is_close() {
            return;
        }
        if let Message::Text(text) = message {
            if ws.send(Message::text(format!("{name}:{text}"))).await.is_err() {
                return;
            }
        }
    }
}

/// An endless event stream: `data: <name>` every 50 ms.
async fn sse_backend(name: &'static str, mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if !matches!(stream.read(&mut byte).await, Ok(1)) {
            return;
        }
        head.push(byte[0]);
    }
    let start = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
    if stream.write_all(start.as_bytes()).await.is_err() {
        return;
    }
    loop {
        if stream.write_all(format!("data: {name}\n\n").as_bytes()).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One side: its backends behind a table (`/` HTTP, `/ws`, `/events`).
struct Side {
    table: Arc<TableHandle>,
    metrics: ProxyMetrics,
    registry: prometheus::Registry,
}

impl Side {
    async fn new(name: &'static str) -> Side {
        let registry = prometheus::Registry::new();
        let metrics = ProxyMetrics::new(&registry).unwrap();
        let http = spawn(move |s| http_backend(name, s)).await;
        let ws = spawn(move |s| ws_backend(name, s)).await;
        let sse = spawn(move |s| sse_backend(name, s)).await;
        let mut builder = RouteTable::builder();
        builder.app(
            AppId(0),
            "web",
            vec![Backend::new(http, "web-0", 1)],
            metrics.app("web"),
        );
        builder.app(AppId(1), "ws", vec![Backend::new(ws, "ws-0", 2)], metrics.app("ws"));
        builder.app(AppId(2), "sse", vec![Backend::new(sse, "sse-0", 3)], metrics.app("sse"));
        builder.route(HostMatch::Any, "/", AppId(0)).unwrap();
        builder.route(HostMatch::Any, "/ws", AppId(1)).unwrap();
        builder.route(HostMatch::Any, "/events", AppId(2)).unwrap();
        Side {
            table: TableHandle::new(builder.build()),
            metrics,
            registry,
        }
    }

    fn config(&self, listen: Vec<SocketAddr>) -> DataPlaneConfig {
        DataPlaneConfig {
            listen,
            tls_listen: Vec::new(),
            threads: 2,
            settings: ProxySettings {
                long_lived: LongLivedSettings {
                    spread: Duration::from_millis(200),
                    close_grace: Duration::from_millis(300),
                    idle_timeout: Duration::from_secs(60),
                },
                ..ProxySettings::default()
            },
            grace: Duration::from_secs(1),
        }
    }

    /// Starts a data plane for this side (blocks while pingora starts).
    fn start(&self, listen: Vec<SocketAddr>, inherited: Vec<(String, OwnedFd)>) -> Result<DataPlane, DataPlaneError> {
        tokio::task::block_in_place(|| {
            DataPlane::start_inheriting(self.config(listen), Arc::clone(&self.table), &self.metrics, inherited)
        })
    }

    fn metrics_text(&self) -> String {
        let mut out = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &self.registry.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }
}

/// A free loopback port (pingora's `:0` keys collide, PR #990).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

// === a small HTTP/1.1 client ===

#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
    close: bool,
}

/// Reads one response; `Err(true)` when the connection ended before any
/// byte of it.
async fn read_answer(reader: &mut BufReader<TcpStream>) -> Result<Answer, bool> {
    let mut line = String::new();
    match reader.read_line(&mut line).await {
        Ok(0) | Err(_) => return Err(true),
        Ok(_) => {}
    }
    let status = line.get(9..12).and_then(|s| s.parse().ok()).ok_or(false)?;
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return Err(false),
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {
                let (name, value) = line.split_once(':').ok_or(false)?;
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().map_err(|_| false)?;
                } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.map_err(|_| false)?;
    let body = String::from_utf8(body).map_err(|_| false)?;
    Ok(Answer { status, body, close })
}

// === the load ===

#[derive(Default)]
struct Tally {
    /// Connects refused (or otherwise failed).
    refused: AtomicUsize,
    /// Requests that got no 200.
    failed: Mutex<Vec<String>>,
    /// GETs retried because a *reused* keep-alive connection closed before
    /// any byte of their answer (RFC 9112 §9.3.1; every HTTP client does).
    keepalive_retries: AtomicUsize,
    by_a: AtomicUsize,
    by_b: AtomicUsize,
    /// Requests sent on a new connection after the hand-over returned, and
    /// answered by A (must stay 0).
    by_a_after: AtomicUsize,
    /// Set once `hand_over` returned.
    handed_over: AtomicBool,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.lock().unwrap().push(what);
    }

    fn answered(&self, answer: &Answer, new_after: bool, what: &str) {
        if answer.status != 200 {
            return self.fail(format!("{what}: {} {}", answer.status, answer.body));
        }
        match answer.body.split(' ').next() {
            Some("A") => {
                self.by_a.fetch_add(1, Ordering::SeqCst);
                if new_after {
                    self.by_a_after.fetch_add(1, Ordering::SeqCst);
                }
            }
            Some("B") => {
                self.by_b.fetch_add(1, Ordering::SeqCst);
            }
            _ => self.fail(format!("{what}: unexpected body {:?}", answer.body)),
        }
    }
}

/// One request per new connection: a GET, or a POST with a body.
async fn new_connection_client(proxy: SocketAddr, post: bool, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let body = "x".repeat(3000);
    while !stop.load(Ordering::SeqCst) {
        let after = tally.handed_over.load(Ordering::SeqCst);
        let Ok(stream) = TcpStream::connect(proxy).await else {
            tally.refused.fetch_add(1, Ordering::SeqCst);
            continue;
        };
        let mut reader = BufReader::new(stream);
        let request = match post {
            true => format!(
                "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            false => "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_owned(),
        };
        if let Err(e) = reader.get_mut().write_all(request.as_bytes()).await {
            tally.fail(format!("sending on a new connection: {e}"));
            continue;
        }
        match tokio::time::timeout(PATIENCE, read_answer(&mut reader)).await {
            Ok(Ok(answer)) => {
                let expected = format!("{}", if post { body.len() } else { 0 });
                if !answer.body.ends_with(&expected) {
                    tally.fail(format!("the body did not arrive whole: {:?}", answer.body));
                }
                tally.answered(&answer, after, if post { "POST" } else { "GET" });
            }
            Ok(Err(_)) => tally.fail(format!("no answer on a new connection (post: {post})")),
            Err(_) => tally.fail("timed out".into()),
        }
    }
}

/// GETs on one keep-alive connection, reconnecting when the server says
/// `Connection: close` (or closes an idle connection). Returns who answered
/// the last request.
async fn keepalive_client(proxy: SocketAddr, tally: Arc<Tally>, stop: Arc<AtomicBool>) -> String {
    let mut last = String::new();
    let mut connection: Option<BufReader<TcpStream>> = None;
    let mut reused = false;
    while !stop.load(Ordering::SeqCst) {
        let mut reader = match connection.take() {
            Some(reader) => reader,
            None => match TcpStream::connect(proxy).await {
                Ok(stream) => {
                    reused = false;
                    BufReader::new(stream)
                }
                Err(_) => {
                    tally.refused.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
            },
        };
        let sent = reader.get_mut().write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(PATIENCE, read_answer(&mut reader)).await,
            Err(_) => Ok(Err(true)),
        };
        match answer {
            Ok(Ok(answer)) => {
                tally.answered(&answer, false, "keep-alive GET");
                last = answer.body.clone();
                if !answer.close {
                    connection = Some(reader);
                    reused = true;
                }
            }
            Ok(Err(true)) if reused => {
                tally.keepalive_retries.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Err(_)) => tally.fail("keep-alive GET: no answer on a new connection".into()),
            Err(_) => tally.fail("keep-alive GET: timed out".into()),
        }
    }
    last
}

/// `future`, or a panic naming `what` after [`PATIENCE`].
async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The next close frame on a WebSocket (other messages skipped).
async fn close_frame<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
) -> tokio_tungstenite::tungstenite::protocol::CloseFrame
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = bounded("a close frame", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await;
    frame.expect("a close frame without a code")
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const KEEPALIVE_CLIENTS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_over_under_load_refuses_nothing_fails_nothing_and_b_serves_after() {
    let (a_side, b_side) = (Side::new("A").await, Side::new("B").await);
    let listen = vec![free_addr(), free_addr()];
    let mut a = a_side.start(listen.clone(), Vec::new()).unwrap();

    // Without A's sockets, B cannot listen at all: what follows means something.
    match b_side.start(listen.clone(), Vec::new()) {
        Err(DataPlaneError::Bind { addr, .. }) => assert_eq!(addr, listen[0]),
        Err(e) => panic!("expected a bind error, got {e}"),
        Ok(_) => panic!("B listened on A's addresses without inheriting them"),
    }

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    let mut keepalive = Vec::new();
    for (i, proxy) in listen.iter().cycle().take(4).enumerate() {
        load.push(tokio::spawn(new_connection_client(
            *proxy,
            i % 2 == 1,
            Arc::clone(&tally),
            Arc::clone(&stop),
        )));
    }
    for proxy in listen.iter().cycle().take(KEEPALIVE_CLIENTS) {
        keepalive.push(tokio::spawn(keepalive_client(
            *proxy,
            Arc::clone(&tally),
            Arc::clone(&stop),
        )));
    }
    wait_until("A to serve the load", || {
        let failed = tally.failed.lock().unwrap();
        assert!(
            failed.is_empty(),
            "failed before the hand-over: {:?}",
            &failed[..failed.len().min(5)]
        );
        tally.by_a.load(Ordering::SeqCst) >= 200
    })
    .await;

    let fds = a.listener_fds().unwrap();
    let mut keys: Vec<String> = fds.iter().map(|(k, _)| k.clone()).collect();
    keys.sort();
    let mut expected: Vec<String> = listen.iter().map(SocketAddr::to_string).collect();
    expected.sort();
    assert_eq!(keys, expected);
    let mut b = b_side.start(listen.clone(), fds).unwrap();
    // Both serve for a while, from the same sockets.
    let before = tally.by_a.load(Ordering::SeqCst);
    wait_until("more load on the shared sockets", || {
        tally.by_a.load(Ordering::SeqCst) + tally.by_b.load(Ordering::SeqCst) >= before + 100
    })
    .await;

    let left = bounded("the hand-over", a.hand_over(Duration::from_secs(10))).await;
    assert_eq!(left, 0, "A did not drain");
    tally.handed_over.store(true, Ordering::SeqCst);
    assert!(
        a.listener_fds().is_err(),
        "A still offers its sockets after the hand-over"
    );

    let after = tally.by_b.load(Ordering::SeqCst);
    wait_until("B to serve after the hand-over", || {
        tally.by_b.load(Ordering::SeqCst) >= after + 300
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        bounded("a load client", task).await.unwrap();
    }
    for task in keepalive {
        let last = bounded("a keep-alive client", task).await.unwrap();
        assert!(last.starts_with("B "), "a keep-alive client still talks to A: {last:?}");
    }

    let failed = tally.failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "{} failed requests: {failed:?}", failed.len());
    assert_eq!(tally.refused.load(Ordering::SeqCst), 0, "refused connects");
    assert_eq!(
        tally.by_a_after.load(Ordering::SeqCst),
        0,
        "A answered new connections after handing over"
    );
    // Each keep-alive connection to A may be closed once, idle, at the hand-over.
    let retries = tally.keepalive_retries.load(Ordering::SeqCst);
    eprintln!(
        "answered by A: {}, by B: {}, keep-alive retries: {retries}",
        tally.by_a.load(Ordering::SeqCst),
        tally.by_b.load(Ordering::SeqCst)
    );
    assert!(retries <= KEEPALIVE_CLIENTS, "{retries} keep-alive retries");
    assert_eq!(bounded("B's shutdown", b.shutdown(Duration::from_secs(5))).await, 0);
}

/// Reads SSE from a raw connection until the stream ends; the text.
async fn read_event_stream(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                all.extend_from_slice(&buf[..n]);
                // The chunked stream's last chunk: a clean end.
                if all.ends_with(b"\r\n0\r\n\r\n") {
                    break;
                }
            }
            Err(_) => panic!(
                "the event stream neither ended nor sent: {}",
                String::from_utf8_lossy(&all)
            ),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_lived_clients_get_restart_notices_at_a_hand_over_and_reconnect_to_b() {
    let (a_side, b_side) = (Side::new("A").await, Side::new("B").await);
    let proxy = free_addr();
    let mut a = a_side.start(vec![proxy], Vec::new()).unwrap();
    let (mut ws, _) = bounded(
        "a WebSocket to A",
        tokio_tungstenite::connect_async(format!("ws://{proxy}/ws")),
    )
    .await
    .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(
        bounded("an echo", ws.next()).await.unwrap().unwrap(),
        Message::text("A:hi")
    );

    let mut sse = bounded("a connect", TcpStream::connect(proxy)).await.unwrap();
    sse.write_all(b"GET /events HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 256];
    let n = bounded("the event stream's head", sse.read(&mut first)).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    let mut b = b_side.start(vec![proxy], a.listener_fds().unwrap()).unwrap();
    let handing_over = tokio::spawn(async move {
        let left = a.hand_over(Duration::from_secs(10)).await;
        (a, left)
    });

    // The WebSocket: close 1012 "service restart", then reconnect, to B.
    let close = close_frame(&mut ws).await;
    assert_eq!(close.code, CloseCode::Restart, "{close:?}");

    // SSE: `retry:` then a clean end of the stream.
    // (The first read may hold events already.)
    let text = String::from_utf8_lossy(&first[..n]).into_owned() + &read_event_stream(&mut sse).await;
    assert!(text.contains("data: A"), "{text}");
    assert!(text.contains("retry: "), "no retry notice: {text}");
    assert!(text.ends_with("\r\n0\r\n\r\n"), "not a clean end: {text}");

    let (mut a, left) = bounded("the hand-over", handing_over).await.unwrap();
    assert_eq!(left, 0);
    let metrics = a_side.metrics_text();
    for kind in ["websocket", "sse"] {
        let app = if kind == "sse" { "sse" } else { "ws" };
        let series = format!(r#"cutover_long_lived_closed_total{{app="{app}",kind="{kind}",reason="upgrade"}} 1"#);
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
    assert!(
        b_side
            .metrics_text()
            .contains(r#"cutover_long_lived_closed_total{app="ws",kind="websocket",reason="upgrade"} 0"#),
        "the upgrade series does not start at 0"
    );

    let (mut ws, _) = bounded(
        "a WebSocket to B",
        tokio_tungstenite::connect_async(format!("ws://{proxy}/ws")),
    )
    .await
    .unwrap();
    ws.send(Message::text("again")).await.unwrap();
    assert_eq!(
        bounded("an echo", ws.next()).await.unwrap().unwrap(),
        Message::text("B:again")
    );

    // A stop is not an upgrade: B's own shutdown says "going away" (1001).
    let stopping = tokio::spawn(async move { b.shutdown(Duration::from_secs(10)).await });
    assert_eq!(close_frame(&mut ws).await.code, CloseCode::Away);
    bounded("B's shutdown", stopping).await.unwrap();
    let _ = a.shutdown(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inherited_sockets_are_matched_checked_or_closed() {
    let side = Side::new("B").await;

    // Not configured: closed. Configured and not inherited: bound.
    let stray = TcpListener::bind("127.0.0.1:0").unwrap();
    let stray_addr = stray.local_addr().unwrap();
    let fresh = free_addr();
    let mut plane = side
        .start(vec![fresh], vec![(stray_addr.to_string(), OwnedFd::from(stray))])
        .unwrap();
    assert!(
        TcpStream::connect(stray_addr).await.is_err(),
        "the stray socket still listens"
    );
    let mut reader = BufReader::new(bounded("a connect", TcpStream::connect(fresh)).await.unwrap());
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = bounded("an answer", read_answer(&mut reader)).await.expect("no answer");
    assert_eq!((answer.status, answer.body.as_str()), (200, "B 0"));
    bounded("the shutdown", plane.shutdown(Duration::from_secs(5))).await;

    // Bogus sockets under a configured address: errors, not panics.
    let addr = free_addr();
    let udp = std::net::UdpSocket::bind(addr).unwrap();
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    let not_listening = {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&addr.into()).unwrap();
        OwnedFd::from(socket)
    };
    for (bogus, problem) in [
        (OwnedFd::from(udp), "is not a stream socket"),
        (OwnedFd::from(elsewhere), "is bound to 127.0.0.1:"),
        (not_listening, "is not listening"),
    ] {
        match side.start(vec![addr], vec![(addr.to_string(), bogus)]) {
            Err(DataPlaneError::Inherited(e)) => {
                assert!(e.to_string().contains(problem), "{e}");
                assert!(e.to_string().contains(&addr.to_string()), "{e}");
            }
            Err(e) => panic!("expected an inherited-socket error, got {e}"),
            Ok(_) => panic!("a bogus socket was accepted ({problem})"),
        }
    }
}

/// A request held in the old process (no ready backend) is not failed by
/// the hand-over: it waits, up to its hold timeout, and gets its answer
/// when a backend comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_at_the_hand_over_keeps_waiting_for_its_backend() {
    let side = Side::new("A").await;
    let proxy = free_addr();
    let table_with = |backends: Vec<Arc<Backend>>| {
        let mut builder = RouteTable::builder();
        builder.app(AppId(0), "web", backends, side.metrics.app("web"));
        builder.route(HostMatch::Any, "/", AppId(0)).unwrap();
        builder.build()
    };
    side.table.publish(table_with(Vec::new()));
    let mut a = side.start(vec![proxy], Vec::new()).unwrap();

    let mut reader = BufReader::new(bounded("a connect", TcpStream::connect(proxy)).await.unwrap());
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    wait_until("the request to be held", || side.table.active_requests() == 1).await;

    let handing_over = {
        let table = Arc::clone(&side.table);
        tokio::spawn(async move {
            let left = a.hand_over(Duration::from_secs(10)).await;
            assert!(!table.is_closing());
            left
        })
    };
    // Still held (not answered) well after the hand-over started.
    let early = tokio::time::timeout(Duration::from_millis(300), read_answer(&mut reader)).await;
    assert!(
        early.is_err(),
        "the held request was answered at the hand-over: {early:?}"
    );

    let http = spawn(|s| http_backend("A", s)).await;
    side.table.publish(table_with(vec![Backend::new(http, "web-1", 9)]));
    let answer = bounded("the held request's answer", read_answer(&mut reader))
        .await
        .expect("no answer");
    assert_eq!((answer.status, answer.body.as_str()), (200, "A 0"));
    assert_eq!(bounded("the hand-over", handing_over).await.unwrap(), 0);
}

/// One HTTP/2 GET on `send`; the body.
async fn h2_get(send: &h2::client::SendRequest<bytes::Bytes>) -> String {
    bounded("an HTTP/2 answer", async {
        let mut send = send.clone().ready().await.expect("h2 ready");
        let request = http::Request::get("http://t/").body(()).unwrap();
        let (response, _) = send.send_request(request, true).expect("h2 request");
        let mut body = response.await.expect("h2 response").into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("h2 body");
            let _ = body.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        String::from_utf8(text).unwrap()
    })
    .await
}

const GOAWAY: u8 = 0x7;

/// The types of the HTTP/2 frames read until the connection ends
/// (SETTINGS acknowledged on the way).
async fn frame_types(stream: &mut TcpStream) -> Vec<u8> {
    let mut types = Vec::new();
    loop {
        let mut header = [0u8; 9];
        if stream.read_exact(&mut header).await.is_err() {
            return types;
        }
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; length];
        if stream.read_exact(&mut payload).await.is_err() {
            return types;
        }
        let (kind, flags) = (header[3], header[4]);
        types.push(kind);
        if kind == 0x4 && flags & 0x1 == 0 {
            let _ = stream.write_all(b"\0\0\0\x04\x01\0\0\0\0").await;
        }
    }
}

/// An HTTP/2 client of the old process gets GOAWAY: its connection ends
/// gracefully, and a new one reaches the successor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_clients_get_goaway_at_a_hand_over() {
    let (a_side, b_side) = (Side::new("A").await, Side::new("B").await);
    let proxy = free_addr();
    let start = |side: &Side, inherited: Vec<(String, OwnedFd)>| {
        let mut config = side.config(vec![proxy]);
        config.settings.h2c = true;
        tokio::task::block_in_place(|| {
            DataPlane::start_inheriting(config, Arc::clone(&side.table), &side.metrics, inherited)
        })
        .unwrap()
    };
    let mut a = start(&a_side, Vec::new());
    let io = bounded("a connect", TcpStream::connect(proxy)).await.unwrap();
    let (send, connection) = bounded("an h2c handshake", h2::client::handshake(io)).await.unwrap();
    let connection = tokio::spawn(connection);
    assert_eq!(h2_get(&send).await, "A 0");
    // The h2 client ends alike on GOAWAY and on a bare close: a raw client
    // watches the frames.
    let mut raw = bounded("a connect", TcpStream::connect(proxy)).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    // A's SETTINGS: the connection is A's (not waiting in the backlog,
    // where B could take it).
    let mut header = [0u8; 9];
    bounded("A's SETTINGS", raw.read_exact(&mut header)).await.unwrap();
    assert_eq!(header[3], 0x4, "the server's first frame is SETTINGS");
    let mut payload = vec![0u8; u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize];
    bounded("A's SETTINGS", raw.read_exact(&mut payload)).await.unwrap();

    let mut b = start(&b_side, a.listener_fds().unwrap());
    assert_eq!(bounded("the hand-over", a.hand_over(Duration::from_secs(10))).await, 0);
    let ended = bounded("the old connection to end", connection).await.unwrap();
    assert!(ended.is_ok(), "the HTTP/2 connection failed: {ended:?}");
    drop(send);
    let frames = bounded("the raw connection to end", frame_types(&mut raw)).await;
    assert!(
        frames.contains(&GOAWAY),
        "no GOAWAY before the close: frame types {frames:?}"
    );

    let io = bounded("a connect", TcpStream::connect(proxy)).await.unwrap();
    let (send, connection) = bounded("an h2c handshake", h2::client::handshake(io)).await.unwrap();
    tokio::spawn(connection);
    assert_eq!(h2_get(&send).await, "B 0");
    bounded("B's shutdown", b.shutdown(Duration::from_secs(5))).await;
}
