//! The Server-Sent Events pump: the backend's event stream to the client,
//! event boundaries tracked, and on drain (or shutdown) a jittered
//! `retry: N` after the event in flight and a clean end of the response, so
//! `EventSource` reconnects — to a ready backend, held if need be.

use std::time::Duration;

use bytes::Bytes;
use pingora::proxy::Session;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::events::EventTracker;
use super::upstream::{BodyReader, Head};
use super::{jittered, until_stopped, until_true, CloseReason, LongLivedSettings, Stop};

/// Everything a stream needs.
pub struct Stream<'a> {
    pub session: &'a mut Session,
    pub upstream: TcpStream,
    pub head: Head,
    pub drain: watch::Receiver<bool>,
    pub shutdown: watch::Receiver<Stop>,
    pub settings: LongLivedSettings,
}

/// Runs the stream until it ends; why it ended.
pub async fn run(s: Stream<'_>) -> CloseReason {
    let Stream {
        session,
        mut upstream,
        head,
        drain,
        shutdown,
        settings,
    } = s;
    let mut body = BodyReader::new(&head);
    let mut response = head.response;
    // The proxy re-frames the body (it may end it early), so chunked.
    response.remove_header(&http::header::CONTENT_LENGTH);
    if response
        .insert_header(http::header::TRANSFER_ENCODING, "chunked")
        .is_err()
        || session.write_response_header(Box::new(response), false).await.is_err()
    {
        return CloseReason::Client;
    }
    let mut events = EventTracker::new();
    let mut due: Option<(Instant, CloseReason)> = None;
    let mut awaiting_boundary: Option<CloseReason> = None;
    let (mut drain_seen, mut shutdown_seen) = (false, false);

    loop {
        tokio::select! {
            chunk = body.next(&mut upstream) => match chunk {
                Ok(Some(bytes)) => {
                    if let Some(reason) = awaiting_boundary {
                        let n = events.feed_to_boundary(&bytes);
                        if session.write_response_body(Some(bytes.slice(..n)), false).await.is_err() {
                            return CloseReason::Client;
                        }
                        if events.at_boundary() {
                            return finish(session, settings.spread, reason).await;
                        }
                    } else {
                        events.feed(&bytes);
                        if session.write_response_body(Some(bytes), false).await.is_err() {
                            return CloseReason::Client;
                        }
                    }
                }
                // The backend ended the stream (or broke it): end ours
                // cleanly, so the client reconnects rather than errors.
                Ok(None) => {
                    let _ = session.write_response_body(None, true).await;
                    return CloseReason::Backend;
                }
                Err(_) => {
                    let _ = session.write_response_body(None, true).await;
                    return CloseReason::Error;
                }
            },
            _ = session.read_body_or_idle(true) => return CloseReason::Client,
            _ = until_true(drain.clone()), if !drain_seen && due.is_none() && awaiting_boundary.is_none() => {
                drain_seen = true;
                due = Some((crate::time::after(jittered(settings.spread)), CloseReason::Drain));
            }
            stop = until_stopped(shutdown.clone()), if !shutdown_seen && awaiting_boundary.is_none() => {
                shutdown_seen = true;
                let at = due.map_or_else(|| crate::time::after(jittered(settings.spread)), |(at, _)| at);
                due = Some((at, stop));
            }
            _ = tokio::time::sleep_until(due.map_or_else(Instant::now, |(at, _)| at)), if due.is_some() => {
                let Some((_, reason)) = due.take() else { continue };
                if events.at_boundary() {
                    return finish(session, settings.spread, reason).await;
                }
                awaiting_boundary = Some(reason);
            }
        }
    }
}

/// Tells the client when to reconnect (jittered) and ends the response.
async fn finish(session: &mut Session, spread: Duration, reason: CloseReason) -> CloseReason {
    let retry_ms = 100 + jittered(spread).as_millis();
    let notice = Bytes::from(format!("retry: {retry_ms}\n\n"));
    let _ = session.write_response_body(Some(notice), false).await;
    let _ = session.write_response_body(None, true).await;
    reason
}
