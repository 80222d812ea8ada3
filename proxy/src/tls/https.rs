//! What changes for a request because of TLS (SPEC §3 `proxy.tls`):
//!
//! - `hsts`: `Strict-Transport-Security: max-age=N` on every answer over
//!   TLS, the backend's and cutover's own (404, 503, ...), never on plain
//!   listeners (RFC 6797 §7.2: a browser ignores it there anyway). A
//!   downstream module ([`Hsts`]) adds it, so every response head written
//!   through the session gets it, whichever path wrote it.
//! - `redirect_http`: a plain listener answers `308` to `https://` for a
//!   host a certificate covers ([`redirect`]); hosts without one are served
//!   as usual, and pending ACME `http-01` challenges are answered before
//!   this (the caller's order).
//!
//! "Over TLS" is `session.digest().ssl_digest.is_some()`: the TLS listeners'
//! streams ([`super::stream::TlsClientStream`]) report an SSL digest, plain
//! ones do not.

use std::any::Any;
use std::time::Duration;

use async_trait::async_trait;
use http::header::{self, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::modules::http::{HttpModule, HttpModuleBuilder, HttpModules, Module};
use pingora::proxy::Session;
use pingora::Result;

use crate::settings::ProxySettings;

/// Did this request come over TLS?
pub fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// Adds the [`Hsts`] module when `hsts` is on (`max-age` over zero).
pub fn add_modules(modules: &mut HttpModules, hsts: Duration) {
    if hsts.is_zero() {
        return;
    }
    // `max-age` is decimal digits: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&format!("max-age={}", hsts.as_secs())) {
        modules.add_module(Box::new(HstsBuilder(value)));
    }
}

/// Marks the request's [`Hsts`] module with whether it came over TLS.
/// Called first thing for every request (`early_request_filter`), before
/// any answer can be written.
pub fn on_request(session: &mut Session) {
    let tls = is_tls(session);
    if let Some(hsts) = session.downstream_modules_ctx.get_mut::<Hsts>() {
        hsts.tls = tls;
    }
}

struct HstsBuilder(HeaderValue);

impl HttpModuleBuilder for HstsBuilder {
    fn init(&self) -> Module {
        Box::new(Hsts {
            value: self.0.clone(),
            tls: false,
        })
    }
}

/// The per-request HSTS module: adds the header to the response head when
/// the request came over TLS.
pub struct Hsts {
    value: HeaderValue,
    tls: bool,
}

#[async_trait]
impl HttpModule for Hsts {
    async fn response_header_filter(&mut self, resp: &mut ResponseHeader, _end_of_stream: bool) -> Result<()> {
        if self.tls {
            // cutover's setting wins over whatever the app sent.
            resp.insert_header(header::STRICT_TRANSPORT_SECURITY, self.value.clone())?;
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Answers `308` to `https://` when `redirect_http` is on, the request came
/// over a plain listener and a certificate covers its host. `None` when the
/// request is not redirected.
pub async fn redirect(session: &mut Session, settings: &ProxySettings) -> Option<Result<()>> {
    if !settings.redirect_http || is_tls(session) {
        return None;
    }
    let location = location(session, settings)?;
    let answer = async {
        let mut resp = ResponseHeader::build(308, Some(2))?;
        resp.insert_header(header::LOCATION, location)?;
        resp.insert_header(header::CONTENT_LENGTH, 0)?;
        session.write_response_header(Box::new(resp), true).await
    };
    Some(answer.await)
}

/// `https://host[:port]/path?query` for a host a certificate covers.
fn location(session: &Session, settings: &ProxySettings) -> Option<HeaderValue> {
    let req = session.req_header();
    let host = req
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))?;
    let name = without_port(host);
    if name.is_empty() || !settings.certs.covers(name) {
        return None;
    }
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = if target.starts_with('/') { target } else { "/" };
    let location = match settings.https_port {
        443 => format!("https://{name}{target}"),
        port => format!("https://{name}:{port}{target}"),
    };
    HeaderValue::from_str(&location).ok()
}

/// A `Host` value without its port (`[::1]:80` → `[::1]`).
fn without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_stripped_from_names_and_ipv6_literals() {
        assert_eq!(without_port("example.com:8080"), "example.com");
        assert_eq!(without_port("example.com"), "example.com");
        assert_eq!(without_port("[::1]:8080"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
    }
}
