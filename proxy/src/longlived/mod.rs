//! Long-lived connections: WebSocket and Server-Sent Events.
//!
//! They cannot move to another process, so when their backend drains (a
//! deploy) or cutover shuts down they are closed, but never silently: a
//! WebSocket client gets a close frame (1012 "service restart", also when
//! cutover hands over to its successor, or 1001 "going away" at shutdown)
//! at a frame boundary, an SSE client gets
//! `retry: N` after the event in flight and a clean end of stream. Closes
//! are spread over `spread` with jitter.
//!
//! To be able to write to the client at a moment of its choosing, the proxy
//! takes these requests over in `request_filter` (pingora has no hook to
//! inject bytes from outside, and its own upgrade path has bug #946): it
//! connects to the backend itself, exchanges the heads, then pumps bytes.
//!
//! - [`frames`]: the WebSocket frame-boundary tracker.
//! - [`events`]: the SSE event-boundary tracker and chunked decoder.
//! - [`request`]: the head for the backend, hop-by-hop headers removed.
//! - [`upstream`]: the head exchange (response head and body framing),
//!   plain responses.
//! - [`websocket`], [`sse`]: the two pumps.
//! - [`passthrough`]: event streams that came down pingora's own path
//!   (recognised by the response's `Content-Type`), ended with notice too.

pub mod events;
pub mod frames;
pub mod passthrough;
pub mod request;
pub(crate) mod socket;
pub mod sse;
pub mod upstream;
pub mod websocket;

use std::time::Duration;

use pingora::http::RequestHeader;
use rand::Rng;

/// How long-lived connections are closed (`proxy.long_lived`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongLivedSettings {
    /// Notices are spread at random over this window.
    pub spread: Duration,
    /// How long the client gets to answer a WebSocket close.
    pub close_grace: Duration,
    /// A WebSocket with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for LongLivedSettings {
    fn default() -> Self {
        Self {
            spread: Duration::from_secs(2),
            close_grace: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// Which kind of long-lived connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    WebSocket,
    Sse,
}

impl Kind {
    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WebSocket => "websocket",
            Kind::Sse => "sse",
        }
    }

    /// Does this request start a long-lived connection? A WebSocket
    /// upgrade (HTTP/1.1 `Upgrade: websocket`), or a GET that accepts only
    /// an event stream (what `EventSource` sends).
    pub fn of(req: &RequestHeader, is_upgrade: bool) -> Option<Kind> {
        let header = |name: http::HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok());
        if is_upgrade && header(http::header::UPGRADE).is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            return Some(Kind::WebSocket);
        }
        if req.method == http::Method::GET && header(http::header::ACCEPT).is_some_and(accepts_event_stream) {
            return Some(Kind::Sse);
        }
        None
    }
}

/// Does an `Accept` value name `text/event-stream` (any case)? No
/// allocation: this runs for every GET with an `Accept` header.
fn accepts_event_stream(accept: &str) -> bool {
    const WANTED: &[u8] = b"text/event-stream";
    accept
        .as_bytes()
        .windows(WANTED.len())
        .any(|w| w.eq_ignore_ascii_case(WANTED))
}

/// Why a long-lived connection ended (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its backend drained; the client was told (1012 / `retry:`).
    Drain,
    /// cutover shut down; the client was told (1001 / `retry:`).
    Shutdown,
    /// cutover handed its listeners over to a new cutover (self-upgrade);
    /// the client was told (1012 / `retry:`).
    Upgrade,
    /// The client closed it.
    Client,
    /// The backend closed it.
    Backend,
    /// No traffic for `idle_timeout`.
    Idle,
    /// A protocol or I/O error.
    Error,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Drain => "drain",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Upgrade => "upgrade",
            CloseReason::Client => "client",
            CloseReason::Backend => "backend",
            CloseReason::Idle => "idle",
            CloseReason::Error => "error",
        }
    }
}

/// A moment picked at random within `spread` from now, so thousands of
/// clients do not reconnect at the same instant.
pub fn jittered(spread: Duration) -> Duration {
    if spread.is_zero() {
        return Duration::ZERO;
    }
    let millis = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::rng().random_range(0..millis))
}

/// How cutover is stopping: the value of [`crate::TableHandle::shutdown_signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stop {
    /// Serving.
    #[default]
    Running,
    /// Shutting down for good: clients are told to go away (1001).
    Shutdown,
    /// Handing over to a new cutover process that already serves the same
    /// listeners: clients are told to reconnect (1012), as on a deploy.
    Upgrade,
}

/// Waits until cutover stops (never, if the sender is gone) and says why,
/// as the reason a long-lived connection is closed for.
pub(crate) async fn until_stopped(mut rx: tokio::sync::watch::Receiver<Stop>) -> CloseReason {
    // The borrow the wait returns must not live across an await.
    let stop = rx.wait_for(|stop| *stop != Stop::Running).await.map(|stop| *stop);
    let Ok(stop) = stop else {
        return std::future::pending().await;
    };
    match stop {
        Stop::Upgrade => CloseReason::Upgrade,
        Stop::Running | Stop::Shutdown => CloseReason::Shutdown,
    }
}

/// Waits until a watch flips to true (or its sender is gone: never).
pub(crate) async fn until_true(mut rx: tokio::sync::watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_accept_is_found_in_any_case() {
        assert!(accepts_event_stream("text/event-stream"));
        assert!(accepts_event_stream("text/html, Text/Event-Stream;q=0.9"));
        assert!(!accepts_event_stream("text/html,application/xhtml+xml,*/*;q=0.8"));
    }
}
