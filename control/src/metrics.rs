//! Metrics read from the control plane's state at scrape time: in-flight
//! requests and readiness per instance, the route table generation, build
//! info. Reading state when Prometheus asks costs the request path nothing,
//! and an instance that is gone simply is not reported any more, so the
//! series count stays bounded however many deploys run.

use std::sync::{Mutex, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, IntGaugeVec, Opts};

use crate::supervisor::Supervisor;

/// Instance and table state as metrics.
pub struct StateCollector {
    supervisor: Weak<Supervisor>,
    inflight: IntGaugeVec,
    ready: IntGaugeVec,
    generation: IntGauge,
    build_info: IntGaugeVec,
    /// One scrape at a time: each one resets and refills the gauges.
    scrape: Mutex<()>,
}

impl StateCollector {
    /// A collector over `supervisor` (held weakly: it outlives no one).
    pub fn new(supervisor: Weak<Supervisor>) -> prometheus::Result<Self> {
        let build_info = IntGaugeVec::new(
            Opts::new("cutover_build_info", "Always 1; the version of cutover that runs."),
            &["version"],
        )?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Ok(Self {
            supervisor,
            inflight: IntGaugeVec::new(
                Opts::new(
                    "cutover_inflight_requests",
                    "Requests (and long-lived connections) using an instance right now.",
                ),
                &["app", "instance"],
            )?,
            ready: IntGaugeVec::new(
                Opts::new(
                    "cutover_instance_ready",
                    "1 when the instance passed readiness and runs, 0 otherwise.",
                ),
                &["app", "instance", "role"],
            )?,
            generation: IntGauge::new(
                "cutover_route_table_generation",
                "Generation of the route table in use; bumped by every swap.",
            )?,
            build_info,
            scrape: Mutex::new(()),
        })
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.inflight.desc();
        descs.extend(self.ready.desc());
        descs.extend(self.generation.desc());
        descs.extend(self.build_info.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.inflight.reset();
        self.ready.reset();
        if let Some(supervisor) = self.supervisor.upgrade() {
            for app in supervisor.status() {
                for instance in &app.instances {
                    self.inflight
                        .with_label_values(&[app.name.as_str(), instance.name.as_str()])
                        .set(i64::try_from(instance.inflight).unwrap_or(i64::MAX));
                    let role = instance.role.as_str();
                    self.ready
                        .with_label_values(&[app.name.as_str(), instance.name.as_str(), role])
                        .set(i64::from(instance.state == "ready"));
                }
            }
            let generation = supervisor.routing().table().load().generation();
            self.generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
        }
        let mut families = self.inflight.collect();
        families.extend(self.ready.collect());
        families.extend(self.generation.collect());
        families.extend(self.build_info.collect());
        families
    }
}
