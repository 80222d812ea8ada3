//! `certs::files`: every way a certificate file pair is refused, and the
//! key formats accepted.

use std::time::SystemTime;

use rcgen::KeyPair;

use super::{dir, make, make_with, now, unwrap_pkcs8, write, TEST_RSA_PKCS8};
use crate::certs::files::{key_warnings, load, load_all, name_covers, FileProblem, MAX_FILE_BYTES};
use crate::config::CertificateConfig;

/// The problems of loading `config` now, as `key: message`.
fn problems(config: &CertificateConfig) -> Vec<FileProblem> {
    match load(config, now()) {
        Ok(_) => panic!("{config:?} was accepted"),
        Err(problems) => problems,
    }
}

fn only(config: &CertificateConfig, key: &str, words: &str) {
    let found = problems(config);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, key, "{found:?}");
    assert!(
        found[0].message.contains(words),
        "{:?} lacks {words:?}",
        found[0].message
    );
}

#[test]
fn a_good_pair_loads_with_its_dates_and_issuer() {
    let d = dir("good");
    let made = make(&["a.test", "b.test"], None);
    let config = write(&d, "ab", &["a.test", "b.test"], &made.cert_pem, &made.key_pem);
    let loaded = load(&config, now()).unwrap();
    assert_eq!(loaded.config, config);
    assert_eq!(crate::certs::files::rfc3339(loaded.not_before), "2000-01-01T00:00:00Z");
    assert_eq!(crate::certs::files::rfc3339(loaded.not_after), "2100-01-01T00:00:00Z");
    assert!(loaded.issuer.contains("CN="), "{}", loaded.issuer);
    assert_eq!(loaded.key.cert.len(), 1);
}

#[test]
fn a_key_of_another_certificate_is_refused_at_key() {
    let d = dir("mismatch");
    let (one, other) = (make(&["a.test"], None), make(&["a.test"], None));
    let config = write(&d, "a", &["a.test"], &one.cert_pem, &other.key_pem);
    only(&config, "key", "is not the private key of the certificate");
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let d = dir("dates");
    let old = make(&["a.test"], Some(((2000, 1, 1), (2001, 1, 1))));
    let config = write(&d, "old", &["a.test"], &old.cert_pem, &old.key_pem);
    only(&config, "cert", "expired on 2001-01-01T00:00:00Z");
    let future = make(&["a.test"], Some(((2099, 1, 1), (2100, 1, 1))));
    let config = write(&d, "future", &["a.test"], &future.cert_pem, &future.key_pem);
    only(&config, "cert", "not valid before 2099-01-01T00:00:00Z");
    // The same file is good at a time inside its validity.
    let in_2099 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(4_080_000_000);
    assert!(load(&config, in_2099).is_ok());
}

#[test]
fn every_configured_host_must_be_a_name_of_the_leaf() {
    let d = dir("hosts");
    let made = make(&["a.test"], None);
    let config = write(&d, "a", &["a.test", "b.test"], &made.cert_pem, &made.key_pem);
    only(&config, "hosts[1]", "b.test is not covered by the certificate");
    let found = problems(&config);
    assert!(found[0].message.contains("its names: a.test"), "{found:?}");
}

#[test]
fn a_wildcard_name_covers_one_label_and_a_configured_wildcard_needs_one() {
    let d = dir("wildcard");
    let made = make(&["*.example.com"], None);
    let good = write(
        &d,
        "w",
        &["a.example.com", "*.example.com"],
        &made.cert_pem,
        &made.key_pem,
    );
    assert!(load(&good, now()).is_ok());
    let deep = write(&d, "w", &["a.b.example.com"], &made.cert_pem, &made.key_pem);
    only(&deep, "hosts[0]", "a.b.example.com is not covered");
    let bare = write(&d, "w", &["example.com"], &made.cert_pem, &made.key_pem);
    only(&bare, "hosts[0]", "example.com is not covered");
    let exact = make(&["a.example.com"], None);
    let wild_host = write(&d, "e", &["*.example.com"], &exact.cert_pem, &exact.key_pem);
    only(&wild_host, "hosts[0]", "*.example.com is not covered");

    assert!(name_covers("*.example.com", "x.EXAMPLE.com"));
    assert!(name_covers("A.test.", "a.test"));
    assert!(!name_covers("*.example.com", ".example.com"));
    assert!(!name_covers("*.example.com", "*.b.example.com"));
    assert!(!name_covers("a.test", "*.test"));
}

