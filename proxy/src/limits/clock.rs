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

/// What the client sent against what pingora consumed of it, to tell
/// whether pingora holds bytes of a next request once a response is
/// finished (pipelining, or a body read past its end): only when it does
/// not may the keep-alive loop wait for the next request itself, with no
/// pingora session and no buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ledger {
    /// Bytes read from the client (every read pingora or the loop made).
    delivered: u64,
    /// Bytes of heads and bodies pingora parsed or will drain.
    consumed: u64,
    /// False once a request's length was not known up front (a chunked
    /// body): the two counts no longer say anything about this connection.
    exact: bool,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            delivered: 0,
            consumed: 0,
            exact: true,
        }
    }
}

impl Ledger {
    /// Everything read so far belongs to requests pingora parsed.
    fn settled(self) -> bool {
        self.exact && self.delivered == self.consumed
    }
}

/// The clock's state behind its lock.
#[derive(Debug)]
struct State {
    phase: Phase,
    ledger: Ledger,
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
                ledger: Ledger::default(),
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
    /// its first byte. True when pingora holds nothing of a next request
    /// (see [`Ledger`]).
    pub(crate) fn response_finished(&self) -> bool {
        let mut state = self.lock();
        state.phase = Phase::Idle {
            until: deadline(self.keepalive_timeout),
            head_until: None,
        };
        state.ledger.settled()
    }

    /// pingora parsed a complete head of `head` bytes (it may have come
    /// from bytes read ahead with the previous request), whose body is
    /// `body` bytes long; `None` for either: not known.
    pub(crate) fn head_complete(&self, head: Option<usize>, body: Option<u64>) {
        let mut state = self.lock();
        state.phase = Phase::Request;
        match (head, body) {
            (Some(head), Some(body)) => {
                let ledger = &mut state.ledger;
                ledger.consumed = ledger.consumed.saturating_add(head as u64).saturating_add(body);
            }
            _ => state.ledger.exact = false,
        }
    }

    /// pingora holds no byte the client sent past the current request's
    /// head and body (none of a next request, nothing the client sent
    /// early).
    pub(crate) fn settled(&self) -> bool {
        self.lock().ledger.settled()
    }

    /// Accounts bytes read while a request is under way (its body, or what
    /// follows it).
    pub(crate) fn delivered(&self, bytes: usize) {
        let mut state = self.lock();
        state.ledger.delivered = state.ledger.delivered.saturating_add(bytes as u64);
    }

    /// Accounts bytes read from the client.
    pub(crate) fn feed(&self, bytes: &[u8]) -> Fed {
        if bytes.is_empty() {
            return Fed::Pending;
        }
        let mut state = self.lock();
        state.ledger.delivered = state.ledger.delivered.saturating_add(bytes.len() as u64);
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
        clock.head_complete(Some(27), Some(0));
        assert!(!clock.response_finished(), "2x64 KiB after the head are no body of it");
        assert!(matches!(clock.phase(), Phase::Idle { head_until: None, .. }));
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    #[test]
    fn requests_read_exactly_leave_the_ledger_settled() {
        let clock = HeadClock::new(Duration::from_secs(10), Duration::from_secs(10));
        let post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(clock.feed(&[&post[..], b"ab"].concat()), Fed::Complete);
        clock.head_complete(Some(post.len()), Some(5));
        assert!(!clock.settled(), "3 body bytes to come");
        clock.delivered(3);
        assert!(clock.settled());
        assert!(clock.response_finished());
        // A bodiless request, its head split over two reads.
        assert_eq!(clock.feed(&GET[..10]), Fed::Pending);
        assert_eq!(clock.feed(&GET[10..]), Fed::Complete);
        clock.head_complete(Some(GET.len()), Some(0));
        assert!(clock.response_finished());
    }

    #[test]
    fn read_ahead_is_owed_until_pingora_parses_it_and_an_unknown_length_ends_the_ledger() {
        let clock = HeadClock::new(Duration::from_secs(10), Duration::from_secs(10));
        // Two pipelined requests in one read, and half a third.
        let batch = [GET, GET, &GET[..7]].concat();
        assert_eq!(clock.feed(&batch), Fed::Complete);
        clock.head_complete(Some(GET.len()), Some(0));
        assert!(!clock.response_finished(), "pingora holds the second and a half");
        clock.head_complete(Some(GET.len()), Some(0));
        assert!(!clock.response_finished(), "pingora holds half of the third");
        clock.delivered(GET.len() - 7);
        clock.head_complete(Some(GET.len()), Some(0));
        assert!(clock.response_finished(), "all three parsed: settled again");
        // Chunked: nothing can be told from here on.
        clock.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        clock.head_complete(Some(48), None);
        assert!(!clock.response_finished());
        clock.feed(GET);
        clock.head_complete(Some(GET.len()), Some(0));
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
