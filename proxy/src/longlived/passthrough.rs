//! Event streams on pingora's own path.
//!
//! A request is taken over only when it *asks* for an event stream
//! (`Accept: text/event-stream`, what `EventSource` sends). curl and many
//! fetch clients do not ask, so their streams come down pingora's path; the
//! backend's `Content-Type: text/event-stream` is what says it is one
//! (SPEC §4a). Such a stream gets the same treatment as a taken-over one:
//! counted as long-lived, and when its backend drains (or cutover shuts
//! down), at a jittered moment within `spread`, after the event in flight,
//! `retry: N` and a clean end of the response.
//!
//! pingora cannot be told to end a response from outside the request's
//! task, so a watcher task ends the *upstream read side*
//! ([`UpstreamSocket::stop_reading`]) once the stream is between events;
//! bytes pingora still delivers after that moment are withheld by the body
//! filter ([`EventStream::filter`]). pingora then sees the backend's body
//! end: a close-delimited body ends normally (the notice goes out as the
//! last body bytes), a chunked or sized one ends with an upstream error (the
//! notice and the clean end are written from `fail_to_proxy`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use tokio::sync::{oneshot, watch};

use super::events::EventTracker;
use super::socket::UpstreamSocket;
use super::Kind;
use super::{jittered, until_stopped, until_true, CloseReason, LongLivedSettings};
use crate::backend::LongLivedGuard;
use crate::metrics::LongLivedMetric;
use crate::service::{CutoverProxy, RequestCtx};

/// Is this response an event stream? A 2xx with `Content-Type:
/// text/event-stream` (any case, any parameters).
pub fn is_event_stream(response: &pingora::http::ResponseHeader) -> bool {
    const WANTED: &[u8] = b"text/event-stream";
    response.status.is_success()
        && response
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.as_bytes().get(..WANTED.len()))
            .is_some_and(|t| t.eq_ignore_ascii_case(WANTED))
}

/// One event stream on pingora's path, from its response head to the end of
/// the request (dropping it stops the watcher and closes our descriptor).
pub(crate) struct EventStream {
    shared: Arc<Mutex<Cut>>,
    spread: std::time::Duration,
    notice_sent: bool,
    metric: LongLivedMetric,
    _count: LongLivedGuard,
    /// Dropped with the stream: the watcher ends.
    _stop: oneshot::Sender<()>,
}

/// What the watcher and the body filter share.
struct Cut {
    events: EventTracker,
    /// The notice is due, for this reason: nothing past the next event
    /// boundary goes to the client.
    due: Option<CloseReason>,
    /// The upstream read side was stopped.
    done: bool,
    socket: UpstreamSocket,
}

impl Cut {
    fn stop(&mut self) {
        self.socket.stop_reading();
        self.done = true;
    }
}

/// The signals a stream listens to.
pub(crate) struct Signals {
    pub drain: watch::Receiver<bool>,
    pub shutdown: watch::Receiver<super::Stop>,
}

impl EventStream {
    /// Starts watching `signals` for a stream whose backend connection is
    /// `socket`.
    pub(crate) fn start(
        socket: UpstreamSocket,
        signals: Signals,
        settings: LongLivedSettings,
        count: LongLivedGuard,
        metric: LongLivedMetric,
    ) -> Self {
        let shared = Arc::new(Mutex::new(Cut {
            events: EventTracker::new(),
            due: None,
            done: false,
            socket,
        }));
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(watch_signals(Arc::clone(&shared), signals, settings, stopped));
        Self {
            shared,
            spread: settings.spread,
            notice_sent: false,
            metric,
            _count: count,
            _stop: stop,
        }
    }

    /// Passes backend bytes through, tracking events; once the notice is
    /// due, only up to the end of the event in flight, then stops the
    /// upstream read side.
    pub(crate) fn filter(&self, body: &mut Option<Bytes>) {
        let Some(bytes) = body.as_mut() else { return };
        let mut cut = lock(&self.shared);
        if cut.done {
            *body = None;
            return;
        }
        if cut.due.is_none() {
            cut.events.feed(bytes);
            return;
        }
        let n = cut.events.feed_to_boundary(bytes);
        bytes.truncate(n);
        if cut.events.at_boundary() {
            cut.stop();
        }
        if bytes.is_empty() {
            *body = None;
        }
    }

