//! A gRPC call from claim to response head: claim a backend (held while
//! none is ready), get its HTTP/2 connection (another backend when the
//! connect fails), send the call, and move it to another backend when the
//! backend refused the stream before any response byte (`REFUSED_STREAM`,
//! a graceful `GOAWAY` that did not take it, a connection closed before
//! it was sent): gRPC's guarantee that such a call was not processed makes
//! the replay safe. Then [`super::stream`] takes the response.

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderName};
use http::{Uri, Version};
use hyper::body::Incoming;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::body::{RequestBody, Upload};
use super::notice::{self, Call, Notice};
use super::pool::Sender;
use super::{end_call, stream, Status, KIND};
use crate::backend::InflightGuard;
use crate::longlived::request::HOP_BY_HOP;
use crate::longlived::CloseReason;
use crate::service::{add_forwarded_headers, CutoverProxy, RequestCtx};

/// How an attempt ended before the response phase.
enum Sent {
    /// The response head arrived.
    Response(http::Response<Incoming>),
    /// The backend did not take the call: it may go elsewhere.
    Refused(hyper::Error),
    /// The backend failed after it may have seen the call.
    Failed(hyper::Error),
    /// The client left, or the notice ended the call.
    Ended(CloseReason),
}

impl CutoverProxy {
    /// Serves a gRPC call end to end. Always `Ok(true)`: the answer was
    /// written here (a status, when nothing better could be had).
    pub(crate) async fn take_over_grpc(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(app) = ctx.app else { return Ok(false) };
        let head = match upstream_head(session, &self.settings.trusted_proxies) {
            Ok(mut head) => {
                if ctx.cookie.is_some() {
                    crate::split::sticky::strip(&mut head, ctx.app_name());
                }
                head
            }
            Err(e) => {
                tracing::debug!(error = %e, "gRPC request head cannot be forwarded");
                end_call(session, Status::Internal, "the request head cannot be forwarded").await;
                return Ok(true);
            }
        };
        let table = self.table.snapshot();
        let settings = table.long_lived().unwrap_or(self.settings.long_lived);
        let app_name = table.app(app).map(|a| a.name().to_string()).unwrap_or_default();
        drop(table);
        let mut upload = Upload::new(!session.is_body_done());
        loop {
            let Some((claim, sender)) = self.grpc_backend(app, session, ctx).await else {
                return Ok(true); // answered: no backend
            };
            let backend = Arc::clone(claim.backend());
            ctx.claim = Some(claim);
            let Some(body) = upload.attempt() else {
                end_call(session, Status::Unavailable, "the app failed to answer").await;
                return Ok(true);
            };
            let request = match to_request(&head, backend.addr(), body) {
                Ok(request) => request,
                Err(e) => {
                    tracing::debug!(error = %e, "gRPC request cannot be built");
                    end_call(session, Status::Internal, "the request head cannot be forwarded").await;
                    return Ok(true);
                }
            };
            let _count = backend.track_long_lived();
            let mut metric = self.metrics.long_lived_opened(&app_name, backend.instance(), KIND);
            let mut notice = Notice::new(backend.drain_signal(), self.table.shutdown_signal(), settings);
            let reason = match send(session, sender, request, &mut upload, &mut notice).await {
                Sent::Response(response) => {
                    ctx.note_answer(response.status().as_u16());
                    upload.committed();
                    stream::run(session, response, &mut upload, &mut notice).await
                }
                Sent::Refused(e) => {
                    ctx.note_failed_connection();
                    metric.closed(CloseReason::Error.as_str());
                    tracing::debug!(instance = backend.instance(), error = %e, "backend refused a gRPC call");
                    if upload.replayable() && self.retry(ctx, backend.generation()) {
                        continue;
                    }
                    // Not processed, and nowhere else to go: the client may
                    // retry it as safely (gRPC clients retry a refused
                    // stream transparently; SPEC §4).
                    session.shutdown_with_reason(h2::Reason::REFUSED_STREAM);
                    return Ok(true);
                }
                Sent::Failed(e) => {
                    ctx.note_failed_connection();
                    tracing::warn!(instance = backend.instance(), error = ?e, "gRPC call failed at the backend before its answer");
                    let (status, message) = failure_status(&e);
                    end_call(session, status, message).await;
                    CloseReason::Error
                }
                Sent::Ended(reason) => reason,
            };
            tracing::debug!(
                instance = backend.instance(),
                reason = reason.as_str(),
                "gRPC call closed"
            );
            metric.closed(reason.as_str());
            return Ok(true);
        }
    }

