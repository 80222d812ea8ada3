//! SPEC §4 invariant: "a pooled upstream connection is never reused across
//! a process restart on the same port". The data plane keys its upstream
//! pool by the backend's generation (`HttpPeer::group_key`), which the
//! control plane bumps for every process start.
//!
//! This drives the data plane directly, with a backend that numbers its
//! connections: first it shows that the pool *does* reuse a connection
//! while the generation stays (so the test can see reuse at all), then
//! that a new generation on the same address gets a fresh connection. It
//! fails if `group_key` is left out of the peer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cutover_proxy::{
    AppId, Backend, DataPlane, DataPlaneConfig, HostMatch, ProxyMetrics, ProxySettings, RouteTable, TableHandle,
};

/// A keep-alive HTTP/1.1 backend answering `conn-N`, N being the number of
/// the connection the request came on.
fn numbering_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let n = next.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || serve(stream, n));
        }
    });
    addr
}

fn serve(stream: TcpStream, n: usize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        // Read one request head (these requests have no body).
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let body = format!("conn-{n}");
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn table(backend: SocketAddr, generation: u64, metrics: &ProxyMetrics) -> RouteTable {
    let mut builder = RouteTable::builder();
    builder.app(
        AppId(0),
        "web",
        vec![Backend::new(backend, "web-0", generation)],
        metrics.app("web"),
    );
    builder.route(HostMatch::Any, "/", AppId(0)).unwrap();
    builder.build()
}

/// One GET on a fresh client connection; the body.
fn get(proxy: SocketAddr) -> String {
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer.rsplit("\r\n\r\n").next().unwrap().to_string()
}

#[test]
fn a_new_generation_on_the_same_address_never_gets_a_pooled_connection() {
    let backend = numbering_backend();
    let registry = prometheus::Registry::new();
    let metrics = ProxyMetrics::new(&registry).unwrap();
    let handle = TableHandle::new(table(backend, 1, &metrics));
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = DataPlaneConfig {
        listen: vec![proxy],
        tls_listen: Vec::new(),
        threads: 1,
        settings: ProxySettings::default(),
        grace: Duration::from_secs(1),
    };
    let _data_plane = DataPlane::start(config, Arc::clone(&handle), &metrics).unwrap();

    // Same generation: the pooled upstream connection is reused.
    assert_eq!(get(proxy), "conn-0");
    assert_eq!(get(proxy), "conn-0", "the pool reuses a connection within a generation");

    // A new process behind the same address (a new generation): a fresh
    // upstream connection, never the pooled one.
    handle.publish(table(backend, 2, &metrics));
    assert_eq!(get(proxy), "conn-1", "a pooled connection crossed a generation");
    assert_eq!(get(proxy), "conn-1");
}
