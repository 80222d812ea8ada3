//! SPEC §3 `error_pages`: the proxy's own 502, 503 and 504 answers use the
//! app's page files for browsers (`Accept: text/html`), a built-in page
//! when the app has none, JSON for `Accept: application/json`, and the
//! plain text of old for everything else; every 503 has `Retry-After`.

mod harness;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cutover_proxy::{Backend, ErrorPages, ProxySettings};
use harness::{request, settings, Behaviour, Edge, Response, TestBackend};

const BROWSER: &str = "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const API: &str = "Accept: application/json";

/// A pages directory with `502.html`, `503.html` and `504.html`.
fn pages_dir(name: &str) -> (PathBuf, Arc<ErrorPages>) {
    let dir = std::env::temp_dir().join(format!("cutover-pages-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for code in [502, 503, 504] {
        std::fs::write(dir.join(format!("{code}.html")), format!("<h1>our {code} page</h1>")).unwrap();
    }
    let pages = Arc::new(ErrorPages::from_dir(&dir).unwrap());
    (dir, pages)
}

/// The same failing request as a browser, an API client and curl, with
/// and without the app's pages; checks every form.
async fn check_every_form(
    edge: &Edge,
    stable: Vec<Arc<Backend>>,
    method: &str,
    code: u16,
    plain_text: &str,
    builtin_title: &str,
    tune: impl Fn(&mut cutover_proxy::RouteTableBuilder),
) {
    let (dir, pages) = pages_dir(&code.to_string());
    let ask = |accept: &'static str| {
        let extra: Vec<&str> = if accept.is_empty() { vec![] } else { vec![accept] };
        let addr: SocketAddr = edge.addr;
        async move { request(addr, method, "/", &extra).await }
    };
    let check_retry_after = |r: &Response| {
        if code == 503 {
            assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
        } else {
            assert_eq!(r.header("retry-after"), None, "{r:?}");
        }
        assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
    };

    edge.publish(stable.clone(), |b| {
        tune(b);
        b.error_pages(harness::APP, Arc::clone(&pages));
    });
    let file = ask(BROWSER).await;
    assert_eq!(
        (file.status, file.body.as_str()),
        (code, format!("<h1>our {code} page</h1>").as_str())
    );
    assert_eq!(file.header("content-type"), Some("text/html; charset=utf-8"));
    check_retry_after(&file);

    let json = ask(API).await;
    assert_eq!(json.status, code);
    assert_eq!(json.header("content-type"), Some("application/json"));
    let value: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(value["status"], code);
    assert_eq!(value["error"], plain_text.trim_end());
    assert!(value.get("message").is_none());
    check_retry_after(&json);

    let plain = ask("").await;
    assert_eq!((plain.status, plain.body.as_str()), (code, plain_text));
    assert_eq!(plain.header("content-type"), Some("text/plain; charset=utf-8"));
    check_retry_after(&plain);

    // No pages of its own: the built-in page.
    edge.publish(stable, |b| tune(b));
    let builtin = ask(BROWSER).await;
    assert_eq!(builtin.status, code);
    assert_eq!(builtin.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(builtin.body.contains(builtin_title), "{}", builtin.body);
    assert!(builtin.body.contains(plain_text.trim_end()), "{}", builtin.body);
    check_retry_after(&builtin);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_in_every_form() {
    // A POST whose backend drops the connection is never replayed: 502.
    let dropping = TestBackend::start("web-0", 1, Behaviour::Drop).await;
    let edge = Edge::start(settings(), vec![]).await;
    check_every_form(
        &edge,
        vec![Arc::clone(&dropping.backend)],
        "POST",
        502,
        "the app failed to answer\n",
        "502 Bad Gateway",
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_in_every_form_with_retry_after() {
    let edge = Edge::start(settings(), vec![]).await;
    check_every_form(
        &edge,
        vec![],
        "GET",
        503,
        "no ready backend: the app did not become ready in time\n",
        "503 Service Unavailable",
        |b| {
            b.hold_timeout(Duration::from_millis(50));
        },
    )
    .await;
}

/// A backend whose accept queue is full: connects to it time out (Linux
/// drops the SYN), as with a hung instance.
async fn unresponsive_backend() -> (Arc<Backend>, socket2::Socket, Vec<tokio::net::TcpStream>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    (Backend::new(addr, "web-0", 1), socket, fillers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_504_in_every_form() {
    let (hung, _socket, _fillers) = unresponsive_backend().await;
    let settings = ProxySettings {
        connect_timeout: Duration::from_millis(200),
        max_attempts: 1,
        ..settings()
    };
    let edge = Edge::start(settings, vec![]).await;
    check_every_form(
        &edge,
        vec![hung],
        "GET",
        504,
        "the app did not answer in time\n",
        "504 Gateway Timeout",
        |_| {},
    )
    .await;
}
