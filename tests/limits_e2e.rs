//! End-to-end: `proxy.limits` (SPEC §4a "Limits") against raw TCP clients
//! on loopback: head deadlines, keep-alive idle timeout, the connection
//! limit, head size, `Host`, pipelining, and a quiet log.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use support::{App, Cutover};

fn start(limits: &str) -> Cutover {
    Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .proxy_yaml(&format!("limits: {{ {limits} }}"))
        .start()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Reads until the server closes (or `limit` passes); returns what arrived
/// and whether the connection was closed.
fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return (got, false),
            Err(_) => return (got, true),
        }
    }
}

/// One parsed response: status and body (Content-Length framed).
struct Parsed {
    status: u16,
    body: String,
}

/// Reads `n` Content-Length framed responses from `s`.
fn read_responses(s: &mut TcpStream, n: usize) -> Vec<Parsed> {
    let mut data = Vec::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    while out.len() < n {
        if let Some((parsed, used)) = parse_response(&data) {
            data.drain(..used);
            out.push(parsed);
            continue;
        }
        let read = s.read(&mut buf).expect("reads a response");
        assert!(read > 0, "closed after {} of {n} responses", out.len());
        data.extend_from_slice(&buf[..read]);
    }
    out
}

fn parse_response(data: &[u8]) -> Option<(Parsed, usize)> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("a length"))
        .expect("a Content-Length framed response");
    let body = data.get(end..end + len)?;
    Some((
        Parsed {
            status,
            body: String::from_utf8_lossy(body).into_owned(),
        },
        end + len,
    ))
}

fn status_of(response: &[u8]) -> String {
    String::from_utf8_lossy(response)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Sends `head` one byte every `gap` until the server closes or `limit`
/// passes; returns what the server sent and whether it closed.
fn trickle(addr: SocketAddr, head: &[u8], gap: Duration, limit: Duration) -> (Vec<u8>, bool) {
    let mut s = connect(addr);
    s.set_nonblocking(false).unwrap();
    let deadline = Instant::now() + limit;
    for byte in head.iter().cycle() {
        if Instant::now() >= deadline || s.write_all(&[*byte]).is_err() {
            break;
        }
        s.set_read_timeout(Some(gap)).unwrap();
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => return (Vec::new(), true),
            Ok(n) => {
                let (mut rest, closed) = read_to_close(&mut s, Duration::from_secs(5));
                let mut got = buf[..n].to_vec();
                got.append(&mut rest);
                return (got, closed);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (Vec::new(), true),
        }
    }
    read_to_close(&mut s, Duration::from_secs(5))
}

const SLOW_HEAD: &[u8] =
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[test]
fn a_client_trickling_its_head_is_cut_at_header_timeout_with_408_while_others_are_served() {
    let cutover = start("header_timeout: 1s");
    let addr = cutover.proxy;
    let trickler = thread::spawn(move || {
        let started = Instant::now();
        let (got, closed) = trickle(addr, SLOW_HEAD, Duration::from_millis(300), Duration::from_secs(20));
        (got, closed, started.elapsed())
    });
    // Meanwhile, a normal client is served.
    for _ in 0..5 {
        assert_eq!(cutover.get("a", "/").status, 200);
        thread::sleep(Duration::from_millis(100));
    }
    let (got, closed, took) = trickler.join().unwrap();
    assert!(closed, "the trickling client kept its connection for {took:?}");
    assert!(
        status_of(&got).starts_with("HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // One byte every 300 ms never ends a head: only a deadline can end it.
    assert!(took < Duration::from_secs(15), "cut only after {took:?}");
}

#[test]
fn a_silent_client_is_closed_at_header_timeout_without_an_answer() {
    let cutover = start("header_timeout: 1s");
    let mut s = connect(cutover.proxy);
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(10));
    assert!(closed, "a silent connection stayed open");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
}

#[test]
fn an_idle_keepalive_connection_is_closed_after_keepalive_timeout() {
    let cutover = start("header_timeout: 5s, keepalive_timeout: 1s");
    let mut s = connect(cutover.proxy);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let responses = read_responses(&mut s, 1);
    assert_eq!(responses[0].status, 200);
    let started = Instant::now();
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(10));
    assert!(closed, "an idle keep-alive connection stayed open");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before keepalive_timeout"
    );
}

#[test]
fn a_keepalive_connection_is_kept_while_it_is_used() {
    let cutover = start("header_timeout: 1s, keepalive_timeout: 1s");
    let mut s = connect(cutover.proxy);
    // Requests spaced under the keep-alive timeout keep the connection,
    // even when together they last longer than both timeouts.
    for _ in 0..5 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(read_responses(&mut s, 1)[0].status, 200);
        thread::sleep(Duration::from_millis(400));
    }
}

