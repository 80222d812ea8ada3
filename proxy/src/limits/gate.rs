//! `max_connections`: client connections held at once, and the count of
//! those refused beyond it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::{IntCounter, IntGauge, Registry};

/// Admits client connections up to a limit.
#[derive(Debug)]
pub struct ConnectionGate {
    max: usize,
    open: AtomicUsize,
    refused: IntCounter,
    open_gauge: IntGauge,
}

impl ConnectionGate {
    /// A gate admitting `max` connections at once.
    pub fn new(max: usize) -> prometheus::Result<Self> {
        Ok(Self {
            max,
            open: AtomicUsize::new(0),
            refused: IntCounter::new(
                "cutover_connections_refused_total",
                "Client connections closed at accept because proxy.limits.max_connections were open.",
            )?,
            open_gauge: IntGauge::new("cutover_client_connections", "Client connections open right now.")?,
        })
    }

    /// Registers the gate's metrics.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.refused.clone()))?;
        registry.register(Box::new(self.open_gauge.clone()))
    }

    /// Takes a slot for a new connection, or counts a refusal.
    pub fn try_enter(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok();
        if !admitted {
            self.refused.inc();
            return None;
        }
        self.open_gauge.inc();
        Some(ConnectionSlot(Arc::clone(self)))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }
}

/// One admitted connection; gives its slot back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<ConnectionGate>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.open_gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_admits_up_to_its_limit_and_counts_refusals() {
        let gate = Arc::new(ConnectionGate::new(2).expect("metrics"));
        let a = gate.try_enter().expect("first");
        let _b = gate.try_enter().expect("second");
        assert!(gate.try_enter().is_none());
        assert_eq!(gate.refused(), 1);
        drop(a);
        assert_eq!(gate.open(), 1);
        assert!(gate.try_enter().is_some());
    }

    #[test]
    fn its_metrics_register() {
        let registry = Registry::new();
        ConnectionGate::new(1)
            .expect("metrics")
            .register(&registry)
            .expect("registers");
        let names: Vec<_> = registry.gather().iter().map(|f| f.name().to_owned()).collect();
        assert!(
            names.contains(&"cutover_connections_refused_total".to_owned()),
            "{names:?}"
        );
    }
}
