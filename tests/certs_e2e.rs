//! Certificate files through the real binary (SPEC §2 `cutover certs`, §5
//! `GET /certificates`, §6 the expiry metric, §8): a bad file is refused by
//! `validate`, `up` and `push` like any bad config with nothing changed; a
//! push with new files and `cutover certs --reload` swap what is served.

mod support;
#[path = "support/certs.rs"]
mod tls_files;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{cutover_bin, demo_app, free_port, App, Cutover, TempDir};
use tls_files::{der_of, tls_yaml, CertFiles, TlsClient};

/// 2100-01-01T00:00:00Z, the expiry of the tests' usual certificates.
const Y2100: f64 = 4_102_444_800.0;

fn tls_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A whole config for `validate`/`up` run by hand, with `tls` under `proxy:`.
fn config_text(tls: &str) -> String {
    format!(
        "proxy:\n  listen: [\"127.0.0.1:{}\"]\n  {tls}\nadmin:\n  listen: 127.0.0.1:{}\nstate_dir: state\n\
         apps:\n  web:\n    command: [{:?}]\nroutes:\n  - {{ host: \"*\", path: /, app: web }}\n",
        free_port(),
        free_port(),
        demo_app()
    )
}

/// `cutover up` with certificates for a.test (and `*.wild.test`).
fn start_with_a(files: &CertFiles) -> Cutover {
    start_tls(files, tls_addr())
}

fn start_tls(files: &CertFiles, tls: SocketAddr) -> Cutover {
    Cutover::builder()
        .app(App::demo("web", "v1"))
        .route("*", "/", "web")
        .proxy_yaml(&tls_yaml(tls, &[files.yaml(&["a.test", "*.wild.test"])]))
        .start()
}