#[test]
fn unreadable_files_name_the_path_and_the_os_error() {
    let d = dir("unreadable");
    let config = CertificateConfig {
        hosts: vec!["a.test".into()],
        cert: d.join("missing.pem"),
        key: d.join("missing.key"),
    };
    let found = problems(&config);
    assert_eq!(found.len(), 2, "both files are reported: {found:?}");
    assert_eq!(found[0].key, "cert");
    assert!(found[0]
        .message
        .contains(&format!("cannot read {}", config.cert.display())));
    assert!(found[0].message.contains("No such file or directory"), "{found:?}");
    assert_eq!(found[1].key, "key");
    // A directory, a device: not regular files.
    let config = CertificateConfig {
        cert: d.clone(),
        key: "/dev/zero".into(),
        ..config
    };
    let found = problems(&config);
    assert!(
        found.iter().all(|p| p.message.contains("is not a regular file")),
        "{found:?}"
    );
    // A FIFO with no writer: refused at once, not waited on.
    let fifo = d.join("fifo.pem");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let config = CertificateConfig {
        cert: fifo,
        key: "/dev/zero".into(),
        ..config
    };
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(problems(&config));
    });
    let found = finished
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("a FIFO is refused, not waited on");
    assert!(
        found.iter().all(|p| p.message.contains("is not a regular file")),
        "{found:?}"
    );
}

#[test]
fn empty_oversized_and_garbage_files_are_refused() {
    let d = dir("garbage");
    let made = make(&["a.test"], None);
    let empty = write(&d, "empty", &["a.test"], "", &made.key_pem);
    only(&empty, "cert", "no certificate in");
    let no_key = write(&d, "nokey", &["a.test"], &made.cert_pem, &made.cert_pem);
    only(&no_key, "key", "no private key in");
    let two_keys = write(
        &d,
        "twokeys",
        &["a.test"],
        &made.cert_pem,
        &format!("{}{}", made.key_pem, made.key_pem),
    );
    only(&two_keys, "key", "2 private keys");
    let garbage = "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n";
    let bad_pem = write(&d, "badpem", &["a.test"], garbage, &made.key_pem);
    only(&bad_pem, "cert", "is not a valid PEM file");
    let not_der = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    let bad_der = write(&d, "badder", &["a.test"], not_der, &made.key_pem);
    assert!(!problems(&bad_der).is_empty());
    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let enc = write(&d, "enc", &["a.test"], &made.cert_pem, encrypted);
    only(&enc, "key", "is encrypted");

    let mut big = made.cert_pem.clone();
    while (big.len() as u64) <= MAX_FILE_BYTES {
        big.push_str("# padding line, a certificate file is never this long\n");
    }
    let oversized = write(&d, "big", &["a.test"], &big, &made.key_pem);
    only(&oversized, "cert", "is larger than 1024 KiB");
}

#[test]
fn pkcs8_pkcs1_and_sec1_keys_are_accepted() {
    let d = dir("formats");
    let ec = make(&["a.test"], None);
    let sec1 = unwrap_pkcs8(&ec.key_pem, "EC PRIVATE KEY");
    let config = write(&d, "sec1", &["a.test"], &ec.cert_pem, &sec1);
    load(&config, now()).unwrap();

    let rsa = make_with(KeyPair::from_pem(TEST_RSA_PKCS8).unwrap(), &["a.test"], None);
    let config = write(&d, "rsa8", &["a.test"], &rsa.cert_pem, TEST_RSA_PKCS8);
    load(&config, now()).unwrap();
    let pkcs1 = unwrap_pkcs8(TEST_RSA_PKCS8, "RSA PRIVATE KEY");
    let config = write(&d, "rsa1", &["a.test"], &rsa.cert_pem, &pkcs1);
    load(&config, now()).unwrap();
    drop(rsa.key);
}

#[test]
fn load_all_reports_every_entry_at_its_index_and_loads_nothing_on_failure() {
    let d = dir("all");
    let good = make(&["a.test"], None);
    let bad = make(&["b.test"], None);
    let configs = [
        write(&d, "a", &["a.test"], &good.cert_pem, &good.key_pem),
        write(&d, "b", &["b.test"], &bad.cert_pem, &good.key_pem),
        write(&d, "c", &["c.test"], &good.cert_pem, &good.key_pem),
    ];
    let problems = load_all(&configs, "deploy.yaml", now()).unwrap_err();
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("deploy.yaml: proxy.tls.certificates[1].key: "),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("deploy.yaml: proxy.tls.certificates[2].hosts[0]: c.test"),
        "{lines:?}"
    );
    assert_eq!(load_all(&configs[..1], "deploy.yaml", now()).unwrap().len(), 1);
}

#[test]
fn a_key_every_user_can_read_is_a_warning_not_a_refusal() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir("modes");
    let made = make(&["a.test"], None);
    let config = write(&d, "a", &["a.test"], &made.cert_pem, &made.key_pem);
    std::fs::set_permissions(&config.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    load(&config, now()).unwrap();
    let warnings = key_warnings(std::slice::from_ref(&config));
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].starts_with("proxy.tls.certificates[0].key: ") && warnings[0].contains("mode 644"),
        "{warnings:?}"
    );
    std::fs::set_permissions(&config.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(key_warnings(&[config]).is_empty());
}
