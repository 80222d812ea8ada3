//! `max_connections`: client connections held at once (one count over every
//! listener), shown per listener, and the count of those refused beyond it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

/// Admits client connections up to a limit.
#[derive(Debug)]
pub struct ConnectionGate {
    max: usize,
    open: AtomicUsize,
    refused: IntCounter,
    open_family: IntGaugeVec,
    /// `cutover_client_connections{listener}`, by listener index.
    open_gauges: Vec<IntGauge>,
}

impl ConnectionGate {
    /// A gate admitting `max` connections at once over all `listeners`
    /// (each one's series starts at 0).
    pub fn new(max: usize, listeners: &[SocketAddr]) -> prometheus::Result<Self> {
        let open_family = IntGaugeVec::new(
            Opts::new(
                "cutover_client_connections",
                "Client connections open right now, by listen address.",
            ),
            &["listener"],
        )?;
        let open_gauges = listeners
            .iter()
            .map(|addr| open_family.with_label_values(&[addr.to_string().as_str()]))
            .collect();
        Ok(Self {
            max,
            open: AtomicUsize::new(0),
            refused: IntCounter::new(
                "cutover_connections_refused_total",
                "Client connections closed at accept because proxy.limits.max_connections were open.",
            )?,
            open_family,
            open_gauges,
        })
    }

    /// Registers the gate's metrics.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.refused.clone()))?;
        registry.register(Box::new(self.open_family.clone()))
    }

    /// Takes a slot for a new connection on listener number `listener`
    /// (its index in the addresses given to [`ConnectionGate::new`]), or
    /// counts a refusal.
    pub fn try_enter(self: &Arc<Self>, listener: usize) -> Option<ConnectionSlot> {
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
        let gauge = self.open_gauges.get(listener).cloned();
        if let Some(gauge) = &gauge {
            gauge.inc();
        }
        Some(ConnectionSlot {
            gate: Arc::clone(self),
            gauge,
        })
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
pub struct ConnectionSlot {
    gate: Arc<ConnectionGate>,
    gauge: Option<IntGauge>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(gauge) = &self.gauge {
            gauge.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_admits_up_to_its_limit_and_counts_refusals() {
        let listeners = ["127.0.0.1:80".parse().unwrap(), "127.0.0.1:443".parse().unwrap()];
        let gate = Arc::new(ConnectionGate::new(2, &listeners).expect("metrics"));
        let a = gate.try_enter(0).expect("first");
        let _b = gate.try_enter(1).expect("second, on the other listener");
        assert!(gate.try_enter(1).is_none(), "the limit is over every listener");
        assert_eq!(gate.refused(), 1);
        assert_eq!(gate.open_gauges[0].get(), 1);
        assert_eq!(gate.open_gauges[1].get(), 1);
        drop(a);
        assert_eq!(gate.open(), 1);
        assert_eq!(gate.open_gauges[0].get(), 0);
        assert!(gate.try_enter(0).is_some());
    }

    #[test]
    fn its_metrics_register() {
        let registry = Registry::new();
        ConnectionGate::new(1, &["127.0.0.1:80".parse().unwrap()])
            .expect("metrics")
            .register(&registry)
            .expect("registers");
        let names: Vec<_> = registry.gather().iter().map(|f| f.name().to_owned()).collect();
        assert!(
            names.contains(&"cutover_connections_refused_total".to_owned()),
            "{names:?}"
        );
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains("cutover_client_connections{listener=\"127.0.0.1:80\"} 0"),
            "every listener's series is there from the start: {text}"
        );
    }
}
