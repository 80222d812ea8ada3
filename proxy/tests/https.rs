//! SPEC §3/§4/§4a/§8: requests over TLS and HTTP/2. `X-Forwarded-Proto`,
//! HSTS on TLS answers only, `redirect_http`, ALPN `h2` and `http/1.1`, h2c
//! prior knowledge, HTTP/2 idle close and GOAWAY at shutdown, and WebSocket
//! and SSE over TLS (HTTP/1.1 and HTTP/2) with their drain notices.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::{client, connect_tls, entry, get, h2_client, h2_get, settings, until_closed, Ca, Edge, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

async fn edge(ca: &Ca, configure: impl FnOnce(&mut cutover_proxy::ProxySettings)) -> Edge {
    let leaf = ca.issue(&["a.test", "*.wild.test"]);
    let mut settings = settings(&[entry(&["a.test", "*.wild.test"], &leaf)]);
    configure(&mut settings);
    Edge::start(settings).await
}

/// The value of `name` in a request head the echo backend sent back.
fn forwarded(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_proto_is_https_over_tls_and_a_plain_client_cannot_choose_it() {
    let ca = Ca::new();
    let edge = edge(&ca, |_| {}).await;

    let mut tls = connect_tls(client(&ca, &[b"http/1.1"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    let over_tls = get(&mut tls, "a.test", "/", "X-Forwarded-Proto: http\r\n").await;
    assert_eq!(forwarded(&over_tls.body, "x-forwarded-proto"), ["https"]);
    assert_eq!(forwarded(&over_tls.body, "x-forwarded-for"), ["127.0.0.1"]);

    let mut plain = TcpStream::connect(edge.plain).await.unwrap();
    let spoofed = get(&mut plain, "plain.test", "/", "X-Forwarded-Proto: https\r\n").await;
    assert_eq!(forwarded(&spoofed.body, "x-forwarded-proto"), ["http"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_is_on_every_answer_over_tls_and_never_on_plain_ones() {
    let ca = Ca::new();
    let edge = edge(&ca, |s| s.hsts = Duration::from_secs(31_536_000)).await;
    let hsts = Some("max-age=31536000");

    let mut tls = connect_tls(client(&ca, &[b"http/1.1"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    let backend_answer = get(&mut tls, "a.test", "/", "").await;
    assert_eq!(backend_answer.status(), 200);
    assert_eq!(backend_answer.header("strict-transport-security"), hsts);
    // cutover's own answer: no route for this host.
    let own_answer = get(&mut tls, "nowhere.test", "/", "").await;
    assert_eq!(own_answer.status(), 404);
    assert_eq!(own_answer.header("strict-transport-security"), hsts);

    let mut plain = TcpStream::connect(edge.plain).await.unwrap();
    let answer = get(&mut plain, "plain.test", "/", "").await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.header("strict-transport-security"), None);
    assert_eq!(
        get(&mut plain, "nowhere.test", "/", "")
            .await
            .header("strict-transport-security"),
        None
    );

    // Over HTTP/2 too (curl, a real client, with the test CA).
    let ca_file = std::env::temp_dir().join(format!("cutover-hsts-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let resolve = format!("a.test:{}:127.0.0.1", edge.tls.port());
    let url = format!("https://a.test:{}/", edge.tls.port());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "-D", "-", "-o", "/dev/null", "--http2", "--max-time", "10"])
            .args(["--resolve", &resolve, "--cacert"])
            .arg(&ca_file)
            .arg(&url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let head = String::from_utf8_lossy(&output.stdout).to_lowercase();
    assert!(
        head.starts_with("http/2 200"),
        "{head}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(head.contains("strict-transport-security: max-age=31536000"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_http_sends_hosts_with_a_certificate_to_https_except_acme_challenges() {
    let ca = Ca::new();
    let edge = edge(&ca, |s| s.redirect_http = true).await;
    edge.settings.challenges.add_http01("tok3n", "tok3n.thumbprint");
    let mut plain = TcpStream::connect(edge.plain).await.unwrap();

    let host = format!("a.test:{}", edge.plain.port());
    let redirected = get(&mut plain, &host, "/some/path?q=1&r=2", "").await;
    assert_eq!(redirected.status(), 308);
    let location = format!("https://a.test:{}/some/path?q=1&r=2", edge.tls.port());
    assert_eq!(redirected.header("location"), Some(location.as_str()));
    assert_eq!(redirected.header("content-length"), Some("0"));
    // Wildcard-covered names too.
    let wild = get(&mut plain, "x.wild.test", "/", "").await;
    assert_eq!(wild.status(), 308);

    // A host without a certificate is served as usual.
    let served = get(&mut plain, "plain.test", "/", "").await;
    assert_eq!(served.status(), 200);
    // A pending http-01 challenge is answered, not redirected.
    let challenge = get(&mut plain, "a.test", "/.well-known/acme-challenge/tok3n", "").await;
    assert_eq!(challenge.status(), 200);
    assert_eq!(challenge.body, "tok3n.thumbprint");
    // Over TLS nothing is redirected.
    let mut tls = connect_tls(client(&ca, &[b"http/1.1"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    assert_eq!(get(&mut tls, "a.test", "/", "").await.status(), 200);
    // http-01 is answered on plain listeners only (RFC 8555 §8.3: port 80):
    // over TLS the path is the app's.
    let routed = get(&mut tls, "a.test", "/.well-known/acme-challenge/tok3n", "").await;
    assert!(
        routed
            .body
            .starts_with("GET /.well-known/acme-challenge/tok3n HTTP/1.1"),
        "{}",
        routed.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_chooses_http2_or_http11_on_tls_listeners() {
    let ca = Ca::new();
    let edge = edge(&ca, |_| {}).await;

    let tls = connect_tls(client(&ca, &[b"h2", b"http/1.1"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, _) = h2_client(tls).await;
    let (status, headers, body) = h2_get(&mut h2, "https://a.test/over-h2").await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("content-length") || !body.is_empty());
    // The backend got HTTP/1.1 with Host from :authority, marked https.
    assert!(body.starts_with("GET /over-h2 HTTP/1.1\r\n"), "{body}");
    assert_eq!(forwarded(&body, "host"), ["a.test"]);
    assert_eq!(forwarded(&body, "x-forwarded-proto"), ["https"]);
    // Several requests on the connection, counted like any request.
    for _ in 0..3 {
        assert_eq!(h2_get(&mut h2, "https://a.test/again").await.0, 200);
    }
    // Counted in `logging`, which may run just after the client has the
    // answer.
    edge.wait_metric("cutover_requests_total{app=\"echo\",code=\"200\"}", 4.0)
        .await;

    let mut tls = connect_tls(client(&ca, &[b"http/1.1"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get(&mut tls, "a.test", "/", "").await.status(), 200);

    // Without proxy.http2 only http/1.1 is offered.
    let ca = Ca::new();
    let edge = self::edge(&ca, |s| s.http2 = false).await;
    let mut tls = connect_tls(client(&ca, &[b"h2", b"http/1.1"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get(&mut tls, "a.test", "/", "").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_are_held_and_retried_like_http11_ones() {
    let ca = Ca::new();
    let edge = edge(&ca, |_| {}).await;
    let tls = connect_tls(client(&ca, &[b"h2"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    let (h2, _) = h2_client(tls).await;

    // No ready backend: the request is held, then served once one is.
    edge.publish_echo(Vec::new());
    let mut held = h2.clone();
    let request = tokio::spawn(async move { h2_get(&mut held, "https://a.test/held").await.0 });
    edge.wait_metric("cutover_held_requests{app=\"echo\"}", 1.0).await;
    edge.publish_echo(vec![std::sync::Arc::clone(&edge.backends.echo)]);
    assert_eq!(request.await.unwrap(), 200);

    // A backend that refuses connections: retried on the live one.
    let dead = cutover_proxy::Backend::new(support::free_addr(), "dead-0", 99);
    edge.publish_echo(vec![dead, std::sync::Arc::clone(&edge.backends.echo)]);
    for _ in 0..4 {
        let mut h2 = h2.clone();
        assert_eq!(h2_get(&mut h2, "https://a.test/retried").await.0, 200);
    }
    assert!(
        edge.metric("cutover_retries_total{app=\"echo\"}") >= 1.0,
        "{}",
        edge.metrics()
    );
    assert_eq!(edge.metric("cutover_requests_total{app=\"echo\",code=\"502\"}"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_works_on_plain_listeners_only_when_on() {
    let ca = Ca::new();
    let edge = edge(&ca, |s| s.h2c = true).await;
    let (mut h2, _) = h2_client(TcpStream::connect(edge.plain).await.unwrap()).await;
    let (status, _, body) = h2_get(&mut h2, "http://plain.test/h2c").await;
    assert_eq!(status, 200);
    assert_eq!(forwarded(&body, "x-forwarded-proto"), ["http"]);
    assert_eq!(forwarded(&body, "host"), ["plain.test"]);
    // HTTP/1.1 on the same listener, including one shorter than the
    // preface (HTTP/1.0 without headers: no route, but an answer).
    let mut plain = TcpStream::connect(edge.plain).await.unwrap();
    assert_eq!(get(&mut plain, "plain.test", "/", "").await.status(), 200);
    let mut short = TcpStream::connect(edge.plain).await.unwrap();
    short.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let answer = String::from_utf8(until_closed(&mut short).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 404") || answer.starts_with("HTTP/1.1 404"),
        "{answer}"
    );

    // Off (the default): the preface is not HTTP/2 to a plain listener.
    let edge = self::edge(&ca, |_| {}).await;
    let tcp = TcpStream::connect(edge.plain).await.unwrap();
    let handshake = tokio::time::timeout(WAIT, async {
        let (send, connection) = h2::client::handshake(tcp).await?;
        tokio::spawn(connection);
        let mut send = send.ready().await?;
        let (response, _) = send.send_request(http::Request::get("http://plain.test/").body(()).unwrap(), true)?;
        response.await.map(|_| ())
    })
    .await
    .expect("bounded");
    assert!(handshake.is_err(), "HTTP/2 prior knowledge was served with h2c off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_preface_or_a_silent_h2_client_is_closed_after_header_timeout() {
    let ca = Ca::new();
    let edge = edge(&ca, |s| {
        s.h2c = true;
        s.limits.header_timeout = Duration::from_millis(800);
    })
    .await;
    let started = std::time::Instant::now();
    let mut half = TcpStream::connect(edge.plain).await.unwrap();
    half.write_all(&cutover_proxy::limits::H2_PREFACE[..10]).await.unwrap();
    // Over TLS: ALPN h2 chosen, then nothing.
    let mut silent_h2 = connect_tls(client(&ca, &[b"h2"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    assert!(until_closed(&mut half).await.is_empty());
    assert!(until_closed(&mut silent_h2).await.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    for listener in [edge.plain, edge.tls] {
        edge.wait_metric(&format!("cutover_client_connections{{listener=\"{listener}\"}}"), 0.0)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_idle_connections_close_after_keepalive_timeout() {
    let ca = Ca::new();
    let edge = edge(&ca, |s| s.limits.keepalive_timeout = Duration::from_secs(1)).await;
    let tls = connect_tls(client(&ca, &[b"h2"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    let (mut h2, closed) = h2_client(tls).await;
    assert_eq!(h2_get(&mut h2, "https://a.test/").await.0, 200);
    let started = std::time::Instant::now();
    tokio::time::timeout(WAIT, closed)
        .await
        .expect("the idle HTTP/2 connection was closed")
        .unwrap()
        .ok();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    edge.wait_metric(&format!("cutover_client_connections{{listener=\"{}\"}}", edge.tls), 0.0)
        .await;
}

/// Reads raw HTTP/2 frames until one of `kind` arrives.
async fn until_frame(tcp: &mut TcpStream, kind: u8) {
    let read = async {
        loop {
            let mut header = [0u8; 9];
            tcp.read_exact(&mut header)
                .await
                .expect("a frame before the connection ended");
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).await.unwrap();
            if header[3] == kind {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("the frame in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_cutover_sends_goaway_to_http2_clients() {
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    let ca = Ca::new();
    let mut edge = edge(&ca, |s| s.h2c = true).await;
    // A raw HTTP/2 client: the preface and an empty SETTINGS frame.
    let mut tcp = TcpStream::connect(edge.plain).await.unwrap();
    tcp.write_all(cutover_proxy::limits::H2_PREFACE).await.unwrap();
    tcp.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]).await.unwrap();
    until_frame(&mut tcp, SETTINGS).await;

    assert_eq!(edge.data_plane.shutdown(Duration::from_secs(2)).await, 0);
    until_frame(&mut tcp, GOAWAY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_over_tls_gets_1012_when_its_backend_drains() {
    let ca = Ca::new();
    let edge = edge(&ca, |_| {}).await;
    // A WebSocket client offers http/1.1 only (no WebSocket over HTTP/2 in
    // pingora 0.9); browsers fall back to it.
    let tls = connect_tls(client(&ca, &[b"http/1.1"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async("wss://a.test/ws", tls).await.unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("hello")).await.unwrap();
    let echo = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echo, Message::text("hello"));
    edge.wait_metric(
        "cutover_long_lived_connections{app=\"ws\",instance=\"ws-0\",kind=\"websocket\"}",
        1.0,
    )
    .await;

    edge.backends.ws.start_draining();
    let close = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame in time");
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Restart), "1012");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_over_https_gets_retry_when_its_backend_drains() {
    let ca = Ca::new();
    let edge = edge(&ca, |_| {}).await;
    let mut tls = connect_tls(client(&ca, &[b"http/1.1"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    tls.write_all(
        b"GET /events HTTP/1.1\r\nHost: a.test\r\nAccept: text/event-stream\r\nX-Forwarded-Proto: ftp\r\n\r\n",
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: tick") {
        let n = tokio::time::timeout(WAIT, tls.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // The takeover path marks it https too, whatever the client claimed.
    assert!(
        String::from_utf8_lossy(&seen).contains("proto=https "),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    edge.backends.sse.start_draining();
    // The response ends cleanly (the chunked terminator); the connection
    // itself may stay open for the next request.
    while !String::from_utf8_lossy(&seen).ends_with("0\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, tls.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before a clean end: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("retry: "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_over_http2_reaches_the_backend_as_http11_and_gets_retry_on_drain() {
    let ca = Ca::new();
    let edge = edge(&ca, |_| {}).await;
    let tls = connect_tls(client(&ca, &[b"h2"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    let (h2, _) = h2_client(tls).await;
    let mut h2 = h2.ready().await.unwrap();
    let request = http::Request::get("https://a.test/events")
        .header("accept", "text/event-stream")
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(request, true).unwrap();
    let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut seen = String::new();
    while !seen.contains("data: tick") {
        let chunk = tokio::time::timeout(WAIT, body.data()).await.unwrap().unwrap().unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // One Host, from :authority; an HTTP/1.1 request line with the path.
    assert!(
        seen.contains("data: host=a.test hosts=1 proto=https request-line=GET /events HTTP/1.1"),
        "{seen}"
    );
    edge.wait_metric(
        "cutover_long_lived_connections{app=\"sse\",instance=\"sse-0\",kind=\"sse\"}",
        1.0,
    )
    .await;

    edge.backends.sse.start_draining();
    let rest = tokio::time::timeout(WAIT, async {
        let mut rest = String::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("a clean end of stream, not a reset");
            let _ = body.flow_control().release_capacity(chunk.len());
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
        rest
    })
    .await
    .expect("the stream ended in time");
    assert!(rest.contains("retry: "), "{rest}");
    assert!(body.is_end_stream());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_host_field_that_differs_from_authority_is_malformed_not_routed() {
    let ca = Ca::new();
    let edge = edge(&ca, |s| s.h2c = true).await;
    let (h2, _) = h2_client(TcpStream::connect(edge.plain).await.unwrap()).await;
    // `:authority` names a host with no route; a `host` field names one.
    let request = http::Request::get("http://unrouted.test/")
        .header("host", "a.test")
        .body(())
        .unwrap();
    let status = tokio::time::timeout(WAIT, async {
        let mut send = h2.ready().await.expect("h2 ready");
        let (response, _) = send.send_request(request, true).expect("h2 request");
        response.await.expect("h2 response").status()
    })
    .await
    .expect("bounded");
    // RFC 9113 §8.3.1: malformed (400), never routed by the host field
    // to an app whose backend would then see `:authority`.
    assert_eq!(
        status, 400,
        "routed on the host field while the backend would see :authority"
    );
}
