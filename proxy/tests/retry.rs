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
use std::sync::Arc;
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

fn start(backends: Vec<Arc<Backend>>) -> (SocketAddr, DataPlane) {
    let registry = prometheus::Registry::new();
    let metrics = ProxyMetrics::new(&registry).unwrap();
    let mut builder = RouteTable::builder();
    builder.app(AppId(0), "web", backends, metrics.app("web"));
    builder.route(HostMatch::Any, "/", AppId(0)).unwrap();
    let handle = TableHandle::new(builder.build());
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = DataPlaneConfig {
        listen: vec![proxy],
        tls_listen: Vec::new(),
        threads: 1,
        settings: ProxySettings::default(),
        grace: Duration::from_secs(1),
    };
    let data_plane = DataPlane::start(config, handle, &metrics).unwrap();
    (proxy, data_plane)
}

#[test]
fn an_idempotent_request_whose_backend_dies_before_answering_goes_to_another_and_a_post_does_not() {
    let seen = Arc::new(AtomicUsize::new(0));
    let (proxy, _data_plane) = start(vec![
        Backend::new(dying_backend(Arc::clone(&seen)), "web-0", 1),
        Backend::new(healthy_backend(), "web-1", 2),
    ]);

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
