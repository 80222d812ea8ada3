//! The WebSocket pump: bytes both ways with backpressure, frame boundaries
//! tracked both ways, and the close notice when the backend drains or
//! cutover shuts down.
//!
//! Notice sequence (SPEC §4): at a jittered moment within `spread`, after
//! the frame in flight to the client ends, the client gets close 1012 (or
//! 1001 at shutdown; 1012 again at a hand-over to a new cutover) with a reason, unmasked; the backend gets a masked
//! close 1001 once the client's frame in flight to it ends. The client has
//! `close_grace` to answer with its own close; then both sockets close. A
//! close either peer started itself passes through untouched.

use std::time::Duration;

use bytes::Bytes;
use pingora::proxy::Session;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::frames::{close_frame, FrameTracker};
use super::{jittered, until_stopped, until_true, CloseReason, LongLivedSettings, Stop};

/// Close codes (RFC 6455 §7.4, IANA registry).
const SERVICE_RESTART: u16 = 1012;
const GOING_AWAY: u16 = 1001;

/// Everything a tunnel needs.
pub struct Tunnel<'a> {
    pub session: &'a mut Session,
    pub upstream: TcpStream,
    /// Backend bytes that arrived with the 101.
    pub rest: Bytes,
    pub drain: watch::Receiver<bool>,
    pub shutdown: watch::Receiver<Stop>,
    pub settings: LongLivedSettings,
}

/// Where the tunnel is in closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    /// Open; nothing planned.
    None,
    /// A close is planned at this moment.
    Scheduled(Instant, CloseReason),
    /// Due, waiting for the frame in flight to the client to end.
    AwaitingBoundary(CloseReason),
    /// Sent; waiting for the client's close until this deadline.
    Sent(Instant, CloseReason),
}

impl Notice {
    fn deadline(self) -> Option<Instant> {
        match self {
            Notice::Scheduled(at, _) | Notice::Sent(at, _) => Some(at),
            _ => None,
        }
    }

    fn is_open(self) -> bool {
        matches!(self, Notice::None)
    }
}

/// Runs the tunnel until it closes; why it closed.
pub async fn run(t: Tunnel<'_>) -> CloseReason {
    let Tunnel {
        session,
        upstream,
        rest,
        drain,
        shutdown,
        settings,
    } = t;
    let _ = upstream.set_nodelay(true);
    let (mut from_backend, mut to_backend) = upstream.into_split();
    let mut client_frames = FrameTracker::new(); // client → backend
    let mut backend_frames = FrameTracker::new(); // backend → client
                                                  // Per connection, so kept small: thousands of idle WebSockets pay for it.
    let mut buf = vec![0u8; 8 * 1024];
    let mut notice = Notice::None;
    // A masked 1001 owed to the backend once the client's frame ends.
    let mut backend_close_owed = false;
    let mut drain_seen = false;
    let mut shutdown_seen = false;
    let mut last_activity = Instant::now();

    if !rest.is_empty()
        && (backend_frames.feed(&rest).is_err() || session.write_response_body(Some(rest), false).await.is_err())
    {
        return CloseReason::Error;
    }

    let reason = loop {
        let deadline = notice.deadline();
        let idle_at = crate::time::deadline(last_activity, settings.idle_timeout);
        tokio::select! {
            data = session.read_request_body() => {
                let bytes = match data {
                    Ok(Some(bytes)) => bytes,
                    // The client went away (or broke the stream).
                    Ok(None) | Err(_) => break closing_reason(notice).unwrap_or(who_closed(&client_frames, &backend_frames, CloseReason::Client)),
                };
                last_activity = Instant::now();
                if backend_close_owed {
                    // Forward up to the end of the client's frame, then the 1001.
                    let Ok(n) = client_frames.feed_to_boundary(&bytes) else { break CloseReason::Error };
                    if to_backend.write_all(&bytes[..n]).await.is_err() {
                        break closing_reason(notice).unwrap_or(CloseReason::Backend);
                    }
                    if client_frames.at_boundary() {
                        backend_close_owed = false;
                        let _ = send_backend_close(&mut to_backend).await;
                        // What follows `n` is the client's answer: watched below.
                        if client_frames.feed(&bytes[n..]).is_err() {
                            break CloseReason::Error;
                        }
                    }
                } else if let Notice::Sent(_, reason) = notice {
                    // After our close: only the client's close reply matters.
                    if client_frames.feed(&bytes).is_err() || client_frames.close_seen() {
                        break reason;
                    }
                } else {
                    if client_frames.feed(&bytes).is_err() {
                        break CloseReason::Error;
                    }
                    if to_backend.write_all(&bytes).await.is_err() {
                        break CloseReason::Backend;
                    }
                }
                if let Notice::Sent(_, reason) = notice {
                    if client_frames.close_seen() && !backend_close_owed {
                        break reason;
                    }
                }
            }
            read = from_backend.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break closing_reason(notice).unwrap_or(who_closed(&client_frames, &backend_frames, CloseReason::Backend)),
                    Ok(n) => n,
                };
                last_activity = Instant::now();
                let data = &buf[..n];
                match notice {
                    // Our close is out: the backend's answer is not forwarded.
                    Notice::Sent(..) => {}
                    Notice::AwaitingBoundary(reason) => {
                        let Ok(k) = backend_frames.feed_to_boundary(data) else { break CloseReason::Error };
                        if k > 0 && session.write_response_body(Some(Bytes::copy_from_slice(&data[..k])), false).await.is_err() {
                            break CloseReason::Client;
                        }
                        if backend_frames.at_boundary() {
                            notice = send_notice(session, &mut to_backend, &client_frames, &backend_frames, reason, settings.close_grace, &mut backend_close_owed).await;
                        }
                    }
                    Notice::None | Notice::Scheduled(..) => {
                        if backend_frames.feed(data).is_err() {
                            break CloseReason::Error;
                        }
                        if session.write_response_body(Some(Bytes::copy_from_slice(data)), false).await.is_err() {
                            break CloseReason::Client;
                        }
                    }
                }
            }
            _ = until_true(drain.clone()), if !drain_seen && notice.is_open() => {
                drain_seen = true;
                notice = Notice::Scheduled(crate::time::after(jittered(settings.spread)), CloseReason::Drain);
            }
            stop = until_stopped(shutdown.clone()), if !shutdown_seen && matches!(notice, Notice::None | Notice::Scheduled(..)) => {
                shutdown_seen = true;
                let at = match notice {
                    Notice::Scheduled(at, _) => at,
                    _ => crate::time::after(jittered(settings.spread)),
                };
                notice = Notice::Scheduled(at, stop);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(idle_at)), if deadline.is_some() => {
                match notice {
                    Notice::Scheduled(_, reason) => {
                        if client_frames.close_seen() || backend_frames.close_seen() {
                            // A peer is already closing on its own: let it.
                            notice = Notice::Sent(crate::time::after(settings.close_grace), reason);
                        } else if backend_frames.at_boundary() {
                            notice = send_notice(session, &mut to_backend, &client_frames, &backend_frames, reason, settings.close_grace, &mut backend_close_owed).await;
                        } else {
                            notice = Notice::AwaitingBoundary(reason);
                        }
                    }
                    Notice::Sent(_, reason) => break reason, // close_grace is over
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(idle_at), if notice.is_open() => {
                // No traffic either way for idle_timeout (both sides are at
                // a boundary: nothing moved).
                notice = send_notice(session, &mut to_backend, &client_frames, &backend_frames, CloseReason::Idle, settings.close_grace, &mut backend_close_owed).await;
            }
        }
    };
    let _ = to_backend.shutdown().await;
    let _ = session.write_response_body(None, true).await;
    reason
}

