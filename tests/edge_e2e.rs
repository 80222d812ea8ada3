//! SPEC §4a at the edge, end to end: forwarded headers, hop-by-hop headers
//! and request framing on both request paths (pingora's own, and the
//! long-lived takeover), and event streams recognised by the backend's
//! `Content-Type`.
//!
//! The backend is this test binary itself, run by cutover as an app
//! ([`edge_backend_process`]): a raw HTTP/1.1 server that writes every head
//! (and body) it receives to a log file, so a test sees exactly what
//! reached a backend, including nothing at all.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{App, Cutover, TempDir};

/// Where the backend process writes what it received.
const BACKEND_LOG: &str = "EDGE_BACKEND_LOG";
/// Between two records in the backend's log.
const RECORD_END: &str = "\n=====\n";

// === the backend process ===

/// Not a test: the backend cutover starts for these tests (it does nothing
/// unless started with `EDGE_BACKEND_LOG`).
#[test]
#[ignore = "the backend process the edge tests run as their app"]
fn edge_backend_process() {
    let Some(log) = std::env::var_os(BACKEND_LOG).map(PathBuf::from) else {
        return;
    };
    let port: u16 = std::env::var("PORT").expect("PORT").parse().expect("a port");
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    for stream in listener.incoming().flatten() {
        let log = log.clone();
        std::thread::spawn(move || serve(stream, &log));
    }
}