    /// Why the proxy ended this stream, if it did.
    pub(crate) fn ended_by_proxy(&self) -> Option<CloseReason> {
        let cut = lock(&self.shared);
        cut.due.filter(|_| cut.done)
    }

    /// The `retry:` notice, once, if the proxy ended the stream.
    pub(crate) fn take_notice(&mut self) -> Option<Bytes> {
        if self.notice_sent || self.ended_by_proxy().is_none() {
            return None;
        }
        self.notice_sent = true;
        Some(retry_notice(self.spread))
    }

    /// At the end of the backend's body: adds the notice if the proxy ended
    /// the stream.
    pub(crate) fn at_end(&mut self, body: &mut Option<Bytes>) {
        let Some(notice) = self.take_notice() else { return };
        *body = Some(match body.take() {
            Some(last) if !last.is_empty() => {
                let mut joined = BytesMut::with_capacity(last.len() + notice.len());
                joined.extend_from_slice(&last);
                joined.extend_from_slice(&notice);
                joined.freeze()
            }
            _ => notice,
        });
    }

    /// Records why the stream ended (the metric's `reason`).
    pub(crate) fn closed(&mut self, reason: CloseReason) {
        self.metric.closed(reason.as_str());
    }
}

// === impl CutoverProxy ===

impl CutoverProxy {
    /// Starts treating the response as an event stream: counted as
    /// long-lived, ended with notice when its backend drains or cutover
    /// shuts down. Without a claim or a duplicable upstream socket it is
    /// proxied as any response.
    pub(crate) fn watch_event_stream(&self, session: &mut Session, ctx: &mut RequestCtx) {
        let (Some(claim), Some(fd)) = (&ctx.claim, ctx.upstream_fd) else {
            return;
        };
        let socket = match UpstreamSocket::duplicate(fd) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch an event stream: it will not get a drain notice");
                return;
            }
        };
        let backend = claim.backend();
        let settings = self.table.load().long_lived().unwrap_or(self.settings.long_lived);
        let app = ctx.metrics.as_ref().map_or("", |m| m.app());
        let metric = self
            .metrics
            .long_lived_opened(app, backend.instance(), Kind::Sse.as_str());
        // The client sends nothing on an event stream: pingora's 60 s
        // downstream read timeout must not end it.
        session.set_read_timeout(None);
        ctx.event_stream = Some(EventStream::start(
            socket,
            Signals {
                drain: backend.drain_signal(),
                shutdown: self.table.shutdown_signal(),
            },
            settings,
            backend.track_long_lived(),
            metric,
        ));
    }
}

/// `retry: N` (jittered, at least 100 ms) and the blank line that ends it
/// as an event.
pub(crate) fn retry_notice(spread: std::time::Duration) -> Bytes {
    let retry_ms = 100 + jittered(spread).as_millis();
    Bytes::from(format!("retry: {retry_ms}\n\n"))
}

fn lock(shared: &Mutex<Cut>) -> MutexGuard<'_, Cut> {
    // Nothing panics while holding it; if something did, the state is
    // still the best there is.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits for a drain or shutdown, then for a jittered moment, then marks
