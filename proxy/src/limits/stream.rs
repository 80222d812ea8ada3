//! The client stream under the head clock: reads past a deadline end the
//! connection (with 408 when part of a head arrived), a head past
//! [`MAX_HEAD_BYTES`](super::MAX_HEAD_BYTES) gets 431.
//!
//! pingora reads a head with a timeout *per read*
//! (`protocols/http/v1/server.rs`, `HttpSession::read_request_buf`), so a
//! client sending a byte now and then keeps its connection forever; the
//! deadline has to live below pingora, in the stream it reads from.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{Peek, Ssl, Stream, ALPN};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::clock::{Fed, HeadClock, Phase};
use super::CLOSED_BY_LIMITS;

/// How long answering 408 or 431 and waiting for the client to close may
/// take before the connection is simply dropped (a client that does not
/// read must not hold it).
const REJECT_TIMEOUT: Duration = Duration::from_secs(1);

const TIMEOUT_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 40\r\nConnection: close\r\n\r\nthe request head did not arrive in time\n";
const TOO_LARGE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; \
charset=utf-8\r\nContent-Length: 39\r\nConnection: close\r\n\r\nthe request head is larger than 64 KiB\n";

/// Why the stream closed the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Nothing of a head arrived in time.
    Idle,
    /// Part of a head arrived, not all of it: 408.
    Timeout,
    /// The head is too large: 431.
    TooLarge,
}

impl Cut {
    fn error(self) -> io::Error {
        let what = match self {
            Cut::Idle => "idle client connection",
            Cut::Timeout => "request head not complete within header_timeout, answered 408;",
            Cut::TooLarge => "request head larger than 64 KiB, answered 431;",
        };
        io::Error::new(io::ErrorKind::TimedOut, format!("{what} {CLOSED_BY_LIMITS}"))
    }
}

/// An answer being written before the connection is cut.
struct Rejection {
    cut: Cut,
    response: &'static [u8],
    written: usize,
    step: Step,
}

/// Where a [`Rejection`] is.
#[derive(Debug, Clone, Copy)]
enum Step {
    Write,
    Shutdown,
    Drain,
}

/// A client stream whose reads obey a [`HeadClock`].
pub(crate) struct LimitedStream {
    inner: Stream,
    clock: Arc<HeadClock>,
    /// Armed only while a deadline applies; allocated on first use.
    sleep: Option<Pin<Box<Sleep>>>,
    rejection: Option<Rejection>,
    cut: Option<Cut>,
}

impl LimitedStream {
    pub(crate) fn new(inner: Stream, clock: Arc<HeadClock>) -> Self {
        Self {
            inner,
            clock,
            sleep: None,
            rejection: None,
            cut: None,
        }
    }

    /// Polls a timer for `until`; ready when it has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, until: Instant) -> Poll<()> {
        match &mut self.sleep {
            Some(sleep) => {
                if sleep.deadline() != until {
                    sleep.as_mut().reset(until);
                }
                sleep.as_mut().poll(cx)
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(until)))
                .as_mut()
                .poll(cx),
        }
    }

    /// Starts cutting the connection, answering first if there is an answer.
    fn start_cut(&mut self, cut: Cut) {
        let response = match cut {
            Cut::Idle => {
                self.cut = Some(cut);
                return;
            }
            Cut::Timeout => TIMEOUT_408,
            Cut::TooLarge => TOO_LARGE_431,
        };
        tracing::debug!(?cut, "closing a client connection (proxy.limits)");
        self.rejection = Some(Rejection {
            cut,
            response,
            written: 0,
            step: Step::Write,
        });
        let give_up = crate::time::after(REJECT_TIMEOUT);
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(give_up),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(give_up))),
        }
    }

    /// Writes the rejection, closes our side, and reads what the client
    /// still sends until it closes too or the give-up timer fires: closing
    /// with unread input would send a reset, which can destroy the answer
    /// before the client reads it (the "lingering close" of nginx and
    /// Apache). Then fails the read that pingora is waiting on.
    fn poll_rejection(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(cut) = self.cut {
            return Poll::Ready(Err(cut.error()));
        }
        let Some(rejection) = self.rejection.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let cut = rejection.cut;
        let finished = loop {
            let inner = Pin::new(&mut self.inner);
            let step = match rejection.step {
                Step::Write if rejection.written >= rejection.response.len() => {
                    inner.poll_flush(cx).map(|r| r.map(|()| Step::Shutdown))
                }
                Step::Write => inner
                    .poll_write(cx, &rejection.response[rejection.written..])
                    .map(|r| match r {
                        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            rejection.written += n;
                            Ok(Step::Write)
                        }
                        Err(e) => Err(e),
                    }),
                Step::Shutdown => inner.poll_shutdown(cx).map(|r| r.map(|()| Step::Drain)),
                Step::Drain => {
                    let mut scratch = [0u8; 4096];
                    let mut discard = ReadBuf::new(&mut scratch);
                    inner.poll_read(cx, &mut discard).map(|r| match r {
                        Ok(()) if discard.filled().is_empty() => Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(()) => Ok(Step::Drain),
                        Err(e) => Err(e),
                    })
                }
            };
            match step {
                Poll::Ready(Ok(next)) => rejection.step = next,
                // The client closed or failed: nothing more to do.
                Poll::Ready(Err(_)) => break true,
                Poll::Pending => break false,
            }
        };
        if !finished {
            let gave_up = self.sleep.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready());
            if !gave_up {
                return Poll::Pending;
            }
        }
        self.rejection = None;
        self.cut = Some(cut);
        Poll::Ready(Err(cut.error()))
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.cut.is_some() || this.rejection.is_some() {
            return this.poll_rejection(cx);
        }
        let (until, cut) = match this.clock.phase() {
            Phase::Request => {
                let before = buf.filled().len();
                let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
                let read = buf.filled().len() - before;
                if read > 0 {
                    this.clock.delivered(read);
                }
                return polled;
            }
            Phase::Idle { until, .. } => (until, Cut::Idle),
            Phase::Head { until, .. } => (until, Cut::Timeout),
        };
        if until.is_some_and(|until| Instant::now() >= until) {
            this.start_cut(cut);
            return this.poll_rejection(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => match this.clock.feed(&buf.filled()[before..]) {
                Fed::Pending | Fed::Complete => Poll::Ready(Ok(())),
                Fed::TooLarge => {
                    // pingora never sees the bytes over the limit.
                    buf.set_filled(before);
                    this.start_cut(Cut::TooLarge);
                    this.poll_rejection(cx)
                }
            },
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(until) = until {
                    ready!(this.poll_deadline(cx, until));
                    this.start_cut(cut);
                    return this.poll_rejection(cx);
                }
                Poll::Pending
            }
        }
    }
}

// === pingora's transport traits: all forwarded to the inner stream ===

super::forward::forward_transport!(LimitedStream);

impl Ssl for LimitedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

#[async_trait]
impl Peek for LimitedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

impl fmt::Debug for LimitedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitedStream").field("inner", &self.inner).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared_and_actual_length(response: &[u8]) -> (usize, usize) {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = parsed.parse(response).expect("valid response") else {
            panic!("incomplete response head");
        };
        let declared = parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| std::str::from_utf8(h.value).expect("ascii").parse().expect("a number"))
            .expect("a Content-Length");
        (declared, response.len() - head)
    }

    #[test]
    fn the_canned_answers_declare_their_length() {
        for response in [TIMEOUT_408, TOO_LARGE_431] {
            let (declared, actual) = declared_and_actual_length(response);
            assert_eq!(declared, actual, "{}", String::from_utf8_lossy(response));
        }
    }
}
