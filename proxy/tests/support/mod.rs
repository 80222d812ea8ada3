//! The harness of the TLS and HTTP/2 tests: a data plane started in the
//! test with TLS and plain listeners, certificates made with rcgen at test
//! time (a test CA and leaves signed by it), small real backends, and TLS
//! clients (tokio-rustls) that check the chain against the test CA.

#![allow(dead_code)] // each test file uses part of the harness

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use cutover_proxy::tls::{CertEntry, CertSource};
use cutover_proxy::{
    AppId, Backend, DataPlane, DataPlaneConfig, HostMatch, LongLivedSettings, ProxyMetrics, ProxySettings, RouteTable,
    TableHandle,
};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

// === certificates ===

/// A test certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A leaf certificate and its key, as the store and the client see it.
#[derive(Clone)]
pub struct Leaf {
    pub der: CertificateDer<'static>,
    pub key: Arc<CertifiedKey>,
}

impl Ca {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cutover test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A leaf for `hosts`, signed by this CA.
    pub fn issue(&self, hosts: &[&str]) -> Leaf {
        let params = rcgen::CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        leaf(cert.der().clone(), &key)
    }

    /// The CA certificate in PEM (for curl's `--cacert`).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }
}

fn leaf(der: CertificateDer<'static>, key: &rcgen::KeyPair) -> Leaf {
    let private = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let signer = rustls::crypto::ring::sign::any_supported_type(&private).unwrap();
    Leaf {
        der: der.clone(),
        key: Arc::new(CertifiedKey::new(vec![der], signer)),
    }
}

/// A self-signed RFC 8737 challenge certificate for `host`.
pub fn acme_challenge_cert(host: &str) -> Leaf {
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(&[7u8; 32]));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    leaf(cert.der().clone(), &key)
}

pub fn entry(hosts: &[&str], leaf: &Leaf) -> CertEntry {
    CertEntry {
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        key: Arc::clone(&leaf.key),
        source: CertSource::File,
    }
}

// === the data plane ===

/// A free loopback port (pingora's `:0` listeners have fd-table key
/// collisions, PR #990: pick one first).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The backends every edge routes to.
pub struct Backends {
    /// Echoes each request head back as the body (`/`, hosts `a.test`,
    /// `*.wild.test`, `plain.test`).
    pub echo: Arc<Backend>,
    /// WebSocket echo (`/ws`).
    pub ws: Arc<Backend>,
    /// An event stream, one event every 50 ms, the first naming the Host
    /// and X-Forwarded-Proto it was asked with (`/events`).
    pub sse: Arc<Backend>,
}

/// A running data plane with one plain and one TLS listener.
pub struct Edge {
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub data_plane: DataPlane,
    pub registry: prometheus::Registry,
    pub backends: Backends,
    pub settings: ProxySettings,
    pub table: Arc<TableHandle>,
    pub proxy_metrics: ProxyMetrics,
}

/// Settings for the tests: short long-lived spread, the given certificates.
pub fn settings(certs: &[CertEntry]) -> ProxySettings {
    let settings = ProxySettings {
        long_lived: LongLivedSettings {
            spread: Duration::from_millis(100),
            close_grace: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(60),
        },
        ..ProxySettings::default()
    };
    settings.certs.replace(certs);
    settings
}

impl Edge {
    /// Starts the backends and a data plane with `settings`. Call from a
    /// multi-threaded runtime (it blocks while pingora starts).
    pub async fn start(settings: ProxySettings) -> Edge {
        let registry = prometheus::Registry::new();
        let metrics = ProxyMetrics::new(&registry).unwrap();
        let backends = Backends {
            echo: Backend::new(spawn_backend(echo_backend).await, "echo-0", 1),
            ws: Backend::new(spawn_backend(ws_backend).await, "ws-0", 2),
            sse: Backend::new(spawn_backend(sse_backend).await, "sse-0", 3),
        };
        let mut builder = RouteTable::builder();
        builder.app(AppId(0), "echo", vec![Arc::clone(&backends.echo)], metrics.app("echo"));
        builder.app(AppId(1), "ws", vec![Arc::clone(&backends.ws)], metrics.app("ws"));
        builder.app(AppId(2), "sse", vec![Arc::clone(&backends.sse)], metrics.app("sse"));
        // A host is matched before a path: each host gets every route.
        for host in [
            HostMatch::Exact("a.test".into()),
            HostMatch::Wildcard("wild.test".into()),
            HostMatch::Exact("plain.test".into()),
        ] {
            builder.route(host.clone(), "/", AppId(0)).unwrap();
            builder.route(host.clone(), "/ws", AppId(1)).unwrap();
            builder.route(host, "/events", AppId(2)).unwrap();
        }
        let table = TableHandle::new(builder.build());
        let (plain, tls) = (free_addr(), free_addr());
        let config = DataPlaneConfig {
            listen: vec![plain],
            tls_listen: vec![tls],
            threads: 2,
            settings: settings.clone(),
            grace: Duration::from_secs(1),
        };
        let data_plane =
            tokio::task::block_in_place(|| DataPlane::start(config, Arc::clone(&table), &metrics)).unwrap();
        data_plane.register_metrics(&registry).unwrap();
        Edge {
            plain,
            tls,
            data_plane,
            registry,
            backends,
            settings,
            table,
            proxy_metrics: metrics,
        }
    }

