//! Certificate files (`proxy.tls.certificates`): read, parse and check one
//! PEM chain and its key before anything serves them.
//!
//! A file pair is refused, like any config mistake, when it cannot be read,
//! holds no certificate or not exactly one private key, when the key is not
//! the leaf's, when the leaf is expired or not yet valid, or when a
//! configured host is not among the leaf's DNS names. Every problem is
//! reported at its key (`proxy.tls.certificates[1].key: ...`) through
//! [`Problems`], so `cutover validate`, `cutover up` and `POST /push` print
//! them the way they print the rest of the config's.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{CertificateConfig, Problem, Problems};

/// The largest certificate or key file read: real chains are a few KiB, and
/// a config naming `/dev/zero` or a log file must not eat memory.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// One certificate file pair, read and checked.
#[derive(Clone)]
pub struct LoadedCert {
    /// The configured hosts and file paths.
    pub config: CertificateConfig,
    /// The chain and its signing key, as the TLS listeners serve them.
    pub key: Arc<CertifiedKey>,
    /// The leaf's validity.
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The leaf's issuer, as a distinguished name (`CN=..., O=...`).
    pub issuer: String,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCert")
            .field("hosts", &self.config.hosts)
            .field("cert", &self.config.cert)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// A problem with one certificate entry, at a key below it (`cert`, `key`,
/// `hosts[2]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The key below `proxy.tls.certificates[i]`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl FileProblem {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Loads every entry of `proxy.tls.certificates`, all or nothing. `file`
/// names the config in the problems (as [`crate::config::load`] does);
/// `now` is the clock validity is checked against.
pub fn load_all(certificates: &[CertificateConfig], file: &str, now: SystemTime) -> Result<Vec<LoadedCert>, Problems> {
    let mut loaded = Vec::with_capacity(certificates.len());
    let mut problems = Vec::new();
    for (i, config) in certificates.iter().enumerate() {
        match load(config, now) {
            Ok(cert) => loaded.push(cert),
            Err(found) => problems.extend(found.into_iter().map(|p| Problem {
                file: file.to_string(),
                location: None,
                key_path: Some(format!("proxy.tls.certificates[{i}].{}", p.key)),
                message: p.message,
            })),
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(Problems(problems))
    }
}

/// Reads and checks one file pair.
pub fn load(config: &CertificateConfig, now: SystemTime) -> Result<LoadedCert, Vec<FileProblem>> {
    let cert_pem = read_bounded(&config.cert).map_err(|m| vec![FileProblem::new("cert", m)]);
    let key_pem = read_bounded(&config.key).map_err(|m| vec![FileProblem::new("key", m)]);
    let chain = cert_pem.and_then(|pem| parse_chain(&config.cert, &pem).map_err(|m| vec![FileProblem::new("cert", m)]));
    let key = key_pem.and_then(|pem| parse_key(&config.key, &pem).map_err(|m| vec![FileProblem::new("key", m)]));
    let (chain, key) = match (chain, key) {
        (Ok(chain), Ok(key)) => (chain, key),
        (chain, key) => {
            let mut problems = chain.err().unwrap_or_default();
            problems.extend(key.err().unwrap_or_default());
            return Err(problems);
        }
    };
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        vec![FileProblem::new(
            "key",
            format!(
                "{}: unsupported private key ({e}); use an RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 key",
                config.key.display()
            ),
        )]
    })?;
    let key = CertifiedKey::new(chain, signer);
    match key.keys_match() {
        Ok(()) => {}
        // ring's keys always know their public half; a signer that does
        // not cannot be checked here, and rustls would fail its handshakes.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(vec![FileProblem::new(
                "key",
                format!(
                    "{} is not the private key of the certificate in {}; give the key the certificate was issued for",
                    config.key.display(),
                    config.cert.display()
                ),
            )])
        }
        Err(e) => {
            return Err(vec![FileProblem::new(
                "cert",
                format!("{}: the certificate cannot be read: {e}", config.cert.display()),
            )])
        }
    }
    let Some(leaf_der) = key.cert.first() else {
        // parse_chain refuses an empty chain; kept total for safety.
        return Err(vec![FileProblem::new("cert", "no certificate")]);
    };
    let leaf = Leaf::parse(leaf_der).map_err(|m| {
        vec![FileProblem::new(
            "cert",
            format!("{}: the first certificate cannot be parsed: {m}", config.cert.display()),
        )]
    })?;

    let mut problems = Vec::new();
    if now < leaf.not_before {
        problems.push(FileProblem::new(
            "cert",
            format!(
                "{} is not valid before {} (its clock or this machine's is wrong); use a certificate valid now",
                config.cert.display(),
                rfc3339(leaf.not_before)
            ),
        ));
    }
    if now > leaf.not_after {
        problems.push(FileProblem::new(
            "cert",
            format!(
                "{} expired on {}; renew it",
                config.cert.display(),
                rfc3339(leaf.not_after)
            ),
        ));
    }
    for (j, host) in config.hosts.iter().enumerate() {
        if !leaf.names.iter().any(|name| name_covers(name, host)) {
            let names = if leaf.names.is_empty() {
                "it has no DNS names in subjectAltName".to_string()
            } else {
                format!("its names: {}", leaf.names.join(", "))
            };
            problems.push(FileProblem::new(
                format!("hosts[{j}]"),
                format!(
                    "{host} is not covered by the certificate in {} ({names}); remove the host or use a certificate that names it",
                    config.cert.display()
                ),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(LoadedCert {
        config: config.clone(),
        key: Arc::new(key),
        not_before: leaf.not_before,
        not_after: leaf.not_after,
        issuer: leaf.issuer,
    })
}

/// Warnings (not refusals: the file works) about private key files every
/// user of the machine can read, `proxy.tls.certificates[i].key: ...`.
pub fn key_warnings(certificates: &[CertificateConfig]) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    certificates
        .iter()
        .enumerate()
        .filter_map(|(i, config)| {
            let mode = std::fs::metadata(&config.key).ok()?.permissions().mode();
            (mode & 0o004 != 0).then(|| {
                format!(
                    "proxy.tls.certificates[{i}].key: {} is readable by every user (mode {:o}); `chmod 600` it",
                    config.key.display(),
                    mode & 0o777
                )
            })
        })
        .collect()
}

/// Reads a regular file of at most [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    // Non-blocking: opening a FIFO for reading would wait for a writer
    // (and a push holds the deploy gate meanwhile). A regular file reads
    // the same either way; anything else is refused below.
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)
            .map_err(cannot)?
    };
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!(
            "{} is not a regular file; give the path of a PEM file",
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    // `take` as well as the size: the file may grow while it is read.
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{} is larger than {} KiB; a certificate or key file is a few KiB of PEM",
            path.display(),
            MAX_FILE_BYTES / 1024
        ));
    }
    Ok(bytes)
}