#[test]
fn connections_beyond_max_connections_are_closed_at_once_and_admitted_again_after_others_close() {
    let cutover = start("max_connections: 20");
    let mut held: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(cutover.proxy);
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
            assert_eq!(read_responses(&mut s, 1)[0].status, 200);
            s
        })
        .collect();

    let mut extra = connect(cutover.proxy);
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let (got, closed) = read_to_close(&mut extra, Duration::from_secs(5));
    assert!(closed, "the 21st connection was held");
    assert!(
        got.is_empty(),
        "the 21st connection was served: {:?}",
        String::from_utf8_lossy(&got)
    );
    let m = cutover.metrics();
    let refused = support::prom::value(&m, "cutover_connections_refused_total", &[]);
    assert!(refused.is_some_and(|n| n >= 1.0), "refusal not counted: {refused:?}");
    let open = support::prom::value(&m, "cutover_client_connections", &[]);
    assert_eq!(open, Some(20.0), "the 20 held connections are counted as open");

    held.truncate(10);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect(cutover.proxy);
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let (got, _) = read_to_close(&mut s, Duration::from_millis(500));
        if status_of(&got).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no connection admitted after others closed");
    }
}

#[test]
fn a_head_over_64_kib_gets_431() {
    let cutover = start("header_timeout: 5s");
    let mut s = connect(cutover.proxy);
    let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..72 {
        head.extend_from_slice(format!("X-Filler-{i:02}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    assert!(head.len() > 70 * 1024);
    s.write_all(&head).unwrap();
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(10));
    assert!(status_of(&got).starts_with("HTTP/1.1 431"), "{:?}", status_of(&got));
    assert!(closed);

    // A large head under the limit is still served.
    let mut s = connect(cutover.proxy);
    let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    head.extend_from_slice(format!("X-Filler: {}\r\n\r\n", "a".repeat(30 * 1024)).as_bytes());
    s.write_all(&head).unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].status, 200);
}

