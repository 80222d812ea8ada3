//! One order for one host (RFC 8555 §7.4): authorize with the configured
//! challenge, finalize with a fresh key's CSR, download the chain.
//!
//! The challenge answer is put into [`Challenges`] only for as long as the
//! order runs: a guard takes it out when the order ends, whether it
//! succeeded, failed, or was dropped at its deadline or at shutdown.

use std::sync::Arc;
use std::time::Duration;

use cutover_proxy::tls::Challenges;
use instant_acme::{Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy};
use rustls::pki_types::PrivateKeyDer;

use super::cert::{self, Issued};
use super::storage;
use super::AcmeError;
use crate::config::AcmeChallenge;

/// The longest poll, whatever the timing says: instant-acme adds it to
/// `Instant::now()` unchecked.
const MAX_POLL: Duration = Duration::from_secs(86_400);

/// Polling an order or its certificate: quick at first (Pebble and Let's
/// Encrypt usually decide within seconds), then backing off.
fn poll_policy(limit: Duration) -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(limit.min(MAX_POLL))
}

/// Obtains a certificate for `host`. Not bounded by itself: the caller
/// runs it under the whole-order deadline (each request has its own).
pub(super) async fn obtain(
    account: &Account,
    host: &str,
    challenge: AcmeChallenge,
    challenges: &Arc<Challenges>,
    poll_limit: Duration,
) -> Result<Issued, AcmeError> {
    let identifiers = [Identifier::Dns(host.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await.map_err(acme)?;
    let mut guard = ChallengeGuard {
        challenges: Arc::clone(challenges),
        http01: Vec::new(),
        tls_alpn01: Vec::new(),
    };

    let kind = match challenge {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(acme)?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            // Authorized recently (the CA may reuse authorizations).
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(AcmeError::Order(format!("the authorization for {host} is {status:?}")));
            }
        }
        let mut handle = authorization.challenge(kind.clone()).ok_or_else(|| {
            AcmeError::Order(format!(
                "the ACME server offers no {} challenge for {host}",
                challenge.as_str()
            ))
        })?;
        let key_authorization = handle.key_authorization();
        match challenge {
            AcmeChallenge::Http01 => {
                guard.http01.push(handle.token.clone());
                challenges.add_http01(&handle.token, key_authorization.as_str());
            }
            AcmeChallenge::TlsAlpn01 => {
                let answer = cert::tls_alpn01_cert(host, key_authorization.digest().as_ref())?;
                guard.tls_alpn01.push(host.to_owned());
                challenges.add_tls_alpn01(host, answer);
            }
        }
        handle.set_ready().await.map_err(acme)?;
    }

    let status = order.poll_ready(&poll_policy(poll_limit)).await.map_err(acme)?;
    if status != OrderStatus::Ready {
        return Err(AcmeError::Order(why_invalid(&mut order, host).await));
    }
    // The ACME server has validated: the answer is no longer needed.
    drop(guard);

    let request = cert::request(host)?;
    order.finalize_csr(&request.csr_der).await.map_err(acme)?;
    let chain_pem = order.poll_certificate(&poll_policy(poll_limit)).await.map_err(acme)?;
    let chain = storage::parse_chain(chain_pem.as_bytes())?;
    Issued::new(
        host,
        chain,
        PrivateKeyDer::Pkcs8(request.key_der),
        storage::bundle(chain_pem.as_bytes(), request.key_pem.as_bytes()),
    )
}

/// The reason an order became invalid: the failed challenge's error, as the
/// ACME server words it ("connection refused", "incorrect key
/// authorization", …).
async fn why_invalid(order: &mut instant_acme::Order, host: &str) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        if authorization.refresh().await.is_err() {
            continue;
        }
        for challenge in &authorization.challenges {
            if let Some(error) = &challenge.error {
                reasons.push(error.to_string());
            }
        }
    }
    if reasons.is_empty() {
        format!("the ACME server refused the order for {host}")
    } else {
        format!("the ACME server could not validate {host}: {}", reasons.join("; "))
    }
}

/// The crate's error as ours; an account the server no longer knows (a
/// test server restarted, an account deactivated) is told apart, so the
/// next attempt registers a new one.
pub(super) fn acme(e: instant_acme::Error) -> AcmeError {
    match &e {
        instant_acme::Error::Api(problem)
            if problem
                .r#type
                .as_deref()
                .is_some_and(|t| t.ends_with(":accountDoesNotExist")) =>
        {
            AcmeError::AccountGone(e.to_string())
        }
        _ => AcmeError::Acme(e.to_string()),
    }
}

/// Takes the pending challenge answers out of [`Challenges`] when dropped.
struct ChallengeGuard {
    challenges: Arc<Challenges>,
    http01: Vec<String>,
    tls_alpn01: Vec<String>,
}

impl Drop for ChallengeGuard {
    fn drop(&mut self) {
        for token in &self.http01 {
            self.challenges.remove_http01(token);
        }
        for host in &self.tls_alpn01 {
            self.challenges.remove_tls_alpn01(host);
        }
    }
}
