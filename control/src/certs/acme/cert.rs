//! Certificates on our side of ACME: a fresh key and CSR per order, the
//! issued chain checked and described (validity, issuer), and the
//! tls-alpn-01 challenge certificate (RFC 8737).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::storage;
use super::AcmeError;

/// A certificate for one host, ready to serve and to store.
#[derive(Clone)]
pub struct Issued {
    /// The host it was obtained for (one of its SANs).
    pub host: String,
    /// Chain and key as rustls serves them.
    pub key: Arc<CertifiedKey>,
    /// The leaf's notBefore.
    pub not_before: SystemTime,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
    /// The leaf's issuer, as an RFC 4514 string.
    pub issuer: String,
    /// What is stored: the chain (leaf first), then the key, in PEM.
    pub(super) stored_pem: Vec<u8>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("host", &self.host)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Checks that the chain's leaf names `host`, that `key` matches it and
    /// that its validity makes sense, and reads its validity and issuer.
    /// `stored_pem` is the same chain and key as PEM, chain first.
    pub(super) fn new(
        host: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        stored_pem: Vec<u8>,
    ) -> Result<Self, AcmeError> {
        let leaf = chain
            .first()
            .ok_or_else(|| AcmeError::Certificate("empty chain".into()))?;
        let facts = LeafFacts::read(leaf)?;
        if !facts.dns_names.iter().any(|name| name.eq_ignore_ascii_case(host)) {
            return Err(AcmeError::Certificate(format!(
                "the certificate names {:?}, not {host}",
                facts.dns_names
            )));
        }
        if facts.not_after <= facts.not_before {
            return Err(AcmeError::Certificate("notAfter is not after notBefore".into()));
        }
        let key = storage::certified_key(chain, key)?;
        Ok(Self {
            host: host.to_owned(),
            key,
            not_before: facts.not_before,
            not_after: facts.not_after,
            issuer: facts.issuer,
            stored_pem,
        })
    }

    /// Refuses a newly issued certificate that must not replace the one
    /// served: expired, not valid yet (beyond [`CLOCK_SKEW`]), or already
    /// due for renewal, which would order again at once and then in a
    /// loop. Either the CA or this machine's clock is wrong; the attempt
    /// fails and is retried with back-off, the old certificate serving.
    pub(super) fn check_fresh(&self, now: SystemTime) -> Result<(), AcmeError> {
        let at = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        if self.not_after <= now {
            return Err(AcmeError::Certificate(format!(
                "the issued certificate expired at {} (this machine's clock says {}); not installed",
                at(self.not_after),
                at(now)
            )));
        }
        if self.not_before > now.checked_add(CLOCK_SKEW).unwrap_or(now) {
            return Err(AcmeError::Certificate(format!(
                "the issued certificate is not valid before {} (this machine's clock says {}); not installed",
                at(self.not_before),
                at(now)
            )));
        }
        if self.renew_at() <= now {
            return Err(AcmeError::Certificate(format!(
                "the issued certificate is already due for renewal ({} to {}, renewal at {}; \
                 this machine's clock says {}); not installed",
                at(self.not_before),
                at(self.not_after),
                at(self.renew_at()),
                at(now)
            )));
        }
        Ok(())
    }

    /// When to renew: once a third of the lifetime remains (SPEC §8).
    pub fn renew_at(&self) -> SystemTime {
        renew_at(self.not_before, self.not_after)
    }
}

/// How far ahead of this machine's clock a new certificate's notBefore
/// may be: clocks differ by seconds, rarely by minutes.
pub(super) const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// notBefore + ⅔ of the lifetime.
pub(super) fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or(Duration::ZERO);
    not_before.checked_add(lifetime / 3 * 2).unwrap_or(not_after)
}

/// What cutover needs to know of a leaf certificate.
struct LeafFacts {
    not_before: SystemTime,
    not_after: SystemTime,
    issuer: String,
    dns_names: Vec<String>,
}

impl LeafFacts {
    fn read(der: &CertificateDer<'_>) -> Result<Self, AcmeError> {
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| AcmeError::Certificate(format!("cannot parse the certificate: {e}")))?;
        let validity = cert.validity();
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(AcmeError::Certificate(format!("subjectAltName: {e}"))),
        };
        Ok(Self {
            not_before: unix_time(validity.not_before.timestamp()),
            not_after: unix_time(validity.not_after.timestamp()),
            issuer: cert.issuer().to_string(),
            dns_names,
        })
    }
}

fn unix_time(seconds: i64) -> SystemTime {
    match u64::try_from(seconds) {
        Ok(s) => UNIX_EPOCH.checked_add(Duration::from_secs(s)).unwrap_or(UNIX_EPOCH),
        Err(_) => UNIX_EPOCH,
    }
}

/// A fresh ECDSA P-256 key and a CSR naming `host` (and nothing else: the
/// CA takes the names from the SANs).
pub(super) struct Request {
    pub key_pem: String,
    pub key_der: PrivatePkcs8KeyDer<'static>,
    pub csr_der: Vec<u8>,
}

pub(super) fn request(host: &str) -> Result<Request, AcmeError> {
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| AcmeError::Certificate(format!("key: {e}")))?;
    let mut params =
        CertificateParams::new(vec![host.to_owned()]).map_err(|e| AcmeError::Certificate(format!("CSR: {e}")))?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| AcmeError::Certificate(format!("CSR: {e}")))?;
    Ok(Request {
        key_pem: key.serialize_pem(),
        key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
        csr_der: csr.der().to_vec(),
    })
}

