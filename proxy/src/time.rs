//! Deadlines that cannot panic.
//!
//! `Instant + Duration` panics when the sum does not fit, and durations
//! come from config files and clients. Config validation bounds every
//! duration, but the request path must not rely on that: every deadline
//! here is computed with `checked_add`, and one too far to represent
//! becomes "far in the future" (about 30 years, what tokio itself uses for
//! a timer that never fires).

use std::time::Duration;

use tokio::time::Instant;

/// About 30 years: later than anything cutover waits for.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `from + after`, or a moment far in the future when that sum does not
/// fit in an `Instant`.
pub fn deadline(from: Instant, after: Duration) -> Instant {
    from.checked_add(after)
        .or_else(|| from.checked_add(FAR))
        .unwrap_or(from)
}

/// `deadline(Instant::now(), after)`.
pub fn after(after: Duration) -> Instant {
    deadline(Instant::now(), after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_past_the_end_of_time_is_far_away_not_a_panic() {
        let now = Instant::now();
        assert_eq!(deadline(now, Duration::from_secs(5)), now + Duration::from_secs(5));
        let far = deadline(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(86_400 * 365));
        assert!(after(Duration::from_secs(u64::MAX)) > now);
    }
}
