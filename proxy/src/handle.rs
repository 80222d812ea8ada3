//! The one place the control plane steers the data plane from.
//!
//! [`TableHandle`] holds the current [`RouteTable`] in an `ArcSwap`: readers
//! pay one atomic load, a swap never blocks them. Every publish also ticks a
//! `watch` channel, which is what held requests wait on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use crate::longlived::Stop;
use crate::table::RouteTable;

/// Shared handle to the current route table.
#[derive(Debug)]
pub struct TableHandle {
    current: ArcSwap<RouteTable>,
    /// Carries the generation of the newest table.
    changed: watch::Sender<u64>,
    /// Serialises publishers, so generations are published in order.
    publish_lock: Mutex<()>,
    /// Set once cutover shuts down: held requests stop waiting.
    closing: AtomicBool,
    /// Set once cutover shuts down or hands over (`shutdown` left
    /// `Running`): read on every response, so an atomic, not the watch's
    /// lock.
    stopping: AtomicBool,
    /// Leaves `Running` at shutdown or hand-over: long-lived connections
    /// send their notice (which one depends on the value).
    shutdown: watch::Sender<Stop>,
    /// Requests between `new_ctx` and the end of `logging`.
    active: AtomicUsize,
}

impl TableHandle {
    /// A handle whose first table is `table`.
    pub fn new(table: RouteTable) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        let handle = Arc::new(Self {
            current: ArcSwap::from_pointee(RouteTable::default()),
            changed,
            publish_lock: Mutex::new(()),
            closing: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            shutdown: watch::channel(Stop::Running).0,
            active: AtomicUsize::new(0),
        });
        handle.publish(table);
        handle
    }

    /// The current table. Cheap; do not hold it across an `.await`.
    #[inline]
    pub fn load(&self) -> Guard<Arc<RouteTable>> {
        self.current.load()
    }

    /// The current table as an owned `Arc` (for the control plane).
    pub fn snapshot(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }

    /// Makes `table` current and wakes every held request. Returns its
    /// generation.
    pub fn publish(&self, mut table: RouteTable) -> u64 {
        let _order = self.publish_lock.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.current.load().generation() + 1;
        table.set_generation(generation);
        self.current.store(Arc::new(table));
        self.changed.send_replace(generation);
        generation
    }

    /// A receiver that resolves on the next publish. Subscribe *before*
    /// loading the table you are about to check, or a publish in between is
    /// missed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Tells held requests to stop waiting and long-lived connections to
    /// go away (cutover is shutting down).
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.stopping.store(true, Ordering::SeqCst);
        self.changed.send_modify(|_| {});
        self.shutdown.send_replace(Stop::Shutdown);
    }

    /// Tells long-lived connections to reconnect (cutover hands its
    /// listeners over to a successor, which serves them already). Held
    /// requests keep waiting: a table may still give them a backend within
    /// their hold timeout, and a 503 now would fail them for nothing.
    pub fn hand_over(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // A shutdown already under way stays one.
        self.shutdown.send_if_modified(|stop| match stop {
            Stop::Running => {
                *stop = Stop::Upgrade;
                true
            }
            Stop::Shutdown | Stop::Upgrade => false,
        });
    }

    /// Leaves [`Stop::Running`] once cutover shuts down or hands over.
    pub fn shutdown_signal(&self) -> watch::Receiver<Stop> {
        self.shutdown.subscribe()
    }

    /// True once cutover shuts down or hands over: a response now should
    /// carry `Connection: close`, so the client's next request opens a new
    /// connection (to the successor, at a hand-over) instead of racing the
    /// close of this one.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// True after [`TableHandle::close`].
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Requests currently being handled by the proxy (held ones included).
    pub fn active_requests(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub(crate) fn enter(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(Arc::clone(self))
    }
}

/// Counts one request as active until dropped.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<TableHandle>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_bumps_generation_in_order() {
        let handle = TableHandle::new(RouteTable::default());
        assert_eq!(handle.load().generation(), 1);
        assert_eq!(handle.publish(RouteTable::default()), 2);
        assert_eq!(handle.load().generation(), 2);
    }

    #[tokio::test]
    async fn subscribers_wake_on_publish_and_close() {
        let handle = TableHandle::new(RouteTable::default());
        let mut rx = handle.subscribe();
        handle.publish(RouteTable::default());
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 2);
        handle.close();
        rx.changed().await.unwrap();
        assert!(handle.is_closing());
    }

    #[test]
    fn a_hand_over_stops_without_closing_and_a_shutdown_wins() {
        let handle = TableHandle::new(RouteTable::default());
        let stop = handle.shutdown_signal();
        assert!(!handle.is_stopping());
        handle.hand_over();
        assert_eq!(*stop.borrow(), Stop::Upgrade);
        assert!(handle.is_stopping());
        assert!(!handle.is_closing(), "held requests must keep waiting");
        handle.close();
        assert_eq!(*stop.borrow(), Stop::Shutdown);
        handle.hand_over();
        assert_eq!(*stop.borrow(), Stop::Shutdown, "a shutdown under way stays one");
    }
}
