//! gRPC calls to `h2c` apps, served end to end by the proxy.
//!
//! pingora's proxy loop only wakes on traffic, so it cannot end an idle
//! stream when its backend drains. So, like WebSocket, a gRPC call
//! (`content-type: application/grpc*` from an HTTP/2 client) to an app whose
//! upstream is `h2c` is taken over in `request_filter`: the proxy claims a
//! backend (held while none is ready, another one on a connect failure),
//! sends the call on that backend's own HTTP/2 connection (one per process
//! generation, calls multiplexed on it: [`pool`]), streams the request body
//! up and the response body and trailers down, and ends the call with
//! `grpc-status: 14` (UNAVAILABLE) when its backend drains or cutover stops
//! ([`notice`]).
//!
//! - [`call`]: claim, connect, send, move to another backend before any
//!   response byte when the backend refused the stream.
//! - [`stream`]: the response: head, messages, trailers; backend failures
//!   as gRPC statuses.
//! - [`notice`]: when an open call is ended, and why a unary call is not.
//! - [`messages`]: message boundaries, so a call ends between messages.
//! - [`body`]: the request body fed to hyper, and the replay buffer.
//! - [`pool`]: the backend's shared HTTP/2 connection.

pub mod body;
mod call;
pub mod messages;
pub mod notice;
pub mod pool;
mod stream;

use http::{HeaderMap, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::router::AppId;
use crate::service::CutoverProxy;
use crate::table::UpstreamProtocol;

/// The `kind` label of gRPC calls in the long-lived metrics.
pub const KIND: &str = "grpc";

/// gRPC status codes the proxy itself sends
/// (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 13: the backend broke the protocol or failed mid-call.
    Internal = 13,
    /// 14: try again (the backend is restarting, gone or refused the call).
    Unavailable = 14,
}

impl Status {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Status::Internal => "13",
            Status::Unavailable => "14",
        })
    }
}

/// Is this request a gRPC call (an HTTP/2 POST with a gRPC content type)?
/// gRPC-Web and HTTP/1.1 requests are not: they take pingora's path.
pub fn is_call(session: &Session) -> bool {
    let req = session.req_header();
    session.is_http2()
        && req.method == http::Method::POST
        && req
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

/// `application/grpc`, alone or with a suffix (`+proto`, `;charset`).
fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

impl CutoverProxy {
    /// Does this request go to the gRPC takeover: a gRPC call to an app
    /// whose upstream is `h2c`?
    pub(crate) fn is_grpc_call(&self, session: &Session, app: AppId) -> bool {
        is_call(session)
            && self
                .table
                .load()
                .app(app)
                .is_some_and(|entry| entry.upstream() == UpstreamProtocol::H2c)
    }
}

/// `grpc-message` as the gRPC spec encodes it: bytes outside printable
/// ASCII, and `%`, percent-encoded (an operator's maintenance message may
/// hold anything).
fn message_value(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7E).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The trailers that end a call with `status` and `message`.
fn status_trailers(status: Status, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert("grpc-status", status.value());
    trailers.insert("grpc-message", message_value(message));
    trailers
}

/// A Trailers-Only response (the status in the only HEADERS frame), for a
/// call that ends before any response head was sent.
fn trailers_only(status: Status, message: &str) -> pingora::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(200, Some(3))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    resp.insert_header("grpc-status", status.value())?;
    resp.insert_header("grpc-message", message_value(message))?;
    Ok(resp)
}

/// Ends a call from the proxy: trailers after a response head, else a
/// Trailers-Only response. Errors mean the client is gone: nothing to do.
pub(crate) async fn end_call(session: &mut Session, status: Status, message: &str) {
    let ended = if session.response_written().is_some() {
        session.write_response_trailers(status_trailers(status, message)).await
    } else {
        match trailers_only(status, message) {
            Ok(resp) => session.write_response_header(Box::new(resp), true).await,
            Err(e) => Err(e),
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "could not end a gRPC call");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        assert!(is_grpc_content_type(b"application/grpc"));
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(is_grpc_content_type(b"Application/GRPC;charset=utf-8"));
        assert!(!is_grpc_content_type(b"application/grpc-web"));
        assert!(!is_grpc_content_type(b"application/grpc-web+proto"));
        assert!(!is_grpc_content_type(b"application/json"));
        assert!(!is_grpc_content_type(b"application/grp"));
    }

    #[test]
    fn a_trailers_only_answer_carries_the_status() {
        let resp = trailers_only(Status::Unavailable, "restarting").unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.headers["grpc-status"], "14");
        assert_eq!(resp.headers["grpc-message"], "restarting");
        assert_eq!(status_trailers(Status::Internal, "x")["grpc-status"], "13");
        let resp = trailers_only(Status::Unavailable, "100% down\nfor a bit é").unwrap();
        assert_eq!(resp.headers["grpc-message"], "100%25 down%0Afor a bit %C3%A9");
    }
}
