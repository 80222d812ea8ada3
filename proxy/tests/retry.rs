//! SPEC §4: "A connection failure to a backend is retried on another ready
//! backend, never surfaced as 502 while one exists."
//!
//! A backend that dies with a request on a fresh connection (SIGKILL of an
//! instance, an OOM kill) closes it before any response byte. An idempotent
//! request whose body is still buffered is replayed on another backend, as
//! nginx's `proxy_next_upstream error` does; a POST is not, since the dead
//! backend may have acted on it. pingora's own rule replays only on a
//! *reused* upstream connection, which a crash on a fresh one does not meet.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use cutover_proxy::{
    AppId, Backend, DataPlane, DataPlaneConfig, HostMatch, ProxyMetrics, ProxySettings, RouteTable, TableHandle,
};

/// Reads one request head from `reader`; false when the peer is gone.
fn read_head(reader: &mut impl BufRead) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line == "\r\n" => return true,
            Ok(_) => {}
        }
    }
}

/// A backend that reads each request and closes its connection without a
/// byte of answer, as a process killed mid-request does; counts them.
fn dying_backend(seen: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            if read_head(&mut reader) {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    addr
}

/// A keep-alive backend answering `ok` to every request, its bodies
/// skipped (the test's POSTs carry `Content-Length: 0`).
fn healthy_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                while read_head(&mut reader) {
                    if writer
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// One request on a fresh client connection; the status line's code.
fn status(proxy: SocketAddr, method: &str) -> u16 {
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!("{method} / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"))
}

struct Edge {
    proxy: SocketAddr,
    handle: Arc<TableHandle>,
    metrics: ProxyMetrics,
    _data_plane: DataPlane,
}

impl Edge {
    fn start(backends: Vec<Arc<Backend>>) -> Edge {
        let registry = prometheus::Registry::new();
        let metrics = ProxyMetrics::new(&registry).unwrap();
        let handle = TableHandle::new(table(backends, &metrics));
        let proxy = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let config = DataPlaneConfig {
            listen: vec![proxy],
            tls_listen: Vec::new(),
            threads: 1,
            settings: ProxySettings::default(),
            grace: Duration::from_secs(1),
        };
        let data_plane = DataPlane::start(config, Arc::clone(&handle), &metrics).unwrap();
        Edge {
            proxy,
            handle,
            metrics,
            _data_plane: data_plane,
        }
    }

    fn publish(&self, backends: Vec<Arc<Backend>>) {
        self.handle.publish(table(backends, &self.metrics));
    }
}

fn table(backends: Vec<Arc<Backend>>, metrics: &ProxyMetrics) -> RouteTable {
    let mut builder = RouteTable::builder();
    builder.app(AppId(0), "web", backends, metrics.app("web"));
    builder.route(HostMatch::Any, "/", AppId(0)).unwrap();
    builder.build()
}

#[test]
fn an_idempotent_request_whose_backend_dies_before_answering_goes_to_another_and_a_post_does_not() {
    let seen = Arc::new(AtomicUsize::new(0));
    let edge = Edge::start(vec![
        Backend::new(dying_backend(Arc::clone(&seen)), "web-0", 1),
        Backend::new(healthy_backend(), "web-1", 2),
    ]);
    let proxy = edge.proxy;

    for _ in 0..20 {
        assert_eq!(status(proxy, "GET"), 200, "a GET the dead backend never answered");
    }
    let gets_on_the_dying_one = seen.load(Ordering::SeqCst);
    assert!(gets_on_the_dying_one > 0, "the dying backend was never picked");

    // A POST may have been acted on before the backend died: never replayed.
    let posts: Vec<u16> = (0..20).map(|_| status(proxy, "POST")).collect();
    let posts_on_the_dying_one = seen.load(Ordering::SeqCst) - gets_on_the_dying_one;
    assert!(posts_on_the_dying_one > 0, "the dying backend got no POST");
    assert_eq!(
        posts.iter().filter(|&&code| code == 502).count(),
        posts_on_the_dying_one,
        "each POST the dying backend took is one 502, sent once: {posts:?}"
    );
    assert!(posts.iter().all(|&code| code == 200 || code == 502), "{posts:?}");
}

/// A backend that, for each request, reports it on `got` and closes the
/// connection without answering once `close` says so.
fn obedient_dying_backend(got: mpsc::Sender<()>, close: mpsc::Receiver<()>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            if read_head(&mut reader) {
                let _ = got.send(());
                let _ = close.recv();
            }
        }
    });
    addr
}

#[test]
fn a_request_cut_by_its_backends_drain_is_not_replayed() {
    // A deploy drains web-0 while a GET runs on it; past drain_timeout the
    // instance is stopped and the request dies with it. That cut is on
    // purpose (counted and logged as cut): replaying it elsewhere would
    // run it again past the budget the operator set.
    let (got_tx, got) = mpsc::channel();
    let (close, close_rx) = mpsc::channel();
    let draining = Backend::new(obedient_dying_backend(got_tx, close_rx), "web-0", 1);
    let edge = Edge::start(vec![Arc::clone(&draining)]);
    let proxy = edge.proxy;
    let request = std::thread::spawn(move || status(proxy, "GET"));
    got.recv_timeout(Duration::from_secs(10))
        .expect("the request reached web-0");
    // A clone joins, web-0 drains, then dies with the request.
    edge.publish(vec![Arc::clone(&draining), Backend::new(healthy_backend(), "web-1", 2)]);
    draining.start_draining();
    close.send(()).unwrap();
    assert_eq!(
        request.join().unwrap(),
        502,
        "the cut request is answered, not replayed on web-1"
    );
}
