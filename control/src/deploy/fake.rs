//! A fake [`DeployOps`] for the driver's tests: records every call, fails
//! the calls it is told to, and splits traffic onto a [`FakeMeasure`] the
//! test feeds.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::canary::traffic::{Measure, Measurements, Pair};
use super::canary::Steering;
use super::run::{DeployOps, HookKind, Version};
use crate::config::CanaryConfig;
use crate::supervisor::instance::Role;

/// Measurements a test sets; `mark` starts a new window at the current
/// totals, like the proxy's counters.
#[derive(Default)]
pub struct FakeMeasure {
    totals: Mutex<Pair>,
    marked: Mutex<Pair>,
}

impl FakeMeasure {
    /// Adds to the canary set's totals.
    pub fn canary(&self, requests: u64, server_errors: u64, p99_ms: Option<u64>) {
        let mut totals = self.totals.lock().unwrap();
        add(&mut totals.canary, requests, server_errors, p99_ms);
    }

    /// Adds to the stable set's totals.
    pub fn stable(&self, requests: u64, server_errors: u64, p99_ms: Option<u64>) {
        let mut totals = self.totals.lock().unwrap();
        add(&mut totals.stable, requests, server_errors, p99_ms);
    }
}

fn add(m: &mut Measurements, requests: u64, server_errors: u64, p99_ms: Option<u64>) {
    m.requests += requests;
    m.server_errors += server_errors;
    if let Some(ms) = p99_ms {
        m.p99 = Some(std::time::Duration::from_millis(ms));
    }
}

fn since(now: &Measurements, then: &Measurements) -> Measurements {
    Measurements {
        requests: now.requests - then.requests,
        server_errors: now.server_errors - then.server_errors,
        connect_failures: now.connect_failures - then.connect_failures,
        p99: now.p99,
    }
}

impl Measure for FakeMeasure {
    fn mark(&self) {
        *self.marked.lock().unwrap() = *self.totals.lock().unwrap();
    }

    fn read(&self) -> Pair {
        let totals = *self.totals.lock().unwrap();
        let marked = *self.marked.lock().unwrap();
        Pair {
            stable: since(&totals.stable, &marked.stable),
            canary: since(&totals.canary, &marked.canary),
        }
    }
}

/// Records every call; fails the calls named in `fail`.
#[derive(Default)]
pub struct FakeOps {
    calls: Mutex<Vec<String>>,
    fail: Vec<&'static str>,
    pub canary: CanaryConfig,
    pub measure: Arc<FakeMeasure>,
    /// Asks `steering` for an abort when the named call happens.
    pub abort_on: Option<(&'static str, Arc<Steering>)>,
}

impl FakeOps {
    pub fn failing(fail: &[&'static str]) -> Self {
        Self {
            fail: fail.to_vec(),
            ..Self::default()
        }
    }

    pub fn with_canary(canary: CanaryConfig) -> Self {
        Self {
            canary,
            ..Self::default()
        }
    }

    fn call(&self, name: &str) -> Result<(), String> {
        self.calls.lock().unwrap().push(name.to_string());
        if let Some((at, steering)) = &self.abort_on {
            if *at == name {
                steering.abort();
            }
        }
        if self.fail.contains(&name) {
            Err(format!("{name} broke"))
        } else {
            Ok(())
        }
    }

    /// Asks `steering` for an abort when the call `at` happens.
    pub fn aborting_at(at: &'static str, steering: &Arc<Steering>) -> Self {
        Self {
            abort_on: Some((at, Arc::clone(steering))),
            ..Self::default()
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl DeployOps for FakeOps {
    async fn hook(&self, kind: HookKind) -> Result<(), String> {
        self.call(match kind {
            HookKind::Build => "build",
            HookKind::PostDeploy => "post_deploy",
        })
    }
    async fn start_clones(&self) -> Result<(), String> {
        self.call("start_clones")
    }
    async fn route_to_clones(&self) {
        let _ = self.call("route_to_clones");
    }
    async fn route_to_none(&self) {
        let _ = self.call("route_to_none");
    }
    async fn retire_originals(&self) {
        let _ = self.call("retire_originals");
    }
    async fn start_originals(&self, version: Version) -> Result<(), String> {
        self.call(match version {
            Version::Previous => "start_previous",
            Version::Target => "start_target",
        })
    }
    async fn route_to_originals(&self) {
        let _ = self.call("route_to_originals");
    }
    async fn retire_clones(&self) {
        let _ = self.call("retire_clones");
    }
    async fn promote_clones(&self) {
        let _ = self.call("promote_clones");
    }
    async fn revive_previous(&self) {
        let _ = self.call("revive_previous");
    }
    async fn commit(&self, serving: Version) {
        let _ = self.call(match serving {
            Version::Previous => "commit_previous",
            Version::Target => "commit_target",
        });
    }
    async fn start_candidates(&self, role: Role) -> Result<(), String> {
        self.call(match role {
            Role::Green => "start_green",
            _ => "start_canaries",
        })
    }
    async fn split(&self, weight_bp: u16, _sticky: bool) -> Result<Arc<dyn Measure>, String> {
        self.call(&format!("split {weight_bp}"))?;
        Ok(Arc::clone(&self.measure) as Arc<dyn Measure>)
    }
    async fn retire_candidates(&self) {
        let _ = self.call("retire_candidates");
    }
    async fn promote_canaries(&self) {
        let _ = self.call("promote_canaries");
    }
    async fn swap_to_green(&self) {
        let _ = self.call("swap_to_green");
    }
    fn canary(&self) -> CanaryConfig {
        self.canary.clone()
    }
}
