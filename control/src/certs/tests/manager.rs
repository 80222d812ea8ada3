//! `CertManager`: files first, ACME certificates installed and removed, one
//! swap per change, a bad file changing nothing, the expiry series.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;

use super::{dir, make, write};
use crate::certs::manager::{restart_warnings, AcmeState, AcmeStatus, CertManager};
use crate::config::{self, CertificateConfig, Config};

/// A config serving `certs` on a TLS listener (or no TLS at all).
fn config(certs: Option<&[CertificateConfig]>) -> Config {
    let text = "apps: { web: { command: [\"true\"] } }\nroutes: [{ host: \"*\", path: /, app: web }]\n";
    let mut config = config::parse(text, "deploy.yaml", std::path::Path::new("/")).unwrap();
    config.proxy.tls = certs.map(|certs| config::TlsConfig {
        listen: vec!["127.0.0.1:8443".parse().unwrap()],
        certificates: certs.to_vec(),
        acme: None,
        redirect_http: false,
        hsts: Duration::ZERO,
    });
    config
}

fn acme_key(host: &str) -> Arc<CertifiedKey> {
    let made = make(&[host], None);
    let der = rustls::pki_types::PrivateKeyDer::try_from(made.key.serialize_der()).unwrap();
    let signer = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
    let cert = rustls_pemfile::certs(&mut made.cert_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    Arc::new(CertifiedKey::new(vec![cert], signer))
}

fn served(manager: &CertManager, host: &str) -> Option<Arc<CertifiedKey>> {
    manager.store().load().resolve(host).cloned()
}

/// The expiry series as `(host, source, value)`, sorted.
fn series(registry: &prometheus::Registry) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for family in registry.gather() {
        if family.name() != "cutover_certificate_expiry_timestamp_seconds" {
            continue;
        }
        for metric in family.get_metric() {
            let label = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap()
            };
            out.push((label("host"), label("source"), metric.get_gauge().get_value()));
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

const Y2100: f64 = 4_102_444_800.0;

#[test]
fn files_serve_from_start_and_win_over_acme_for_their_hosts() {
    let d = dir("mgr-files");
    let made = make(&["a.test", "*.wild.test"], None);
    let files = [write(
        &d,
        "a",
        &["a.test", "*.wild.test"],
        &made.cert_pem,
        &made.key_pem,
    )];
    let manager = CertManager::new(&config(Some(&files)), "deploy.yaml").unwrap();
    let registry = prometheus::Registry::new();
    manager.register_metrics(&registry).unwrap();
    let file_key = served(&manager, "a.test").expect("the file serves a.test");
    assert!(served(&manager, "x.wild.test").is_some());
    assert!(served(&manager, "b.test").is_none());

    let acme = acme_key("a.test");
    let (from, to) = (SystemTime::now(), SystemTime::now() + Duration::from_secs(90 * 86400));
    manager.install_acme("a.test", Arc::clone(&acme), from, to, "CN=Pebble");
    assert!(
        Arc::ptr_eq(&served(&manager, "a.test").unwrap(), &file_key),
        "the file wins"
    );
    let list = manager.list();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list.iter().all(|c| c.source == "file"),
        "a shadowed ACME host is not listed: {list:?}"
    );
    assert_eq!(
        series(&registry),
        [
            ("*.wild.test".into(), "file".into(), Y2100),
            ("a.test".into(), "file".into(), Y2100)
        ]
    );
}

#[test]
fn acme_certificates_are_installed_listed_and_removed_with_their_series() {
    let manager = CertManager::new(&config(Some(&[])), "deploy.yaml").unwrap();
    let registry = prometheus::Registry::new();
    manager.register_metrics(&registry).unwrap();
    let before = Arc::clone(&*manager.store().load());
    // What the ACME service reports, as it would keep it.
    let report: Arc<Mutex<Vec<AcmeStatus>>> = Arc::default();
    let status = |state, last_error: Option<&str>, next_attempt| AcmeStatus {
        host: "B.test".into(),
        state,
        last_error: last_error.map(str::to_string),
        next_attempt,
    };
    *report.lock().unwrap() = vec![status(AcmeState::Pending, None, None)];
    let source = Arc::clone(&report);
    manager.set_acme_report(Arc::new(move || source.lock().unwrap().clone()));

    let listed = manager.list();
    assert_eq!(listed.len(), 1, "a host waiting for its first certificate is listed");
    assert_eq!(listed[0].host, "b.test");
    assert_eq!(listed[0].not_after, None);
    assert_eq!(listed[0].acme.as_ref().unwrap().state, AcmeState::Pending);
    assert!(series(&registry).is_empty(), "no certificate, no series");

    let key = acme_key("b.test");
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    manager.install_acme(
        "b.test",
        Arc::clone(&key),
        SystemTime::UNIX_EPOCH,
        not_after,
        "CN=Pebble Intermediate",
    );
    *report.lock().unwrap() = vec![status(AcmeState::Valid, None, None)];
    assert!(
        !Arc::ptr_eq(&before, &Arc::clone(&*manager.store().load())),
        "the set was swapped"
    );
    assert!(Arc::ptr_eq(&served(&manager, "b.test").unwrap(), &key));
    let listed = manager.list();
    assert_eq!(listed[0].issuer.as_deref(), Some("CN=Pebble Intermediate"));
    assert_eq!(listed[0].not_after.as_deref(), Some("2033-05-18T03:33:20Z"));
    assert_eq!(listed[0].acme.as_ref().unwrap().state, AcmeState::Valid);
    assert_eq!(series(&registry), [("b.test".into(), "acme".into(), 2_000_000_000.0)]);

    let retry = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    *report.lock().unwrap() = vec![status(AcmeState::Failed, Some("connection refused"), Some(retry))];
    let acme = manager.list()[0].acme.clone().unwrap();
    assert_eq!(acme.state, AcmeState::Failed);
    assert_eq!(acme.last_error.as_deref(), Some("connection refused"));
    assert_eq!(acme.next_attempt.as_deref(), Some("2030-03-17T17:46:40Z"));
    assert!(
        Arc::ptr_eq(&served(&manager, "b.test").unwrap(), &key),
        "a failure keeps the certificate"
    );

    manager.remove_acme("b.test");
    report.lock().unwrap().clear();
    assert!(served(&manager, "b.test").is_none());
    assert!(manager.list().is_empty());
    assert!(series(&registry).is_empty(), "the gone host's series is removed");
}

#[test]
fn a_push_with_a_bad_file_changes_nothing_and_a_good_one_swaps_everything() {
    let d = dir("mgr-push");
    let one = make(&["a.test"], None);
    let files = [write(&d, "one", &["a.test"], &one.cert_pem, &one.key_pem)];
    let old = config(Some(&files));
    let manager = CertManager::new(&old, "deploy.yaml").unwrap();
    let registry = prometheus::Registry::new();
    manager.register_metrics(&registry).unwrap();
    let first = served(&manager, "a.test").unwrap();

    let two = make(&["b.test"], None);
    let bad = config(Some(&[write(&d, "two", &["b.test"], &two.cert_pem, &one.key_pem)]));
    let problems = manager.prepare(&old.proxy, &bad.proxy).unwrap_err();
    assert!(
        problems.to_string().contains("proxy.tls.certificates[0].key"),
        "{problems}"
    );
    assert!(
        Arc::ptr_eq(&served(&manager, "a.test").unwrap(), &first),
        "nothing changed"
    );

    let good = config(Some(&[write(&d, "two", &["b.test"], &two.cert_pem, &two.key_pem)]));
    let mut pushed = manager.pushed_config();
    let prepared = manager.prepare(&old.proxy, &good.proxy).unwrap();
    assert!(prepared.warnings.is_empty(), "{:?}", prepared.warnings);
    assert!(served(&manager, "b.test").is_none(), "prepare swaps nothing");
    manager.commit(prepared, &good);
    assert!(served(&manager, "a.test").is_none());
    assert!(served(&manager, "b.test").is_some());
    assert_eq!(series(&registry), [("b.test".into(), "file".into(), Y2100)]);
    assert!(pushed.has_changed().unwrap());
    assert_eq!(**pushed.borrow_and_update(), good);

    // The same certificates again: the files are not read (they may be gone).
    std::fs::remove_dir_all(&d).unwrap();
    let prepared = manager.prepare(&good.proxy, &good.proxy).unwrap();
    manager.commit(prepared, &good);
    assert!(served(&manager, "b.test").is_some());
}

#[test]
fn reload_reads_the_same_paths_again_all_or_nothing() {
    let d = dir("mgr-reload");
    let one = make(&["a.test"], None);
    let files = [write(&d, "a", &["a.test"], &one.cert_pem, &one.key_pem)];
    let manager = CertManager::new(&config(Some(&files)), "/etc/cutover/deploy.yaml").unwrap();
    let first = served(&manager, "a.test").unwrap();

    let renewed = make(&["a.test"], Some(((2001, 1, 1), (2099, 1, 1))));
    std::fs::write(&files[0].cert, &renewed.cert_pem).unwrap();
    let problems = manager.reload().unwrap_err();
    assert!(
        problems
            .to_string()
            .starts_with("/etc/cutover/deploy.yaml: proxy.tls.certificates[0].key: "),
        "{problems}"
    );
    assert!(Arc::ptr_eq(&served(&manager, "a.test").unwrap(), &first));

    std::fs::write(&files[0].key, &renewed.key_pem).unwrap();
    let listed = manager.reload().unwrap();
    assert_eq!(listed[0].not_after.as_deref(), Some("2099-01-01T00:00:00Z"));
    assert!(!Arc::ptr_eq(&served(&manager, "a.test").unwrap(), &first));
}

#[test]
fn tls_added_or_removed_by_a_push_waits_for_the_next_start() {
    let d = dir("mgr-restart");
    let one = make(&["a.test"], None);
    let files = [write(&d, "a", &["a.test"], &one.cert_pem, &one.key_pem)];
    let plain = config(None);
    let tls = config(Some(&files));

    let manager = CertManager::new(&plain, "deploy.yaml").unwrap();
    let prepared = manager.prepare(&plain.proxy, &tls.proxy).unwrap();
    assert!(
        prepared.warnings[0].starts_with("proxy.tls applies at the next start"),
        "{:?}",
        prepared.warnings
    );
    manager.commit(prepared, &tls);
    assert!(served(&manager, "a.test").is_none(), "no TLS listener runs");
    let bad = config(Some(&[CertificateConfig {
        key: d.join("missing.key"),
        ..files[0].clone()
    }]));
    assert!(
        manager.prepare(&plain.proxy, &bad.proxy).is_err(),
        "the files are still checked"
    );

    let manager = CertManager::new(&tls, "deploy.yaml").unwrap();
    let prepared = manager.prepare(&tls.proxy, &plain.proxy).unwrap();
    assert!(
        prepared.warnings[0].starts_with("removing proxy.tls"),
        "{:?}",
        prepared.warnings
    );
    manager.commit(prepared, &plain);
    assert!(
        served(&manager, "a.test").is_some(),
        "the listeners keep their certificates"
    );

    let mut moved = tls.proxy.clone();
    moved.http2 = false;
    if let Some(t) = moved.tls.as_mut() {
        t.listen = vec!["127.0.0.1:9443".parse().unwrap()];
        t.hsts = Duration::from_secs(60);
    }
    let warnings = restart_warnings(true, &tls.proxy, &moved);
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(restart_warnings(true, &tls.proxy, &tls.proxy).is_empty());
}

#[test]
fn a_handshake_sees_one_whole_set_never_a_mix() {
    let d = dir("mgr-atomic");
    let (one, two) = (make(&["a.test", "b.test"], None), make(&["a.test", "b.test"], None));
    let first = config(Some(&[write(
        &d,
        "one",
        &["a.test", "b.test"],
        &one.cert_pem,
        &one.key_pem,
    )]));
    // Two entries for the second set: a swap per entry would show a mix.
    let second = config(Some(&[
        write(&d, "two", &["a.test"], &two.cert_pem, &two.key_pem),
        write(&d, "two", &["b.test"], &two.cert_pem, &two.key_pem),
    ]));
    let manager = CertManager::new(&first, "deploy.yaml").unwrap();
    let store = manager.store();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut seen = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let set = store.load();
                let (a, b) = (set.resolve("a.test").unwrap(), set.resolve("b.test").unwrap());
                assert_eq!(a.cert, b.cert, "one set, one certificate for both hosts");
                seen += 1;
            }
            seen
        })
    };
    let (mut from, mut to) = (&first, &second);
    for _ in 0..50 {
        let prepared = manager.prepare(&from.proxy, &to.proxy).unwrap();
        manager.commit(prepared, to);
        std::mem::swap(&mut from, &mut to);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}
