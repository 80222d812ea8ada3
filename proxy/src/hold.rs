//! Claiming a backend, and *holding* a request while it cannot have one:
//! while its app has none ready it waits for a table that has one (each
//! publish wakes it), up to `hold_timeout`, then gets 503 with
//! `Retry-After`; while its app is paused it waits for a table without
//! the pause, up to `max_pause` after it arrived. At most `max_held`
//! requests wait at once; more are refused at once.
//!
//! Every path that claims a backend (pingora's, the WebSocket/SSE
//! takeover, gRPC) comes through [`CutoverProxy::claim`], which also
//! records in the request's context which set of a split served it.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::InflightGuard;
use crate::metrics::AppMetrics;
use crate::mode::AppMode;
use crate::pages::{Answer, ErrorPages};
use crate::router::AppId;
use crate::service::{CutoverProxy, RequestCtx};

impl CutoverProxy {
    /// Claims a ready backend for `app`, holding the request while there is
    /// none (up to the hold timeout) or the app is paused (up to its
    /// `max_pause`).
    pub(crate) async fn claim(&self, app: AppId, ctx: &mut RequestCtx) -> std::result::Result<InflightGuard, Refusal> {
        match self.try_pick(app, ctx) {
            Pick::Claimed(claim) => Ok(claim),
            Pick::AppGone => Err(Refusal::AppGone),
            Pick::Maintenance(message) => Err(Refusal::Maintenance(message)),
            Pick::NoneReady | Pick::Paused(_) => self.hold(app, ctx).await,
        }
    }

    /// Picks and claims a backend from the current table, recording which
    /// set of a split it came from.
    fn try_pick(&self, app: AppId, ctx: &mut RequestCtx) -> Pick {
        let table = self.table.load();
        let Some(entry) = table.app(app) else {
            return Pick::AppGone;
        };
        match entry.mode() {
            AppMode::Serving => {}
            AppMode::Paused { max_pause } => return Pick::Paused(*max_pause),
            AppMode::Maintenance { message } => return Pick::Maintenance(message.clone()),
        }
        match entry.choose(&ctx.failed, ctx.cookie) {
            Some(choice) => {
                ctx.served = entry.served(&choice);
                Pick::Claimed(choice.claim)
            }
            None => Pick::NoneReady,
        }
    }

    /// Waits for a table with a ready backend (and no pause), up to the
    /// hold deadline (or the pause's).
    async fn hold(&self, app: AppId, ctx: &mut RequestCtx) -> std::result::Result<InflightGuard, Refusal> {
        if self.held.fetch_add(1, Ordering::SeqCst) >= self.settings.max_held {
            self.held.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::HoldQueueFull);
        }
        let _slot = HeldSlot(&self.held);
        let _gauge = ctx.metrics.as_ref().map(AppMetrics::hold);
        let start = Instant::now();
        let mut changed = self.table.subscribe();
        let result = loop {
            if self.table.is_closing() {
                break Err(Refusal::ShuttingDown);
            }
            let (deadline, refusal) = match self.try_pick(app, ctx) {
                Pick::Claimed(claim) => break Ok(claim),
                Pick::AppGone => break Err(Refusal::AppGone),
                Pick::Maintenance(message) => break Err(Refusal::Maintenance(message)),
                // Counted from the request's arrival, whatever it waited
                // for before.
                Pick::Paused(max_pause) => (crate::time::deadline(ctx.started, max_pause), Refusal::PauseTimeout),
                Pick::NoneReady => {
                    // From the moment it first found none (a paused wait
                    // before does not eat into it); kept across retries.
                    let hold_timeout = self.table.load().hold_timeout().unwrap_or(self.settings.hold_timeout);
                    let deadline = *ctx
                        .hold_deadline
                        .get_or_insert_with(|| crate::time::deadline(Instant::now(), hold_timeout));
                    (deadline, Refusal::HoldTimeout)
                }
            };
            if Instant::now() >= deadline {
                break Err(refusal);
            }
            // Wake on the next table, or after a short pause to try the
            // backends that failed once more (a backlog overflow or a slow
            // accept is not a dead backend).
            let pause = crate::time::deadline(Instant::now(), RETRY_PAUSE).min(deadline);
            match tokio::time::timeout_at(pause, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break Err(Refusal::ShuttingDown),
                Err(_) => ctx.failed.clear(),
            }
        };
        ctx.held += start.elapsed();
        result
    }

    /// The error pages of `app` in the current table.
    pub(crate) fn error_pages(&self, app: Option<AppId>) -> Option<Arc<ErrorPages>> {
        let table = self.table.load();
        app.and_then(|id| table.app(id)).and_then(|e| e.error_pages().cloned())
    }
}

/// How long a held request waits before retrying backends that failed.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

pub(crate) enum Pick {
    Claimed(InflightGuard),
    NoneReady,
    Paused(Duration),
    Maintenance(Option<Arc<str>>),
    AppGone,
}

/// Why the proxy answered a request itself instead of proxying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    HoldTimeout,
    HoldQueueFull,
    ShuttingDown,
    AppGone,
    /// The app stayed paused for the request's whole `max_pause`.
    PauseTimeout,
    /// The app is in maintenance, with this message.
    Maintenance(Option<Arc<str>>),
}

impl Refusal {
    /// The answer: a 503 (with `Retry-After`), in the client's format.
    pub(crate) fn answer(&self) -> Answer<'_> {
        match self {
            Refusal::HoldTimeout => Answer::Unavailable("no ready backend: the app did not become ready in time\n"),
            Refusal::HoldQueueFull => Answer::Unavailable("no ready backend and too many requests waiting for one\n"),
            Refusal::ShuttingDown => Answer::Unavailable("cutover is shutting down\n"),
            Refusal::AppGone => Answer::Unavailable("the app for this route was removed\n"),
            Refusal::PauseTimeout => Answer::Unavailable("the app is paused: try again shortly\n"),
            Refusal::Maintenance(message) => Answer::Maintenance(message.as_deref()),
        }
    }

    /// Why, in a few words (the error pingora logs).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Refusal::HoldTimeout => "no ready backend: the app did not become ready in time",
            Refusal::HoldQueueFull => "no ready backend and too many requests waiting for one",
            Refusal::ShuttingDown => "cutover is shutting down",
            Refusal::AppGone => "the app for this route was removed",
            Refusal::PauseTimeout => "the app is paused",
            Refusal::Maintenance(_) => "the app is down for maintenance",
        }
    }

    /// The gRPC status message for a call refused this way.
    pub(crate) fn grpc_message(&self) -> Cow<'_, str> {
        match self {
            Refusal::HoldTimeout => "no ready backend: the app did not become ready in time".into(),
            Refusal::HoldQueueFull => "no ready backend and too many requests waiting for one".into(),
            Refusal::ShuttingDown => "cutover is shutting down: retry the call".into(),
            Refusal::AppGone => "the app for this route was removed".into(),
            Refusal::PauseTimeout => "the app is paused: retry the call shortly".into(),
            Refusal::Maintenance(None) => "the app is down for maintenance".into(),
            Refusal::Maintenance(Some(message)) => format!("the app is down for maintenance: {message}").into(),
        }
    }
}

pub(crate) struct HeldSlot<'a>(&'a AtomicUsize);

impl Drop for HeldSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