#[test]
fn an_http11_request_without_host_gets_400() {
    let cutover = start("header_timeout: 5s");
    let mut s = connect(cutover.proxy);
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(10));
    assert!(
        status_of(&got).starts_with("HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(closed);

    let mut s = connect(cutover.proxy);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").unwrap();
    let (got, _) = read_to_close(&mut s, Duration::from_secs(10));
    assert!(
        status_of(&got).starts_with("HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let cutover = start("header_timeout: 5s");
    for n in [2, 3] {
        let mut s = connect(cutover.proxy);
        let mut batch = Vec::new();
        for i in 0..n {
            // The first is the slowest: answers must still come in order.
            let path = if i == 0 { "/slow?ms=100" } else { "/headers" };
            batch.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: a\r\nX-Seq: {i}\r\n\r\n").as_bytes());
        }
        s.write_all(&batch).unwrap();
        let responses = read_responses(&mut s, n);
        assert!(responses.iter().all(|r| r.status == 200));
        assert!(responses[0].body.contains("slept 100ms"), "{}", responses[0].body);
        for (i, r) in responses.iter().enumerate().skip(1) {
            assert!(
                r.body.to_ascii_lowercase().contains(&format!("x-seq: {i}")),
                "{i}: {}",
                r.body
            );
        }
    }
}

/// Between requests a connection waits outside pingora, except when pingora
/// may hold bytes of the next request already. Every way a request can end
/// (no body, a sized body, a chunked one, a request pipelined behind a
/// body) is followed by another on the same connection, after a pause
/// (the wait outside pingora) or at once (pipelined).
#[test]
fn requests_with_and_without_bodies_pipelined_or_after_a_pause_share_one_connection() {
    let cutover = start("header_timeout: 5s");
    let mut s = connect(cutover.proxy);
    let get = b"GET /headers HTTP/1.1\r\nHost: a\r\n\r\n".as_slice();
    let sized = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".as_slice();
    let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".as_slice();
    let steps: [(&[&[u8]], &str); 6] = [
        (&[get], "x-forwarded-for"),
        (&[sized], "received 5 bytes"),
        (&[get], "x-forwarded-for"),
        (&[chunked], "received 5 bytes"),
        (&[sized, get], "x-forwarded-for"),
        (&[get], "x-forwarded-for"),
    ];
    for (i, (requests, last_body)) in steps.iter().enumerate() {
        s.write_all(&requests.concat()).unwrap();
        let responses = read_responses(&mut s, requests.len());
        assert!(responses.iter().all(|r| r.status == 200), "step {i}");
        let body = &responses.last().unwrap().body;
        assert!(body.to_ascii_lowercase().contains(last_body), "step {i}: {body}");
        thread::sleep(Duration::from_millis(50));
    }
    // Still the same connection, and still open.
    s.write_all(get).unwrap();
    assert_eq!(read_responses(&mut s, 1)[0].status, 200);
}

/// A pipelined batch larger than the loop's first read (4 KiB), split at
/// every place around the end of the second head: pingora keeps the part
/// it read ahead, and the loop must not wait for bytes pingora holds.
#[test]
fn a_pipelined_batch_split_anywhere_around_a_heads_end_is_answered_in_full() {
    let cutover = start("header_timeout: 5s");
    let request = |seq: usize, pad: usize| {
        format!(
            "GET /headers HTTP/1.1\r\nHost: a\r\nX-Seq: {seq}\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(pad)
        )
        .into_bytes()
    };
    let second = request(1, 0);
    let third = request(2, 0);
    for back in 0..=4 {
        // The first read ends `back` bytes before the second head's end.
        let first_len = 4096 + back - second.len();
        let first = request(0, first_len - request(0, 0).len());
        assert_eq!(first.len(), first_len);
        let mut s = connect(cutover.proxy);
        s.write_all(&[first, second.clone(), third.clone()].concat()).unwrap();
        let responses = read_responses(&mut s, 3);
        for (i, r) in responses.iter().enumerate() {
            assert_eq!(r.status, 200, "split {back} before the end, answer {i}");
            assert!(
                r.body.to_ascii_lowercase().contains(&format!("x-seq: {i}")),
                "{i}: {}",
                r.body
            );
        }
        // And the connection goes on.
        s.write_all(&request(3, 0)).unwrap();
        assert_eq!(read_responses(&mut s, 1)[0].status, 200, "split {back}");
    }
}

#[test]
fn slowloris_connections_are_cut_and_do_not_stop_other_clients() {
    let cutover = start("header_timeout: 2s");
    let addr = cutover.proxy;
    let started = Instant::now();
    let slow: Vec<_> = (0..300)
        .map(|_| {
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || trickle(addr, SLOW_HEAD, Duration::from_millis(500), Duration::from_secs(30)))
                .unwrap()
        })
        .collect();
    for _ in 0..20 {
        assert_eq!(cutover.get("a", "/").status, 200);
    }
    for t in slow {
        let (got, closed) = t.join().unwrap();
        assert!(closed, "a slowloris connection was held");
        assert!(status_of(&got).starts_with("HTTP/1.1 408"), "{:?}", status_of(&got));
    }
    assert!(
        started.elapsed() < Duration::from_secs(28),
        "slowloris held for {:?}",
        started.elapsed()
    );
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn thousands_of_idle_connections_do_not_exhaust_descriptors() {
    let cutover = start("header_timeout: 1s, max_connections: 200");
    let baseline = open_fds(cutover.pid());
    let idle: Vec<TcpStream> = (0..2000)
        .filter_map(|_| TcpStream::connect(cutover.proxy).ok())
        .collect();
    assert!(idle.len() > 1000, "could only open {} connections", idle.len());
    thread::sleep(Duration::from_millis(300));
    let held = open_fds(cutover.pid());
    assert!(
        held <= baseline + 200 + 20,
        "cutover holds {held} descriptors (baseline {baseline})"
    );
    // They are closed after header_timeout; then new clients are served.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cutover.client().get("a", "/").map(|r| r.status).ok() != Some(200) {
        assert!(
            Instant::now() < deadline,
            "no client served while idle connections are open"
        );
        thread::sleep(Duration::from_millis(100));
    }
    drop(idle);
}

#[test]
fn clients_closing_idle_connections_leave_no_error_in_the_log() {
    let cutover = start("header_timeout: 1s, keepalive_timeout: 1s");
    let addr = cutover.proxy;
    // Idle, then closed by the client: before and after a request.
    drop(connect(addr));
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    read_responses(&mut s, 1);
    thread::sleep(Duration::from_millis(200));
    drop(s);
    // Idle, then closed by cutover: silent, keep-alive, a trickled head.
    let _ = read_to_close(&mut connect(addr), Duration::from_secs(5));
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    read_responses(&mut s, 1);
    let _ = read_to_close(&mut s, Duration::from_secs(5));
    let (got, _) = trickle(addr, SLOW_HEAD, Duration::from_millis(300), Duration::from_secs(10));
    assert!(status_of(&got).starts_with("HTTP/1.1 408"));
    // Refused requests: no Host.
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let _ = read_to_close(&mut s, Duration::from_secs(5));

    thread::sleep(Duration::from_millis(300));
    let log = cutover.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR"))
        // pingora's upstream pool race (pingora_core::connectors), not a
        // client: see the report for issue 9.
        .filter(|l| !l.contains("failed to acquire reusable stream"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
