//! Claiming a backend, and *holding* a request while its app has none
//! ready: it waits for a table that has one (each publish wakes it), up to
//! `hold_timeout`, then gets 503 with `Retry-After`. At most `max_held`
//! requests wait at once; more are refused at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::InflightGuard;
use crate::metrics::AppMetrics;
use crate::router::AppId;
use crate::service::{CutoverProxy, RequestCtx};

impl CutoverProxy {
    /// Claims a ready backend for `app`, holding the request while there is
    /// none (up to the hold timeout).
    pub(crate) async fn claim(&self, app: AppId, ctx: &mut RequestCtx) -> std::result::Result<InflightGuard, Refusal> {
        match self.try_pick(app, ctx) {
            Pick::Claimed(claim) => Ok(claim),
            Pick::AppGone => Err(Refusal::AppGone),
            Pick::NoneReady => self.hold(app, ctx).await,
        }
    }

    /// Picks and claims a backend from the current table.
    fn try_pick(&self, app: AppId, ctx: &RequestCtx) -> Pick {
        let table = self.table.load();
        match table.app(app) {
            None => Pick::AppGone,
            Some(entry) => match entry.pick(&ctx.failed) {
                Some(claim) => Pick::Claimed(claim),
                None => Pick::NoneReady,
            },
        }
    }

    /// Waits for a table with a ready backend, up to the hold deadline.
    async fn hold(&self, app: AppId, ctx: &mut RequestCtx) -> std::result::Result<InflightGuard, Refusal> {
        if self.held.fetch_add(1, Ordering::SeqCst) >= self.settings.max_held {
            self.held.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::HoldQueueFull);
        }
        let _slot = HeldSlot(&self.held);
        let _gauge = ctx.metrics.as_ref().map(AppMetrics::hold);
        let start = Instant::now();
        let hold_timeout = self.table.load().hold_timeout().unwrap_or(self.settings.hold_timeout);
        let deadline = *ctx
            .hold_deadline
            .get_or_insert_with(|| crate::time::deadline(start, hold_timeout));
        let mut changed = self.table.subscribe();
        let result = loop {
            if self.table.is_closing() {
                break Err(Refusal::ShuttingDown);
            }
            match self.try_pick(app, ctx) {
                Pick::Claimed(claim) => break Ok(claim),
                Pick::AppGone => break Err(Refusal::AppGone),
                Pick::NoneReady => {}
            }
            if Instant::now() >= deadline {
                break Err(Refusal::HoldTimeout);
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
}

/// How long a held request waits before retrying backends that failed.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

pub(crate) enum Pick {
    Claimed(InflightGuard),
    NoneReady,
    AppGone,
}

/// Why the proxy answered a request itself instead of proxying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    HoldTimeout,
    HoldQueueFull,
    ShuttingDown,
    AppGone,
}

impl Refusal {
    pub(crate) fn body(self) -> &'static str {
        match self {
            Refusal::HoldTimeout => "no ready backend: the app did not become ready in time\n",
            Refusal::HoldQueueFull => "no ready backend and too many requests waiting for one\n",
            Refusal::ShuttingDown => "cutover is shutting down\n",
            Refusal::AppGone => "the app for this route was removed\n",
        }
    }
}

pub(crate) struct HeldSlot<'a>(&'a AtomicUsize);

impl Drop for HeldSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
