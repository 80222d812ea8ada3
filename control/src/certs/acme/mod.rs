//! Automatic certificates from an ACME server (RFC 8555; SPEC §3
//! `proxy.tls.acme`, §8).
//!
//! [`AcmeDriver`] is what `cutover up` starts: it follows the pushed
//! config and keeps one [`AcmeService`] in step with `proxy.tls.acme` and
//! the route hosts ([`acme_hosts`]).
//!
//! [`AcmeService::start`] runs one task that keeps a certificate for every
//! host of a set: it serves the certificates stored in `state_dir/acme/` at
//! once, orders the missing ones, renews each when a third of its lifetime
//! remains, and retries failures with exponential back-off and jitter while
//! the previous certificate keeps serving. Certificates reach the TLS
//! listeners through an [`Installer`] (the certificate manager, which
//! merges them with the certificate files into the `CertStore`); challenge
//! answers go to the data plane's [`Challenges`].
//!
//! - `driver`: the service in step with pushes.
//! - `account`: the ACME account, created once and kept.
//! - `order`: one order for one host (http-01 or tls-alpn-01).
//! - `cert`: keys, CSRs, issued chains, the tls-alpn-01 certificate.
//! - `storage`: `state_dir/acme/`, atomic 0600 files.
//! - `schedule`: the task and its back-off.
//! - `status`: the per-host status it publishes.
//! - `http`: the bounded HTTPS client the ACME crate talks through.
//!
//! [`Challenges`]: cutover_proxy::tls::Challenges

mod account;
mod cert;
mod driver;
mod http;
mod order;
mod schedule;
mod status;
mod storage;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;

use crate::config::{Config, HostPattern};

pub use crate::certs::manager::AcmeState;
pub use cert::{tls_alpn01_cert, Issued};
pub use driver::AcmeDriver;
pub use schedule::AcmeService;
pub use status::{HostStatus, StatusReport};
pub use storage::Storage;

/// Where obtained certificates go: the certificate manager implements it
/// over the `CertStore` the TLS listeners serve. Called from the ACME task,
/// and from [`AcmeService::start`] itself for the stored certificates (so
/// do not hold a lock `install` needs while calling `start`); both calls
/// must be quick and must not wait on the ACME service.
pub trait Installer: Send + Sync + 'static {
    /// Serve `key` for `host` from now on, in place of any earlier ACME
    /// certificate for it (a certificate file for the same host wins).
    fn install(&self, host: &str, key: Arc<CertifiedKey>, not_before: SystemTime, not_after: SystemTime, issuer: &str);
    /// Stop serving the ACME certificate of `host` (the host left the set).
    fn remove(&self, host: &str);
}

/// The certificate manager serves ACME certificates beside the files (a
/// file naming the same host wins).
impl Installer for crate::certs::CertManager {
    fn install(&self, host: &str, key: Arc<CertifiedKey>, not_before: SystemTime, not_after: SystemTime, issuer: &str) {
        self.install_acme(host, key, not_before, not_after, issuer);
    }

    fn remove(&self, host: &str) {
        self.remove_acme(host);
    }
}

/// How long things may take and how failures are retried. The defaults
/// suit a real ACME server; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Each HTTP request to the ACME server: connect, TLS, answer, body.
    pub request_timeout: Duration,
    /// One whole order, from account to stored certificate.
    pub order_deadline: Duration,
    /// Waiting for the server to validate an order or issue its certificate.
    pub poll_limit: Duration,
    /// The first retry after a failure; each later one doubles, with jitter.
    pub retry_first: Duration,
    /// Retries are never further apart than this.
    pub retry_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            order_deadline: Duration::from_secs(300),
            poll_limit: Duration::from_secs(120),
            retry_first: Duration::from_secs(10),
            retry_max: Duration::from_secs(3600),
        }
    }
}