/// the notice due and stops reading at once if the stream is between
/// events (else the body filter stops at the next boundary).
async fn watch_signals(
    shared: Arc<Mutex<Cut>>,
    signals: Signals,
    settings: LongLivedSettings,
    mut stopped: oneshot::Receiver<()>,
) {
    let reason = tokio::select! {
        _ = until_true(signals.drain) => CloseReason::Drain,
        stop = until_stopped(signals.shutdown) => stop,
        _ = &mut stopped => return,
    };
    tokio::select! {
        _ = tokio::time::sleep(jittered(settings.spread)) => {}
        _ = &mut stopped => return,
    }
    let mut cut = lock(&shared);
    cut.due = Some(reason);
    if cut.events.at_boundary() {
        cut.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// An event stream over a real loopback connection.
    struct Loopback {
        stream: EventStream,
        drain: watch::Sender<bool>,
        /// The socket pingora would be reading.
        upstream: tokio::net::TcpStream,
        /// The backend's end, kept open.
        _backend: tokio::net::TcpStream,
    }

    async fn stream_on_loopback(spread: Duration) -> Loopback {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (backend_end, _) = listener.accept().await.unwrap();
        let socket = UpstreamSocket::duplicate(client.as_raw_fd()).unwrap();
        let backend = crate::Backend::new("127.0.0.1:1".parse().unwrap(), "web-0", 1);
        let metrics = crate::ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
        let (drain, drain_rx) = watch::channel(false);
        let stream = EventStream::start(
            socket,
            Signals {
                drain: drain_rx,
                shutdown: watch::channel(super::super::Stop::Running).1,
            },
            LongLivedSettings {
                spread,
                ..LongLivedSettings::default()
            },
            backend.track_long_lived(),
            metrics.long_lived_opened("web", "web-0", "sse"),
        );
        Loopback {
            stream,
            drain,
            upstream: client,
            _backend: backend_end,
        }
    }

    fn pass(stream: &EventStream, bytes: &'static [u8]) -> Option<Bytes> {
        let mut body = Some(Bytes::from_static(bytes));
        stream.filter(&mut body);
        body
    }

    #[tokio::test]
    async fn a_drain_mid_event_lets_the_event_finish_then_stops_reading() {
        let Loopback {
            mut stream,
            drain,
            mut upstream,
            _backend,
        } = stream_on_loopback(Duration::ZERO).await;
        assert_eq!(
            pass(&stream, b"data: one\n\ndata: tw").as_deref(),
            Some(&b"data: one\n\ndata: tw"[..])
        );
        drain.send_replace(true);
        // The watcher marks the notice due; mid-event, it cannot stop yet.
        tokio::time::timeout(Duration::from_secs(5), async {
            while lock(&stream.shared).due.is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert!(stream.ended_by_proxy().is_none(), "not between events yet");
        // The rest of the event passes, the next one does not.
        assert_eq!(pass(&stream, b"o\n\ndata: three\n\n").as_deref(), Some(&b"o\n\n"[..]));
        assert_eq!(stream.ended_by_proxy(), Some(CloseReason::Drain));
        assert_eq!(pass(&stream, b"data: four\n\n"), None, "nothing after the cut");
        // pingora's next read sees the end of the backend's body.
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), upstream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
        // The notice, once.
        let mut last = None;
        stream.at_end(&mut last);
        let notice = String::from_utf8(last.unwrap().to_vec()).unwrap();
        assert!(notice.starts_with("retry: ") && notice.ends_with("\n\n"), "{notice:?}");
        assert!(stream.take_notice().is_none());
    }

    #[tokio::test]
    async fn a_drain_between_events_stops_reading_at_once() {
        let Loopback { stream, drain, .. } = stream_on_loopback(Duration::ZERO).await;
        assert!(pass(&stream, b"data: one\n\n").is_some());
        assert!(stream.ended_by_proxy().is_none());
        drain.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), async {
            while stream.ended_by_proxy().is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(stream.ended_by_proxy(), Some(CloseReason::Drain));
    }

    #[test]
    fn event_streams_are_told_by_their_content_type() {
        let head = |status: u16, ct: Option<&str>| {
            let mut r = pingora::http::ResponseHeader::build(status, None).unwrap();
            if let Some(ct) = ct {
                r.insert_header("content-type", ct).unwrap();
            }
            r
        };
        assert!(is_event_stream(&head(200, Some("text/event-stream"))));
        assert!(is_event_stream(&head(200, Some("Text/Event-Stream; charset=utf-8"))));
        assert!(!is_event_stream(&head(200, Some("text/html"))));
        assert!(!is_event_stream(&head(200, Some("text/event"))));
        assert!(!is_event_stream(&head(200, None)));
        assert!(!is_event_stream(&head(503, Some("text/event-stream"))));
    }
}
