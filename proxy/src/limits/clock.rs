//! The per-connection head clock: which deadline a client's next read is
//! under, shared by the stream wrapper, the keep-alive loop and the
//! `early_request_filter` hook.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::MAX_HEAD_BYTES;

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No byte of the next head yet: closed silently at `until`. `head_until`
    /// is the head's deadline once a byte arrives (the first request's is
    /// fixed at accept; later ones start at their first byte).
    Idle {
        until: Option<Instant>,
        head_until: Option<Instant>,
    },
    /// Part of a head arrived: answered 408 at `until`, 431 past
    /// [`MAX_HEAD_BYTES`].
    Head {
        until: Option<Instant>,
        bytes: usize,
        scan: HeadScan,
    },
    /// The head is complete: no limit until the response is finished.
    Request,
}

/// What new bytes did to a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fed {
    /// Still reading the head (or not reading one).
    Pending,
    /// The head ends within these bytes.
    Complete,
    /// The head is larger than [`MAX_HEAD_BYTES`].
    TooLarge,
}

/// What was read of the current request past its head, to tell whether a
/// finished request left bytes of the next one in pingora's hands
/// (pipelining): only when it did not may the keep-alive loop wait for the
/// next request itself, with no pingora session and no buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ReadAhead {
    /// The head's end was found in bytes this clock scanned (not in bytes
    /// pingora had read ahead with the previous request).
    scanned: bool,
    /// Bytes read after the head's end: the body, and whatever followed it.
    past_head: u64,
    /// The body's length by the head's framing; `None` when it is not known
    /// up front (chunked, or a framing pingora will refuse).
    body: Option<u64>,
}

impl ReadAhead {
    /// Exactly the head and its body were read: nothing of a next request.
    fn nothing_ahead(self) -> bool {
        self.scanned && self.body == Some(self.past_head)
    }
}

/// The clock's state behind its lock.
#[derive(Debug)]
struct State {
    phase: Phase,
    read: ReadAhead,
}

/// A connection's clock. Every method is a short critical section; the lock
/// is only ever taken by the connection's own task.
#[derive(Debug)]
pub(crate) struct HeadClock {
    header_timeout: Duration,
    keepalive_timeout: Duration,
    state: Mutex<State>,
}

