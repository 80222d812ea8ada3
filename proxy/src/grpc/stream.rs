//! The response phase of a gRPC call: the head, then messages and the
//! trailers as they come, while request messages still flow up; ended
//! with `grpc-status: 14` between two messages when the notice says so,
//! and with a status when the backend fails mid-call.

use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::body::Upload;
use super::call::failure_status;
use super::messages::MessageTracker;
use super::notice::{self, Call, Notice};
use super::{end_call, Status};
use crate::longlived::CloseReason;

/// Streams the response to the client; why the call ended.
pub(super) async fn run(
    session: &mut Session,
    response: http::Response<Incoming>,
    upload: &mut Upload,
    notice: &mut Notice,
) -> CloseReason {
    let (parts, mut body) = response.into_parts();
    let head = match response_head(&parts) {
        Ok(head) => head,
        Err(e) => {
            tracing::debug!(error = %e, "gRPC response head cannot be forwarded");
            upload.abort();
            end_call(
                session,
                Status::Internal,
                "the backend's response head cannot be forwarded",
            )
            .await;
            return CloseReason::Error;
        }
    };
    // A Trailers-Only answer (the status in the head) ends here.
    let trailers_only = body.is_end_stream();
    if session
        .write_response_header(Box::new(head), trailers_only)
        .await
        .is_err()
    {
        upload.abort();
        return CloseReason::Client;
    }
    if trailers_only {
        return CloseReason::Backend;
    }
    notice.head_sent();
    let mut messages = MessageTracker::new();
    loop {
        let call = Call {
            head_sent: true,
            request_open: upload.open(),
            at_boundary: messages.at_boundary(),
        };
        tokio::select! {
            frame = body.frame() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        tracing::warn!(error = ?e, "gRPC backend failed mid-call");
                        upload.abort();
                        let (status, message) = failure_status(&e);
                        end_call(session, status, message).await;
                        return CloseReason::Error;
                    }
                    None => {
                        // The backend ended the stream without trailers:
                        // passed on as it is (the client decides).
                        let _ = session.finish_body().await;
                        return CloseReason::Backend;
                    }
                };
                let data = match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            if session.write_response_trailers(trailers).await.is_err() {
                                return CloseReason::Client;
                            }
                            return CloseReason::Backend;
                        }
                        continue; // an unknown frame kind: nothing to pass on
                    }
                };
                let data = match notice.ending() {
                    // Only the rest of the message in flight still goes.
                    Some(_) => {
                        let n = messages.to_boundary(&data);
                        data.slice(..n)
                    }
                    None => {
                        messages.feed(&data);
                        data
                    }
                };
                if !data.is_empty() && session.write_response_body(Some(data), false).await.is_err() {
                    upload.abort();
                    return CloseReason::Client;
                }
                if let Some(reason) = notice.ending().filter(|_| messages.at_boundary()) {
                    upload.abort();
                    end_call(session, Status::Unavailable, notice::message(reason)).await;
                    return reason;
                }
            }
            read = upload.read(session), if upload.open() => {
                if upload.forward(read).is_err() {
                    upload.abort();
                    return CloseReason::Client;
                }
            }
            end = notice.next(call) => {
                if let Some(reason) = end {
                    upload.abort();
                    end_call(session, Status::Unavailable, notice::message(reason)).await;
                    return reason;
                }
            }
        }
    }
}

/// The backend's response head for the client. pingora's HTTP/2 writer
/// removes the connection-specific headers HTTP/2 forbids.
fn response_head(parts: &http::response::Parts) -> pingora::Result<ResponseHeader> {
    let mut head = ResponseHeader::build(parts.status, Some(parts.headers.len()))?;
    for (name, value) in &parts.headers {
        head.append_header(name.clone(), value.clone())?;
    }
    Ok(head)
}
