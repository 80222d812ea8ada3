//! A real ACME server for the tests: Debian's `pebble` (RFC 8555 test CA)
//! with `pebble-challtestsrv` as its DNS server, answering every name with
//! 127.0.0.1, so Pebble validates challenges against listeners the test
//! runs on loopback.
//!
//! Everything lives in a temporary directory: Pebble's JSON config, its
//! own TLS certificate (made here with rcgen, signed by a throwaway CA
//! whose PEM is `ca_roots`), and both programs' logs (shown when a test
//! fails). All ports are free loopback ports; both processes are killed on
//! drop.
//!
//! Used by `control/tests/acme_pebble.rs` (through `#[path]`); a test of
//! this crate adds `pub mod pebble;` to `support/mod.rs` and the
//! dev-dependencies it names (rcgen, rustls, tokio-rustls, rustls-pemfile).
#![allow(dead_code)] // each test binary uses a different part

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// What the Pebble of a test looks like.
#[derive(Debug, Clone)]
pub struct PebbleOptions {
    /// The port Pebble sends http-01 validations to on 127.0.0.1.
    pub http_port: u16,
    /// The port Pebble sends tls-alpn-01 validations to on 127.0.0.1.
    pub tls_port: u16,
    /// Issued certificates' lifetime; Pebble's default (years) when `None`.
    pub validity: Option<Duration>,
    /// Names Pebble refuses to issue for (its `domainBlocklist`).
    pub blocked: Vec<String>,
}

/// A configured Pebble, running between [`Pebble::start`] and
/// [`Pebble::stop`] (or drop).
pub struct Pebble {
    dir: PathBuf,
    port: u16,
    dns_port: u16,
    management_port: u16,
    pebble: Option<Child>,
    dns: Option<Child>,
}

impl Pebble {
    /// Writes the config and TLS files; starts nothing yet, so a test can
    /// point cutover at a Pebble that is not up.
    pub fn configure(options: PebbleOptions) -> Self {
        for program in ["pebble", "pebble-challtestsrv"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                found,
                "{program} is not installed: run make deps (Debian's pebble package)"
            );
        }
        let dir = std::env::temp_dir().join(format!(
            "cutover-pebble-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_tls(&dir);

        let port = free_tcp_port();
        let dns_port = free_udp_port();
        let management_port = free_tcp_port();
        let mut pebble = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": dir.join("pebble.pem"),
            "privateKey": dir.join("pebble.key"),
            "httpPort": options.http_port,
            "tlsPort": options.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if !options.blocked.is_empty() {
            pebble["domainBlocklist"] = options.blocked.clone().into();
        }
        if let Some(validity) = options.validity {
            // Pebble 2.4 reads this (seconds) from its config.
            pebble["certificateValidityPeriod"] = validity.as_secs().into();
        }
        let config = serde_json::json!({ "pebble": pebble });
        std::fs::write(dir.join("pebble.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        Self {
            dir,
            port,
            dns_port,
            management_port,
            pebble: None,
            dns: None,
        }
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The PEM root Pebble's own TLS certificate chains to (`ca_roots`).
    pub fn ca_roots(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Starts the DNS server and Pebble; returns once Pebble answers.
    pub fn start(&mut self) {
        assert!(self.pebble.is_none(), "Pebble already running");
        let dns_log = std::fs::File::create(self.dir.join("challtestsrv.log")).unwrap();
        let dns = Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{}", self.dns_port),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{}", free_tcp_port()),
            ])
            .stdin(Stdio::null())
            .stdout(dns_log.try_clone().unwrap())
            .stderr(dns_log)
            .spawn()
            .expect("pebble-challtestsrv starts (run make deps)");
        self.dns = Some(dns);

        let log = std::fs::File::create(self.dir.join("pebble.log")).unwrap();
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(self.dir.join("pebble.json"))
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{}", self.dns_port))
            .arg("-strict=false")
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Every order validates its own authorization.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble starts (run make deps)");
        self.pebble = Some(pebble);

        let deadline = cutover_proxy::time::after(Duration::from_secs(20));
        for port in [self.port, self.management_port] {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Some(status) = self.pebble.as_mut().and_then(|p| p.try_wait().ok().flatten()) {
                    panic!("pebble exited ({status}):\n{}", self.logs());
                }
                assert!(
                    Instant::now() < deadline,
                    "pebble did not listen within 20s:\n{}",
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The root of the certificates this Pebble issues (PEM), from its
    /// management API: Pebble makes a new one at every start.
    pub async fn issuing_root(&self) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(self.ca_roots()).unwrap();
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let fetch = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.management_port))
                .await
                .unwrap();
            let name = rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from(Ipv4Addr::LOCALHOST).into());
            let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, tcp)
                .await
                .unwrap();
            tls.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = tls.read_to_end(&mut answer).await;
            answer
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), fetch)
            .await
            .expect("Pebble's management API answers");
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let body = text.split_once("\r\n\r\n").unwrap().1;
        assert!(body.contains("BEGIN CERTIFICATE"), "{text}");
        body.as_bytes().to_vec()
    }

    /// Kills both processes (Pebble forgets everything: accounts, orders).
    pub fn stop(&mut self) {
        for child in [self.pebble.take(), self.dns.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The http-01 paths Pebble fetched so far, from its log.
    pub fn http01_paths(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default();
        let mut paths: Vec<String> = log
            .lines()
            .filter_map(|line| line.split_once("Attempting to validate w/ HTTP: ").map(|(_, url)| url))
            .filter_map(|url| url.find("/.well-known/").map(|i| url[i..].trim().to_owned()))
            .collect();
        paths.dedup();
        paths
    }

    /// Both logs, for failure messages.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "--- pebble.log\n{}\n--- challtestsrv.log\n{}",
            read("pebble.log"),
            read("challtestsrv.log")
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("{}", self.logs());
        }
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A throwaway CA (`ca.pem`) and Pebble's certificate for 127.0.0.1 and
/// localhost signed by it (`pebble.pem`, `pebble.key`).
fn write_tls(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "cutover test ACME server CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();

    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    let leaf_cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();

    let write = |name: &str, text: &str| {
        let mut file = std::fs::File::create(dir.join(name)).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    };
    write("ca.pem", &ca_cert.pem());
    write("pebble.pem", &leaf_cert.pem());
    write("pebble.key", &key.serialize_pem());
}

/// A TCP port free a moment ago on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
