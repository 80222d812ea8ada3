//! The process supervisor: runs every app's instances as child processes,
//! keeps them running, and reports their state.
//!
//! - [`process`]: one OS process in its own group (spawn, SIGTERM/SIGKILL).
//! - [`health`]: the HTTP readiness probe.
//! - [`instance`]: one instance, its state and supervision mode.
//! - [`task`]: its lifecycle task (start or adopt → ready → watch →
//!   restart / stop; freeze, thaw, release).
//! - [`handover`]: freezing, releasing and adopting instances across
//!   `cutover upgrade`; [`adopt`]: the records and their verification.
//! - [`orphans`]: cleaning up children a killed cutover left behind.
//! - [`pidfile`]: pid files and the ownership marker of every child.
//! - [`ports`]: race-free port choice.

pub mod adopt;
mod handover;
pub mod health;
pub mod instance;
pub mod orphans;
pub mod pidfile;
pub mod ports;
pub mod process;
mod task;

pub use adopt::{verify, InstanceRecord};
pub use orphans::reap_except;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures_util::future::join_all;
use serde::Serialize;

use crate::config::AppConfig;
use crate::routing::Routing;
use adopt::Adoption;
use instance::{Instance, InstanceSpec, Mode, Role};

/// Runs the apps.
pub struct Supervisor {
    routing: Arc<Routing>,
    logs_dir: PathBuf,
    run_dir: PathBuf,
    apps: Mutex<BTreeMap<String, AppRuntime>>,
    /// Every instance ever spawned that still exists somewhere.
    all: Mutex<Vec<Weak<Instance>>>,
    /// Set by `stop_all` (and `release`): instances spawned afterwards
    /// never start.
    closing: AtomicBool,
    /// Set by `freeze` until `thaw`: instances spawned meanwhile start
    /// frozen (no process until thawed).
    frozen: AtomicBool,
}

/// One app's current definition and processes.
#[derive(Clone)]
pub struct AppRuntime {
    /// The definition that currently serves (the journal's "current").
    pub config: Arc<AppConfig>,
    /// The app's own instances (`web-0`, `web-1`, …).
    pub originals: Vec<Arc<Instance>>,
    /// Temporary clones; only during a rolling deployment.
    pub clones: Vec<Arc<Instance>>,
    /// The new version's instances: canaries during a canary deployment,
    /// the green set during a blue-green one (until the swap).
    pub candidates: Vec<Arc<Instance>>,
    /// bluegreen: the set that served before the last swap, kept running
    /// without traffic for `keep_previous` (a rollback swaps it back).
    pub previous: Vec<Arc<Instance>>,
}

impl Supervisor {
    /// A supervisor whose instances log to `state_dir/logs/<instance>.log`
    /// and keep pid files in `state_dir/run/` (hooks, whose logs are in
    /// `logs/` too, find `run/` next to it).
    pub fn new(routing: Arc<Routing>, state_dir: &std::path::Path) -> Self {
        // The marker in every child's environment names this exact text.
        let state_dir = pidfile::canonical(state_dir);
        Self {
            routing,
            logs_dir: state_dir.join("logs"),
            run_dir: state_dir.join("run"),
            all: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
            apps: Mutex::new(BTreeMap::new()),
        }
    }

    /// The routing this supervisor's instances are published through.
    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    /// Where instance and hook logs go.
    pub fn logs_dir(&self) -> &PathBuf {
        &self.logs_dir
    }

    /// Starts an app's original instances (retrying failed starts forever)
    /// and makes them its serving set. Returns at once; each joins the
    /// table when it is ready.
    pub fn start_app(&self, app: Arc<AppConfig>) -> Vec<Arc<Instance>> {
        let instances: Vec<_> = (0..app.instances)
            .map(|i| self.spawn(self.original_spec(&app, i, None, true)))
            .collect();
        self.lock().insert(
            app.name.clone(),
            AppRuntime {
                config: Arc::clone(&app),
                originals: instances.clone(),
                clones: Vec::new(),
                candidates: Vec::new(),
                previous: Vec::new(),
            },
        );
        self.routing.serve(&app.name, instances.clone());
        instances
    }

    /// The spec of original instance `index` of `app`.
    pub fn original_spec(
        &self,
        app: &Arc<AppConfig>,
        index: u32,
        port: Option<u16>,
        retry_first_start: bool,
    ) -> InstanceSpec {
        let name = format!("{}-{index}", app.name);
        InstanceSpec {
            app: Arc::clone(app),
            log: self.log_path(&name),
            pid_file: Some(self.run_dir.join(format!("{name}.pid"))),
            name,
            role: Role::Original,
            preferred_port: port,
            retry_first_start,
        }
    }

