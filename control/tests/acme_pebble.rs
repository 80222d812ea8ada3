//! ACME against a real ACME server (Pebble, started by each test): the
//! challenge answers come from cutover's own data plane on free ports
//! (http-01 on its plain listener, tls-alpn-01 on its TLS listener), the
//! certificates land in a `CertStore` through a test [`Installer`].
//!
//! Covered: issuance for two hosts (SANs, issuer, served over TLS with a
//! verified chain, 0600 files, tokens withdrawn), the account and the
//! stored certificates reused across a restart (no new account, no new
//! order), renewal of a short-lived certificate before it expires, a failed
//! renewal that keeps the old certificate serving and an ACME server that
//! forgot the account, an ACME server down at start (back-off, `failed`
//! with the error) that comes up later, a host the CA refuses beside one
//! it issues, hosts added and removed through `set_hosts`, and tls-alpn-01
//! through the data plane's TLS listener.

// Shared with the workspace's e2e tests (`tests/support/`), which may run
// cutover itself against Pebble.
mod support {
    #[path = "../../../tests/support/pebble.rs"]
    pub mod pebble;

    pub mod acme;
}

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use cutover_control::certs::acme::{AcmeService, AcmeState, HostStatus, Installer};
use cutover_control::config::{AcmeChallenge, AcmeConfig};
use cutover_proxy::tls::{CertEntry, CertSource, CertStore, Challenges};
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use support::acme::{data_plane, data_plane_with_tls, dns_names, fast_timing, served_over_tls, state_dir};
use support::pebble::{free_tcp_port, Pebble, PebbleOptions};

/// The certificates installed so far, served from a `CertStore` as the
/// certificate manager does, and every install in order.
#[derive(Default)]
struct StoreInstaller {
    /// What a TLS listener serves (the data plane's, where a test has one).
    store: Arc<CertStore>,
    current: Mutex<BTreeMap<String, Installed>>,
    history: Mutex<Vec<(String, Installed)>>,
    removed: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct Installed {
    key: Arc<CertifiedKey>,
    not_after: SystemTime,
    issuer: String,
    at: SystemTime,
}

impl Installer for StoreInstaller {
    fn install(
        &self,
        host: &str,
        key: Arc<CertifiedKey>,
        _not_before: SystemTime,
        not_after: SystemTime,
        issuer: &str,
    ) {
        let installed = Installed {
            key,
            not_after,
            issuer: issuer.to_owned(),
            at: SystemTime::now(),
        };
        let mut current = self.current.lock().unwrap();
        current.insert(host.to_owned(), installed.clone());
        self.history.lock().unwrap().push((host.to_owned(), installed));
        self.swap(&current);
    }

    fn remove(&self, host: &str) {
        let mut current = self.current.lock().unwrap();
        current.remove(host);
        self.removed.lock().unwrap().push(host.to_owned());
        self.swap(&current);
    }
}

impl StoreInstaller {
    fn over(store: &Arc<CertStore>) -> Self {
        Self {
            store: Arc::clone(store),
            ..Self::default()
        }
    }

    fn swap(&self, current: &BTreeMap<String, Installed>) {
        let entries: Vec<CertEntry> = current
            .iter()
            .map(|(host, installed)| CertEntry {
                hosts: vec![host.clone()],
                key: Arc::clone(&installed.key),
                source: CertSource::Acme,
            })
            .collect();
        self.store.replace(&entries);
    }

    /// The leaf the store serves for `host`, if any.
    fn served_leaf(&self, host: &str) -> Option<CertificateDer<'static>> {
        self.store.load().resolve(host).map(|key| key.cert[0].clone())
    }

    fn installs(&self, host: &str) -> usize {
        self.history.lock().unwrap().iter().filter(|(h, _)| h == host).count()
    }
}

fn acme_config(pebble: &Pebble) -> AcmeConfig {
    AcmeConfig {
        directory: pebble.directory(),
        email: Some("ops@example.com".into()),
        challenge: AcmeChallenge::Http01,
        ca_roots: Some(pebble.ca_roots()),
        hosts: Vec::new(),
    }
}

