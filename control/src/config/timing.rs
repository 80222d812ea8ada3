//! The arithmetic the runtime does with config durations, as small pure
//! functions: deadlines, the long-lived notice window, drain and shutdown
//! waits, restart backoff.
//!
//! Each function names the runtime code it stands for. Where that code lives
//! in `control`, it can call these directly; where it lives in `proxy` (which
//! knows nothing of config) it does the same sums, and these mirror them so
//! the property test in `config/tests/props.rs` can run every valid config
//! through them. With every duration bounded (`bounds`, at most 7 days) none
//! of these can overflow; [`deadline`] is checked anyway, so a future key
//! with a looser bound degrades to a far-off deadline instead of a panic.

use std::time::Duration;

use cutover_proxy::longlived::jittered;

use super::model::{AppConfig, Config, HealthConfig, LongLivedConfig};

/// How far a deadline that would overflow is put instead: 30 years, as
/// tokio does for `sleep(Duration::MAX)`.
pub const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// A point in time that a duration can be added to without panicking:
/// `std::time::Instant` and `tokio::time::Instant`.
pub trait Moment: Copy {
    /// `self + duration`, or `None` on overflow.
    fn checked_after(self, duration: Duration) -> Option<Self>;
}

impl Moment for std::time::Instant {
    fn checked_after(self, duration: Duration) -> Option<Self> {
        self.checked_add(duration)
    }
}

impl Moment for tokio::time::Instant {
    fn checked_after(self, duration: Duration) -> Option<Self> {
        self.checked_add(duration)
    }
}

/// `now + after`, never panicking: a sum past what an `Instant` holds
/// becomes `now + FAR_FUTURE` (or `now` if even that cannot be held, which
/// no real clock reaches). Use it for every `Instant + config duration`.
pub fn deadline<I: Moment>(now: I, after: Duration) -> I {
    now.checked_after(after)
        .or_else(|| now.checked_after(FAR_FUTURE))
        .unwrap_or(now)
}

/// How long a draining app's long-lived clients need: the notice goes out
/// within `spread`, then the client has `close_grace` to answer. Validation
/// requires every app's `drain_timeout` to be at least this.
pub fn notice_window(long_lived: &LongLivedConfig) -> Duration {
    long_lived.spread.saturating_add(long_lived.close_grace)
}

/// When a held request gives up: `start + hold_timeout`. Mirrors
/// `ProxyService::hold` (proxy/src/service.rs).
pub fn hold_deadline<I: Moment>(start: I, hold_timeout: Duration) -> I {
    deadline(start, hold_timeout)
}

/// When a drain notice is due: a random moment within `spread` from now.
/// Mirrors the scheduling in `longlived::websocket` and `longlived::sse`
/// (`Instant::now() + jittered(spread)`).
pub fn notice_at<I: Moment>(now: I, spread: Duration) -> I {
    deadline(now, jittered(spread))
}

/// When a notified WebSocket is closed regardless: `now + close_grace`.
/// Mirrors `longlived::websocket` (`Notice::Sent`, `send_notice`).
pub fn close_at<I: Moment>(now: I, close_grace: Duration) -> I {
    deadline(now, close_grace)
}

/// When an idle WebSocket is closed: `last_activity + idle_timeout`.
/// Mirrors the loop in `longlived::websocket`.
pub fn idle_at<I: Moment>(last_activity: I, idle_timeout: Duration) -> I {
    deadline(last_activity, idle_timeout)
}

/// The `retry:` an SSE client is told at a drain, in milliseconds:
/// `100 + jittered(spread)`. Mirrors `longlived::sse::finish`.
pub fn sse_retry_ms(spread: Duration) -> u128 {
    100 + jittered(spread).as_millis()
}

/// The drain a deploy waits for: the longer of the old and new version's
/// `drain_timeout`. Mirrors `AppOps::drain_and_stop` (control/src/deploy/ops.rs).
pub fn deploy_drain(previous: &AppConfig, target: &AppConfig) -> Duration {
    previous.drain_timeout.max(target.drain_timeout)
}

/// How long `cutover up` waits for requests at shutdown: the longest
/// `drain_timeout` of any app (30 s with none). Used by src/up.rs.
pub fn shutdown_drain(config: &Config) -> Duration {
    config
        .apps
        .values()
        .map(|a| a.drain_timeout)
        .max()
        .unwrap_or(Duration::from_secs(30))
}

/// The data plane's own shutdown grace: [`shutdown_drain`] plus 5 s.
/// Used by src/up.rs as the data plane's backstop grace.
pub fn shutdown_grace(config: &Config) -> Duration {
    shutdown_drain(config).saturating_add(Duration::from_secs(5))
}

/// When a starting instance must be ready: `now + start_timeout`. Mirrors
/// `run_once` in control/src/supervisor/instance.rs.
pub fn ready_deadline<I: Moment>(now: I, health: &HealthConfig) -> I {
    deadline(now, health.start_timeout)
}

/// One readiness probe's timeout: the configured one, cut to what is left
/// of `start_timeout`. Mirrors `become_ready` in supervisor/instance.rs.
pub fn probe_timeout(health: &HealthConfig, left: Duration) -> Duration {
    health.timeout.min(left)
}

/// Restart backoff: 100 ms doubling per attempt, at most 10 s. Mirrors
/// `backoff` in control/src/supervisor/instance.rs (same constants).
pub fn restart_backoff(attempt: u32) -> Duration {
    let (first, max) = (Duration::from_millis(100), Duration::from_secs(10));
    first.saturating_mul(2u32.saturating_pow(attempt.min(16))).min(max)
}

/// The idle keep-alive timeout in the whole seconds pingora's
/// `Session::set_keepalive` takes; at least 1 (0 would mean "close now").
pub fn keepalive_secs(keepalive_timeout: Duration) -> u64 {
    keepalive_timeout.as_secs().max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn deadline_never_panics_on_absurd_durations() {
        let now = Instant::now();
        assert_eq!(deadline(now, Duration::from_secs(1)), now + Duration::from_secs(1));
        // `now + Duration::MAX` panics ("overflow when adding duration to instant").
        assert_eq!(deadline(now, Duration::MAX), now + FAR_FUTURE);
        let tokio_now = tokio::time::Instant::now();
        assert_eq!(deadline(tokio_now, Duration::MAX), tokio_now + FAR_FUTURE);
    }

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        assert_eq!(restart_backoff(0), Duration::from_millis(100));
        assert_eq!(restart_backoff(3), Duration::from_millis(800));
        assert_eq!(restart_backoff(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn notice_window_saturates() {
        let long_lived = LongLivedConfig {
            spread: Duration::MAX,
            close_grace: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        };
        assert_eq!(notice_window(&long_lived), Duration::MAX);
    }

    #[test]
    fn keepalive_is_whole_seconds_never_zero() {
        assert_eq!(keepalive_secs(Duration::from_millis(1500)), 1);
        assert_eq!(keepalive_secs(Duration::from_millis(10)), 1);
        assert_eq!(keepalive_secs(Duration::from_secs(75)), 75);
    }
}