    /// Claims a backend (held while none is ready) and gets its HTTP/2
    /// connection, another backend when connecting fails. `None`: the call
    /// was answered with a status instead.
    async fn grpc_backend(
        &self,
        app: crate::AppId,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Option<(InflightGuard, Sender)> {
        loop {
            let claim = match self.claim(app, ctx).await {
                Ok(claim) => claim,
                Err(refusal) => {
                    end_call(session, Status::Unavailable, &refusal.grpc_message()).await;
                    ctx.refusal = Some(refusal);
                    return None;
                }
            };
            let backend = claim.backend();
            match backend.h2().sender(backend.addr(), self.settings.connect_timeout).await {
                Ok(sender) => return Some((claim, sender)),
                Err(e) => {
                    tracing::debug!(instance = backend.instance(), error = %e, "gRPC backend connect failed");
                    if let Some(metrics) = &ctx.metrics {
                        metrics.connect_error();
                    }
                    ctx.note_failed_connection();
                    let generation = backend.generation();
                    drop(claim);
                    if !self.retry(ctx, generation) {
                        end_call(session, Status::Unavailable, "the app failed to answer").await;
                        return None;
                    }
                }
            }
        }
    }

    /// Records a failed attempt; true (and counted) if another may follow.
    fn retry(&self, ctx: &mut RequestCtx, generation: u64) -> bool {
        if !self.note_failure(ctx, generation) {
            return false;
        }
        if let Some(metrics) = &ctx.metrics {
            metrics.retry();
        }
        true
    }
}

/// Sends the call and streams the request until the response head
/// arrives (or the attempt ends otherwise).
async fn send(
    session: &mut Session,
    mut sender: Sender,
    request: http::Request<RequestBody>,
    upload: &mut Upload,
    notice: &mut Notice,
) -> Sent {
    if let Err(e) = sender.ready().await {
        // The connection closed before the call went out.
        return Sent::Refused(e);
    }
    let response = sender.send_request(request);
    tokio::pin!(response);
    loop {
        let call = Call {
            head_sent: false,
            request_open: upload.open(),
            at_boundary: true,
        };
        tokio::select! {
            answer = &mut response => {
                return match answer {
                    Ok(response) => Sent::Response(response),
                    Err(e) if not_processed(&e) => Sent::Refused(e),
                    Err(e) => Sent::Failed(e),
                };
            }
            read = upload.read(session), if upload.open() => {
                if upload.forward(read).is_err() {
                    upload.abort();
                    return Sent::Ended(CloseReason::Client);
                }
            }
            end = notice.next(call) => {
                if let Some(reason) = end {
                    upload.abort();
                    end_call(session, Status::Unavailable, notice::message(reason)).await;
                    return Sent::Ended(reason);
                }
            }
        }
    }
}

/// The client's head for the backend: hop-by-hop headers (and those
/// `Connection` names) removed, `TE: trailers`, forwarded headers set.
fn upstream_head(session: &Session, trusted: &[ipnet::IpNet]) -> Result<RequestHeader> {
    let client = session.req_header();
    let mut head = client.clone();
    let nominated: Vec<HeaderName> = client
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .filter(|name| *name != header::HOST)
        .take(32)
        .collect();
    // Hop-by-hop headers never go on (SPEC §4a; HTTP/2 forbids most of
    // them anyway), nor the length: hyper frames the streamed body. `TE` is
    // set again to `trailers`, which gRPC requires.
    for name in nominated.iter().chain(HOP_BY_HOP.iter()) {
        head.remove_header(name);
    }
    head.remove_header(&header::CONTENT_LENGTH);
    head.insert_header(header::TE, "trailers")?;
    add_forwarded_headers(session, &mut head, trusted)?;
    Ok(head)
}

/// The HTTP/2 request: the head's path on the client's authority (the
/// `Host`, else the backend's address), `http` scheme (h2c).
fn to_request(head: &RequestHeader, backend: SocketAddr, body: RequestBody) -> Result<http::Request<RequestBody>> {
    let mut parts = head.as_owned_parts();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| backend.to_string());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "gRPC request URI", e))?;
    // `:authority` carries it in HTTP/2.
    parts.headers.remove(header::HOST);
    parts.version = Version::HTTP_2;
    Ok(http::Request::from_parts(parts, body))
}

/// The HTTP/2 error behind a hyper error, if any.
fn h2_error(e: &hyper::Error) -> Option<&h2::Error> {
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return Some(h2);
        }
        source = err.source();
    }
    None
}

/// Did the backend certainly not process the call? A stream refused
/// (`REFUSED_STREAM`), one above a graceful `GOAWAY`'s last stream, or a
/// call that never left (hyper's "canceled": the connection closed first).
fn not_processed(e: &hyper::Error) -> bool {
    e.is_canceled()
        || h2_error(e).is_some_and(|h2| {
            h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR))
        })
}

/// The status a backend failure becomes: 14 when trying again may work
/// (connection lost, stream refused or cancelled), 13 when the backend
/// broke the protocol.
pub(super) fn failure_status(e: &hyper::Error) -> (Status, &'static str) {
    let unavailable = (Status::Unavailable, "the backend closed the call: retry it");
    let internal = (Status::Internal, "the backend broke the HTTP/2 protocol");
    match h2_error(e) {
        Some(h2) if h2.is_io() => unavailable,
        Some(h2) => match h2.reason() {
            Some(h2::Reason::NO_ERROR | h2::Reason::REFUSED_STREAM | h2::Reason::CANCEL) => unavailable,
            Some(_) => internal,
            None => unavailable,
        },
        None if e.is_parse() || e.is_user() => internal,
        None => unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn the_request_goes_to_the_clients_authority_over_http2() {
        let mut head = RequestHeader::build("POST", b"/demo.Echo/Say?x=1", None).unwrap();
        head.insert_header("host", "api.example").unwrap();
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        let backend = "127.0.0.1:1".parse().unwrap();
        let request = to_request(&head, backend, RequestBody::new(VecDeque::new(), rx)).unwrap();
        assert_eq!(request.uri().to_string(), "http://api.example/demo.Echo/Say?x=1");
        assert_eq!(request.version(), Version::HTTP_2);
        assert!(request.headers().get("host").is_none());
    }
}