/// Who ended the connection: whoever sent the first close frame, else the
/// side whose socket closed.
fn who_closed(client_frames: &FrameTracker, backend_frames: &FrameTracker, socket_closed: CloseReason) -> CloseReason {
    match (client_frames.close_seen(), backend_frames.close_seen()) {
        (true, false) => CloseReason::Client,
        (false, true) => CloseReason::Backend,
        _ => socket_closed,
    }
}

/// The reason to report once a notice went out.
fn closing_reason(notice: Notice) -> Option<CloseReason> {
    match notice {
        Notice::Sent(_, reason) | Notice::AwaitingBoundary(reason) => Some(reason),
        _ => None,
    }
}

/// Sends the close to the client now (we are at a boundary in that
/// direction) and to the backend now or once the client's frame ends.
async fn send_notice(
    session: &mut Session,
    to_backend: &mut OwnedWriteHalf,
    client_frames: &FrameTracker,
    backend_frames: &FrameTracker,
    reason: CloseReason,
    close_grace: Duration,
    backend_close_owed: &mut bool,
) -> Notice {
    let deadline = crate::time::after(close_grace);
    if client_frames.close_seen() || backend_frames.close_seen() {
        return Notice::Sent(deadline, reason);
    }
    let (code, text) = match reason {
        CloseReason::Drain | CloseReason::Upgrade => (SERVICE_RESTART, "service restart: reconnect"),
        CloseReason::Idle => (GOING_AWAY, "idle timeout"),
        _ => (GOING_AWAY, "going away: reconnect"),
    };
    let _ = session
        .write_response_body(Some(Bytes::from(close_frame(code, text, None))), false)
        .await;
    if client_frames.at_boundary() {
        let _ = send_backend_close(to_backend).await;
    } else {
        *backend_close_owed = true;
    }
    Notice::Sent(deadline, reason)
}

/// A masked close 1001 to the backend (the proxy is its client).
async fn send_backend_close(to_backend: &mut OwnedWriteHalf) -> std::io::Result<()> {
    let mask: [u8; 4] = rand::rng().random();
    to_backend
        .write_all(&close_frame(GOING_AWAY, "going away", Some(mask)))
        .await
}