/// Every `CERTIFICATE` block of a PEM file, leaf first.
fn parse_chain(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a valid PEM file: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "no certificate in {} (expected a -----BEGIN CERTIFICATE----- block, leaf first)",
            path.display()
        ));
    }
    Ok(chain)
}

/// The one private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    let mut keys = Vec::new();
    for item in rustls_pemfile::read_all(&mut &pem[..]) {
        match item {
            Ok(rustls_pemfile::Item::Pkcs1Key(key)) => keys.push(PrivateKeyDer::Pkcs1(key)),
            Ok(rustls_pemfile::Item::Pkcs8Key(key)) => keys.push(PrivateKeyDer::Pkcs8(key)),
            Ok(rustls_pemfile::Item::Sec1Key(key)) => keys.push(PrivateKeyDer::Sec1(key)),
            Ok(_) => {}
            Err(e) => return Err(format!("{} is not a valid PEM file: {e}", path.display())),
        }
    }
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 if contains(pem, b"ENCRYPTED PRIVATE KEY") || contains(pem, b"Proc-Type: 4,ENCRYPTED") => Err(format!(
            "the private key in {} is encrypted; cutover needs it unencrypted (e.g. `openssl pkey -in KEY -out KEY.plain`), readable by cutover only",
            path.display()
        )),
        0 => Err(format!(
            "no private key in {} (expected -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
            path.display()
        )),
        n => Err(format!(
            "{n} private keys in {}; give exactly one, the certificate's",
            path.display()
        )),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the checks need from the leaf certificate.
struct Leaf {
    not_before: SystemTime,
    not_after: SystemTime,
    issuer: String,
    /// `dNSName` entries of subjectAltName, lowercase. The subject's CN is
    /// not looked at: clients stopped trusting it long ago.
    names: Vec<String>,
}

impl Leaf {
    fn parse(der: &CertificateDer<'_>) -> Result<Leaf, String> {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
        let validity = cert.validity();
        let names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("bad subjectAltName: {e}")),
        };
        Ok(Leaf {
            not_before: unix_time(validity.not_before.timestamp()),
            not_after: unix_time(validity.not_after.timestamp()),
            issuer: cert.issuer().to_string(),
            names,
        })
    }
}

/// Seconds since the epoch (negative before it) as a `SystemTime`.
fn unix_time(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    let time = if seconds >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(magnitude)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(magnitude)
    };
    // Out of the platform's range: the epoch is "long expired" for a
    // not_after and "valid" for a not_before, both refused or harmless.
    time.unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Whether a certificate name (`a.example.com`, `*.example.com`) covers a
/// configured host. A wildcard name covers exactly one label (RFC 6125
/// §6.4.3, as clients check it); a configured wildcard needs the same
/// wildcard name, since it stands for every host one label down.
pub fn name_covers(name: &str, host: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.eq_ignore_ascii_case(host) {
        return true;
    }
    let (Some(suffix), false) = (name.strip_prefix("*."), host.starts_with("*.")) else {
        return false;
    };
    match host.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
        None => false,
    }
}

/// A time as RFC 3339 (UTC, seconds), as the admin API shows it.
pub fn rfc3339(time: SystemTime) -> String {
    // humantime panics outside 1970..=9999; certificates may say anything.
    const LAST: Duration = Duration::from_secs(253_402_300_799); // 9999-12-31T23:59:59Z
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .min(LAST);
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + since_epoch).to_string()
}
