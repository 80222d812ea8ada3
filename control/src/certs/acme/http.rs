//! The HTTPS client instant-acme talks to the ACME server through.
//!
//! instant-acme's own client has no timeout and reads whole bodies, and
//! trusts either the platform roots or one extra root, not both. This one
//! is bounded everywhere: one deadline per request (connect, TLS, request,
//! body), bodies refused past [`MAX_BODY`], and it trusts the system roots
//! plus every certificate of `ca_roots`. A connection per request: an
//! order is a dozen requests a few times a month, not worth a pool.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{Request, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::AcmeError;

/// Largest ACME response read: directory, orders, authorizations and
/// certificate chains are a few KiB.
pub const MAX_BODY: usize = 256 * 1024;

/// A bounded HTTPS client for one ACME server.
#[derive(Clone)]
pub(super) struct BoundedClient {
    tls: TlsConnector,
    timeout: Duration,
}

impl BoundedClient {
    /// Trusts the system roots and every certificate in `ca_roots`.
    pub fn new(ca_roots: Option<&Path>, timeout: Duration) -> Result<Self, AcmeError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system root rustls cannot parse is skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_roots {
            let pem =
                std::fs::read(path).map_err(|e| AcmeError::Config(format!("ca_roots {}: {e}", path.display())))?;
            let certs = rustls_pemfile::certs(&mut &pem[..])
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| AcmeError::Config(format!("ca_roots {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(AcmeError::Config(format!(
                    "ca_roots {}: no certificate in it",
                    path.display()
                )));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| AcmeError::Config(format!("ca_roots {}: {e}", path.display())))?;
            }
        }
        if roots.is_empty() {
            return Err(AcmeError::Config(
                "no CA roots to check the ACME server with: install ca-certificates or set proxy.tls.acme.ca_roots"
                    .into(),
            ));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| AcmeError::Config(format!("TLS client: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            timeout,
        })
    }

    async fn send(self, req: Request<BodyWrapper<Bytes>>) -> Result<BytesResponse, instant_acme::Error> {
        let (mut parts, body) = req.into_parts();
        let uri = parts.uri.clone();
        if uri.scheme_str() != Some("https") {
            return Err(other(format!("{uri}: ACME servers are reached over https only")));
        }
        let host = uri.host().ok_or_else(|| other(format!("{uri}: no host")))?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        // `[::1]` in a URI is `::1` to connect to and to check against.
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let server_name = ServerName::try_from(bare.clone()).map_err(|e| other(format!("{uri}: {e}")))?;
        let tcp = TcpStream::connect((bare.as_str(), port))
            .await
            .map_err(|e| other(format!("cannot connect to {host}:{port}: {e}")))?;
        let tls = self
            .tls
            .connect(server_name, tcp)
            .await
            .map_err(|e| other(format!("TLS with {host}:{port}: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| other(format!("HTTP with {host}:{port}: {e}")))?;

        // hyper's connection-level client sends the target as given and no
        // Host: origin-form and Host as RFC 9112 wants them.
        if let Some(authority) = uri.authority() {
            let value = http::HeaderValue::from_str(authority.as_str()).map_err(|e| other(e.to_string()))?;
            parts.headers.insert(HOST, value);
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = Uri::try_from(path).map_err(|e| other(e.to_string()))?;

        let target = uri.to_string();
        let exchange = async move {
            let response = sender
                .send_request(Request::from_parts(parts, body))
                .await
                .map_err(|e| other(format!("{target}: {e}")))?;
            let (mut parts, body) = response.into_parts();
            bound_retry_after(&mut parts.headers);
            let bytes = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| other(format!("{target}: response body: {e}")))?
                .to_bytes();
            Ok(BytesResponse {
                parts,
                body: Box::new(bytes),
            })
        };
        // The connection is driven here rather than spawned, so nothing of
        // this request outlives its deadline.
        let mut conn = std::pin::pin!(conn);
        let mut exchange = std::pin::pin!(exchange);
        tokio::select! {
            result = &mut exchange => result,
            closed = &mut conn => match closed {
                // Closed after the response was handed over: the body is
                // buffered in the exchange, which ends on its own.
                Ok(()) => exchange.await,
                Err(e) => Err(other(format!("HTTP with {host}:{port}: {e}"))),
            },
        }
    }
}

impl HttpClient for BoundedClient {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.clone();
        let timeout = self.timeout;
        let target = req.uri().to_string();
        Box::pin(async move {
            match tokio::time::timeout(timeout, client.send(req)).await {
                Ok(result) => result,
                Err(_) => Err(other(format!(
                    "{target}: no answer within {}",
                    humantime::format_duration(timeout)
                ))),
            }
        })
    }
}

/// The longest `Retry-After` (in seconds) passed on to instant-acme.
///
/// The crate adds a number of seconds to `SystemTime::now()` unchecked,
/// which panics past the clock's range: a server's
/// `Retry-After: 99999999999999999` must not take the ACME task down. A
/// day is far more than any order waits (the whole order has its own
/// deadline anyway).
const MAX_RETRY_AFTER: u64 = 86_400;

fn bound_retry_after(headers: &mut http::HeaderMap) {
    let Some(value) = headers.get(http::header::RETRY_AFTER) else {
        return;
    };
    let Ok(text) = value.to_str() else {
        return;
    };
    let text = text.trim();
    // Delay-seconds only: an HTTP-date is bounded by its own format.
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = text.parse::<u64>().unwrap_or(u64::MAX).min(MAX_RETRY_AFTER);
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    }
}

fn other(message: String) -> instant_acme::Error {
    instant_acme::Error::Other(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_are_bounded_and_dates_kept() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "184467440737095516150".parse().unwrap());
        bound_retry_after(&mut headers);
        assert_eq!(headers[http::header::RETRY_AFTER], "86400");
        headers.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        bound_retry_after(&mut headers);
        assert_eq!(headers[http::header::RETRY_AFTER], "3");
        let date = "Fri, 31 Dec 1999 23:59:59 GMT";
        headers.insert(http::header::RETRY_AFTER, date.parse().unwrap());
        bound_retry_after(&mut headers);
        assert_eq!(headers[http::header::RETRY_AFTER], date);
    }
}