fn hosts(list: &[&str]) -> Vec<String> {
    list.iter().map(|h| (*h).to_owned()).collect()
}

/// Waits (polling) until `check` holds, failing with `what` and the last
/// status after `limit`.
async fn wait_for(
    service: &AcmeService,
    pebble: &Pebble,
    limit: Duration,
    what: &str,
    check: impl Fn(&[HostStatus]) -> bool,
) {
    let deadline = cutover_proxy::time::after(limit);
    loop {
        let status = service.status();
        if check(&status) {
            return;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {limit:?}; status: {status:#?}\n{}", pebble.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state_of(status: &[HostStatus], host: &str) -> Option<AcmeState> {
    status.iter().find(|s| s.host == host).map(|s| s.state)
}

fn all_valid(status: &[HostStatus], want: &[&str]) -> bool {
    want.iter().all(|h| state_of(status, h) == Some(AcmeState::Valid))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_are_issued_and_a_restart_reuses_account_and_certificates() {
    let challenges = Arc::new(Challenges::new());
    let certs = Arc::new(CertStore::new());
    let (_plane, http_port, tls_port) = data_plane_with_tls(&challenges, &certs);
    let mut pebble = Pebble::configure(PebbleOptions {
        http_port,
        tls_port: free_tcp_port(),
        validity: None,
        blocked: Vec::new(),
    });
    pebble.start();
    let state = state_dir("two");
    let installer = Arc::new(StoreInstaller::over(&certs));

    let service = AcmeService::start(
        acme_config(&pebble),
        &state,
        hosts(&["a.test", "B.test"]),
        Arc::clone(&challenges),
        installer.clone(),
        fast_timing(),
    )
    .unwrap();
    for status in service.status() {
        assert_eq!(
            status.state,
            AcmeState::Pending,
            "{status:?}: nothing stored, first order"
        );
        assert!(status.not_after.is_none() && status.issuer.is_none());
    }
    wait_for(&service, &pebble, Duration::from_secs(60), "both hosts valid", |s| {
        all_valid(s, &["a.test", "b.test"])
    })
    .await;

    let root = pebble.issuing_root().await;
    for host in ["a.test", "b.test"] {
        let leaf = installer.served_leaf(host).expect("served");
        assert_eq!(dns_names(&leaf), [format!("DNSName({host})")]);
        assert_eq!(
            served_over_tls(tls_port, host, &root).await,
            leaf,
            "{host}: the TLS listener serves it, chain and name verified"
        );
        let installed = installer.current.lock().unwrap()[host].clone();
        assert!(installed.issuer.contains("Pebble"), "issuer {:?}", installed.issuer);
        let status = service.status().into_iter().find(|s| s.host == host).unwrap();
        assert_eq!(status.issuer.as_deref(), Some(installed.issuer.as_str()));
        assert!(status.not_after.unwrap() > SystemTime::now());
        assert!(
            status.next_attempt.unwrap() > SystemTime::now(),
            "renewal scheduled ahead"
        );
        assert!(status.last_error.is_none());
        let acme = state.join("acme");
        let stored = acme.join("certs").join(format!("{host}.pem"));
        assert_eq!(mode(&stored), 0o600);
        let stored = std::fs::read(&stored).unwrap();
        assert!(
            rustls_pemfile::private_key(&mut &stored[..]).unwrap().is_some(),
            "{host}: chain and key in one file"
        );
        assert!(!acme.join("certs").join(format!("{host}.key")).exists());
    }
    let acme = state.join("acme");
    assert_eq!(mode(&acme), 0o700);
    assert_eq!(mode(&acme.join("certs")), 0o700);
    assert_eq!(mode(&acme.join("account.json")), 0o600);
    let account = std::fs::read(acme.join("account.json")).unwrap();
    let validated = pebble.http01_paths();
    assert!(validated.len() >= 2, "Pebble fetched both hosts' tokens: {validated:?}");
    for path in &validated {
        assert!(
            challenges.http01_answer(path).is_none(),
            "{path}: the token is withdrawn once the order is done"
        );
    }
    service.shutdown().await;

    // Restart: the stored certificates serve before anything is ordered,
    // and a new host is ordered with the same account.
    let restarted = Arc::new(StoreInstaller::default());
    let service = AcmeService::start(
        acme_config(&pebble),
        &state,
        hosts(&["a.test", "b.test", "c.test"]),
        Arc::clone(&challenges),
        restarted.clone(),
        fast_timing(),
    )
    .unwrap();
    for host in ["a.test", "b.test"] {
        assert_eq!(
            restarted.served_leaf(host),
            installer.served_leaf(host),
            "{host}: the stored certificate serves at once after a restart"
        );
    }
    wait_for(&service, &pebble, Duration::from_secs(60), "c.test valid", |s| {
        all_valid(s, &["a.test", "b.test", "c.test"])
    })
    .await;
    assert_eq!(
        std::fs::read(acme.join("account.json")).unwrap(),
        account,
        "the stored account was reused, not replaced"
    );
    let files: Vec<String> = std::fs::read_dir(&acme)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "one account file and certs/: {files:?}");
    for host in ["a.test", "b.test"] {
        assert_eq!(
            restarted.installs(host),
            1,
            "{host}: no new order for a valid stored certificate"
        );
        assert_eq!(restarted.served_leaf(host), installer.served_leaf(host));
    }
    assert_eq!(
        dns_names(&restarted.served_leaf("c.test").unwrap()),
        ["DNSName(c.test)"]
    );
    service.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_before_it_expires() {
    let challenges = Arc::new(Challenges::new());
    let (_plane, http_port) = data_plane(&challenges);
    let mut pebble = Pebble::configure(PebbleOptions {
        http_port,
        tls_port: free_tcp_port(),
        validity: Some(Duration::from_secs(30)),
        blocked: Vec::new(),
    });
    pebble.start();
    let state = state_dir("renew");
    let installer = Arc::new(StoreInstaller::default());
    let service = AcmeService::start(
        acme_config(&pebble),
        &state,
        hosts(&["short.test"]),
        Arc::clone(&challenges),
        installer.clone(),
        fast_timing(),
    )
    .unwrap();
    wait_for(&service, &pebble, Duration::from_secs(60), "first certificate", |s| {
        all_valid(s, &["short.test"])
    })
    .await;
    let first = installer.current.lock().unwrap()["short.test"].clone();
    let first_leaf = installer.served_leaf("short.test").unwrap();

    wait_for(
        &service,
        &pebble,
        Duration::from_secs(90),
        "a renewed certificate",
        |_| installer.installs("short.test") >= 2,
    )
    .await;
    let history = installer.history.lock().unwrap().clone();
    let (_, second) = history.iter().filter(|(h, _)| h == "short.test").nth(1).unwrap();
    assert!(
        second.at < first.not_after,
        "the renewal was served before the old certificate expired"
    );
    assert!(second.not_after > first.not_after);
    assert_ne!(installer.served_leaf("short.test").unwrap(), first_leaf);
    let stored = std::fs::read(state.join("acme/certs/short.test.pem")).unwrap();
    let stored_leaf = rustls_pemfile::certs(&mut &stored[..]).next().unwrap().unwrap();
    assert_eq!(stored_leaf, second.key.cert[0], "the renewed certificate is stored");
    service.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_renewal_keeps_the_certificate_serving_and_a_forgotten_account_is_replaced() {
    let challenges = Arc::new(Challenges::new());
    let (_plane, http_port) = data_plane(&challenges);
    let mut pebble = Pebble::configure(PebbleOptions {
        http_port,
        tls_port: free_tcp_port(),
        validity: Some(Duration::from_secs(15)),
        blocked: Vec::new(),
    });
    pebble.start();
    let state = state_dir("fail-renew");
    let installer = Arc::new(StoreInstaller::default());
    let service = AcmeService::start(
        acme_config(&pebble),
        &state,
        hosts(&["keep.test"]),
        Arc::clone(&challenges),
        installer.clone(),
        fast_timing(),
    )
    .unwrap();
    wait_for(&service, &pebble, Duration::from_secs(60), "first certificate", |s| {
        all_valid(s, &["keep.test"])
    })
    .await;
    let leaf = installer.served_leaf("keep.test").unwrap();
    let account = std::fs::read(state.join("acme/account.json")).unwrap();

    // The ACME server goes away: the renewal fails, the certificate serves on.
    pebble.stop();
    wait_for(&service, &pebble, Duration::from_secs(60), "renewal failed", |s| {
        s[0].state == AcmeState::Failed && s[0].last_error.is_some()
    })
    .await;
    let status = service.status().remove(0);
    assert!(status.not_after.is_some() && status.issuer.is_some(), "{status:?}");
    assert_eq!(
        installer.served_leaf("keep.test"),
        Some(leaf.clone()),
        "the old certificate keeps serving"
    );

    // It comes back with no memory of the account: a new one is registered
    // and the renewal goes through.
    pebble.start();
    wait_for(
        &service,
        &pebble,
        Duration::from_secs(60),
        "renewed after the server came back",
        |_| installer.installs("keep.test") >= 2,
    )
    .await;
    assert_ne!(installer.served_leaf("keep.test"), Some(leaf));
    assert_ne!(
        std::fs::read(state.join("acme/account.json")).unwrap(),
        account,
        "a new account replaced the forgotten one"
    );
    service.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_the_ca_refuses_does_not_hold_up_the_others() {
    let challenges = Arc::new(Challenges::new());
    let (_plane, http_port) = data_plane(&challenges);
    let mut pebble = Pebble::configure(PebbleOptions {
        http_port,
        tls_port: free_tcp_port(),
        validity: None,
        blocked: vec!["refused.test".into()],
    });
    pebble.start();
    let state = state_dir("refused");
    let installer = Arc::new(StoreInstaller::default());
    let service = AcmeService::start(
        acme_config(&pebble),
        &state,
        hosts(&["refused.test", "fine.test"]),
        Arc::clone(&challenges),
        installer.clone(),
        fast_timing(),
    )
    .unwrap();
    wait_for(
        &service,
        &pebble,
        Duration::from_secs(60),
        "fine.test valid, refused.test failed",
        |s| {
            state_of(s, "fine.test") == Some(AcmeState::Valid) && state_of(s, "refused.test") == Some(AcmeState::Failed)
        },
    )
    .await;
    let refused = service.status().into_iter().find(|s| s.host == "refused.test").unwrap();
    let error = refused.last_error.unwrap();
    assert!(
        error.contains("refused.test") || error.contains("rejectedIdentifier"),
        "{error}"
    );
    assert!(refused.next_attempt.is_some());
    assert!(installer.served_leaf("refused.test").is_none());
    assert!(installer.served_leaf("fine.test").is_some());
    assert!(!state.join("acme/certs/refused.test.pem").exists());
    service.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_server_down_at_start_is_retried_until_it_is_up() {
    let challenges = Arc::new(Challenges::new());
    let (_plane, http_port) = data_plane(&challenges);
    let mut pebble = Pebble::configure(PebbleOptions {
        http_port,
        tls_port: free_tcp_port(),
        validity: None,
        blocked: Vec::new(),
    });
    let state = state_dir("down");
    let installer = Arc::new(StoreInstaller::default());
    let service = AcmeService::start(
        acme_config(&pebble),
        &state,
        hosts(&["late.test"]),
        Arc::clone(&challenges),
        installer.clone(),
        fast_timing(),
    )
    .unwrap();
    wait_for(&service, &pebble, Duration::from_secs(30), "failed twice", |s| {
        s.iter().any(|h| {
            h.state == AcmeState::Failed
                && h.last_error.as_deref().is_some_and(|e| e.contains("cannot connect"))
                && h.next_attempt.is_some()
        })
    })
    .await;
    // Still retrying: a second failure comes after a back-off.
    let first_retry = service.status()[0].next_attempt.unwrap();
    wait_for(&service, &pebble, Duration::from_secs(30), "a later retry", |s| {
        s[0].state == AcmeState::Failed && s[0].next_attempt.is_some_and(|t| t > first_retry)
    })
    .await;
    assert!(installer.served_leaf("late.test").is_none());
    assert!(!state.join("acme/account.json").exists(), "no account without a server");

    pebble.start();
    wait_for(&service, &pebble, Duration::from_secs(60), "obtained once up", |s| {
        all_valid(s, &["late.test"])
    })
    .await;
    assert_eq!(
        dns_names(&installer.served_leaf("late.test").unwrap()),
        ["DNSName(late.test)"]
    );
    service.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_added_and_removed_through_set_hosts() {
    let challenges = Arc::new(Challenges::new());
    let (_plane, http_port) = data_plane(&challenges);
    let mut pebble = Pebble::configure(PebbleOptions {
        http_port,
        tls_port: free_tcp_port(),
        validity: None,
        blocked: Vec::new(),
    });
    pebble.start();
    let state = state_dir("set");
    let installer = Arc::new(StoreInstaller::default());
    let service = AcmeService::start(
        acme_config(&pebble),
        &state,
        hosts(&["one.test"]),
        Arc::clone(&challenges),
        installer.clone(),
        fast_timing(),
    )
    .unwrap();
    wait_for(&service, &pebble, Duration::from_secs(60), "one.test", |s| {
        all_valid(s, &["one.test"])
    })
    .await;

    service.set_hosts(hosts(&["one.test", "two.test"]));
    wait_for(
        &service,
        &pebble,
        Duration::from_secs(60),
        "two.test after set_hosts",
        |s| all_valid(s, &["one.test", "two.test"]),
    )
    .await;
    assert_eq!(
        dns_names(&installer.served_leaf("two.test").unwrap()),
        ["DNSName(two.test)"]
    );
    assert_eq!(installer.installs("one.test"), 1, "one.test was not ordered again");

    service.set_hosts(hosts(&["two.test"]));
    wait_for(&service, &pebble, Duration::from_secs(10), "one.test removed", |s| {
        s.len() == 1 && s[0].host == "two.test"
    })
    .await;
    assert!(
        installer.served_leaf("one.test").is_none(),
        "a removed host is no longer served"
    );
    assert_eq!(*installer.removed.lock().unwrap(), ["one.test"]);
    assert!(installer.served_leaf("two.test").is_some());

    // ACME turned off: nothing of it is served any more.
    service.set_hosts(Vec::new());
    service.shutdown().await;
    assert_eq!(*installer.removed.lock().unwrap(), ["one.test", "two.test"]);
    assert!(installer.served_leaf("two.test").is_none());
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_is_answered_with_the_acme_identifier_certificate() {
    let challenges = Arc::new(Challenges::new());
    let certs = Arc::new(CertStore::new());
    let (_plane, _http_port, tls_port) = data_plane_with_tls(&challenges, &certs);
    let mut pebble = Pebble::configure(PebbleOptions {
        // Nothing answers http-01 there: only tls-alpn-01, on the data
        // plane's TLS listener, can succeed.
        http_port: free_tcp_port(),
        tls_port,
        validity: None,
        blocked: Vec::new(),
    });
    pebble.start();
    let state = state_dir("alpn");
    let installer = Arc::new(StoreInstaller::over(&certs));
    let service = AcmeService::start(
        AcmeConfig {
            challenge: AcmeChallenge::TlsAlpn01,
            ..acme_config(&pebble)
        },
        &state,
        hosts(&["alpn.test"]),
        Arc::clone(&challenges),
        installer.clone(),
        fast_timing(),
    )
    .unwrap();
    wait_for(&service, &pebble, Duration::from_secs(60), "alpn.test valid", |s| {
        all_valid(s, &["alpn.test"])
    })
    .await;
    assert_eq!(
        dns_names(&installer.served_leaf("alpn.test").unwrap()),
        ["DNSName(alpn.test)"]
    );
    assert!(
        challenges.tls_alpn01_cert("alpn.test").is_none(),
        "the challenge certificate is withdrawn once validated"
    );
    service.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);
}