impl HeadClock {
    /// A clock for a connection accepted now: its first head must be
    /// complete within `header_timeout`.
    pub(crate) fn new(header_timeout: Duration, keepalive_timeout: Duration) -> Self {
        let until = deadline(header_timeout);
        Self {
            header_timeout,
            keepalive_timeout,
            state: Mutex::new(State {
                phase: Phase::Idle {
                    until,
                    head_until: until,
                },
                read: ReadAhead::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave a torn state (its
        // parts are Copy and assigned whole), so a poisoned lock is still
        // valid.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The deadline of the first head, fixed at accept (`None`: no limit).
    /// The TLS handshake and the h2c preface must be done by then too.
    pub(crate) fn first_head_deadline(&self) -> Option<Instant> {
        match self.lock().phase {
            Phase::Idle { head_until, .. } => head_until,
            Phase::Head { until, .. } => until,
            Phase::Request => None,
        }
    }

    /// The current phase.
    pub(crate) fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// The previous response is finished: the connection may idle for
    /// `keepalive_timeout`, then its next head gets `header_timeout` from
    /// its first byte. True when nothing of the next request was read yet
    /// (see [`ReadAhead`]).
    pub(crate) fn response_finished(&self) -> bool {
        let mut state = self.lock();
        state.phase = Phase::Idle {
            until: deadline(self.keepalive_timeout),
            head_until: None,
        };
        std::mem::take(&mut state.read).nothing_ahead()
    }

    /// pingora parsed a complete head (it may have come from bytes read
    /// ahead with the previous request, which this clock never scanned),
    /// whose body is `body` bytes long (`None`: not known up front).
    pub(crate) fn head_complete(&self, body: Option<u64>) {
        let mut state = self.lock();
        if state.phase != Phase::Request {
            state.read.scanned = false;
        }
        state.read.body = body;
        state.phase = Phase::Request;
    }

    /// Nothing was read past the current request's head: no byte of a body,
    /// none of a next request (pingora holds no byte the client sent).
    pub(crate) fn nothing_past_head(&self) -> bool {
        let read = self.lock().read;
        read.scanned && read.past_head == 0
    }

    /// Accounts bytes read while a request is under way (its body, or what
    /// follows it).
    pub(crate) fn read_past_head(&self, bytes: usize) {
        let mut state = self.lock();
        state.read.past_head = state.read.past_head.saturating_add(bytes as u64);
    }

    /// Accounts bytes read from the client.
    pub(crate) fn feed(&self, bytes: &[u8]) -> Fed {
        if bytes.is_empty() {
            return Fed::Pending;
        }
        let mut state = self.lock();
        let (until, before, mut scan) = match state.phase {
            Phase::Request => return Fed::Pending,
            Phase::Idle { head_until, .. } => (
                head_until.or_else(|| deadline(self.header_timeout)),
                0,
                HeadScan::default(),
            ),
            Phase::Head { until, bytes, scan } => (until, bytes, scan),
        };
        match scan.feed(bytes) {
            Some(end) if before.saturating_add(end) <= MAX_HEAD_BYTES => {
                state.phase = Phase::Request;
                state.read = ReadAhead {
                    scanned: true,
                    past_head: (bytes.len() - end) as u64,
                    body: None,
                };
                Fed::Complete
            }
            Some(_) => Fed::TooLarge,
            None => {
                let total = before.saturating_add(bytes.len());
                if total > MAX_HEAD_BYTES {
                    return Fed::TooLarge;
                }
                state.phase = Phase::Head {
                    until,
                    bytes: total,
                    scan,
                };
                Fed::Pending
            }
        }
    }
}

/// `now + d`, or no deadline when that is not representable.
fn deadline(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// Finds the blank line that ends a request head, across reads. Accepts
/// bare LF line ends as httparse does, and skips empty lines before the
/// request line (RFC 9112 §2.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum HeadScan {
    /// Before the request line.
    #[default]
    Start,
    /// Inside a line.
    Line,
    /// Just after a line end.
    LineEnd,
}

impl HeadScan {
    /// Feeds bytes; returns how many of them belong to the head when it
    /// ends within them.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            *self = match (*self, b) {
                (state, b'\r') => state,
                (HeadScan::LineEnd, b'\n') => return Some(i + 1),
                (HeadScan::Start, b'\n') => HeadScan::Start,
                (_, b'\n') => HeadScan::LineEnd,
                _ => HeadScan::Line,
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_the_end_of_a_head_across_reads() {
        let mut scan = HeadScan::default();
        assert_eq!(scan.feed(b"GET / HTTP/1.1\r\nHost: a\r"), None);
        assert_eq!(scan.feed(b"\n\r"), None);
        assert_eq!(scan.feed(b"\nbody"), Some(1));
    }

    #[test]
    fn scan_accepts_bare_lf_and_skips_leading_empty_lines() {
        let mut scan = HeadScan::default();
        assert_eq!(scan.feed(b"\r\n\nGET / HTTP/1.1\nHost: a\n\nrest"), Some(27));
    }

    #[test]
    fn a_head_over_the_limit_is_too_large() {
        let clock = HeadClock::new(Duration::from_secs(10), Duration::from_secs(10));
        assert_eq!(clock.feed(b"GET / HTTP/1.1\r\n"), Fed::Pending);
        let filler = vec![b'a'; MAX_HEAD_BYTES];
        assert_eq!(clock.feed(&filler), Fed::TooLarge);
    }

    #[test]
    fn bytes_after_a_complete_head_are_not_counted() {
        let clock = HeadClock::new(Duration::from_secs(10), Duration::from_secs(10));
        let mut read = b"POST / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        read.extend(vec![b'x'; 2 * MAX_HEAD_BYTES]);
        assert_eq!(clock.feed(&read), Fed::Complete);
        assert_eq!(clock.phase(), Phase::Request);
        assert!(
            !clock.response_finished(),
            "the 2x64 KiB after the head were never claimed by a body"
        );
        assert!(matches!(clock.phase(), Phase::Idle { head_until: None, .. }));
    }

    #[test]
    fn a_request_read_exactly_leaves_nothing_ahead() {
        let clock = HeadClock::new(Duration::from_secs(10), Duration::from_secs(10));
        assert_eq!(
            clock.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab"),
            Fed::Complete
        );
        clock.head_complete(Some(5));
        clock.read_past_head(3);
        assert!(clock.response_finished());
        // A bodiless request, its head split over two reads.
        assert_eq!(clock.feed(b"GET / HTTP/1.1\r\n"), Fed::Pending);
        assert_eq!(clock.feed(b"Host: a\r\n\r\n"), Fed::Complete);
        clock.head_complete(Some(0));
        assert!(clock.response_finished());
    }

    #[test]
    fn bytes_past_the_body_or_an_unknown_body_or_an_unscanned_head_mean_something_ahead() {
        let clock = HeadClock::new(Duration::from_secs(10), Duration::from_secs(10));
        // Pipelined: the next request came with this one's head.
        assert_eq!(
            clock.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n"),
            Fed::Complete
        );
        clock.head_complete(Some(0));
        assert!(!clock.response_finished());
        // Read past the end of the body.
        assert_eq!(
            clock.feed(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n"),
            Fed::Complete
        );
        clock.head_complete(Some(2));
        clock.read_past_head(4);
        assert!(!clock.response_finished());
        // Chunked: the length is not known up front.
        assert_eq!(
            clock.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Fed::Complete
        );
        clock.head_complete(None);
        assert!(!clock.response_finished());
        // A head pingora parsed from bytes it had read ahead.
        clock.head_complete(Some(0));
        assert!(!clock.response_finished());
    }

    #[test]
    fn a_huge_timeout_means_no_deadline_instead_of_a_panic() {
        let clock = HeadClock::new(Duration::MAX, Duration::MAX);
        assert_eq!(
            clock.phase(),
            Phase::Idle {
                until: None,
                head_until: None
            }
        );
        assert_eq!(clock.feed(b"G"), Fed::Pending);
        clock.response_finished();
        assert_eq!(clock.feed(b"G"), Fed::Pending);
    }
}
