//! gRPC to an `h2c` app through the data plane alone (SPEC §4 "gRPC and
//! other HTTP/2 streams", §3 `upstream: h2c`), with a real gRPC stack:
//! tonic clients, and the gRPC demo's own server (`src/bin/grpc-demo`)
//! counting the connections it accepts.

#[path = "../../src/bin/grpc-demo/echo.rs"]
mod echo;
#[path = "../../src/bin/grpc-demo/server.rs"]
mod server;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cutover_proxy::{
    AppId, Backend, DataPlane, DataPlaneConfig, HostMatch, LongLivedSettings, ProxyMetrics, ProxySettings, RouteTable,
    TableHandle, UpstreamProtocol,
};
use echo::DemoClient;
use futures_util::{SinkExt, StreamExt};
use tokio::time::{timeout, Instant};

/// Every wait in these tests ends by this deadline.
const PATIENCE: Duration = Duration::from_secs(20);

/// The drain notice settings the tests use: short, so a test is quick.
const LONG_LIVED: LongLivedSettings = LongLivedSettings {
    spread: Duration::from_millis(200),
    close_grace: Duration::from_millis(300),
    idle_timeout: Duration::from_secs(60),
};

/// A running gRPC demo backend.
struct DemoBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl DemoBackend {
    async fn start(version: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(server::serve(
            listener,
            server::router(version, &format!("{version}-0")),
            Arc::clone(&accepted),
        ));
        Self { addr, accepted, task }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for DemoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An `h2c` app `grpc` on `backends`, routed for every host and path.
fn table(backends: Vec<Arc<Backend>>, metrics: &ProxyMetrics) -> RouteTable {
    let mut builder = RouteTable::builder();
    builder.app(AppId(0), "grpc", backends, metrics.app("grpc"));
    builder.upstream(AppId(0), UpstreamProtocol::H2c);
    builder.long_lived(LONG_LIVED);
    builder.route(HostMatch::Any, "/", AppId(0)).unwrap();
    builder.build()
}

struct Proxy {
    addr: SocketAddr,
    handle: Arc<TableHandle>,
    metrics: ProxyMetrics,
    registry: prometheus::Registry,
    data_plane: DataPlane,
}

impl Proxy {
    /// A data plane with HTTP/2 prior knowledge on its plain listener.
    fn start(backends: Vec<Arc<Backend>>) -> Self {
        Self::start_with_grace(backends, Duration::from_secs(1))
    }

    /// The same, with pingora's backstop after shutdown at `grace`.
    fn start_with_grace(backends: Vec<Arc<Backend>>, grace: Duration) -> Self {
        let registry = prometheus::Registry::new();
        let metrics = ProxyMetrics::new(&registry).unwrap();
        let handle = TableHandle::new(table(backends, &metrics));
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let config = DataPlaneConfig {
            listen: vec![addr],
            tls_listen: Vec::new(),
            threads: 2,
            settings: ProxySettings {
                h2c: true,
                ..ProxySettings::default()
            },
            grace,
        };
        let data_plane = DataPlane::start(config, Arc::clone(&handle), &metrics).unwrap();
        Self {
            addr,
            handle,
            metrics,
            registry,
            data_plane,
        }
    }

    /// The value of one series, 0 when absent.
    fn metric(&self, series: &str) -> f64 {
        let mut out = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &self.registry.gather(), &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    fn publish(&self, backends: Vec<Arc<Backend>>) {
        self.handle.publish(table(backends, &self.metrics));
    }

    async fn client(&self) -> DemoClient {
        timeout(PATIENCE, DemoClient::connect(format!("http://{}", self.addr)))
            .await
            .expect("connect timed out")
            .expect("connect to the proxy")
    }
}

fn backend(demo: &DemoBackend, generation: u64) -> Arc<Backend> {
    Backend::new(demo.addr, format!("grpc-{generation}"), generation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_reaches_the_h2c_backend_through_the_proxy() {
    let demo = DemoBackend::start("v1").await;
    let proxy = tokio::task::block_in_place(|| Proxy::start(vec![backend(&demo, 1)]));
    let mut client = proxy.client().await;
    let reply = timeout(PATIENCE, client.echo("hi", 0)).await.unwrap().unwrap();
    assert_eq!(reply.message, "hi");
    assert_eq!(reply.version, "v1");
    assert_eq!(reply.forwarded_proto, "http", "forwarded headers are set");
    // The backend's own status, in a Trailers-Only answer, passes as is.
    let status = timeout(PATIENCE, client.missing()).await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_held_until_a_backend_is_ready_and_gets_unavailable_when_none_comes() {
    let demo = DemoBackend::start("v1").await;
    let proxy = tokio::task::block_in_place(|| Proxy::start(Vec::new()));
    let mut client = proxy.client().await;
    let mut held_client = client.clone();
    let held = tokio::spawn(async move { held_client.echo("held", 0).await });
    wait_for(|| proxy.metric("cutover_held_requests{app=\"grpc\"}") == 1.0).await;
    proxy.publish(vec![backend(&demo, 1)]);
    let reply = timeout(PATIENCE, held).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.version, "v1");

    // No backend within the hold timeout: UNAVAILABLE, saying why.
    let mut builder = RouteTable::builder();
    builder.app(AppId(0), "grpc", Vec::new(), proxy.metrics.app("grpc"));
    builder.upstream(AppId(0), UpstreamProtocol::H2c);
    builder.hold_timeout(Duration::from_millis(200));
    builder.route(HostMatch::Any, "/", AppId(0)).unwrap();
    proxy.handle.publish(builder.build());
    let status = timeout(PATIENCE, client.echo("nobody", 0)).await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("no ready backend"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unary_calls_share_one_upstream_connection() {
    let demo = DemoBackend::start("v1").await;
    let proxy = tokio::task::block_in_place(|| Proxy::start(vec![backend(&demo, 1)]));
    // Several client connections, many calls each, overlapping in time.
    let mut calls = Vec::new();
    for c in 0..4 {
        let client = proxy.client().await;
        for i in 0..25 {
            let mut client = client.clone();
            calls.push(tokio::spawn(async move {
                client.echo(&format!("{c}-{i}"), 50).await.map(|r| r.message)
            }));
        }
    }
    for (n, call) in calls.into_iter().enumerate() {
        let message = timeout(PATIENCE, call).await.unwrap().unwrap().unwrap();
        assert_eq!(message, format!("{}-{}", n / 25, n % 25));
    }
    assert_eq!(
        demo.accepted(),
        1,
        "100 concurrent calls from 4 clients must share one upstream connection"
    );
}

/// Regression: the proxy once forwarded the client's empty final read as
/// an empty DATA frame without END_STREAM; h2 servers allow 100 of those
/// per connection, then answer GOAWAY ENHANCE_YOUR_CALM, failing calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_calls_on_one_upstream_connection_all_succeed() {
    let demo = DemoBackend::start("v1").await;
    let proxy = tokio::task::block_in_place(|| Proxy::start(vec![backend(&demo, 1)]));
    let mut client = proxy.client().await;
    for i in 0..300 {
        let reply = timeout(PATIENCE, client.echo(&i.to_string(), 0)).await.unwrap();
        assert_eq!(reply.unwrap().message, i.to_string(), "call {i}");
    }
    assert_eq!(demo.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_connection_never_crosses_a_generation() {
    let demo = DemoBackend::start("v1").await;
    let proxy = tokio::task::block_in_place(|| Proxy::start(vec![backend(&demo, 1)]));
    let mut client = proxy.client().await;
    client.echo("a", 0).await.unwrap();
    client.echo("b", 0).await.unwrap();
    assert_eq!(demo.accepted(), 1, "calls within a generation share the connection");
    // A new process behind the same address: a new connection.
    proxy.publish(vec![backend(&demo, 2)]);
    client.echo("c", 0).await.unwrap();
    client.echo("d", 0).await.unwrap();
    assert_eq!(demo.accepted(), 2, "a call reused a connection of another generation");

    // pingora's own h2c path (plain HTTP/1.1 client, non-gRPC request) is
    // keyed by generation too.
    let get = |addr: SocketAddr| {
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            s.write_all(b"GET /proto HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            answer
        })
    };
    let before = demo.accepted();
    for _ in 0..3 {
        let answer = get(proxy.addr).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.ends_with("HTTP/2.0"),
            "an h2c app is reached over HTTP/2: {answer}"
        );
    }
    assert_eq!(demo.accepted(), before + 1, "pingora's h2c pool reuses one connection");
    proxy.publish(vec![backend(&demo, 3)]);
    let answer = get(proxy.addr).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(demo.accepted(), before + 2, "pingora's h2c pool crossed a generation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_call_gets_unavailable_when_its_backend_drains_and_a_new_call_reaches_the_new_version() {
    let old = DemoBackend::start("v1").await;
    let new = DemoBackend::start("v2").await;
    let old_backend = backend(&old, 1);
    let proxy = tokio::task::block_in_place(|| Proxy::start(vec![Arc::clone(&old_backend)]));
    let mut client = proxy.client().await;
    let mut ticks = client.ticks(20).await.unwrap();
    for _ in 0..3 {
        let tick = timeout(PATIENCE, ticks.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(tick.version, "v1");
    }
    // A unary call slower than the whole notice, in flight at the drain.
    let mut slow_client = client.clone();
    let slow = tokio::spawn(async move { slow_client.echo("slow", 1500).await });
    wait_for(|| old_backend.inflight() == 2).await;

    // What `drain_and_stop` does: the table without it, then draining.
    proxy.publish(vec![backend(&new, 2)]);
    old_backend.start_draining();
    let status = loop {
        match timeout(PATIENCE, ticks.message())
            .await
            .expect("the stream was not ended")
        {
            Ok(Some(tick)) => assert_eq!(tick.version, "v1"),
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("restarting"), "{status:?}");

    // The unary call in flight is never cut by the notice.
    let reply = timeout(PATIENCE, slow).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.version, "v1");
    let left = old_backend.wait_idle(Instant::now() + PATIENCE).await;
    assert_eq!(left, 0, "the calls' claims were released");

    // The client calls again and reaches the new version.
    let mut ticks = client.ticks(20).await.unwrap();
    let tick = timeout(PATIENCE, ticks.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(tick.version, "v2");
    assert_eq!(client.echo("again", 0).await.unwrap().version, "v2");
    drop(ticks);

    // Counted as long-lived (kind grpc) and as requests.
    let closed = |reason: &str| {
        proxy.metric(&format!(
            "cutover_long_lived_closed_total{{app=\"grpc\",kind=\"grpc\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(closed("drain"), 1.0, "the drained stream");
    assert!(closed("backend") >= 2.0, "the unary calls that completed");
    wait_for(|| closed("client") >= 1.0).await; // the last stream, dropped
    assert!(proxy.metric("cutover_requests_total{app=\"grpc\",code=\"200\"}") >= 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_call_gets_unavailable_when_cutover_stops() {
    let demo = DemoBackend::start("v1").await;
    let mut proxy = tokio::task::block_in_place(|| Proxy::start(vec![backend(&demo, 1)]));
    let mut client = proxy.client().await;
    let mut ticks = client.ticks(20).await.unwrap();
    timeout(PATIENCE, ticks.message()).await.unwrap().unwrap().unwrap();
    let stopping = tokio::spawn(async move {
        let left = proxy.data_plane.shutdown(PATIENCE).await;
        (proxy, left)
    });
    let status = loop {
        match timeout(PATIENCE, ticks.message())
            .await
            .expect("the stream was not ended")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    let (_proxy, left) = stopping.await.unwrap();
    assert_eq!(left, 0, "the call ended within the shutdown drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_being_answered_when_cutover_stops_gets_its_answer() {
    // Stopping alone, and stopping after a drain put the call past its
    // notice point: either way the call is in the backend's hands.
    for drain_first in [false, true] {
        let demo = DemoBackend::start("v1").await;
        let demo_backend = backend(&demo, 1);
        // pingora's backstop must not cut the call before its answer.
        let mut proxy =
            tokio::task::block_in_place(|| Proxy::start_with_grace(vec![Arc::clone(&demo_backend)], PATIENCE));
        let mut client = proxy.client().await;
        let slow = tokio::spawn(async move { client.echo("slow", 1500).await });
        wait_for(|| demo_backend.inflight() == 1).await;
        if drain_first {
            demo_backend.start_draining();
            // Past the notice point (a shorter wait only tests less).
            tokio::time::sleep(LONG_LIVED.spread + Duration::from_millis(100)).await;
        }
        let stopping = tokio::spawn(async move {
            let left = proxy.data_plane.shutdown(PATIENCE).await;
            (proxy, left)
        });
        let reply = timeout(PATIENCE, slow).await.unwrap().unwrap();
        let reply = reply.unwrap_or_else(|status| panic!("drain first: {drain_first}: {status:?}"));
        assert_eq!(reply.version, "v1");
        let (_proxy, left) = timeout(PATIENCE, stopping).await.unwrap().unwrap();
        assert_eq!(left, 0, "the call ended within the shutdown drain");
    }
}

/// An HTTP/2 backend that takes every call (answering its head when
/// `head`) and never reads its request body: it grants no flow-control
/// window beyond the initial one.
async fn deaf_backend(head: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                // Held, never read: no WINDOW_UPDATE is ever sent.
                let mut held = Vec::new();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let response = head.then(|| {
                        let head = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        respond.send_response(head, false).unwrap()
                    });
                    counted.fetch_add(1, Ordering::SeqCst);
                    held.push((request, respond, response));
                }
            });
        }
    });
    (addr, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_to_a_backend_that_stops_reading_still_gets_unavailable_at_the_drain() {
    // Before the response head (the call is being sent) and after it.
    for head in [false, true] {
        deaf_call_ends_at_the_drain(head).await;
    }
}

async fn deaf_call_ends_at_the_drain(head: bool) {
    let (addr, calls) = deaf_backend(head).await;
    let deaf = Backend::new(addr, "grpc-deaf", 1);
    let proxy = tokio::task::block_in_place(|| Proxy::start(vec![Arc::clone(&deaf)]));

    // A raw HTTP/2 client that sends request messages as fast as it may.
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = timeout(PATIENCE, h2::client::handshake(tcp)).await.unwrap().unwrap();
    tokio::spawn(conn);
    let mut client = timeout(PATIENCE, client.ready()).await.unwrap().unwrap();
    let request = http::Request::post(format!("http://{}/demo.Demo/Upload", proxy.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut upload) = client.send_request(request, false).unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&sent);
    let sending = tokio::spawn(async move {
        let mut message = vec![0u8];
        message.extend_from_slice(&16_000u32.to_be_bytes());
        message.resize(5 + 16_000, 7);
        let message = bytes::Bytes::from(message);
        loop {
            upload.reserve_capacity(message.len());
            let Some(Ok(_)) = std::future::poll_fn(|cx| upload.poll_capacity(cx)).await else {
                return;
            };
            if upload.send_data(message.clone(), false).is_err() {
                return;
            }
            counted.fetch_add(message.len(), Ordering::SeqCst);
        }
    });

    // Wait until the backend has the call and the upload is stuck: the
    // backend's window, the proxy's queue and the client's window full.
    wait_for(|| calls.load(Ordering::SeqCst) == 1).await;
    let deadline = Instant::now() + PATIENCE;
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = sent.load(Ordering::SeqCst);
        if now == last && now > 65_535 {
            break;
        }
        assert!(Instant::now() < deadline, "the upload never stalled");
        last = now;
    }

    deaf.start_draining();
    let response = timeout(PATIENCE, response)
        .await
        .expect("the call was not ended at its notice")
        .expect("a response, not a reset");
    let status = match response.headers().get("grpc-status") {
        Some(status) => status.clone(),
        None => {
            let mut body = response.into_body();
            while let Some(data) = timeout(PATIENCE, body.data())
                .await
                .expect("the call was not ended at its notice")
            {
                let _ = data;
            }
            let trailers = timeout(PATIENCE, body.trailers()).await.unwrap().unwrap().unwrap();
            trailers.get("grpc-status").unwrap().clone()
        }
    };
    assert_eq!(status, "14", "head: {head}");
    sending.abort();
}

/// One `Tick` as a gRPC message (uncompressed, length-prefixed).
fn tick_message(n: u64, version: &str) -> Vec<u8> {
    let tick = prost::Message::encode_to_vec(&echo::Tick {
        n,
        version: version.into(),
    });
    let mut framed = vec![0];
    framed.extend_from_slice(&(tick.len() as u32).to_be_bytes());
    framed.extend_from_slice(&tick);
    framed
}

/// An HTTP/2 backend streaming one whole `Tick`, then half of a second
/// one; the other half follows `pause` later (sent in two DATA frames).
async fn halting_backend(pause: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                let Some(Ok((_request, mut respond))) = conn.accept().await else {
                    return;
                };
                let head = http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(())
                    .unwrap();
                let mut body = respond.send_response(head, false).unwrap();
                body.send_data(tick_message(0, "halting").into(), false).unwrap();
                let second = tick_message(1, "halting");
                let (first_half, second_half) = second.split_at(second.len() / 2);
                body.send_data(first_half.to_vec().into(), false).unwrap();
                // The connection keeps running while the message waits.
                let _ = tokio::time::timeout(pause, std::future::poll_fn(|cx| conn.poll_closed(cx))).await;
                // The proxy may have reset the stream meanwhile.
                let _ = body.send_data(second_half.to_vec().into(), false);
                let _ = tokio::time::timeout(PATIENCE, std::future::poll_fn(|cx| conn.poll_closed(cx))).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_grace_ends_mid_message_gets_that_message_then_unavailable() {
    // The half message outlasts the whole notice (spread + close_grace).
    let addr = halting_backend(LONG_LIVED.spread + LONG_LIVED.close_grace + Duration::from_millis(500)).await;
    let halting = Backend::new(addr, "grpc-halting", 1);
    let proxy = tokio::task::block_in_place(|| Proxy::start(vec![Arc::clone(&halting)]));
    let mut client = proxy.client().await;
    let mut ticks = timeout(PATIENCE, client.ticks(10)).await.unwrap().unwrap();
    let tick = timeout(PATIENCE, ticks.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((tick.n, tick.version.as_str()), (0, "halting"));
    halting.start_draining();
    // The message in flight at the end of the grace still arrives whole.
    let tick = timeout(PATIENCE, ticks.message()).await.unwrap();
    let tick = tick.unwrap_or_else(|status| panic!("the message in flight was cut: {status:?}"));
    assert_eq!(tick.map(|t| t.n), Some(1));
    let status = timeout(PATIENCE, ticks.message()).await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("restarting"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_backend_refuses_connections_goes_to_another() {
    let live = DemoBackend::start("v1").await;
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed at once
    let backends = vec![Backend::new(dead, "grpc-dead", 1), backend(&live, 2)];
    let proxy = tokio::task::block_in_place(|| Proxy::start(backends));
    let mut client = proxy.client().await;
    for i in 0..6 {
        let reply = timeout(PATIENCE, client.echo(&i.to_string(), 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.version, "v1");
    }
}

/// An HTTP/2 backend that refuses every stream (`RST_STREAM(REFUSED_STREAM)`:
/// "not processed, safe to retry"); counts the streams it refused.
async fn refusing_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&refused);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = conn.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    (addr, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_stream_is_refused_goes_to_another_backend() {
    let live = DemoBackend::start("v1").await;
    let (refusing, refused) = refusing_backend().await;
    let backends = vec![Backend::new(refusing, "grpc-refusing", 1), backend(&live, 2)];
    let proxy = tokio::task::block_in_place(|| Proxy::start(backends));
    let mut client = proxy.client().await;
    for i in 0..6 {
        let reply = timeout(PATIENCE, client.echo(&i.to_string(), 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.message, i.to_string());
    }
    assert!(refused.load(Ordering::SeqCst) > 0, "the refusing backend was tried");

    // With nowhere else to go, the client is told the call was refused
    // (UNAVAILABLE for tonic, safe to retry).
    proxy.publish(vec![Backend::new(refusing, "grpc-refusing", 3)]);
    let status = timeout(PATIENCE, client.echo("x", 0)).await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

/// An HTTP/2 backend that answers every call with a head and one `Tick`,
/// then resets the stream (`reset`) or drops the whole connection.
async fn breaking_backend(reset: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                let Some(Ok((_request, mut respond))) = conn.accept().await else {
                    return;
                };
                let head = http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(())
                    .unwrap();
                let mut body = respond.send_response(head, false).unwrap();
                let tick = prost::Message::encode_to_vec(&echo::Tick {
                    n: 0,
                    version: "broken".into(),
                });
                let mut framed = vec![0];
                framed.extend_from_slice(&(tick.len() as u32).to_be_bytes());
                framed.extend_from_slice(&tick);
                body.send_data(framed.into(), false).unwrap();
                // Let the connection flush the message, then break.
                let _ = tokio::time::timeout(
                    Duration::from_millis(200),
                    std::future::poll_fn(|cx| conn.poll_closed(cx)),
                )
                .await;
                if reset {
                    body.send_reset(h2::Reason::INTERNAL_ERROR);
                    let _ = tokio::time::timeout(
                        Duration::from_millis(200),
                        std::future::poll_fn(|cx| conn.poll_closed(cx)),
                    )
                    .await;
                }
                drop(conn);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failing_mid_call_gives_a_grpc_status_after_the_messages_it_sent() {
    for (reset, expected) in [(true, tonic::Code::Internal), (false, tonic::Code::Unavailable)] {
        let addr = breaking_backend(reset).await;
        let proxy = tokio::task::block_in_place(|| Proxy::start(vec![Backend::new(addr, "grpc-broken", 1)]));
        let mut client = proxy.client().await;
        let mut ticks = timeout(PATIENCE, client.ticks(10)).await.unwrap().unwrap();
        let tick = timeout(PATIENCE, ticks.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(tick.version, "broken");
        let status = timeout(PATIENCE, ticks.message()).await.unwrap().unwrap_err();
        assert_eq!(status.code(), expected, "reset: {reset}: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_speaking_garbage_gives_a_grpc_status() {
    // Accepts, answers with bytes that are not HTTP/2, closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let garbage = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nnot http/2 at all\n")
                .await;
        }
    });
    let proxy = tokio::task::block_in_place(|| Proxy::start(vec![Backend::new(addr, "grpc-bad", 1)]));
    let mut client = proxy.client().await;
    let status = timeout(PATIENCE, client.echo("x", 0)).await.unwrap().unwrap_err();
    assert!(
        matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Internal),
        "{status:?}"
    );
    // The proxy is fine afterwards.
    let demo = DemoBackend::start("v1").await;
    proxy.publish(vec![backend(&demo, 2)]);
    assert_eq!(client.echo("y", 0).await.unwrap().version, "v1");
    garbage.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_to_an_h2c_app_goes_over_http1() {
    let demo = DemoBackend::start("v1").await;
    let proxy = tokio::task::block_in_place(|| Proxy::start(vec![backend(&demo, 1)]));
    let (mut ws, _) = timeout(
        PATIENCE,
        tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr)),
    )
    .await
    .unwrap()
    .unwrap();
    use tokio_tungstenite::tungstenite::Message;
    let hello = timeout(PATIENCE, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(hello, Message::Text("hello from v1".into()));
    ws.send(Message::Text("ping".into())).await.unwrap();
    let echo = timeout(PATIENCE, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echo, Message::Text("ping".into()));
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
