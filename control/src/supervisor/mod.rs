//! The process supervisor: runs every app's instances as child processes,
//! keeps them running, and reports their state.
//!
//! - [`process`]: one OS process in its own group (spawn, SIGTERM/SIGKILL).
//! - [`health`]: the HTTP readiness probe.
//! - [`instance`]: one instance's lifecycle task (start → ready → watch →
//!   restart / stop).

pub mod health;
pub mod instance;
pub mod process;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use serde::Serialize;

use crate::config::AppConfig;
use crate::routing::Routing;
use instance::{Instance, InstanceSpec, Role};

/// Runs the apps.
pub struct Supervisor {
    routing: Arc<Routing>,
    logs_dir: PathBuf,
    apps: Mutex<BTreeMap<String, Arc<AppConfig>>>,
}

impl Supervisor {
    /// A supervisor whose instances log to `logs_dir/<instance>.log`.
    pub fn new(routing: Arc<Routing>, logs_dir: PathBuf) -> Self {
        Self {
            routing,
            logs_dir,
            apps: Mutex::new(BTreeMap::new()),
        }
    }

    /// The routing this supervisor's instances are published through.
    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    /// Starts an app's original instances and makes them its serving set.
    /// Returns at once; each joins the table when it is ready.
    pub fn start_app(&self, app: Arc<AppConfig>) -> Vec<Arc<Instance>> {
        let instances: Vec<_> = (0..app.instances)
            .map(|i| {
                self.spawn(InstanceSpec {
                    app: Arc::clone(&app),
                    name: format!("{}-{i}", app.name),
                    role: Role::Original,
                    preferred_port: None,
                    log: self.log_path(&format!("{}-{i}", app.name)),
                    retry_first_start: true,
                })
            })
            .collect();
        self.lock().insert(app.name.clone(), Arc::clone(&app));
        self.routing.serve(&app.name, instances.clone());
        instances
    }

    /// Starts one instance. It is in no app's serving set until the caller
    /// puts it there.
    pub fn spawn(&self, spec: InstanceSpec) -> Arc<Instance> {
        Instance::spawn(spec, self.routing.on_change())
    }

    /// Where an instance's output goes.
    pub fn log_path(&self, instance: &str) -> PathBuf {
        self.logs_dir.join(format!("{instance}.log"))
    }

    /// Stops every serving instance of every app, concurrently.
    pub async fn stop_all(&self) {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        let instances: Vec<Arc<Instance>> =
            names.iter().flat_map(|n| self.routing.serving(n)).collect();
        join_all(instances.iter().map(|i| i.stop())).await;
    }

    /// What `cutover status` shows.
    pub fn status(&self) -> Vec<AppStatus> {
        let apps = self.lock().clone();
        apps.into_iter()
            .map(|(name, config)| AppStatus {
                version: config.version(),
                instances: self
                    .routing
                    .serving(&name)
                    .iter()
                    .map(|i| InstanceStatus::of(i))
                    .collect(),
                name,
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<AppConfig>>> {
        self.apps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One app in `cutover status`.
#[derive(Debug, Clone, Serialize)]
pub struct AppStatus {
    pub name: String,
    pub version: String,
    pub instances: Vec<InstanceStatus>,
}

/// One instance in `cutover status`.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    pub role: Role,
    pub version: String,
    pub address: Option<String>,
    pub pid: Option<u32>,
    pub state: &'static str,
    pub inflight: u64,
    pub generation: Option<u64>,
}

impl InstanceStatus {
    /// A snapshot of `instance`.
    pub fn of(instance: &Instance) -> Self {
        let state = instance.state();
        let backend = state.backend();
        Self {
            name: instance.name().to_string(),
            role: instance.role(),
            version: instance.spec().app.version(),
            address: instance.port().map(|p| format!("127.0.0.1:{p}")),
            pid: instance.pid(),
            state: state.name(),
            inflight: backend.map_or(0, |b| b.inflight()),
            generation: backend.map(|b| b.generation()),
        }
    }
}
