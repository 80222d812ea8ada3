//! ACME through the real binary against a real Pebble (SPEC §8): `cutover
//! up` with `proxy.tls.acme` (tls-alpn-01, answered on cutover's own TLS
//! listener) obtains a certificate for its route host and serves it, `GET
//! /certificates` and `cutover certs` show it as ACME and valid, and a push
//! that adds a route host gets that host a certificate too, with no
//! restart. The ACME module's own tests (`control/tests/acme_*.rs`) cover
//! http-01, renewal, back-off and account reuse.

#[path = "support/pebble.rs"]
mod pebble;
mod support;
#[path = "support/certs.rs"]
mod tls_files;

use std::net::SocketAddr;
use std::time::Duration;

use pebble::{Pebble, PebbleOptions};
use serde_json::Value;
use support::{free_port, App, Cutover};
use tls_files::TlsClient;

/// The ACME state `/certificates` shows for `host`, if it lists it.
fn acme_state(cutover: &Cutover, host: &str) -> Option<String> {
    let body: Value = serde_json::from_slice(&cutover.admin_get("/certificates").body).ok()?;
    body["certificates"].as_array()?.iter().find_map(|c| {
        (c["host"] == host && c["source"] == "acme").then(|| c["acme"]["state"].as_str().unwrap_or("").to_string())
    })
}

#[test]
fn up_obtains_and_serves_a_certificate_and_a_push_adds_a_host() {
    let tls_port = free_port();
    let mut pebble = Pebble::configure(PebbleOptions {
        http_port: free_port(),
        tls_port,
        validity: None,
        blocked: Vec::new(),
    });
    pebble.start();
    let tls_listen = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let cutover = Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("a.test", "/", "web")
        .proxy_yaml(&format!(
            "tls: {{ listen: [\"{tls_listen}\"], acme: {{ directory: \"{}\", email: ops@example.com, \
             challenge: tls-alpn-01, ca_roots: \"{}\" }} }}",
            pebble.directory(),
            pebble.ca_roots().display()
        ))
        .start();

    cutover.wait_until(Duration::from_secs(60), "a.test's ACME certificate", |c| {
        acme_state(c, "a.test").as_deref() == Some("valid")
    });
    let mut client = TlsClient::connect(tls_listen, "a.test").expect("a.test is served over TLS");
    assert_eq!(client.get("a.test", "/").unwrap().0, 200);
    assert!(
        TlsClient::connect(tls_listen, "b.test").is_err(),
        "no certificate for a host that is not routed yet"
    );
    let (code, out, _) = cutover.cli(&["certs"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("a.test") && out.contains("acme") && out.contains("valid"),
        "{out}"
    );
    // The chain and its key, one file, readable by cutover's user only.
    let stored = cutover.dir.path().join("state/acme/certs/a.test.pem");
    let mode = std::fs::metadata(&stored).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.ok(), Some(0o600), "ACME key files are 0600");
    assert!(std::fs::read_to_string(&stored).unwrap().contains("PRIVATE KEY"));

    // A push that routes a new host: it gets a certificate, no restart.
    let pushed = cutover.config_text().replace(
        "routes:\n",
        "routes:\n  - { host: \"b.test\", path: \"/\", app: web }\n",
    );
    let (code, out, err) = cutover.push(&pushed, &[]);
    assert_eq!(code, 0, "{out}{err}");
    cutover.wait_until(Duration::from_secs(60), "b.test's ACME certificate", |c| {
        acme_state(c, "b.test").as_deref() == Some("valid")
    });
    let mut client = TlsClient::connect(tls_listen, "b.test").expect("b.test is served after the push");
    assert_eq!(client.get("b.test", "/").unwrap().0, 200);
    let mut client = TlsClient::connect(tls_listen, "a.test").expect("a.test still served");
    assert_eq!(client.get("a.test", "/").unwrap().0, 200);
}
