//! Certificate files for the TLS tests, made by rcgen at test time, and a
//! blocking TLS client that reports the certificate it was served.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{date_time_ymd, CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// A certificate and key written as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// A self-signed certificate for `names`, valid from `from` to `to`
    /// (years, January 1st), written as `dir/<name>.pem` and `.key`.
    pub fn write(dir: &Path, name: &str, names: &[&str], from: i32, to: i32) -> Self {
        let files = CertFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        files.rewrite(names, from, to);
        files
    }

    /// Writes a new certificate and key over the same files.
    pub fn rewrite(&self, names: &[&str], from: i32, to: i32) {
        let (cert, key) = self_signed(names, from, to);
        std::fs::write(&self.cert, cert).unwrap();
        write_key(&self.key, &key);
    }

    /// Replaces only the key, by one that does not match the certificate.
    pub fn break_key(&self) {
        let (_, other) = self_signed(&["other.test"], 2000, 2100);
        write_key(&self.key, &other);
    }

    /// `{ hosts: [...], cert: ..., key: ... }` for `proxy.tls.certificates`.
    pub fn yaml(&self, hosts: &[&str]) -> String {
        let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
        format!(
            "{{ hosts: [{}], cert: {:?}, key: {:?} }}",
            hosts.join(", "),
            self.cert.display().to_string(),
            self.key.display().to_string()
        )
    }
}

/// A key file, readable by its owner only (as `cutover validate` wants).
fn write_key(path: &Path, pem: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// (certificate PEM, PKCS#8 key PEM).
pub fn self_signed(names: &[&str], from: i32, to: i32) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.not_before = date_time_ymd(from, 1, 1);
    params.not_after = date_time_ymd(to, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// `proxy.tls` on one line: a TLS listener at `listen` serving `certs`.
pub fn tls_yaml(listen: std::net::SocketAddr, certs: &[String]) -> String {
    format!(
        "tls: {{ listen: [\"{listen}\"], certificates: [{}] }}",
        certs.join(", ")
    )
}

// === a TLS client that reports what it was served ===

/// The PEM certificate's DER (the first certificate of the file).
pub fn der_of(cert_file: &Path) -> Vec<u8> {
    let pem = std::fs::read(cert_file).unwrap();
    let first = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .expect("a certificate in the file");
    first.unwrap().to_vec()
}

/// A blocking TLS 1.2/1.3 connection over which HTTP/1.1 requests are sent.
pub struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
}

impl TlsClient {
    /// Connects to `addr` asking for `sni`. Any certificate is accepted
    /// (these are self-signed): the tests check which one was presented.
    pub fn connect(addr: std::net::SocketAddr, sni: &str) -> std::io::Result<TlsClient> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        // Full handshakes only: a resumed session would report the
        // certificate of the session it resumes.
        config.resumption = rustls::client::Resumption::disabled();
        let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
        let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
        let tcp = std::net::TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient { stream })
    }

    /// The leaf certificate the server presented (DER).
    pub fn peer_cert(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().expect("a handshake happened")[0].to_vec()
    }

    /// `GET path` with `Host: host` on this connection: (status, body).
    pub fn get(&mut self, host: &str, path: &str) -> std::io::Result<(u16, String)> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.stream.write_all(request.as_bytes())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < end + 4 + length {
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                return Ok((status, body));
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Accepts any server certificate, checking only the handshake signatures.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
