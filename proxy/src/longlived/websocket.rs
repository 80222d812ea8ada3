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

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use pingora::http::ResponseHeader;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::frames::{close_frame, FrameTracker};
use super::{jittered, until_stopped, until_true, CloseReason, LongLivedSettings, Stop};

/// Close codes (RFC 6455 §7.4, IANA registry).
const SERVICE_RESTART: u16 = 1012;
const GOING_AWAY: u16 = 1001;

/// The most one read takes from either side. The bytes are read into a
/// scratch buffer on the stack and copied out at their length, so an idle
/// tunnel holds no buffer at all, and a busy one only what is in flight.
const READ_SIZE: usize = 16 * 1024;

/// Everything a tunnel needs besides the client's stream.
pub struct Tunnel {
    pub upstream: TcpStream,
    /// The backend's 101, written to the client first.
    pub response: ResponseHeader,
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

/// The 101 as pingora would write it (an informational answer: no `Date`
/// or `Connection` added), with the standard reason phrase.
fn response_head(response: &ResponseHeader) -> Bytes {
    let mut head = BytesMut::with_capacity(256);
    head.put_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    response.header_to_h1_wire(&mut head);
    head.put_slice(b"\r\n");
    head.freeze()
}

/// Reads what `from` has, up to [`READ_SIZE`] bytes, into a buffer of its
/// length; `None` at the end of the stream. Cancel-safe: nothing is taken
/// from `from` unless it is returned.
async fn read_some<R: AsyncRead + Unpin>(from: &mut R) -> io::Result<Option<Bytes>> {
    std::future::poll_fn(|cx| {
        let mut scratch = [MaybeUninit::<u8>::uninit(); READ_SIZE];
        let mut buf = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(&mut *from).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(match buf.filled() {
            [] => None,
            read => Some(Bytes::copy_from_slice(read)),
        }))
    })
    .await
}

/// Writes all of `bytes` to `to` and flushes (pingora's client stream
/// buffers small writes).
async fn send<W: AsyncWrite + Unpin>(to: &mut W, bytes: &[u8]) -> io::Result<()> {
    to.write_all(bytes).await?;
    to.flush().await
}

/// Writes the 101 and the backend bytes that came with it. Takes them by
/// value so that nothing of the backend's answer (its head's read buffer
/// included) outlives this: the tunnel may stay open for hours.
async fn handshake<C: AsyncWrite + Unpin>(
    client: &mut C,
    response: ResponseHeader,
    rest: Bytes,
    backend_frames: &mut FrameTracker,
) -> Result<(), CloseReason> {
    if send(client, &response_head(&response)).await.is_err() {
        return Err(CloseReason::Client);
    }
    if !rest.is_empty() && (backend_frames.feed(&rest).is_err() || send(client, &rest).await.is_err()) {
        return Err(CloseReason::Error);
    }
    Ok(())
}

/// Runs the tunnel between `client` (its handshake read, nothing after
/// it) and the backend until it closes: writes the 101 first. Why it
/// closed.
pub async fn run<C: AsyncRead + AsyncWrite + Unpin>(mut client: C, t: Tunnel) -> CloseReason {
    let Tunnel {
        upstream,
        response,
        rest,
        drain,
        shutdown,
        settings,
    } = t;
    let _ = upstream.set_nodelay(true);
    let (mut from_backend, mut to_backend) = upstream.into_split();
    let mut client_frames = FrameTracker::new(); // client → backend
    let mut backend_frames = FrameTracker::new(); // backend → client
    let mut notice = Notice::None;
    // A masked 1001 owed to the backend once the client's frame ends.
    let mut backend_close_owed = false;
    let mut drain_seen = false;
    let mut shutdown_seen = false;
    let mut last_activity = Instant::now();

    if let Err(reason) = handshake(&mut client, response, rest, &mut backend_frames).await {
        return reason;
    }

    let reason = loop {
        let deadline = notice.deadline();
        let idle_at = crate::time::deadline(last_activity, settings.idle_timeout);
        tokio::select! {
            data = read_some(&mut client) => {
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
            read = read_some(&mut from_backend) => {
                let data = match read {
                    Ok(Some(data)) => data,
                    Ok(None) | Err(_) => break closing_reason(notice).unwrap_or(who_closed(&client_frames, &backend_frames, CloseReason::Backend)),
                };
                last_activity = Instant::now();
                match notice {
                    // Our close is out: the backend's answer is not forwarded.
                    Notice::Sent(..) => {}
                    Notice::AwaitingBoundary(reason) => {
                        let Ok(k) = backend_frames.feed_to_boundary(&data) else { break CloseReason::Error };
                        if k > 0 && send(&mut client, &data[..k]).await.is_err() {
                            break CloseReason::Client;
                        }
                        if backend_frames.at_boundary() {
                            notice = send_notice(&mut client, &mut to_backend, &client_frames, &backend_frames, reason, settings.close_grace, &mut backend_close_owed).await;
                        }
                    }
                    Notice::None | Notice::Scheduled(..) => {
                        if backend_frames.feed(&data).is_err() {
                            break CloseReason::Error;
                        }
                        if send(&mut client, &data).await.is_err() {
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
                            notice = send_notice(&mut client, &mut to_backend, &client_frames, &backend_frames, reason, settings.close_grace, &mut backend_close_owed).await;
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
                notice = send_notice(&mut client, &mut to_backend, &client_frames, &backend_frames, CloseReason::Idle, settings.close_grace, &mut backend_close_owed).await;
            }
        }
    };
    let _ = to_backend.shutdown().await;
    let _ = client.shutdown().await;
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
async fn send_notice<C: AsyncWrite + Unpin>(
    client: &mut C,
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
    let _ = send(client, &close_frame(code, text, None)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle tunnel is this future and nothing else of its own (no read
    /// buffer: reads go through a stack scratch buffer). Guards against
    /// state that would make every idle WebSocket pay (1.6 KiB in a debug
    /// build today).
    #[tokio::test]
    async fn an_idle_tunnel_holds_no_buffer_in_its_state() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (client, _other) = tokio::io::duplex(64);
        let (_drain_tx, drain) = watch::channel(false);
        let (_stop_tx, shutdown) = watch::channel(Stop::Running);
        let tunnel = Tunnel {
            upstream,
            response: ResponseHeader::build(101, None).unwrap(),
            rest: Bytes::new(),
            drain,
            shutdown,
            settings: LongLivedSettings::default(),
        };
        let size = std::mem::size_of_val(&run(client, tunnel));
        assert!(size < READ_SIZE / 4, "the tunnel's future is {size} bytes");
    }

    #[test]
    fn the_101_is_written_as_pingora_writes_it() {
        let mut response = ResponseHeader::build(101, None).unwrap();
        response.append_header("Upgrade", "websocket").unwrap();
        response
            .append_header("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .unwrap();
        assert_eq!(
            &response_head(&response)[..],
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"[..]
        );
    }
}
