//! The TLS handshake of a client connection on a TLS listener.
//!
//! cutover terminates TLS itself in `LimitedApp` rather than through
//! pingora's listener, whose handshake runs before the app sees the
//! connection with a fixed 60 s timeout and only logs failures. Here the
//! handshake runs after the `max_connections` gate, under the connection's
//! head deadline, and every outcome is counted
//! (`cutover_tls_handshakes_total{result}`).
//!
//! The ClientHello is read first (`LazyConfigAcceptor`) so the config can be
//! chosen from it: a hello offering exactly `acme-tls/1` is an ACME
//! `tls-alpn-01` validation (RFC 8737) and gets the challenge certificate;
//! every other one gets the served certificates, chosen by SNI
//! ([`CertStore`]). Both configs are built once; their resolvers read the
//! stores at each handshake, so swapped certificates need no rebuild.

use std::sync::Arc;

use pingora::protocols::Stream;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;

use super::challenges::ACME_TLS_ALPN;
use super::stream::TlsClientStream;
use super::{CertStore, Challenges};

/// `cutover_tls_handshakes_total{result}`, one handle per result.
#[derive(Debug, Clone)]
pub struct HandshakeMetrics {
    family: IntCounterVec,
    ok: IntCounter,
    unknown_sni: IntCounter,
    timeout: IntCounter,
    error: IntCounter,
    acme: IntCounter,
}

impl HandshakeMetrics {
    /// The family with every result's series at 0.
    pub fn new() -> prometheus::Result<Self> {
        let family = IntCounterVec::new(
            Opts::new(
                "cutover_tls_handshakes_total",
                "TLS handshakes on the TLS listeners by result: ok, unknown_sni (no certificate for the \
                 name asked, or no name), timeout (not done within proxy.limits.header_timeout), error \
                 (protocol error, client gave up), acme (tls-alpn-01 validations answered).",
            ),
            &["result"],
        )?;
        let series = |result: &str| family.with_label_values(&[result]);
        Ok(Self {
            ok: series("ok"),
            unknown_sni: series("unknown_sni"),
            timeout: series("timeout"),
            error: series("error"),
            acme: series("acme"),
            family,
        })
    }

    /// Registers the family.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.family.clone()))
    }
}

/// Why a handshake did not give an HTTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No certificate for the name asked (or no name): the client got an
    /// alert.
    UnknownSni,
    /// Not finished within the head deadline.
    Timeout,
    /// Not TLS, a protocol error, or the client went away.
    Error,
    /// An ACME `tls-alpn-01` validation: answered, then closed.
    Acme,
    /// Closed before sending a byte (a port check, a health probe): not a
    /// handshake, not counted.
    Closed,
}

/// Terminates TLS for the TLS listeners.
pub struct TlsAcceptor {
    http: Arc<ServerConfig>,
    acme: Arc<ServerConfig>,
    certs: Arc<CertStore>,
    challenges: Arc<Challenges>,
    metrics: HandshakeMetrics,
}

impl TlsAcceptor {
    /// Builds the two configs: the served certificates with ALPN `h2,
    /// http/1.1` (or `http/1.1` without `http2`), and the `acme-tls/1` one.
    pub fn new(
        certs: Arc<CertStore>,
        challenges: Arc<Challenges>,
        http2: bool,
        metrics: HandshakeMetrics,
    ) -> Result<Self, rustls::Error> {
        let mut http = config(Arc::clone(&certs) as Arc<dyn ResolvesServerCert>)?;
        http.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let mut acme = config(Arc::new(ChallengeResolver(Arc::clone(&challenges))))?;
        acme.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        Ok(Self {
            http: Arc::new(http),
            acme: Arc::new(acme),
            certs,
            challenges,
            metrics,
        })
    }

    /// Runs the handshake on `stream`, to finish by `deadline`. The
    /// connection for HTTP, or why there is none (counted; the stream is
    /// closed by then).
    pub async fn accept(&self, stream: Stream, deadline: Option<Instant>) -> Result<TlsClientStream, Refused> {
        let handshake = self.handshake(stream);
        let outcome = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, handshake)
                .await
                .unwrap_or(Err(Refused::Timeout)),
            None => handshake.await,
        };
        let counter = match &outcome {
            Err(Refused::Closed) => return outcome,
            Ok(_) => &self.metrics.ok,
            Err(Refused::UnknownSni) => &self.metrics.unknown_sni,
            Err(Refused::Timeout) => &self.metrics.timeout,
            Err(Refused::Error) => &self.metrics.error,
            Err(Refused::Acme) => &self.metrics.acme,
        };
        counter.inc();
        outcome
    }

    async fn handshake(&self, mut stream: Stream) -> Result<TlsClientStream, Refused> {
        // pingora's TCP stream peeks by reading and rewinding: the byte is
        // read again by the handshake. (`Ok(false)`: a stream that cannot
        // peek; the handshake tells.)
        let mut first = [0u8; 1];
        if stream.try_peek(&mut first).await.is_err() {
            return Err(Refused::Closed);
        }
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream)
            .await
            .map_err(|e| {
                tracing::debug!(error = %e, "TLS: no valid ClientHello");
                Refused::Error
            })?;
        let hello = start.client_hello();
        let acme = is_acme_validation(&hello);
        // Decided here, from the same hello the resolver gets, only to
        // name the failure: the resolver itself answers with an alert.
        let known = hello.server_name().is_some_and(|sni| match acme {
            true => self.challenges.tls_alpn01_cert(sni).is_some(),
            false => self.certs.covers(sni),
        });
        let config = if acme { &self.acme } else { &self.http };
        let tls = match start.into_stream(Arc::clone(config)).await {
            Ok(tls) => tls,
            Err(e) => {
                tracing::debug!(error = %e, acme, "TLS handshake failed");
                return Err(if known { Refused::Error } else { Refused::UnknownSni });
            }
        };
        if acme {
            // RFC 8737 §3: the validation is the handshake; no application
            // data follows. close_notify, then close.
            let mut tls = tls;
            let _ = tls.shutdown().await;
            return Err(Refused::Acme);
        }
        Ok(TlsClientStream::new(tls))
    }
}

/// TLS 1.2 and 1.3 with the ring provider, no client certificates.
fn config(resolver: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver))
}

/// A `tls-alpn-01` validation offers `acme-tls/1` and nothing else
/// (RFC 8737 §3).
fn is_acme_validation(hello: &ClientHello<'_>) -> bool {
    let Some(mut protocols) = hello.alpn() else {
        return false;
    };
    protocols.next() == Some(ACME_TLS_ALPN) && protocols.next().is_none()
}

/// Presents the pending `tls-alpn-01` certificate for the SNI; none
/// pending: an alert.
#[derive(Debug)]
struct ChallengeResolver(Arc<Challenges>);

impl ResolvesServerCert for ChallengeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.tls_alpn01_cert(hello.server_name()?)
    }
}