    /// Publishes a table where `a.test/` goes to `echo` backends.
    pub fn publish_echo(&self, backends: Vec<Arc<Backend>>) {
        let mut builder = RouteTable::builder();
        builder.app(AppId(0), "echo", backends, self.proxy_metrics.app("echo"));
        builder.route(HostMatch::Exact("a.test".into()), "/", AppId(0)).unwrap();
        self.table.publish(builder.build());
    }

    /// The Prometheus text of this edge's registry.
    pub fn metrics(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap()
    }

    /// The value of one series (`name{labels}`), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// Waits until `series` reaches `value`.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.metric(series) != value {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} stayed at {}, expected {value}:\n{}",
                self.metric(series),
                self.metrics()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// === backends ===

async fn spawn_backend<F, Fut>(serve: F) -> SocketAddr
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

/// Keep-alive HTTP/1.1; the body is the request head it got.
async fn echo_backend(mut stream: TcpStream) {
    while let Some(head) = read_head(&mut stream).await {
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{head}",
            head.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn ws_backend(stream: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if message.is_close() {
            return;
        }
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}

/// An endless event stream (until the proxy closes it): the first event is
/// `host=<Host header>`, then `tick` every 50 ms.
async fn sse_backend(mut stream: TcpStream) {
    let Some(head) = read_head(&mut stream).await else {
        return;
    };
    let host = head
        .lines()
        .find_map(|l| l.strip_prefix("host: ").or_else(|| l.strip_prefix("Host: ")))
        .unwrap_or("none")
        .to_owned();
    let hosts = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
        .count();
    let proto = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-forwarded-proto: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let start = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n\
         data: host={host} hosts={hosts} proto={proto} request-line={}\n\n",
        head.lines().next().unwrap_or("")
    );
    if stream.write_all(start.as_bytes()).await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if stream.write_all(b"data: tick\n\n").await.is_err() {
            return;
        }
    }
}

// === clients ===

/// A TLS client config trusting `ca`, offering `alpn`, limited to
/// `versions`.
pub fn client_config(
    ca: &Ca,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Full handshakes only: a resumed session reports the certificate of
    // the session it resumes, and these tests check what is presented now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The default client: TLS 1.2 and 1.3, the given ALPN.
pub fn client(ca: &Ca, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    client_config(ca, alpn, rustls::ALL_VERSIONS)
}

/// Connects to `addr` over TLS asking for `sni` (`None`: no SNI at all,
/// which rustls does for an IP address name).
pub async fn connect_tls(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    sni: Option<&str>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = match sni {
        Some(sni) => ServerName::try_from(sni.to_owned()).unwrap(),
        None => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake did not finish"))?
}

/// The certificate the server presented.
pub fn peer_cert(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

/// One HTTP/1.1 response: head and body (`Content-Length` framed).
pub struct Response {
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.split(' ').nth(1).unwrap().parse().unwrap()
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `GET path` with `host` (and `extra` header lines) on a keep-alive
/// connection and reads the response.
pub async fn get<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, host: &str, path: &str, extra: &str) -> Response {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let read = async {
        let head = read_head(stream).await.expect("a response head");
        let response = Response {
            head,
            body: String::new(),
        };
        let length: usize = response.header("content-length").map_or(0, |l| l.parse().unwrap());
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.unwrap();
        Response {
            body: String::from_utf8(body).unwrap(),
            ..response
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("a response in time")
}

/// Waits until the peer closes `stream` (EOF or an error); the bytes read.
pub async fn until_closed<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the connection closed in time");
    all
}

/// An HTTP/2 client connection over `io`; the connection task runs in the
/// background and its end is reported on the returned receiver.
pub async fn h2_client<T>(
    io: T,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::sync::oneshot::Receiver<Result<(), h2::Error>>,
)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::handshake(io).await.expect("h2 handshake");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = done_tx.send(connection.await);
    });
    (send, done_rx)
}

/// One HTTP/2 GET; status, headers and the whole body.
pub async fn h2_get(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    uri: &str,
) -> (http::StatusCode, http::HeaderMap, String) {
    let request = http::Request::get(uri).body(()).unwrap();
    let exchange = async {
        let mut send = send.clone().ready().await.expect("h2 ready");
        let (response, _) = send.send_request(request, true).expect("h2 request");
        let response = response.await.expect("h2 response");
        let (parts, mut body) = response.into_parts();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("h2 body");
            let _ = body.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        (parts.status, parts.headers, String::from_utf8(text).unwrap())
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("an h2 answer in time")
}
