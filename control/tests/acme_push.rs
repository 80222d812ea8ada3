//! ACME as `cutover up` runs it: an [`AcmeDriver`] following the pushed
//! config of a real [`CertManager`], against a real Pebble, the challenges
//! answered and the certificates served by cutover's data plane.
//!
//! Covered: the route hosts of the start-up config get certificates that
//! the TLS listener serves (chain verified) and `GET /certificates`' list
//! shows as ACME and valid; a push that adds a route host gets it one; a
//! push that drops one stops serving it; a push without `proxy.tls.acme`
//! stops serving every ACME certificate.

mod support {
    #[path = "../../../tests/support/pebble.rs"]
    pub mod pebble;

    pub mod acme;
}

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cutover_control::certs::acme::{AcmeDriver, AcmeState};
use cutover_control::certs::{CertInfo, CertManager, Prepared};
use cutover_control::config::{self, Config};
use cutover_proxy::tls::Challenges;
use support::acme::{dns_names, fast_timing, served_over_tls, start_data_plane, state_dir};
use support::pebble::{free_tcp_port, Pebble, PebbleOptions};
use tokio::time::Instant;

/// A whole deploy.yaml: ACME with Pebble (or no TLS at all), one route per
/// host.
fn config(pebble: &Pebble, state: &Path, tls_port: u16, http_port: u16, acme: bool, hosts: &[&str]) -> Config {
    let tls = if acme {
        format!(
            "  tls:\n    listen: [\"127.0.0.1:{tls_port}\"]\n    acme:\n      directory: \"{}\"\n      email: ops@example.com\n      ca_roots: \"{}\"\n",
            pebble.directory(),
            pebble.ca_roots().display()
        )
    } else {
        String::new()
    };
    let routes: String = hosts
        .iter()
        .map(|h| format!("  - {{ host: {h}, app: web }}\n"))
        .collect();
    let text = format!(
        "proxy:\n  listen: [\"127.0.0.1:{http_port}\"]\n{tls}\
         state_dir: \"{}\"\n\
         apps:\n  web:\n    command: [\"true\"]\n    health: {{ path: /health }}\n\
         routes:\n{routes}",
        state.display()
    );
    config::parse(&text, "deploy.yaml", state).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// What `cutover up` does on a push, for the certificates.
fn push(certs: &CertManager, new: &Config) {
    certs.commit(Prepared::default(), new);
}

async fn wait_list(certs: &CertManager, pebble: &Pebble, what: &str, check: impl Fn(&[CertInfo]) -> bool) {
    let limit = Duration::from_secs(60);
    let deadline = cutover_proxy::time::after(limit);
    loop {
        let list = certs.list();
        if check(&list) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not within {limit:?}; certificates: {list:#?}\n{}",
                pebble.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn acme_valid(list: &[CertInfo], host: &str) -> bool {
    list.iter().any(|c| {
        c.host == host
            && c.source == "acme"
            && c.issuer.is_some()
            && c.acme.as_ref().is_some_and(|a| a.state == AcmeState::Valid)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_add_and_remove_acme_hosts_and_turn_acme_off() {
    let (http_port, tls_port) = (free_tcp_port(), free_tcp_port());
    let mut pebble = Pebble::configure(PebbleOptions {
        http_port,
        tls_port: free_tcp_port(),
        validity: None,
        blocked: Vec::new(),
    });
    pebble.start();
    let state = state_dir("push");
    let start = config(&pebble, &state, tls_port, http_port, true, &["one.test"]);
    let certs = CertManager::new(&start, "deploy.yaml").unwrap();
    let challenges = Arc::new(Challenges::new());
    let _plane = start_data_plane(&challenges, certs.store(), http_port, Some(tls_port));
    let driver = AcmeDriver::start_with(Arc::clone(&certs), Arc::clone(&challenges), fast_timing());

    wait_list(&certs, &pebble, "one.test valid", |l| acme_valid(l, "one.test")).await;
    let root = pebble.issuing_root().await;
    let leaf = served_over_tls(tls_port, "one.test", &root).await;
    assert_eq!(dns_names(&leaf), ["DNSName(one.test)"]);

    // A push adds a route host: it gets a certificate; one.test keeps its own.
    push(
        &certs,
        &config(&pebble, &state, tls_port, http_port, true, &["one.test", "two.test"]),
    );
    wait_list(&certs, &pebble, "two.test valid", |l| acme_valid(l, "two.test")).await;
    assert_eq!(
        dns_names(&served_over_tls(tls_port, "two.test", &root).await),
        ["DNSName(two.test)"]
    );
    assert_eq!(
        served_over_tls(tls_port, "one.test", &root).await,
        leaf,
        "one.test was not ordered again"
    );

    // A push drops one.test: no longer served, no longer listed.
    push(
        &certs,
        &config(&pebble, &state, tls_port, http_port, true, &["two.test"]),
    );
    wait_list(&certs, &pebble, "one.test gone", |l| {
        !l.iter().any(|c| c.host == "one.test")
    })
    .await;
    assert!(!certs.store().covers("one.test"));
    assert!(certs.store().covers("two.test"));

    // A push without proxy.tls.acme: nothing of ACME is served or listed.
    push(
        &certs,
        &config(&pebble, &state, tls_port, http_port, false, &["two.test"]),
    );
    wait_list(&certs, &pebble, "ACME off", |l| l.is_empty()).await;
    assert!(!certs.store().covers("two.test"));

    driver.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);
}