/// Why ACME could not start, or why one attempt failed (shown by
/// `cutover certs` as the host's last error).
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The `proxy.tls.acme` block cannot be used (`ca_roots` unreadable).
    #[error("{0}")]
    Config(String),
    /// Reading or writing `state_dir/acme/`.
    #[error("state_dir: {0}")]
    Storage(String),
    /// The ACME server, or the way to it, failed.
    #[error("{0}")]
    Acme(String),
    /// The ACME server no longer knows the stored account.
    #[error("{0} (a new ACME account will be created)")]
    AccountGone(String),
    /// The order ended without a certificate.
    #[error("{0}")]
    Order(String),
    /// A certificate or key that cannot be used.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The whole order took longer than [`Timing::order_deadline`].
    #[error("the order did not complete within {0}")]
    Deadline(String),
}

/// The hosts ACME must keep certificates for under `config`:
/// `proxy.tls.acme.hosts` when given, otherwise every exact route host
/// that no certificate file covers (exactly or by wildcard). IP addresses
/// are left out: http-01 and tls-alpn-01 prove names. Empty without
/// `proxy.tls.acme`. Lowercase, each once, in config order.
pub fn acme_hosts(config: &Config) -> Vec<String> {
    let Some(tls) = &config.proxy.tls else {
        return Vec::new();
    };
    let Some(acme) = &tls.acme else {
        return Vec::new();
    };
    let candidates: Vec<String> = if acme.hosts.is_empty() {
        config
            .routes
            .iter()
            .filter_map(|route| match &route.host {
                HostPattern::Exact(host) => Some(host.to_ascii_lowercase()),
                HostPattern::Any | HostPattern::Wildcard(_) => None,
            })
            .filter(|host| !tls.certificates.iter().any(|c| c.hosts.iter().any(|p| covers(p, host))))
            .collect()
    } else {
        acme.hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
    };
    let mut hosts: Vec<String> = Vec::with_capacity(candidates.len());
    for host in candidates {
        if host.parse::<IpAddr>().is_err() && !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

/// Whether a certificate host (`example.com` or `*.example.com`) covers
/// `host`, as the `CertStore` chooses: exact, or one label under a wildcard.
fn covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml_tls: &str, routes: &str) -> Config {
        let text = format!(
            "proxy:\n  listen: [\"127.0.0.1:18080\"]\n  tls:\n{yaml_tls}\n\
             apps:\n  web:\n    command: [\"true\"]\n    health: {{ path: /health }}\n\
             routes:\n{routes}\n"
        );
        crate::config::parse(&text, "deploy.yaml", std::path::Path::new("/tmp"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn derived_hosts_are_the_exact_route_hosts_without_a_certificate_file() {
        let c = config(
            "    listen: [\"127.0.0.1:18443\"]\n    certificates:\n      - { hosts: [\"*.files.test\", static.test], cert: a.pem, key: a.key }\n    acme: { directory: \"https://acme.test/dir\" }",
            "  - { host: A.test, app: web }\n  - { host: a.test, path: /x, app: web }\n  - { host: \"*.wild.test\", app: web }\n  - { host: www.files.test, app: web }\n  - { host: deep.www.files.test, app: web }\n  - { host: static.test, app: web }\n  - { host: 10.0.0.1, app: web }\n  - { app: web }",
        );
        assert_eq!(acme_hosts(&c), ["a.test", "deep.www.files.test"]);
    }

    #[test]
    fn listed_hosts_win_and_no_acme_means_none() {
        let c = config(
            "    listen: [\"127.0.0.1:18443\"]\n    acme: { directory: \"https://acme.test/dir\", hosts: [b.test, c.test] }",
            "  - { host: a.test, app: web }",
        );
        assert_eq!(acme_hosts(&c), ["b.test", "c.test"]);
        let c = config(
            "    listen: [\"127.0.0.1:18443\"]\n    certificates:\n      - { hosts: [a.test], cert: a.pem, key: a.key }",
            "  - { host: b.test, app: web }",
        );
        assert!(acme_hosts(&c).is_empty());
    }
}
