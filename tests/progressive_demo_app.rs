//! The demo app's knobs for the progressive-delivery tests (SPEC §4b):
//! `DEMO_ERROR_RATE` fails an exact, evenly spread share of `/` with 500s
//! that still name the version, `DEMO_LATENCY_MS` delays `/`, and both are
//! validated like the other knobs (exit 2 naming the variable).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{demo_app, free_port, http};

/// A demo app on a free port with `env`, killed on drop.
struct Demo {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Demo {
    fn start(env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = Command::new(demo_app())
            .env_clear()
            .env("PORT", port.to_string())
            .env("APP_VERSION", "v7")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("demo-app starts");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "demo-app did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, addr }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn error_rate_fails_an_exact_evenly_spread_share_of_root_requests_naming_the_version() {
    let demo = Demo::start(&[("DEMO_ERROR_RATE", "0.2")]);
    let mut client = http::Client::connect(demo.addr).unwrap();
    let mut failed = Vec::new();
    for n in 1..=50 {
        let (method, body) = if n % 2 == 0 {
            ("POST", &b"abc"[..])
        } else {
            ("GET", &b""[..])
        };
        let resp = client.request(method, "t", "/", body).unwrap();
        assert_eq!(resp.header("x-app-version"), Some("v7"));
        assert!(resp.text().starts_with("v7 "), "{}", resp.text());
        match resp.status {
            200 => {}
            500 => failed.push(n),
            other => panic!("request {n}: {other}"),
        }
    }
    assert_eq!(
        failed,
        [5, 10, 15, 20, 25, 30, 35, 40, 45, 50],
        "every 5th of GET and POST /"
    );
    // Other paths never fail.
    for _ in 0..20 {
        assert_eq!(client.get("t", "/headers").unwrap().status, 200);
        assert_eq!(client.get("t", "/health").unwrap().status, 200);
    }
    let demo = Demo::start(&[("DEMO_ERROR_RATE", "1")]);
    assert_eq!(http::get(demo.addr, "t", "/").unwrap().status, 500);
    let demo = Demo::start(&[("DEMO_ERROR_RATE", "0")]);
    let mut client = http::Client::connect(demo.addr).unwrap();
    assert!((0..30).all(|_| client.get("t", "/").unwrap().status == 200));
}

#[test]
fn latency_delays_root_answers() {
    let demo = Demo::start(&[("DEMO_LATENCY_MS", "300")]);
    let mut client = http::Client::connect(demo.addr).unwrap();
    let started = Instant::now();
    let resp = client.get("t", "/").unwrap();
    assert_eq!(resp.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert!(resp.text().starts_with("v7 "));
}

#[test]
fn invalid_error_rate_or_latency_exits_2_naming_the_variable() {
    for (name, value) in [
        ("DEMO_ERROR_RATE", "1.5"),
        ("DEMO_ERROR_RATE", "-0.1"),
        ("DEMO_ERROR_RATE", "20%"),
        ("DEMO_ERROR_RATE", "NaN"),
        ("DEMO_LATENCY_MS", "fast"),
        ("DEMO_LATENCY_MS", "-1"),
    ] {
        let out = Command::new(demo_app())
            .env_clear()
            .env("PORT", free_port().to_string())
            .env(name, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name), "{name}={value}: {err}");
    }
}
