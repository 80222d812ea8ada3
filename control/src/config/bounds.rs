//! The range every number in `deploy.yaml` must fall in.
//!
//! Each bound is generous for an operator and tight enough that the runtime's
//! arithmetic with the value cannot overflow: the longest duration accepted
//! anywhere is 7 days, so `Instant::now() + d`, `spread + close_grace` and
//! `max(drain_timeout) + 5s` stay far from any limit (`timing` holds that
//! arithmetic; the property test in `tests/props.rs` runs it on random
//! configs). A value outside its range is a problem naming the bound, e.g.
//! `must be at most 1h, got 500000000000y`.

use std::time::Duration;

/// The smallest and largest value a duration key accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationBounds {
    /// Inclusive. [`Duration::ZERO`] when zero is meaningful, else positive.
    pub min: Duration,
    /// Inclusive.
    pub max: Duration,
}

impl DurationBounds {
    /// Zero allowed (the step is skipped), up to `max`.
    const fn up_to(max: Duration) -> Self {
        Self {
            min: Duration::ZERO,
            max,
        }
    }

    /// Anything greater than zero, up to `max`.
    const fn positive(max: Duration) -> Self {
        Self {
            min: Duration::from_nanos(1),
            max,
        }
    }

    /// From `min` to `max`.
    const fn between(min: Duration, max: Duration) -> Self {
        Self { min, max }
    }

