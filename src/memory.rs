//! Handing memory back to the system after connections close.
//!
//! glibc's malloc returns freed memory only from the top of a heap; what
//! thousands of closed connections freed in between stays resident
//! (measured: 10,000 idle keep-alive connections closed left all their
//! 47 MiB resident). `malloc_trim` releases the free pages inside the
//! heaps too (57.6 → 18.0 MiB, baseline 16.9; BENCHMARKS.md, "Connection
//! scale"). It walks every arena under its lock, so it runs only after the
//! number of open client connections fell by [`DROP`] from the highest
//! count seen since the last trim, at most once per [`CHECK`] and for at
//! most a tenth of the time, on a blocking thread.

use std::sync::Arc;
use std::time::Duration;

use cutover_proxy::limits::ConnectionGate;

/// How often the connection count is looked at.
const CHECK: Duration = Duration::from_secs(1);

/// Closed connections that make a trim worth its walk (about 5 MiB).
const DROP: usize = 1024;

/// Trims after large drops in `gate`'s open connections, until the runtime
/// stops.
pub fn trim_after_closes(gate: Arc<ConnectionGate>) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(CHECK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut since_trim = HighWater::default();
        loop {
            interval.tick().await;
            if since_trim.fell_by_drop(gate.open()) {
                let took = tokio::task::spawn_blocking(trim).await.unwrap_or_default();
                tracing::debug!(took = ?took, "freed memory handed back to the system");
                // The walk holds each arena's lock: at most a tenth of the
                // time goes to it, however often connections come and go.
                tokio::time::sleep(took.saturating_mul(9)).await;
            }
        }
    });
}

/// The highest connection count seen since the last trim.
#[derive(Debug, Default)]
struct HighWater(usize);

impl HighWater {
    /// Notes `open`; true (and starts afresh from `open`) when it is
    /// [`DROP`] or more below the high-water mark.
    fn fell_by_drop(&mut self, open: usize) -> bool {
        self.0 = self.0.max(open);
        if self.0 - open < DROP {
            return false;
        }
        self.0 = open;
        true
    }
}

/// Releases free heap memory to the system (glibc only; other allocators
/// return memory on their own).
fn trim() -> Duration {
    let started = std::time::Instant::now();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only touches the allocator's
    // own state, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_follows_a_large_drop_from_the_high_water_mark_only() {
        let mut mark = HighWater::default();
        assert!(!mark.fell_by_drop(5000));
        assert!(!mark.fell_by_drop(4000), "1000 closed: not worth a walk");
        assert!(mark.fell_by_drop(3976), "1024 below the mark of 5000");
        assert!(!mark.fell_by_drop(3000), "the mark starts afresh at 3976");
        assert!(!mark.fell_by_drop(9000));
        assert!(mark.fell_by_drop(0));
        assert!(!mark.fell_by_drop(0), "nothing more to give back");
    }
}
