//! The TLS listener through the real binary with real clients (SPEC §4,
//! §8): curl over HTTP/1.1 and HTTP/2 with the certificate as its only
//! trust root, `redirect_http` and `hsts`, and the drain notices over TLS
//! during a rolling deploy: `wss://` gets 1012, an event stream over
//! HTTP/2 gets `retry:` and a clean end.

mod support;
#[path = "support/certs.rs"]
mod tls_files;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use support::{free_port, App, Cutover, TempDir};
use tls_files::CertFiles;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// cutover with a TLS listener serving a certificate for `localhost`.
struct Tls {
    cutover: Cutover,
    cert: CertFiles,
    port: u16,
    _files: TempDir,
}

fn start(extra_tls: &str, app: App) -> Tls {
    let files = TempDir::new("tls-e2e");
    let cert = CertFiles::write(files.path(), "localhost", &["localhost"], 2000, 2100);
    let port = free_port();
    let cutover = Cutover::builder()
        .app(app)
        .route("*", "/", "web")
        .proxy_yaml(&format!(
            "tls: {{ listen: [\"127.0.0.1:{port}\"], certificates: [{}]{extra_tls} }}",
            cert.yaml(&["localhost"])
        ))
        .proxy_yaml("long_lived: { spread: 300ms, close_grace: 1s, idle_timeout: 1h }")
        .start();
    Tls {
        cutover,
        cert,
        port,
        _files: files,
    }
}

/// curl with the certificate as its only root, `localhost` resolved to
/// 127.0.0.1; (exit code, stdout).
fn curl(tls: &Tls, args: &[&str]) -> (i32, String) {
    let resolve = format!("localhost:{}:127.0.0.1", tls.port);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&tls.cert.cert)
        .args(["--resolve", &resolve])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Pushes the app as v2 with the rolling strategy, in the background.
fn push_v2_rolling(cutover: &Cutover) -> std::thread::JoinHandle<std::process::Output> {
    let v2 = cutover.config_with_version("v1", "v2");
    let dir = cutover.dir.path().to_path_buf();
    let admin = cutover.admin;
    std::thread::spawn(move || {
        std::fs::write(dir.join("push.yaml"), v2).unwrap();
        Command::new(support::cutover_bin())
            .args(["push", "push.yaml", "--deploy-strategy", "rolling"])
            .args(["--admin", &format!("http://{admin}")])
            .current_dir(&dir)
            .output()
            .unwrap()
    })
}

#[test]
fn curl_gets_http_1_1_and_http_2_over_tls_with_hsts_and_plain_redirects() {
    let tls = start(", redirect_http: true, hsts: 1d", App::demo("web", "v1"));
    let url = format!("https://localhost:{}/", tls.port);

    let (code, out) = curl(&tls, &["--http2", "-i", "-w", "\nversion=%{http_version}", &url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("version=2"), "ALPN h2: {out}");
    assert!(out.contains("v1"), "served by the app: {out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=86400"),
        "{out}"
    );

    let (code, out) = curl(&tls, &["--http1.1", "-w", "\nversion=%{http_version}", &url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("version=1.1"), "{out}");

    // A plain request for a host with a certificate: 308 to https, no HSTS.
    let plain = format!("http://localhost:{}/some/path?q=1", tls.cutover.proxy.port());
    let resolve = format!("localhost:{}:127.0.0.1", tls.cutover.proxy.port());
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--resolve", &resolve, &plain])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 308"), "{head}");
    let location = format!("location: https://localhost:{}/some/path?q=1", tls.port);
    assert!(head.contains(&location), "{head}");
    assert!(!head.contains("strict-transport-security"), "{head}");
    // A host without a certificate is served on the plain listener as is.
    let body = tls.cutover.get("other.test", "/");
    assert_eq!(body.status, 200);

    // An unknown name gets a TLS alert, not the localhost certificate.
    let unknown = tls_files::TlsClient::connect(SocketAddr::from(([127, 0, 0, 1], tls.port)), "unknown.test");
    assert!(unknown.is_err(), "an unknown SNI must fail the handshake");
}

/// A TLS connection trusting only `cert`, for `localhost`.
async fn tls_connect(port: u16, cert: &CertFiles) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(tls_files::der_of(&cert.cert)))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.expect("TLS handshake")
}

type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn wss(tls: &Tls) -> Wss {
    let stream = tls_connect(tls.port, &tls.cert).await;
    let request = format!("wss://localhost:{}/ws", tls.port)
        .into_client_request()
        .unwrap();
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("a WebSocket over TLS");
    assert_eq!(response.status(), 101);
    ws
}

async fn next_tick(ws: &mut Wss) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a tick in time")
        {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a tick, got {other:?}"),
        }
    }
}

async fn close_code(ws: &mut Wss) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map_or(1005, |f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_clients_get_1012_when_their_backend_drains_during_a_rolling_deploy() {
    let tls = start(
        "",
        App::demo("web", "v1")
            .env("DEMO_TICK_MS", "100")
            .yaml("drain_timeout: 10s"),
    );
    let mut ws = wss(&tls).await;
    assert!(next_tick(&mut ws).await.starts_with("tick v1 web-0"));

    let deploy = push_v2_rolling(&tls.cutover);
    assert_eq!(close_code(&mut ws).await, 1012, "route phase: the original drains");
    let mut ws = wss(&tls).await;
    let tick = next_tick(&mut ws).await;
    assert!(tick.starts_with("tick v1 web-clone-0"), "{tick}");
    assert_eq!(close_code(&mut ws).await, 1012, "switch phase: the clone drains");
    let mut ws = wss(&tls).await;
    let tick = next_tick(&mut ws).await;
    assert!(tick.starts_with("tick v2 web-0"), "{tick}");

    let out = tokio::task::spawn_blocking(move || deploy.join().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn an_event_stream_over_http_2_gets_retry_and_a_clean_end_when_its_backend_drains() {
    let tls = start(
        "",
        App::demo("web", "v1")
            .env("DEMO_SSE_MS", "100")
            .yaml("drain_timeout: 10s"),
    );
    let url = format!("https://localhost:{}/events", tls.port);
    let resolve = format!("localhost:{}:127.0.0.1", tls.port);
    let stream = Command::new("curl")
        .args(["-sS", "-N", "--http2", "--max-time", "30", "--cacert"])
        .arg(&tls.cert.cert)
        .args(["--resolve", &resolve, "-w", "\nversion=%{http_version}", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the stream to be counted before deploying.
    tls.cutover
        .wait_until(Duration::from_secs(10), "the event stream is open", |c| {
            c.admin_get("/metrics")
                .text()
                .lines()
                .any(|l| l.starts_with("cutover_long_lived_connections{") && l.contains("sse") && !l.ends_with(" 0"))
        });
    let deploy = push_v2_rolling(&tls.cutover);
    let out = stream.wait_with_output().unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a clean end, not a reset: {body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.contains("data: v1 web-0"), "{body}");
    assert!(body.contains("\nretry: "), "the reconnect hint: {body}");
    assert!(body.ends_with("version=2"), "{body}");
    let out = deploy.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