    /// True when `value` is within the bounds.
    pub fn contains(&self, value: Duration) -> bool {
        self.min <= value && value <= self.max
    }
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// `proxy.hold_timeout`: a held request is a client waiting; minutes at most.
pub const HOLD_TIMEOUT: DurationBounds = DurationBounds::positive(secs(10 * MINUTE));
/// `proxy.limits.header_timeout`: below 100 ms a slow but honest client on a
/// bad link cannot send a head; above 10 min the limit protects nothing.
pub const HEADER_TIMEOUT: DurationBounds = DurationBounds::between(millis(100), secs(10 * MINUTE));
/// `proxy.limits.keepalive_timeout`: whole seconds (pingora takes seconds),
/// at least 1 so it is never "no timeout".
pub const KEEPALIVE_TIMEOUT: DurationBounds = DurationBounds::between(secs(1), secs(HOUR));
/// `proxy.long_lived.spread`: 0 sends every notice at once.
pub const SPREAD: DurationBounds = DurationBounds::up_to(secs(10 * MINUTE));
/// `proxy.long_lived.close_grace`: 0 closes right after the notice.
pub const CLOSE_GRACE: DurationBounds = DurationBounds::up_to(secs(10 * MINUTE));
/// `proxy.long_lived.idle_timeout`: 0 would close every WebSocket at once.
pub const IDLE_TIMEOUT: DurationBounds = DurationBounds::between(secs(1), secs(7 * DAY));
/// `apps.*.health.interval`: below 10 ms the probes are a load test.
pub const HEALTH_INTERVAL: DurationBounds = DurationBounds::between(millis(10), secs(HOUR));
/// `apps.*.health.timeout`: one probe; a health endpoint slower than a
/// minute is down.
pub const HEALTH_TIMEOUT: DurationBounds = DurationBounds::positive(secs(MINUTE));
/// `apps.*.health.start_timeout`: an hour covers a slow cache warm-up.
pub const START_TIMEOUT: DurationBounds = DurationBounds::positive(secs(HOUR));
/// `apps.*.drain_timeout`: 0 cuts in-flight requests at once (allowed, when
/// long-lived notices fit: see `spread + close_grace`); a day covers long
/// downloads.
pub const DRAIN_TIMEOUT: DurationBounds = DurationBounds::up_to(secs(DAY));
/// `apps.*.stop_timeout`: 0 sends SIGKILL right after SIGTERM.
pub const STOP_TIMEOUT: DurationBounds = DurationBounds::up_to(secs(HOUR));
/// `proxy.tls.hsts`: 0 sends no header; two years is the longest max-age
/// browsers' preload lists ask for. Only ever written into a header, never
/// added to an `Instant`, so it is the one bound above [`LONGEST`].
pub const HSTS: DurationBounds = DurationBounds::up_to(secs(2 * 365 * DAY));

/// `apps.*.bluegreen.keep_previous`: 0 stops the previous set right after
/// the swap; a day of two full sets is plenty for a rollback window.
pub const KEEP_PREVIOUS: DurationBounds = DurationBounds::up_to(secs(DAY));
/// `apps.*.canary.steps[*].pause`: 0 passes as soon as `min_requests`
/// reached the new version; a day is the longest sensible soak.
pub const STEP_PAUSE: DurationBounds = DurationBounds::up_to(secs(DAY));
/// `apps.*.canary.steps`: how many steps a canary may have.
pub const CANARY_STEPS: (usize, usize) = (1, 20);
/// `apps.*.canary.steps[*].weight`: percent of new requests.
pub const CANARY_WEIGHT: (i64, i64) = (1, 100);
/// `apps.*.canary.analysis.min_requests`: 0 judges on whatever came.
pub const MIN_REQUESTS: (i64, i64) = (0, 1_000_000);
/// `apps.*.canary.analysis.max_latency_ratio`: below 1 the new version
/// would have to be faster than the stable one; above 100 it judges nothing.
pub const LATENCY_RATIO: (f64, f64) = (1.0, 100.0);

/// `proxy.threads`: 1 to 256 worker threads. A fixed bound rather than a
/// multiple of this machine's CPUs, so a file that `cutover validate`
/// accepts on a laptop is accepted on the server too; 256 covers the largest
/// common machines, and pingora starts this many threads per listener.
pub const THREADS: (i64, i64) = (1, 256);
/// `apps.*.instances`: more than 64 is almost surely a typo (each is a
/// process and a port).
pub const INSTANCES: (i64, i64) = (1, 64);
/// `proxy.limits.max_connections`: far above what a process's descriptor
/// limit allows, low enough to stay meaningful.
pub const MAX_CONNECTIONS: (i64, i64) = (1, 1_000_000);
/// `proxy.tuning.l4_read_buffer`: bytes held for each client connection's
/// life; 0 reads straight into the request's own buffers. 1 MiB is already
/// 20 GB at 20,000 connections.
pub const L4_READ_BUFFER: (i64, i64) = (0, 1_048_576);
/// `proxy.tuning.listener_tasks`: tasks accepting on each listener; past a
/// few per core they only contend for the same socket.
pub const LISTENER_TASKS: (i64, i64) = (1, 16);
/// `proxy.tuning.upstream_pool`: idle upstream keep-alive connections over
/// all backends; 0 keeps none (a new connection per request).
pub const UPSTREAM_POOL: (i64, i64) = (0, 65_536);

/// Every count key under `proxy.tuning` with its bounds, for documentation
/// and tests.
pub const TUNING: [(&str, (i64, i64)); 3] = [
    ("proxy.tuning.l4_read_buffer", L4_READ_BUFFER),
    ("proxy.tuning.listener_tasks", LISTENER_TASKS),
    ("proxy.tuning.upstream_pool", UPSTREAM_POOL),
];

/// Every duration key with its bounds, for documentation and tests
/// (`apps.*` stands for each app).
pub const DURATIONS: [(&str, DurationBounds); 13] = [
    ("proxy.hold_timeout", HOLD_TIMEOUT),
    ("proxy.limits.header_timeout", HEADER_TIMEOUT),
    ("proxy.limits.keepalive_timeout", KEEPALIVE_TIMEOUT),
    ("proxy.long_lived.spread", SPREAD),
    ("proxy.long_lived.close_grace", CLOSE_GRACE),
    ("proxy.long_lived.idle_timeout", IDLE_TIMEOUT),
    ("apps.*.health.interval", HEALTH_INTERVAL),
    ("apps.*.health.timeout", HEALTH_TIMEOUT),
    ("apps.*.health.start_timeout", START_TIMEOUT),
    ("apps.*.drain_timeout", DRAIN_TIMEOUT),
    ("apps.*.stop_timeout", STOP_TIMEOUT),
    ("proxy.tls.hsts", HSTS),
    ("apps.*.bluegreen.keep_previous", KEEP_PREVIOUS),
];

/// Keys whose value is never added to an `Instant` (see [`HSTS`]).
pub const NOT_TIMERS: [&str; 1] = ["proxy.tls.hsts"];

/// The longest duration any timer key accepts; the runtime's arithmetic is
/// safe up to well beyond it.
pub const LONGEST: Duration = secs(7 * DAY);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_is_the_largest_bound() {
        let timers = DURATIONS.iter().filter(|(key, _)| !NOT_TIMERS.contains(key));
        let largest = timers.map(|(_, b)| b.max).max();
        assert_eq!(largest, Some(LONGEST));
        for (key, bounds) in DURATIONS {
            assert!(bounds.min <= bounds.max, "{key}");
        }
    }
}