    /// The spec of clone `index` of `app`.
    pub fn clone_spec(&self, app: &Arc<AppConfig>, index: usize) -> InstanceSpec {
        let name = format!("{}-clone-{index}", app.name);
        InstanceSpec {
            app: Arc::clone(app),
            log: self.log_path(&name),
            pid_file: Some(self.run_dir.join(format!("{name}.pid"))),
            name,
            role: Role::Clone,
            preferred_port: None,
            retry_first_start: false,
        }
    }

    /// The spec of canary `index` of `app` (`web-canary-<n>`, never reused).
    pub fn canary_spec(&self, app: &Arc<AppConfig>, index: u64) -> InstanceSpec {
        self.numbered_spec(app, "canary", index, Role::Canary)
    }

    /// The spec of green instance `index` of `app` (`web-green-<n>`, never reused).
    pub fn green_spec(&self, app: &Arc<AppConfig>, index: u64) -> InstanceSpec {
        self.numbered_spec(app, "green", index, Role::Green)
    }

    fn numbered_spec(&self, app: &Arc<AppConfig>, kind: &str, index: u64, role: Role) -> InstanceSpec {
        let name = format!("{}-{kind}-{index}", app.name);
        InstanceSpec {
            app: Arc::clone(app),
            log: self.log_path(&name),
            pid_file: Some(self.run_dir.join(format!("{name}.pid"))),
            name,
            role,
            preferred_port: None,
            retry_first_start: false,
        }
    }

    /// Starts one instance. It is in no app's serving set until the caller
    /// puts it there.
    pub fn spawn(&self, spec: InstanceSpec) -> Arc<Instance> {
        self.start(spec, None)
    }

    /// Starts one instance, with an adopted process as its first when
    /// given; registered under the lock that `stop_all` and `freeze` take,
    /// so none escapes them.
    fn start(&self, spec: InstanceSpec, adoption: Option<Adoption>) -> Arc<Instance> {
        let mut all = self.all();
        let closing = self.closing.load(Ordering::SeqCst);
        let mode = if self.frozen.load(Ordering::SeqCst) {
            Mode::Frozen
        } else {
            Mode::Supervised
        };
        let instance = Instance::start(spec, self.routing.on_change(), closing, mode, adoption);
        all.retain(|i| i.strong_count() > 0);
        all.push(Arc::downgrade(&instance));
        instance
    }

    fn all(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Instance>>> {
        self.all.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where an instance's output goes.
    pub fn log_path(&self, instance: &str) -> PathBuf {
        self.logs_dir.join(format!("{instance}.log"))
    }

    /// An app's runtime, if it exists.
    pub fn app(&self, name: &str) -> Option<AppRuntime> {
        self.lock().get(name).cloned()
    }

    /// Names of every app.
    pub fn app_names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Changes an app's runtime in place.
    pub fn update(&self, name: &str, change: impl FnOnce(&mut AppRuntime)) {
        if let Some(app) = self.lock().get_mut(name) {
            change(app);
        }
    }

    /// Forgets an app (its instances must be stopped already).
    pub fn remove_app(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Stops every instance, concurrently, including any a deployment is
    /// starting right now; no instance starts after this. Released
    /// instances (handed to another cutover) are not touched.
    pub async fn stop_all(&self) {
        let instances: Vec<Arc<Instance>> = {
            let all = self.all();
            self.closing.store(true, Ordering::SeqCst);
            all.iter().filter_map(Weak::upgrade).collect()
        };
        join_all(instances.iter().map(|i| i.stop())).await;
    }

    /// What `cutover status` shows.
    pub fn status(&self) -> Vec<AppStatus> {
        let apps = self.lock().clone();
        apps.into_iter()
            .map(|(name, app)| AppStatus {
                version: app.config.version(),
                instances: app
                    .originals
                    .iter()
                    .chain(app.clones.iter())
                    .chain(app.candidates.iter())
                    .chain(app.previous.iter())
                    .map(|i| InstanceStatus::of(i))
                    .collect(),
                name,
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, AppRuntime>> {
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
    /// WebSocket and SSE connections.
    pub long_lived: u64,
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
            long_lived: backend.map_or(0, |b| b.long_lived()),
            generation: backend.map(|b| b.generation()),
        }
    }
}