fn serve(mut stream: TcpStream, log: &Path) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(&mut stream, &mut buf) {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let target = head.split_whitespace().nth(1).unwrap_or("");
    let path = target.split('?').next().unwrap_or("").to_string();
    if path == "/health" {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        return;
    }
    let headers = parse_headers(&head);
    let mut body = buf[head_end..].to_vec();
    if header(&headers, "transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        while !body.ends_with(b"0\r\n\r\n") && fill(&mut stream, &mut body) {}
    } else if let Some(len) = header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len && fill(&mut stream, &mut body) {}
    }
    let record = format!("{head}BODY:{}{RECORD_END}", String::from_utf8_lossy(&body));
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut f| f.write_all(record.as_bytes()));
    appended.expect("backend log");
    let answer: &[u8] = match path.as_str() {
        "/ws" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        "/sse" => b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\ndata: hello\n\n",
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    };
    let _ = stream.write_all(answer);
    if path == "/ws" {
        // Hold the tunnel a moment so the client sees the 101.
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_headers(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

// === harness ===

struct Edge {
    cutover: Cutover,
    log: PathBuf,
    _dir: TempDir,
}

fn start(proxy_yaml: &[&str]) -> Edge {
    let dir = TempDir::new("edge");
    let log = dir.path().join("backend.log");
    let exe = std::env::current_exe().expect("the test binary");
    let app = App::demo("web", "v1")
        .command(&[
            exe.to_str().expect("a UTF-8 path"),
            "edge_backend_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(BACKEND_LOG, log.to_str().expect("a UTF-8 path"));
    let mut builder = Cutover::builder().app(app).route("*", "/", "web");
    for line in proxy_yaml {
        builder = builder.proxy_yaml(line);
    }
    Edge {
        cutover: builder.start(),
        log,
        _dir: dir,
    }
}

impl Edge {
    /// The request heads (and bodies) that reached the backend.
    fn records(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .split(RECORD_END)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Waits for the backend to have received a request whose request
    /// line starts with `line`; its headers and body.
    fn received(&self, line: &str) -> (Vec<(String, String)>, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(record) = self.records().into_iter().find(|r| r.starts_with(line)) {
                let (head, body) = record.split_once("BODY:").expect("a record");
                return (parse_headers(head), body.to_string());
            }
            assert!(
                Instant::now() < deadline,
                "no {line:?} reached the backend: {:?}",
                self.records()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn addr(&self) -> SocketAddr {
        self.cutover.proxy
    }
}

/// Sends `wire` and reads until `done` says the answer is complete, the
/// connection closes, or 15 s pass.
fn exchange(addr: SocketAddr, wire: &[u8], done: impl Fn(&str) -> bool) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    stream.write_all(wire).expect("send");
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done(&String::from_utf8_lossy(&buf)) && Instant::now() < deadline {
        if !fill(&mut stream, &mut buf) {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Reads until the peer closes (or 15 s pass); true if it closed.
fn closes(addr: SocketAddr, wire: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    stream.write_all(wire).expect("send");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (String::from_utf8_lossy(&buf).into_owned(), true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (String::from_utf8_lossy(&buf).into_owned(), false),
        }
    }
}

/// What a client outside `trusted_proxies` must not be able to choose,
/// and hop-by-hop headers that must not reach a backend.
const SPOOFED: &str = "X-Forwarded-For: 6.6.6.6\r\n\
X-Forwarded-Proto: https\r\n\
X-Forwarded-Host: evil.example\r\n\
X-Real-IP: 6.6.6.6\r\n\
Forwarded: for=6.6.6.6;proto=https\r\n\
X-Secret: 1\r\n\
Keep-Alive: timeout=5\r\n\
TE: trailers\r\n\
Trailer: X-Checksum\r\n\
Proxy-Authorization: Basic c2VjcmV0\r\n\
Proxy-Connection: keep-alive\r\n";

const HOP_BY_HOP: &[&str] = &[
    "x-secret",
    "keep-alive",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "transfer-encoding",
];

/// One request on each path: pingora's (`/echo`, and `/sse` without
/// `Accept`), the event-stream takeover and the WebSocket takeover.
fn send_one_of_each(edge: &Edge) {
    let addr = edge.addr();
    let normal = format!("GET /echo HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, X-Secret\r\n{SPOOFED}\r\n");
    assert!(exchange(addr, normal.as_bytes(), |r| r.ends_with("ok")).starts_with("HTTP/1.1 200"));
    let plain_sse = format!("GET /sse HTTP/1.1\r\nHost: app.test\r\nConnection: X-Secret\r\n{SPOOFED}\r\n");
    assert!(exchange(addr, plain_sse.as_bytes(), |r| r.contains("data: hello")).starts_with("HTTP/1.1 200"));
    let sse = format!(
        "GET /sse?takeover HTTP/1.1\r\nHost: app.test\r\nAccept: text/event-stream\r\nConnection: X-Secret\r\n{SPOOFED}\r\n"
    );
    assert!(exchange(addr, sse.as_bytes(), |r| r.contains("data: hello")).starts_with("HTTP/1.1 200"));
    let ws = format!(
        "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, X-Secret\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{SPOOFED}\r\n"
    );
    assert!(exchange(addr, ws.as_bytes(), |r| r.contains("\r\n\r\n")).starts_with("HTTP/1.1 101"));
}

const PATHS: &[&str] = &["GET /echo ", "GET /sse ", "GET /sse?takeover ", "GET /ws "];

fn assert_no_hop_by_hop(path: &str, headers: &[(String, String)]) {
    for name in HOP_BY_HOP {
        assert!(
            header(headers, name).is_none(),
            "{path}: {name} reached the backend: {headers:?}"
        );
    }
    let connection = all(headers, "connection").join(", ").to_ascii_lowercase();
    assert!(!connection.contains("x-secret"), "{path}: {connection}");
    if path.starts_with("GET /ws") {
        assert_eq!(header(headers, "connection"), Some("Upgrade"), "{path}");
        assert_eq!(header(headers, "upgrade"), Some("websocket"), "{path}");
    } else {
        assert!(header(headers, "upgrade").is_none(), "{path}");
    }
}

// === forwarded and hop-by-hop headers ===

#[test]
fn an_untrusted_client_cannot_choose_forwarded_headers_and_hop_by_hop_headers_stop_on_every_path() {
    let edge = start(&[]);
    send_one_of_each(&edge);
    for path in PATHS {
        let (headers, _) = edge.received(path);
        assert_eq!(all(&headers, "x-forwarded-for"), ["127.0.0.1"], "{path}: {headers:?}");
        assert_eq!(all(&headers, "x-real-ip"), ["127.0.0.1"], "{path}");
        assert_eq!(all(&headers, "x-forwarded-proto"), ["http"], "{path}");
        assert_eq!(all(&headers, "x-forwarded-host"), ["app.test"], "{path}");
        assert!(header(&headers, "forwarded").is_none(), "{path}: {headers:?}");
        assert_no_hop_by_hop(path, &headers);
    }
}

#[test]
fn a_trusted_proxy_keeps_its_forwarded_headers_and_is_appended_on_every_path() {
    let edge = start(&[r#"trusted_proxies: ["127.0.0.1"]"#]);
    send_one_of_each(&edge);
    for path in PATHS {
        let (headers, _) = edge.received(path);
        assert_eq!(
            all(&headers, "x-forwarded-for"),
            ["6.6.6.6, 127.0.0.1"],
            "{path}: {headers:?}"
        );
        assert_eq!(all(&headers, "x-real-ip"), ["6.6.6.6"], "{path}");
        assert_eq!(all(&headers, "x-forwarded-proto"), ["https"], "{path}");
        assert_eq!(all(&headers, "x-forwarded-host"), ["evil.example"], "{path}");
        assert_eq!(all(&headers, "forwarded"), ["for=6.6.6.6;proto=https"], "{path}");
        assert_no_hop_by_hop(path, &headers);
    }
}

// === framing ===

#[test]
fn malformed_framing_gets_400_and_reaches_no_backend_on_any_path() {
    let edge = start(&[]);
    let lengths: &[&str] = &[
        "Content-Length: +5\r\n",
        "Content-Length: 0x5\r\n",
        "Content-Length: -5\r\n",
        "Content-Length: 5 5\r\n",
        "Content-Length: 5, 6\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ];
    let starts: &[&str] = &[
        "POST /echo HTTP/1.1\r\nHost: app.test\r\n",
        "GET /sse HTTP/1.1\r\nHost: app.test\r\nAccept: text/event-stream\r\n",
        "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    ];
    for start in starts {
        for length in lengths {
            let wire = format!("{start}{length}\r\nhello");
            let (answer, _) = closes(edge.addr(), wire.as_bytes());
            assert!(answer.starts_with("HTTP/1.1 400"), "{wire:?} → {answer:?}");
        }
    }
    // A chunked body whose first size line is bad.
    for size in ["+5", " 5", "0x5", "-5", "00000000000000005", "fffffffffffffffff"] {
        for start in starts {
            let wire = format!("{start}Transfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n");
            let (answer, _) = closes(edge.addr(), wire.as_bytes());
            assert!(answer.starts_with("HTTP/1.1 400"), "{wire:?} → {answer:?}");
        }
    }
    // A probe that does get through proves the backend log works.
    let probe = b"GET /echo?probe HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    assert!(exchange(edge.addr(), probe, |r| r.ends_with("ok")).starts_with("HTTP/1.1 200"));
    edge.received("GET /echo?probe ");
    let records = edge.records();
    assert_eq!(records.len(), 1, "only the probe reached the backend: {records:?}");
}

#[test]
fn content_length_with_transfer_encoding_is_forwarded_chunked_and_the_connection_closes() {
    let edge = start(&[]);
    for (start, line) in [
        ("POST /echo?both HTTP/1.1\r\nHost: app.test\r\n", "POST /echo?both "),
        // An event-stream GET with a body takes pingora's path: the same rule.
        (
            "GET /sse?both HTTP/1.1\r\nHost: app.test\r\nAccept: text/event-stream\r\n",
            "GET /sse?both ",
        ),
    ] {
        let wire = format!("{start}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        let (answer, closed) = closes(edge.addr(), wire.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(
            closed,
            "the client connection is closed after the answer (RFC 9112 §6.3)"
        );
        let (headers, body) = edge.received(line);
        assert!(header(&headers, "content-length").is_none(), "{headers:?}");
        assert_eq!(header(&headers, "transfer-encoding"), Some("chunked"), "{headers:?}");
        assert!(body.contains("hello"), "{body:?}");
    }
}

#[test]
fn a_chunked_body_reaches_the_backend_whole_after_its_first_chunk_was_checked() {
    // The first chunk is read before a backend is chosen (and replayed from
    // pingora's retry buffer): nothing may be lost or doubled.
    let edge = start(&[]);
    let mut stream = TcpStream::connect(edge.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    stream
        .write_all(b"POST /echo?chunks HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100)); // a second packet, not a sync point
    stream.write_all(b"6\r\n world\r\n0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    while !String::from_utf8_lossy(&buf).ends_with("ok") {
        assert!(fill(&mut stream, &mut buf), "an answer");
    }
    let (_, body) = edge.received("POST /echo?chunks ");
    assert_eq!(dechunk(&body).as_deref(), Some("hello world"), "{body:?}");

    let empty = b"POST /echo?empty HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert!(exchange(edge.addr(), empty, |r| r.ends_with("ok")).starts_with("HTTP/1.1 200"));
    let (headers, body) = edge.received("POST /echo?empty ");
    // An empty chunked body is forwarded as no body at all, which means
    // the same (RFC 9112 §6.3: no framing header, no body).
    assert!(header(&headers, "transfer-encoding").is_none(), "{headers:?}");
    assert!(
        header(&headers, "content-length").is_none_or(|v| v == "0"),
        "{headers:?}"
    );
    assert_eq!(body, "");
}

#[test]
fn an_event_stream_request_with_a_body_forwards_the_body() {
    // Regression: the takeover path forwarded the head alone, and the
    // backend waited for a body that never came (30 s, then 502).
    let edge = start(&[]);
    let wire =
        b"GET /sse?body HTTP/1.1\r\nHost: app.test\r\nAccept: text/event-stream\r\nContent-Length: 5\r\n\r\nhello";
    let answer = exchange(edge.addr(), wire, |r| r.contains("data: hello"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains("data: hello"), "{answer:?}");
    let (headers, body) = edge.received("GET /sse?body ");
    assert_eq!(header(&headers, "content-length"), Some("5"));
    assert_eq!(body, "hello");
}

#[test]
fn a_websocket_handshake_with_a_body_is_refused() {
    let edge = start(&[]);
    let wire = b"GET /ws?body HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 5\r\n\r\nhello";
    let (answer, _) = closes(edge.addr(), wire);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(edge.records().is_empty(), "{:?}", edge.records());
}

// === event streams recognised by their Content-Type ===

/// Decodes a chunked body; `None` if it did not end with the last chunk.
fn dechunk(mut wire: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, rest) = wire.split_once("\r\n")?;
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            return (rest == "\r\n").then_some(body);
        }
        body.push_str(rest.get(..size)?);
        wire = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// Reads `stream` to its end and checks it ended as SPEC §4 says: whole
/// events, then `retry: N` (jittered within the 300 ms spread), then the
/// chunked body's last chunk.
fn assert_notice_and_clean_end(stream: &mut TcpStream, mut buf: Vec<u8>) {
    while fill(stream, &mut buf) {}
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, chunked) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(
        head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "{head}"
    );
    let body = dechunk(chunked).unwrap_or_else(|| {
        let tail = &chunked[chunked.len().saturating_sub(300)..];
        panic!("a clean chunked end: …{tail:?}")
    });
    let tail = &body[body.len().saturating_sub(300)..];
    let (events, notice) = body
        .rsplit_once("retry: ")
        .unwrap_or_else(|| panic!("a retry notice at the end: …{tail:?}"));
    assert!(events.ends_with("\n\n"), "the notice follows a whole event: …{tail:?}");
    let millis = notice.strip_suffix("\n\n").expect("the notice is an event");
    assert!(
        millis.parse::<u64>().is_ok_and(|ms| (100..=400).contains(&ms)),
        "{millis}"
    );
}

/// Opens `/events` as curl would (no `Accept: text/event-stream`) and
/// reads up to its first event.
fn open_plain_event_stream(cutover: &Cutover) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(cutover.proxy).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: app.test\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    while !String::from_utf8_lossy(&buf).contains("data: v1") {
        assert!(fill(&mut stream, &mut buf), "the stream started");
    }
    (stream, buf)
}

#[test]
fn an_event_stream_the_client_did_not_ask_for_gets_retry_and_a_clean_end_at_shutdown() {
    let mut cutover = Cutover::builder()
        .app(
            App::demo("web", "v1")
                .env("DEMO_SSE_MS", "100")
                .yaml("drain_timeout: 20s"),
        )
        .route("*", "/", "web")
        .proxy_yaml("long_lived: { spread: 300ms, close_grace: 1s, idle_timeout: 1h }")
        .start();
    let (mut stream, buf) = open_plain_event_stream(&cutover);
    let status = cutover.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert_notice_and_clean_end(&mut stream, buf);
}

#[test]
fn an_event_stream_the_client_did_not_ask_for_gets_retry_and_a_clean_end_on_deploy() {
    // Regression: without `Accept: text/event-stream` (curl, fetch) the
    // stream took pingora's path, got no notice and was cut at the drain
    // deadline with a broken chunked body.
    let cutover = Cutover::builder()
        .app(
            App::demo("web", "v1")
                .env("DEMO_SSE_MS", "100")
                .yaml("drain_timeout: 20s"),
        )
        .route("*", "/", "web")
        .proxy_yaml("long_lived: { spread: 300ms, close_grace: 1s, idle_timeout: 1h }")
        .start();
    let (mut stream, buf) = open_plain_event_stream(&cutover);
    let counted = || {
        cutover.admin_get("/metrics").text().lines().any(|l| {
            l.starts_with("cutover_long_lived_connections{") && l.contains(r#"kind="sse""#) && l.ends_with(" 1")
        })
    };
    cutover.wait_until(Duration::from_secs(10), "the stream counted as long-lived", |_| {
        counted()
    });

    let v2 = cutover.config_with_version("v1", "v2");
    let (code, out, err) = cutover.push(&v2, &["--deploy-strategy", "rolling"]);
    assert_eq!(code, 0, "{out}\n{err}");

    // The drain of web-0 ended the stream: read to the end.
    assert_notice_and_clean_end(&mut stream, buf);
    let metrics = cutover.admin_get("/metrics").text();
    assert!(
        metrics.contains(r#"cutover_long_lived_closed_total{app="web",kind="sse",reason="drain"} 1"#),
        "{metrics}"
    );
}
