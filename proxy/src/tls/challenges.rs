//! ACME challenges being answered right now (RFC 8555 §8.3, RFC 8737).
//!
//! The control plane's ACME client puts a challenge here before telling the
//! ACME server it is ready and takes it out once the authorization is
//! decided. The data plane answers from it:
//! - `http-01`: `GET /.well-known/acme-challenge/{token}` on a plain
//!   listener gets the key authorization, before any routing, so no app
//!   sees it (and `redirect_http` does not apply to it);
//! - `tls-alpn-01`: a ClientHello offering only `acme-tls/1` gets the
//!   challenge certificate for its SNI.
//!
//! Both maps are tiny (one entry per host being validated) and read only on
//! those two rare paths, so a `RwLock` is enough.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::sign::CertifiedKey;

/// The path prefix of `http-01` challenges.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// The ALPN protocol of `tls-alpn-01` (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Challenges waiting for the ACME server's validation.
#[derive(Default)]
pub struct Challenges {
    http01: RwLock<HashMap<String, String>>,
    tls_alpn01: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges").finish_non_exhaustive()
    }
}

impl Challenges {
    /// No challenge pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `GET /.well-known/acme-challenge/{token}` with
    /// `key_authorization` until [`Challenges::remove_http01`].
    pub fn add_http01(&self, token: &str, key_authorization: &str) {
        let mut map = self.http01.write().unwrap_or_else(|e| e.into_inner());
        map.insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Stops answering `token`.
    pub fn remove_http01(&self, token: &str) {
        let mut map = self.http01.write().unwrap_or_else(|e| e.into_inner());
        map.remove(token);
    }

    /// The key authorization for a request path, when the path is a pending
    /// `http-01` challenge.
    pub fn http01_answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        let map = self.http01.read().unwrap_or_else(|e| e.into_inner());
        map.get(token).cloned()
    }

    /// Presents `cert` (the RFC 8737 certificate with the `acmeIdentifier`
    /// extension) to `acme-tls/1` handshakes for `host`.
    pub fn add_tls_alpn01(&self, host: &str, cert: Arc<CertifiedKey>) {
        let mut map = self.tls_alpn01.write().unwrap_or_else(|e| e.into_inner());
        map.insert(host.to_ascii_lowercase(), cert);
    }

    /// Stops answering `acme-tls/1` for `host`.
    pub fn remove_tls_alpn01(&self, host: &str) {
        let mut map = self.tls_alpn01.write().unwrap_or_else(|e| e.into_inner());
        map.remove(&host.to_ascii_lowercase());
    }

    /// The challenge certificate for an `acme-tls/1` handshake naming `sni`.
    pub fn tls_alpn01_cert(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let map = self.tls_alpn01.read().unwrap_or_else(|e| e.into_inner());
        map.get(&sni.to_ascii_lowercase()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http01_answers_only_pending_tokens_under_the_prefix() {
        let c = Challenges::new();
        assert_eq!(c.http01_answer("/.well-known/acme-challenge/tok"), None);
        c.add_http01("tok", "tok.thumb");
        assert_eq!(
            c.http01_answer("/.well-known/acme-challenge/tok").as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(c.http01_answer("/tok"), None);
        assert_eq!(c.http01_answer("/.well-known/acme-challenge/tok/x"), None);
        c.remove_http01("tok");
        assert_eq!(c.http01_answer("/.well-known/acme-challenge/tok"), None);
    }
}
