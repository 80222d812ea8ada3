//! The harness of the progressive-delivery tests (`split.rs`,
//! `switches.rs`, `error_pages.rs`): a data plane with one app `web`
//! routed for every host and path, small real backends that say who they
//! are and echo the cookies they got, and a plain HTTP/1.1 client.

#![allow(dead_code)] // each test file uses part of the harness

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cutover_proxy::{
    AppId, Backend, DataPlane, DataPlaneConfig, HostMatch, ProxyMetrics, ProxySettings, RouteTable, RouteTableBuilder,
    TableHandle,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// The app every test routes to.
pub const APP: AppId = AppId(0);

// === the data plane ===

/// A running data plane with one plain listener (HTTP/1.1 and h2c).
pub struct Edge {
    pub addr: SocketAddr,
    pub table: Arc<TableHandle>,
    pub metrics: ProxyMetrics,
    pub registry: prometheus::Registry,
    _data_plane: DataPlane,
}

/// The tests' settings: h2c on the plain listener, short connect timeout.
pub fn settings() -> ProxySettings {
    ProxySettings {
        h2c: true,
        connect_timeout: Duration::from_millis(500),
        ..ProxySettings::default()
    }
}

impl Edge {
    /// Starts a data plane whose table has `web` on `stable`. Call from a
    /// multi-threaded runtime (it blocks while pingora starts).
    pub async fn start(settings: ProxySettings, stable: Vec<Arc<Backend>>) -> Edge {
        let registry = prometheus::Registry::new();
        let metrics = ProxyMetrics::new(&registry).unwrap();
        let table = TableHandle::new(RouteTable::default());
        let addr = free_addr();
        let config = DataPlaneConfig {
            listen: vec![addr],
            tls_listen: Vec::new(),
            threads: 2,
            settings,
            grace: Duration::from_secs(1),
        };
        let data_plane =
            tokio::task::block_in_place(|| DataPlane::start(config, Arc::clone(&table), &metrics)).unwrap();
        let edge = Edge {
            addr,
            table,
            metrics,
            registry,
            _data_plane: data_plane,
        };
        edge.publish(stable, |_| {});
        edge
    }

    /// Publishes a table with `web` on `stable` for every host and path,
    /// then whatever `more` adds (a split, a mode, pages).
    pub fn publish(&self, stable: Vec<Arc<Backend>>, more: impl FnOnce(&mut RouteTableBuilder)) {
        let mut builder = RouteTable::builder();
        builder.app(APP, "web", stable, self.metrics.app("web"));
        builder.route(HostMatch::Any, "/", APP).unwrap();
        more(&mut builder);
        self.table.publish(builder.build());
    }

    /// The value of one series (`name{labels}`), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// Waits until `series` reaches `value`.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        wait_until(&format!("{series} = {value}"), || self.metric(series) == value).await;
    }

    /// One request (`Connection: close`) with `extra` header lines.
    pub async fn get(&self, path: &str, extra: &[&str]) -> Response {
        request(self.addr, "GET", path, extra).await
    }
}

/// Polls `ready` until it holds; fails the test after [`WAIT`].
pub async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ready() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A free loopback port (pingora's `:0` listeners have fd-table key
/// collisions, PR #990: pick one first).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

// === backends ===

/// What a backend does with each request.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// 200; the body names the backend and the `Cookie` headers it got
    /// (`cookie: a=1 | b=2`, `cookie: -` for none).
    Echo,
    /// Answers with this status (body as `Echo`).
    Status(u16),
    /// Waits this long, then answers as `Echo`.
    Slow(Duration),
    /// Reads the request head and closes without a byte of answer.
    Drop,
}

/// A running test backend and how many request heads it read.
pub struct TestBackend {
    pub backend: Arc<Backend>,
    pub requests: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
}

impl TestBackend {
    /// Starts a backend named `name` with `generation`.
    pub async fn start(name: &str, generation: u64, behaviour: Behaviour) -> TestBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen, conns, who) = (Arc::clone(&requests), Arc::clone(&connections), name.to_owned());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, who.clone(), behaviour, Arc::clone(&seen)));
            }
        });
        TestBackend {
            backend: Backend::new(addr, name, generation),
            requests,
            connections,
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A backend address where nothing listens (connections are refused).
pub fn dead_backend(name: &str, generation: u64) -> Arc<Backend> {
    Backend::new(free_addr(), name, generation)
}

async fn serve(mut stream: TcpStream, name: String, behaviour: Behaviour, seen: Arc<AtomicUsize>) {
    while let Some(head) = read_head(&mut stream).await {
        seen.fetch_add(1, Ordering::SeqCst);
        let cookies: Vec<&str> = head
            .lines()
            .filter_map(|l| {
                let (field, value) = l.split_once(':')?;
                field.eq_ignore_ascii_case("cookie").then(|| value.trim())
            })
            .collect();
        let cookies = if cookies.is_empty() {
            "-".to_owned()
        } else {
            cookies.join(" | ")
        };
        let body = format!("{name}\ncookie: {cookies}\n");
        let status = match behaviour {
            Behaviour::Echo => 200,
            Behaviour::Status(status) => status,
            Behaviour::Slow(delay) => {
                tokio::time::sleep(delay).await;
                200
            }
            Behaviour::Drop => return,
        };
        // The backend's own cookie must survive the proxy's Set-Cookie.
        let answer = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nSet-Cookie: app=1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one request head (these requests have no body); `None` at EOF.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

// === the client ===

/// A response as the client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The backend that answered (the body's first line).
    pub fn backend(&self) -> &str {
        self.body.lines().next().unwrap_or("")
    }

    /// The `Cookie` headers the backend got (`-` for none).
    pub fn cookies_seen(&self) -> &str {
        self.body.lines().find_map(|l| l.strip_prefix("cookie: ")).unwrap_or("")
    }

    /// The `cutover-web` cookie's `Set-Cookie`, if any.
    pub fn sticky_cookie(&self) -> Option<&str> {
        self.all("set-cookie")
            .into_iter()
            .find(|c| c.starts_with("cutover-web="))
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), read to
/// the end.
pub async fn request(addr: SocketAddr, method: &str, path: &str, extra: &[&str]) -> Response {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n");
        for line in extra {
            head.push_str(line);
            head.push_str("\r\n");
        }
        if method == "POST" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw).await;
        parse(&raw)
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} {path} in time"))
}

fn parse(raw: &[u8]) -> Response {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut slots);
    let len = match response.parse(raw) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!(
            "no complete response head ({other:?}): {:?}",
            String::from_utf8_lossy(raw)
        ),
    };
    Response {
        status: response.code.unwrap_or(0),
        headers: response
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
            .collect(),
        body: String::from_utf8_lossy(&raw[len..]).into_owned(),
    }
}