/// The tls-alpn-01 challenge certificate for `host` (RFC 8737 §3): self
/// signed, `host` as its only SAN, and the critical `acmeIdentifier`
/// extension holding SHA-256 of the key authorization.
pub fn tls_alpn01_cert(host: &str, key_authorization_digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AcmeError::Certificate(format!("challenge key: {e}")))?;
    let mut params = CertificateParams::new(vec![host.to_owned()])
        .map_err(|e| AcmeError::Certificate(format!("challenge certificate: {e}")))?;
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(key_authorization_digest)];
    let cert = params
        .self_signed(&key)
        .map_err(|e| AcmeError::Certificate(format!("challenge certificate: {e}")))?;
    // Not `CertifiedKey::from_der`: its key check parses the certificate
    // with webpki, which refuses the critical extension webpki does not
    // know, the very one this certificate exists for. The key is ours,
    // made just above: nothing to check.
    let signer = rustls::crypto::ring::sign::any_ecdsa_type(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        key.serialize_der(),
    )))
    .map_err(|e| AcmeError::Certificate(format!("challenge key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer)))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A self-signed certificate for `host`, as if issued, valid from an
    /// hour ago for a year.
    pub(crate) fn self_signed(host: &str) -> Issued {
        let now = SystemTime::now();
        valid_between(
            host,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(365 * 86_400),
        )
    }

    /// A self-signed certificate for `host`, as if issued, valid from
    /// `not_before` to `not_after` (to the second).
    pub(crate) fn valid_between(host: &str, not_before: SystemTime, not_after: SystemTime) -> Issued {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.self_signed(&key).unwrap();
        let chain_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Issued::new(
            host,
            storage::parse_chain(chain_pem.as_bytes()).unwrap(),
            storage::parse_key(key_pem.as_bytes()).unwrap(),
            storage::bundle(chain_pem.as_bytes(), key_pem.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn an_issued_certificate_expired_not_yet_valid_or_already_due_is_refused() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let hour = Duration::from_secs(3600);
        let day = Duration::from_secs(86_400);
        let cases = [
            // Expired (a CA clock far behind, a replayed response).
            ("expired", now - 90 * day, now - hour, "expired at"),
            // Not valid for another hour: clients would refuse it.
            ("future", now + hour, now + 90 * day, "not valid before"),
            // Valid, but a third of its lifetime is already gone: installing
            // it would order again at once, forever.
            ("due", now - 60 * day, now + 29 * day, "already due for renewal"),
        ];
        for (what, not_before, not_after, error) in cases {
            let issued = valid_between("a.test", not_before, not_after);
            let err = issued.check_fresh(now).expect_err(what);
            assert!(matches!(err, AcmeError::Certificate(_)), "{what}: {err}");
            assert!(err.to_string().contains(error), "{what}: {err}");
        }
        for (what, not_before, not_after) in [
            ("fresh", now - hour, now + 90 * day),
            ("notBefore within the clock skew", now + CLOCK_SKEW, now + 90 * day),
            ("short but fresh", now, now + Duration::from_secs(30)),
        ] {
            let issued = valid_between("a.test", not_before, not_after);
            issued.check_fresh(now).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }

    #[test]
    fn renewal_is_due_when_a_third_of_the_lifetime_remains() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            renew_at(start, start + Duration::from_secs(90 * 86_400)),
            start + Duration::from_secs(60 * 86_400)
        );
        assert_eq!(
            renew_at(start, start + Duration::from_secs(30)),
            start + Duration::from_secs(20)
        );
        assert_eq!(renew_at(start, start), start, "no lifetime: due at once");
    }

    #[test]
    fn the_csr_names_only_the_host() {
        let req = request("a.example.com").unwrap();
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&req.csr_der).unwrap();
        let names: Vec<String> = csr
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|ext| match ext {
                x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) => Some(san),
                _ => None,
            })
            .flat_map(|san| san.general_names.iter().map(|n| n.to_string()))
            .collect();
        assert_eq!(names, ["DNSName(a.example.com)"]);
        assert!(req.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn issued_reads_validity_issuer_and_refuses_another_host() {
        let issued = self_signed("a.test");
        assert!(issued.not_after > issued.not_before);
        assert!(!issued.issuer.is_empty());
        let err = Issued::new(
            "b.test",
            storage::parse_chain(&issued.stored_pem).unwrap(),
            storage::parse_key(&issued.stored_pem).unwrap(),
            issued.stored_pem.clone(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not b.test"), "{err}");
    }

    #[test]
    fn the_tls_alpn01_certificate_carries_the_critical_acme_identifier() {
        let digest = [7u8; 32];
        let key = tls_alpn01_cert("alpn.test", &digest).unwrap();
        assert_eq!(key.cert.len(), 1);
        let (_, cert) = X509Certificate::from_der(key.cert[0].as_ref()).unwrap();
        // id-pe-acmeIdentifier (RFC 8737 §6.1).
        let oid = x509_parser::oid_registry::Oid::from(&[1, 3, 6, 1, 5, 5, 7, 1, 31]).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid == oid)
            .expect("acmeIdentifier extension");
        assert!(ext.critical, "RFC 8737 §3: the extension MUST be critical");
        // An OCTET STRING holding the SHA-256 digest.
        let mut expected = vec![0x04, 32];
        expected.extend_from_slice(&digest);
        assert_eq!(ext.value, expected.as_slice());
        let names: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["DNSName(alpn.test)"]);
    }
}
