//! Certificate files for the TLS tests, made by rcgen at test time.

use std::path::{Path, PathBuf};

use rcgen::{date_time_ymd, CertificateParams, KeyPair};

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
        std::fs::write(&self.key, key).unwrap();
    }

    /// Replaces only the key, by one that does not match the certificate.
    pub fn break_key(&self) {
        let (_, other) = self_signed(&["other.test"], 2000, 2100);
        std::fs::write(&self.key, other).unwrap();
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
