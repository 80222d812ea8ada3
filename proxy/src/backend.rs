//! A backend (one running instance) and its in-flight accounting.
//!
//! A [`Backend`] is shared (`Arc`) by every route table that contains it, so
//! its counters survive table swaps. The control plane keeps its own `Arc` to
//! drain it: mark it draining, then wait for the in-flight count to reach
//! zero.
//!
//! The race between "a request picked this backend from an old table" and
//! "the controller saw zero in-flight and stopped it" is closed Dekker-style:
//! a request *first* increments `inflight`, *then* checks `draining`; the
//! controller *first* sets `draining`, *then* reads `inflight`. With SeqCst on
//! both sides at least one of them sees the other, so either the controller
//! waits for the request, or the request backs off and picks again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::grpc::pool::H2Slot;

/// One instance of an app, as the data plane sees it.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    instance: Arc<str>,
    generation: u64,
    inflight: AtomicU64,
    draining: AtomicBool,
    /// Woken when `inflight` drops to zero while draining.
    idle: Notify,
    /// Flips to true when draining starts: long-lived connections (which
    /// cannot move) listen to it to send their close notice.
    drain_signal: watch::Sender<bool>,
    /// WebSocket, SSE and gRPC connections on this backend right now.
    long_lived: AtomicU64,
    /// The HTTP/2 connection gRPC calls share (h2c apps only; empty
    /// otherwise). Per backend, so per process generation: it can never
    /// reach another process on the same address.
    h2: H2Slot,
}

impl Backend {
    /// A backend for the process behind `addr`. `generation` must be unique
    /// for every process start: it keys the upstream connection pool, so a
    /// pooled connection is never reused once another process took over the
    /// address.
    pub fn new(addr: SocketAddr, instance: impl Into<Arc<str>>, generation: u64) -> Arc<Self> {
        Arc::new(Self {
            addr,
            instance: instance.into(),
            generation,
            inflight: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            idle: Notify::new(),
            drain_signal: watch::channel(false).0,
            long_lived: AtomicU64::new(0),
            h2: H2Slot::default(),
        })
    }

    /// Where the instance listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The instance's name (`web-0`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Unique per process start.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Requests currently using this backend.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::SeqCst)
    }

    /// True once [`Backend::start_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Claims the backend for one request. `None` when it is draining: the
    /// caller must pick another backend from a fresh table.
    pub fn try_claim(self: &Arc<Self>) -> Option<InflightGuard> {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let guard = InflightGuard {
            backend: Arc::clone(self),
        };
        if self.draining.load(Ordering::SeqCst) {
            return None; // the guard's drop gives the slot back
        }
        Some(guard)
    }

    /// Stops new requests from claiming this backend. Call after the table
    /// that no longer contains it was published.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.drain_signal.send_replace(true);
        // Calls on it finish; no new one can claim this backend.
        self.h2.release();
    }

    /// The HTTP/2 connection gRPC calls to this backend share.
    pub(crate) fn h2(&self) -> &H2Slot {
        &self.h2
    }

    /// Resolves to `true` once the backend drains (see
    /// [`Backend::start_draining`]).
    pub fn drain_signal(&self) -> watch::Receiver<bool> {
        self.drain_signal.subscribe()
    }

    /// WebSocket and SSE connections using this backend right now.
    pub fn long_lived(&self) -> u64 {
        self.long_lived.load(Ordering::SeqCst)
    }

    /// Counts a long-lived connection until the guard drops.
    pub fn track_long_lived(self: &Arc<Self>) -> LongLivedGuard {
        self.long_lived.fetch_add(1, Ordering::SeqCst);
        LongLivedGuard(Arc::clone(self))
    }

    /// Waits until no request uses this backend, or until `deadline`.
    /// Returns the number still in flight (0 when drained).
    pub async fn wait_idle(&self, deadline: Instant) -> u64 {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let now = self.inflight();
            if now == 0 || Instant::now() >= deadline {
                return now;
            }
            // The poll interval is a backstop only: the last guard wakes us.
            let wake = crate::time::after(Duration::from_millis(100)).min(deadline);
            let _ = tokio::time::timeout_at(wake, idle).await;
        }
    }
}

/// One request's claim on a backend; dropping it, however the request ended,
/// releases the claim. This is what draining waits on, so it can never leak.
#[derive(Debug)]
pub struct InflightGuard {
    backend: Arc<Backend>,
}

impl InflightGuard {
    /// The claimed backend.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

/// One long-lived connection on a backend; releases its count on drop.
#[derive(Debug)]
pub struct LongLivedGuard(Arc<Backend>);

impl Drop for LongLivedGuard {
    fn drop(&mut self) {
        self.0.long_lived.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let before = self.backend.inflight.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && self.backend.draining.load(Ordering::SeqCst) {
            self.backend.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Arc<Backend> {
        Backend::new("127.0.0.1:1".parse().unwrap(), "web-0", 1)
    }

    #[test]
    fn guard_releases_on_drop() {
        let b = backend();
        let g1 = b.try_claim().unwrap();
        let g2 = b.try_claim().unwrap();
        assert_eq!(b.inflight(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(b.inflight(), 0);
    }

    #[test]
    fn draining_backend_refuses_claims_without_leaking() {
        let b = backend();
        b.start_draining();
        assert!(b.try_claim().is_none());
        assert_eq!(b.inflight(), 0);
    }

    #[tokio::test]
    async fn wait_idle_returns_when_last_request_ends() {
        let b = backend();
        let g = b.try_claim().unwrap();
        b.start_draining();
        let waiter = {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.wait_idle(Instant::now() + Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(g);
        assert_eq!(waiter.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn wait_idle_gives_up_at_the_deadline() {
        let b = backend();
        let _g = b.try_claim().unwrap();
        b.start_draining();
        let left = b.wait_idle(Instant::now() + Duration::from_millis(50)).await;
        assert_eq!(left, 1);
    }
}