/// A TLS connection to `addr` for `sni`, retried until the listener is up.
fn tls_connect(addr: SocketAddr, sni: &str) -> TlsClient {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TlsClient::connect(addr, sni) {
            Ok(client) => return client,
            Err(e) => {
                assert!(Instant::now() < deadline, "no TLS handshake with {addr} for {sni}: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// `GET /certificates` as (host, source, not_after) triples.
fn certificates(cutover: &Cutover) -> Vec<(String, String, String)> {
    let resp = cutover.admin_get("/certificates");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    body["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["host"].as_str().unwrap().to_string(),
                c["source"].as_str().unwrap().to_string(),
                c["not_after"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn cert(host: &str, not_after: &str) -> (String, String, String) {
    (host.into(), "file".into(), not_after.into())
}

/// The expiry gauge's series as (host, source, value), sorted.
fn expiry_series(cutover: &Cutover) -> Vec<(String, String, f64)> {
    let mut series: Vec<_> = cutover
        .metrics()
        .into_iter()
        .filter(|s| s.name == "cutover_certificate_expiry_timestamp_seconds")
        .map(|s| (s.labels["host"].clone(), s.labels["source"].clone(), s.value))
        .collect();
    series.sort_by(|a, b| a.partial_cmp(b).unwrap());
    series
}

#[test]
fn validate_prints_bad_certificate_files_at_their_keys_and_exits_1() {
    let dir = TempDir::new("certs-validate");
    let good = CertFiles::write(dir.path(), "good", &["a.test"], 2000, 2100);
    let mismatched = CertFiles::write(dir.path(), "mismatched", &["b.test"], 2000, 2100);
    mismatched.break_key();
    let expired = CertFiles::write(dir.path(), "expired", &["c.test"], 2000, 2001);
    let config = dir.path().join("deploy.yaml");
    let tls = tls_yaml(
        tls_addr(),
        &[
            mismatched.yaml(&["b.test"]),
            expired.yaml(&["c.test", "d.test"]),
            good.yaml(&["a.test"]),
        ],
    );
    std::fs::write(&config, config_text(&tls)).unwrap();
    let out = Command::new(cutover_bin())
        .args(["validate", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = config.display().to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{file}: proxy.tls.certificates[0].key: ")),
        "{stderr}"
    );
    assert!(
        lines[0].contains("is not the private key of the certificate"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{file}: proxy.tls.certificates[1].cert: "))
            && lines[1].contains("expired on 2001-01-01"),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{file}: proxy.tls.certificates[1].hosts[1]: d.test is not covered"
        )),
        "{stderr}"
    );
    assert_eq!(lines[3], "3 problems found", "{stderr}");

    std::fs::write(&config, config_text(&tls_yaml(tls_addr(), &[good.yaml(&["a.test"])]))).unwrap();
    let out = Command::new(cutover_bin())
        .args(["validate", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    // A key every user can read works, with a warning.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&good.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(cutover_bin())
        .args(["validate", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{file}: warning: proxy.tls.certificates[0].key: "))
            && stderr.contains("chmod 600"),
        "{stderr}"
    );
}

#[test]
fn up_refuses_to_start_on_a_bad_certificate_file() {
    let dir = TempDir::new("certs-up");
    let config = dir.path().join("deploy.yaml");
    let missing = CertFiles {
        cert: dir.path().join("missing.pem"),
        key: dir.path().join("missing.key"),
    };
    std::fs::write(
        &config,
        config_text(&tls_yaml(tls_addr(), &[missing.yaml(&["a.test"])])),
    )
    .unwrap();
    let mut child = Command::new(cutover_bin())
        .args(["up", "-c"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cutover up did not refuse the bad certificate file");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: proxy.tls.certificates[0].cert: cannot read {}",
            config.display(),
            missing.cert.display()
        )),
        "{stderr}"
    );
    assert!(!dir.path().join("state").exists(), "nothing was started or written");
}

#[test]
fn certificates_lists_file_certificates_and_their_expiry_series() {
    let files_dir = TempDir::new("certs-list");
    let files = CertFiles::write(files_dir.path(), "a", &["a.test", "*.wild.test"], 2000, 2100);
    let cutover = start_with_a(&files);

    let resp = cutover.admin_get("/certificates");
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    let first = &body["certificates"][0];
    assert_eq!(first["host"], "a.test", "{body}");
    assert_eq!(first["source"], "file");
    assert_eq!(first["not_before"], "2000-01-01T00:00:00Z");
    assert_eq!(first["not_after"], "2100-01-01T00:00:00Z");
    assert_eq!(first["cert"], files.cert.display().to_string());
    assert_eq!(first["key"], files.key.display().to_string());
    assert!(first["issuer"].as_str().unwrap().contains("CN="), "{body}");
    assert_eq!(body["certificates"][1]["host"], "*.wild.test");
    assert_eq!(
        expiry_series(&cutover),
        [
            ("*.wild.test".into(), "file".into(), Y2100),
            ("a.test".into(), "file".into(), Y2100)
        ]
    );

    let (code, stdout, stderr) = cutover.cli(&["certs"]);
    assert_eq!(code, 0, "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("a.test "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.contains("file") && row.contains("2100-01-01T00:00:00Z"), "{stdout}");
    let (code, stdout, _) = cutover.cli(&["certs", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), body);

    // The reload is a POST like any other: JSON only.
    let refused = cutover.admin_send("POST", "/certificates/reload", &[("Content-Type", "text/plain")], b"x");
    assert_eq!(refused.status, 415);
}

#[test]
fn a_push_with_a_bad_certificate_file_is_refused_and_changes_nothing() {
    let files_dir = TempDir::new("certs-push-bad");
    let files = CertFiles::write(files_dir.path(), "a", &["a.test", "*.wild.test"], 2000, 2100);
    let cutover = start_with_a(&files);
    let before = certificates(&cutover);
    let generation = cutover.status()["route_table_generation"].clone();

    let bad = CertFiles::write(files_dir.path(), "b", &["b.test"], 2000, 2100);
    bad.break_key();
    let pushed = cutover
        .config_with(&files.yaml(&["a.test", "*.wild.test"]), &bad.yaml(&["b.test"]))
        .replace("path: \"/\"", "path: \"/other\"");
    let (code, _, stderr) = cutover.push(&pushed, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("proxy.tls.certificates[0].key: ") && stderr.contains("is not the private key"),
        "{stderr}"
    );
    assert_eq!(certificates(&cutover), before);
    assert_eq!(
        cutover.status()["route_table_generation"],
        generation,
        "the routes did not change either"
    );
    assert_eq!(cutover.get("x.test", "/").status, 200, "the old route serves");
}

#[test]
fn a_push_with_new_files_and_a_reload_swap_the_certificates() {
    let files_dir = TempDir::new("certs-push-good");
    let files = CertFiles::write(files_dir.path(), "a", &["a.test", "*.wild.test"], 2000, 2100);
    let cutover = start_with_a(&files);

    let b = CertFiles::write(files_dir.path(), "b", &["b.test"], 2000, 2100);
    let pushed = cutover.config_with(&files.yaml(&["a.test", "*.wild.test"]), &b.yaml(&["b.test"]));
    let (code, stdout, stderr) = cutover.push(&pushed, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(certificates(&cutover), [cert("b.test", "2100-01-01T00:00:00Z")]);
    assert_eq!(
        expiry_series(&cutover),
        [("b.test".into(), "file".into(), Y2100)],
        "the gone hosts' series are removed"
    );

    // Renewed in place: the same paths, a new certificate.
    b.rewrite(&["b.test"], 2001, 2099);
    let (code, stdout, stderr) = cutover.cli(&["certs", "--reload"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("2099-01-01T00:00:00Z"), "{stdout}");
    assert_eq!(certificates(&cutover), [cert("b.test", "2099-01-01T00:00:00Z")]);
    assert_eq!(expiry_series(&cutover)[0].2, 4_070_908_800.0);

    // A bad file on reload: refused, the certificate in use stays.
    b.break_key();
    let (code, _, stderr) = cutover.cli(&["certs", "--reload"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("proxy.tls.certificates[0].key: "), "{stderr}");
    assert_eq!(certificates(&cutover), [cert("b.test", "2099-01-01T00:00:00Z")]);
}

#[test]
fn new_connections_get_the_pushed_or_reloaded_certificate_and_open_ones_keep_theirs() {
    let files_dir = TempDir::new("certs-tls");
    let a = CertFiles::write(files_dir.path(), "a", &["a.test", "*.wild.test"], 2000, 2100);
    let tls = tls_addr();
    let cutover = start_tls(&a, tls);

    let mut first = tls_connect(tls, "a.test");
    assert_eq!(first.peer_cert(), der_of(&a.cert), "the file's certificate is served");
    assert_eq!(first.get("a.test", "/").unwrap().0, 200);
    assert_eq!(tls_connect(tls, "x.wild.test").peer_cert(), der_of(&a.cert));
    assert!(
        TlsClient::connect(tls, "b.test").is_err(),
        "an unknown SNI gets an alert"
    );

    // A push with a new certificate for a.test (and b.test).
    let a2 = CertFiles::write(files_dir.path(), "a2", &["a.test", "b.test"], 2000, 2100);
    let pushed = cutover.config_with(&a.yaml(&["a.test", "*.wild.test"]), &a2.yaml(&["a.test", "b.test"]));
    let (code, stdout, stderr) = cutover.push(&pushed, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let mut second = tls_connect(tls, "a.test");
    assert_eq!(
        second.peer_cert(),
        der_of(&a2.cert),
        "a new connection gets the pushed certificate"
    );
    assert_eq!(tls_connect(tls, "b.test").peer_cert(), der_of(&a2.cert));
    assert!(
        TlsClient::connect(tls, "x.wild.test").is_err(),
        "the removed wildcard is gone"
    );
    let (status, body) = first.get("a.test", "/").unwrap();
    assert_eq!(
        status, 200,
        "the connection opened before the push keeps working: {body}"
    );
    assert_eq!(first.peer_cert(), der_of(&a.cert));

    // The same files renewed in place, then `cutover certs --reload`.
    let before_reload = der_of(&a2.cert);
    a2.rewrite(&["a.test", "b.test"], 2001, 2099);
    assert_eq!(
        tls_connect(tls, "a.test").peer_cert(),
        before_reload,
        "nothing changes before the reload"
    );
    let (code, stdout, stderr) = cutover.cli(&["certs", "--reload"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        tls_connect(tls, "a.test").peer_cert(),
        der_of(&a2.cert),
        "the reloaded certificate is served"
    );
    assert_eq!(
        second.get("a.test", "/").unwrap().0,
        200,
        "open connections are not touched"
    );
    assert_eq!(second.peer_cert(), before_reload);
    assert_eq!(first.get("a.test", "/").unwrap().0, 200);
}

#[test]
fn tls_settings_a_push_cannot_apply_are_named_and_leave_the_certificates_alone() {
    let files_dir = TempDir::new("certs-warnings");
    let files = CertFiles::write(files_dir.path(), "a", &["a.test", "*.wild.test"], 2000, 2100);
    let tls = tls_addr();
    let cutover = start_tls(&files, tls);
    let moved = cutover
        .config_with(
            &format!("listen: [\"{tls}\"]"),
            &format!("listen: [\"{}\"]", tls_addr()),
        )
        .replace("tls: {", "http2: false\n  tls: { hsts: 1h,");
    let (code, stdout, stderr) = cutover.push(&moved, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for warning in [
        "warning: proxy.tls.listen applies at the next start of cutover",
        "warning: proxy.tls.redirect_http and proxy.tls.hsts apply at the next start of cutover",
        "warning: proxy.http2 and proxy.h2c apply at the next start of cutover",
    ] {
        assert!(stdout.contains(warning), "{warning:?} missing:\n{stdout}");
    }
    assert_eq!(
        tls_connect(tls, "a.test").peer_cert(),
        der_of(&files.cert),
        "the listener still serves"
    );

    // proxy.tls removed: the listener keeps its certificates until the next start.
    let plain: String = cutover
        .config_text()
        .lines()
        .filter(|l| !l.contains("tls:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (code, stdout, stderr) = cutover.push(&plain, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("warning: removing proxy.tls applies at the next start of cutover"),
        "{stdout}"
    );
    assert_eq!(tls_connect(tls, "a.test").peer_cert(), der_of(&files.cert));
    assert_eq!(certificates(&cutover).len(), 2);
}
