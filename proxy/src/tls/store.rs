//! The certificates the TLS listeners serve, chosen by SNI.
//!
//! One immutable [`CertSet`] behind an `ArcSwap`: the control plane builds a
//! whole new set (certificate files and ACME certificates together) and
//! swaps it in with [`CertStore::replace`]; a handshake loads the current
//! set once. A connection keeps the certificate it was given: nothing here
//! touches an open connection.
//!
//! Selection (SPEC §8): the exact host first, then a wildcard. A wildcard
//! `*.example.com` covers exactly one label (`a.example.com`, not
//! `a.b.example.com` nor `example.com`), as clients check it (RFC 6125
//! §6.4.3), so of two wildcards only the one matching the first label's
//! suffix can apply. No match, or no SNI at all, is `None`: the handshake
//! fails with an alert and never presents another host's certificate.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertSource {
    /// `proxy.tls.certificates` files.
    File,
    /// Obtained by cutover from an ACME server.
    Acme,
}

impl CertSource {
    /// The metric label and the word `cutover certs` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            CertSource::File => "file",
            CertSource::Acme => "acme",
        }
    }
}

/// One certificate chain with its key, and the hosts it serves
/// (exact names or `*.suffix` wildcards, lowercase).
#[derive(Clone)]
pub struct CertEntry {
    /// Hosts this certificate is chosen for.
    pub hosts: Vec<String>,
    /// The chain and its signing key.
    pub key: Arc<CertifiedKey>,
    /// Where it came from.
    pub source: CertSource,
}

impl fmt::Debug for CertEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertEntry")
            .field("hosts", &self.hosts)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// An immutable SNI → certificate map.
#[derive(Default)]
pub struct CertSet {
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.` (`example.com`).
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
}

impl CertSet {
    /// Builds a set; for a host named by several entries the first wins
    /// (the control plane orders files before ACME certificates).
    pub fn new(entries: &[CertEntry]) -> Self {
        let mut set = CertSet::default();
        for entry in entries {
            for host in &entry.hosts {
                let host = host.to_ascii_lowercase();
                let (map, name) = match host.strip_prefix("*.") {
                    Some(suffix) => (&mut set.wildcard, suffix.to_owned()),
                    None => (&mut set.exact, host),
                };
                map.entry(name.into()).or_insert_with(|| Arc::clone(&entry.key));
            }
        }
        set
    }

    /// The certificate for `sni`: exact host, then the one-label wildcard.
    pub fn resolve(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        let sni = sni.strip_suffix('.').unwrap_or(sni);
        if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.resolve_lower(&sni.to_ascii_lowercase());
        }
        self.resolve_lower(sni)
    }

    fn resolve_lower(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        if let Some(key) = self.exact.get(sni) {
            return Some(key);
        }
        let (label, suffix) = sni.split_once('.')?;
        // A wildcard stands for one DNS label: letters, digits, `-`, `_`.
        // Anything else (`/`, `@`, `\`, ...) is not a host this certificate
        // covers; the redirect builds a `Location` from it.
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        self.wildcard.get(suffix)
    }

    /// Whether a certificate covers `host` (for `redirect_http`).
    pub fn covers(&self, host: &str) -> bool {
        self.resolve(host).is_some()
    }

    /// Whether the set holds no certificate at all.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}

/// The certificates in use, swapped atomically.
#[derive(Default)]
pub struct CertStore {
    current: ArcSwap<CertSet>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.current.load();
        f.debug_struct("CertStore")
            .field("exact", &set.exact.len())
            .field("wildcard", &set.wildcard.len())
            .finish()
    }
}

impl CertStore {
    /// An empty store: every handshake fails until certificates arrive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces every certificate at once.
    pub fn replace(&self, entries: &[CertEntry]) {
        self.current.store(Arc::new(CertSet::new(entries)));
    }

    /// The current set.
    pub fn load(&self) -> arc_swap::Guard<Arc<CertSet>> {
        self.current.load()
    }

    /// Whether a certificate covers `host` now.
    pub fn covers(&self, host: &str) -> bool {
        self.current.load().covers(host)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name()?;
        self.current.load().resolve(sni).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let der = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        Arc::new(CertifiedKey::new(vec![cert.cert.der().clone()], signer))
    }

    fn entry(hosts: &[&str], key: &Arc<CertifiedKey>) -> CertEntry {
        CertEntry {
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            key: Arc::clone(key),
            source: CertSource::File,
        }
    }

    #[test]
    fn exact_then_one_label_wildcard_and_nothing_else() {
        let (exact, wild, deeper) = (key("a.example.com"), key("*.example.com"), key("*.b.example.com"));
        let set = CertSet::new(&[
            entry(&["a.example.com"], &exact),
            entry(&["*.example.com"], &wild),
            entry(&["*.b.example.com"], &deeper),
        ]);
        assert!(Arc::ptr_eq(set.resolve("a.example.com").unwrap(), &exact));
        assert!(Arc::ptr_eq(set.resolve("A.Example.COM.").unwrap(), &exact));
        assert!(Arc::ptr_eq(set.resolve("c.example.com").unwrap(), &wild));
        assert!(Arc::ptr_eq(set.resolve("x.b.example.com").unwrap(), &deeper));
        assert!(set.resolve("x.y.example.com").is_none(), "a wildcard covers one label");
        assert!(
            set.resolve("example.com").is_none(),
            "a wildcard does not cover its bare domain"
        );
        assert!(set.resolve(".example.com").is_none());
        assert!(set.resolve("other.org").is_none(), "never another host's certificate");
        for not_a_label in [
            "1249763972/.example.com",
            "a@b.example.com",
            "a\\b.example.com",
            "a b.example.com",
        ] {
            assert!(
                set.resolve(not_a_label).is_none(),
                "{not_a_label}: a wildcard covers one DNS label only"
            );
        }
    }

    #[test]
    fn first_entry_wins_and_replace_swaps_everything() {
        let (first, second) = (key("a.test"), key("a.test"));
        let store = CertStore::new();
        assert!(!store.covers("a.test"));
        store.replace(&[entry(&["a.test"], &first), entry(&["a.test"], &second)]);
        assert!(Arc::ptr_eq(store.load().resolve("a.test").unwrap(), &first));
        store.replace(&[entry(&["b.test"], &second)]);
        assert!(!store.covers("a.test"));
        assert!(store.covers("b.test"));
    }
}
