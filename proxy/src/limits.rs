//! `proxy.limits` (SPEC §4a "Limits"): what one client may hold.
//!
//! - [`LimitedApp`] wraps pingora's HTTP app: it refuses connections beyond
//!   `max_connections` at accept ([`ConnectionGate`]), and runs each
//!   connection's stream under a head clock: the first head must be
//!   complete within `header_timeout` of accept, a keep-alive connection may
//!   idle `keepalive_timeout` after a response, and each later head must be
//!   complete within `header_timeout` of its first byte. A client cut while
//!   part of a head had arrived gets 408, a head over [`MAX_HEAD_BYTES`]
//!   gets 431, an idle client is closed silently.
//! - [`on_request_head`], called from `early_request_filter`, ends the
//!   head's clock, sets the keep-alive timeout pingora resets after every
//!   request, and answers 400 to an HTTP/1.1 request without one `Host`.

mod app;
mod clock;
mod connection;
mod forward;
mod gate;
mod preface;
mod stream;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Version};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

pub use app::{LimitedApp, Listeners, ParkedRelease};
pub use gate::{ConnectionGate, ConnectionSlot};
pub use preface::H2_PREFACE;

use crate::service::Limits;
use connection::Connection;
pub(crate) use connection::{can_hand_off, hand_off, Continuation, HandOffError};

/// The largest request head accepted; larger ones get 431. (pingora's own
/// limit, `MAX_HEADER_SIZE` in `protocols/http/v1/common.rs`, is 1 MiB and
/// answers 400; it is never reached.)
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Ends the message of every error raised to close a connection on purpose
/// under `proxy.limits`. pingora logs those at ERROR level
/// (`HttpProxy::handle_new_request`, `HttpProxy::handle_error`); the log
/// filter drops the lines that carry this text.
pub const CLOSED_BY_LIMITS: &str = "(closed by proxy.limits)";

tokio::task_local! {
    /// The HTTP/1 connection this task serves.
    static CONNECTION: Arc<Connection>;
}

/// pingora's keep-alive setting for `limits`: whole seconds, at least one
/// (`Some(0)` would mean "no timeout").
fn keepalive_secs(limits: &Limits) -> u64 {
    limits.keepalive_timeout.as_secs().max(1)
}

/// Runs first for every request (`early_request_filter`).
pub async fn on_request_head(session: &mut Session, limits: &Limits) -> Result<()> {
    // Outside a limited HTTP/1 connection (HTTP/2) there is no clock.
    let head = session.as_http1().map(|h1| h1.get_headers_raw_bytes().len());
    let body = body_length(session.req_header());
    let _ = CONNECTION.try_with(|connection| connection.clock.head_complete(head, body));

    // pingora sets keep-alive to "no timeout" after reading each HTTP/1.1
    // head (`HttpSession::respect_keepalive`). Only lengthen it where
    // keep-alive is still on: `None` means the client sent `Connection:
    // close` or the server is shutting down.
    if session.get_keepalive().is_some() {
        session.set_keepalive(Some(keepalive_secs(limits)));
    }
    session.set_pipelining_enabled(true);

    let req = session.req_header();
    let hosts = req.headers.get_all(header::HOST).iter().count();
    if req.version == Version::HTTP_11 && hosts != 1 {
        let why = if hosts == 0 {
            "an HTTP/1.1 request needs a Host header"
        } else {
            "a request may carry only one Host header"
        };
        reject(session, 400, why).await?;
        return Err(Error::explain(
            ErrorType::HTTPStatus(400),
            format!("{why} {CLOSED_BY_LIMITS}"),
        ));
    }
    Ok(())
}

/// An HTTP/1 request body's length by its head's framing (RFC 9112 §6.3):
/// 0 without `Content-Length` and `Transfer-Encoding`; `None` when it is not
/// known up front (`Transfer-Encoding`, or lengths that pingora refuses).
fn body_length(req: &pingora::http::RequestHeader) -> Option<u64> {
    if req.headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    let mut length = None;
    for value in req.headers.get_all(header::CONTENT_LENGTH) {
        let value = value.to_str().ok()?.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = value.parse().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    Some(length.unwrap_or(0))
}

/// Answers `code` with `why` and closes the connection after it.
async fn reject(session: &mut Session, code: u16, why: &str) -> Result<()> {
    session.set_keepalive(None);
    let body = Bytes::from(format!("{why}\n"));
    let mut resp = ResponseHeader::build(code, Some(4))?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(header::CONNECTION, "close")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}
