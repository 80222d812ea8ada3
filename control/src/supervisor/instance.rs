//! One instance of an app and the task that keeps it running.
//!
//! Lifecycle, driven by [`run`]:
//!
//! ```text
//! Starting ──health 2xx + post_start ok──▶ Ready ◀──probe ok── Unhealthy
//!    │  ▲                                   │  └──3 failed probes──▶ ┘
//!    │  └──── backoff ◀── Crashed ◀──exit───┘
//!    └──not ready within start_timeout──▶ Failed (first start) / Crashed (later)
//! any state ──stop()──▶ Stopping ──▶ Stopped
//! ```
//!
//! Only `Ready` puts the instance's backend in the route table. Every state
//! change calls the owner's `on_change`, which republishes the table, so a
//! crash leaves the table at once and a recovery rejoins it.
//!
//! Besides stop, the task obeys a supervision [`Mode`] (`cutover upgrade`):
//! *frozen*, it neither probes nor restarts nor publishes, and a start in
//! progress is stopped; *released*, it ends and leaves its process running
//! with its pid file, for the cutover that adopts it. The task itself is in
//! [`super::task`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cutover_proxy::Backend;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::adopt::{Adoption, InstanceRecord};
use super::pidfile::{self, INSTANCE_VAR};
use super::task::run;
use crate::config::AppConfig;

/// Whether an instance is the app's own, a temporary clone, a canary of
/// the new version or a blue-green new set before its switch (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Original,
    Clone,
    Canary,
    Green,
}

impl Role {
    /// The value of `CUTOVER_ROLE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Original => "original",
            Role::Clone => "clone",
            Role::Canary => "canary",
            Role::Green => "green",
        }
    }
}

/// Where an instance is in its life.
#[derive(Debug, Clone)]
pub enum InstanceState {
    /// Process started (or starting); not ready yet.
    Starting {
        attempt: u32,
    },
    /// Passed readiness; in the table when the app serves it.
    Ready(Arc<Backend>),
    /// Was ready, now failing its health check; out of the table.
    Unhealthy(Arc<Backend>),
    /// Exited or never got ready; restarting after a backoff.
    Crashed {
        reason: String,
        restart_in: Duration,
    },
    /// The first start failed and the instance gives up (deploy path).
    Failed(String),
    Stopping,
    Stopped,
}

impl InstanceState {
    /// Short name for status output.
    pub fn name(&self) -> &'static str {
        match self {
            InstanceState::Starting { .. } => "starting",
            InstanceState::Ready(_) => "ready",
            InstanceState::Unhealthy(_) => "unhealthy",
            InstanceState::Crashed { .. } => "crashed",
            InstanceState::Failed(_) => "failed",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
        }
    }

    /// The backend, when the instance is ready.
    pub fn ready_backend(&self) -> Option<&Arc<Backend>> {
        match self {
            InstanceState::Ready(backend) => Some(backend),
            _ => None,
        }
    }

    /// The backend of the running process, ready or not.
    pub fn backend(&self) -> Option<&Arc<Backend>> {
        match self {
            InstanceState::Ready(backend) | InstanceState::Unhealthy(backend) => Some(backend),
            _ => None,
        }
    }
}

/// Everything needed to run one instance.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub app: Arc<AppConfig>,
    /// `web-0`; clones `web-clone-0`.
    pub name: String,
    pub role: Role,
    /// Port to use if free; otherwise (or when `None`) a free one is chosen.
    pub preferred_port: Option<u16>,
    pub log: PathBuf,
    /// Holds the process group id while the process runs, so a restarted
    /// cutover can clean up after one that was killed. It lies in
    /// `state_dir/run/`: the instance's ownership marker names that
    /// `state_dir` ([`pidfile`]).
    pub pid_file: Option<PathBuf>,
    /// Keep retrying a first start that fails (`cutover up`), or give up
    /// and report `Failed` (a deploy, which then aborts or rolls back).
    pub retry_first_start: bool,
}

impl InstanceSpec {
    /// The instance's environment: the app's `env` plus what cutover sets.
    pub fn env(&self, port: u16) -> BTreeMap<String, String> {
        let mut env = self.app.env.clone();
        env.insert("PORT".into(), port.to_string());
        env.insert("CUTOVER_APP".into(), self.app.name.clone());
        env.insert("CUTOVER_INSTANCE".into(), self.name.clone());
        env.insert("CUTOVER_ROLE".into(), self.role.as_str().into());
        env
    }

    /// The environment the process gets: [`InstanceSpec::env`] plus the
    /// ownership marker the orphan reaper checks.
    pub(super) fn process_env(&self, port: u16) -> BTreeMap<String, String> {
        let mut env = self.env(port);
        if let Some(state_dir) = self.state_dir() {
            env.extend(pidfile::marker(state_dir, INSTANCE_VAR, &self.name));
        }
        env
    }

    /// `state_dir`, the parent of the pid file's `run/`.
    pub(super) fn state_dir(&self) -> Option<&Path> {
        self.pid_file.as_deref()?.parent()?.parent()
    }
}

/// How the supervisor wants an instance task to behave (`cutover upgrade`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Probed, restarted, published: the normal case.
    Supervised,
    /// Left alone: no probe, no restart, no published state change; a
    /// start in progress is stopped. The process, if ready, serves on.
    Frozen,
    /// The task ends for good, leaving its process and pid file behind.
    Released,
}

/// What the task did about the last [`Mode`] it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// It behaves as asked.
    Applied(Mode),
    /// The task is over (stopped or released).
    Ended,
}

/// Shared view of an instance: its spec, its state, and the stop switch.
#[derive(Debug)]
pub struct Instance {
    pub(super) spec: InstanceSpec,
    pub(super) state: watch::Sender<InstanceState>,
    pub(super) stop: watch::Sender<bool>,
    pub(super) mode: watch::Sender<Mode>,
    pub(super) ack: watch::Sender<Ack>,
    /// The process's pid while it runs (0 otherwise).
    pub(super) pid: AtomicU64,
    /// Last port used; kept across restarts when free.
    pub(super) port: AtomicU64,
    /// A clone that became an original (a rolling deploy whose rollback
    /// failed keeps its clones).
    promoted: AtomicBool,
}

/// Called after every state change (republishes the route table).
pub type OnChange = Arc<dyn Fn() + Send + Sync>;

impl Instance {
    /// Starts the instance's task. Returns at once; see [`Instance::ready`].
    /// `stopped`: created already asked to stop (cutover is shutting down),
    /// so it never starts a process.
    pub fn spawn(spec: InstanceSpec, on_change: OnChange, stopped: bool) -> Arc<Self> {
        Self::start(spec, on_change, stopped, Mode::Supervised, None)
    }

    /// Starts the task in `mode` (a supervisor that is frozen creates its
    /// instances frozen), with the process of `adoption` as its first.
    pub(super) fn start(
        spec: InstanceSpec,
        on_change: OnChange,
        stopped: bool,
        mode: Mode,
        adoption: Option<Adoption>,
    ) -> Arc<Self> {
        let port = adoption.as_ref().map(Adoption::port).or(spec.preferred_port);
        let pid = adoption.as_ref().map_or(0, Adoption::pid);
        let instance = Arc::new(Self {
            port: AtomicU64::new(port.map_or(0, u64::from)),
            spec,
            state: watch::channel(InstanceState::Starting { attempt: 0 }).0,
            stop: watch::channel(stopped).0,
            mode: watch::channel(mode).0,
            ack: watch::channel(Ack::Applied(Mode::Supervised)).0,
            pid: AtomicU64::new(u64::from(pid)),
            promoted: AtomicBool::new(false),
        });
        tokio::spawn(run(Arc::clone(&instance), on_change, adoption));
        instance
    }

    pub fn spec(&self) -> &InstanceSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The instance's role now (a promoted clone is an original).
    pub fn role(&self) -> Role {
        if self.promoted.load(Ordering::SeqCst) {
            Role::Original
        } else {
            self.spec.role
        }
    }

    /// Makes a clone (or a promoted canary, a swapped-in green) an
    /// original for good.
    pub fn promote(&self) {
        self.promoted.store(true, Ordering::SeqCst);
    }

    /// The current state.
    pub fn state(&self) -> InstanceState {
        self.state.borrow().clone()
    }

    /// The running process's pid, if any.
    pub fn pid(&self) -> Option<u32> {
        u32::try_from(self.pid.load(Ordering::SeqCst)).ok().filter(|p| *p != 0)
    }

    /// The port the instance listens (or last listened) on.
    pub fn port(&self) -> Option<u16> {
        u16::try_from(self.port.load(Ordering::SeqCst)).ok().filter(|p| *p != 0)
    }

    /// Waits until the instance is ready (`Ok`) or has given up (`Err`).
    pub async fn ready(&self) -> Result<Arc<Backend>, String> {
        self.wait_for(
            |state| match state {
                InstanceState::Ready(backend) => Some(Ok(Arc::clone(backend))),
                InstanceState::Failed(reason) => Some(Err(reason.clone())),
                InstanceState::Stopping | InstanceState::Stopped => Some(Err("stopped".into())),
                _ => None,
            },
            || Err("instance task ended".into()),
        )
        .await
    }

    /// Stops the process (SIGTERM, SIGKILL after `stop_timeout`) and waits
    /// until it is gone. Draining is the caller's job, before this. A
    /// released instance is not ours any more: this returns at once.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        self.wait_for(|state| matches!(state, InstanceState::Stopped).then_some(()), || ())
            .await;
    }

    /// The mode the supervisor last asked for.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Asks the task for `mode` and waits (up to `within`) until it
    /// behaves so, or ended. Returns whether it did in time.
    pub(super) async fn set_mode(&self, mode: Mode, within: Duration) -> bool {
        let mut ack = self.ack.subscribe();
        self.mode.send_replace(mode);
        let wanted = if mode == Mode::Released {
            Ack::Ended
        } else {
            Ack::Applied(mode)
        };
        let done = tokio::time::timeout(within, ack.wait_for(|a| *a == wanted || *a == Ack::Ended)).await;
        let acked = matches!(done, Ok(Ok(_)));
        acked
    }

    /// What hands this instance over to another cutover: its process runs
    /// and passed readiness.
    pub fn record(&self) -> Option<InstanceRecord> {
        self.state().backend()?;
        Some(InstanceRecord {
            app: self.spec.app.name.clone(),
            name: self.spec.name.clone(),
            role: self.role(),
            pid: self.pid()?,
            port: self.port()?,
        })
    }

    /// Waits until `done` says the state is final enough, or the task
    /// ended (`ended`).
    async fn wait_for<T>(&self, mut done: impl FnMut(&InstanceState) -> Option<T>, ended: impl Fn() -> T) -> T {
        let mut state = self.state.subscribe();
        let mut ack = self.ack.subscribe();
        loop {
            if let Some(value) = done(&state.borrow_and_update()) {
                return value;
            }
            if *ack.borrow_and_update() == Ack::Ended {
                return ended();
            }
            // Both senders live in `self`: neither channel closes.
            tokio::select! {
                _ = state.changed() => {}
                _ = ack.changed() => {}
            }
        }
    }

    /// Sets the state and republishes, except while not supervised: then
    /// the route table stays as it is, unless a ready instance is stopped
    /// (a stopped process must leave the table whatever the mode).
    pub(super) fn set(&self, state: InstanceState, on_change: &OnChange) {
        tracing::debug!(instance = %self.spec.name, state = state.name(), "instance state");
        let leaves_table = matches!(state, InstanceState::Stopping | InstanceState::Stopped)
            && self.state.borrow().ready_backend().is_some();
        // Decided before the change: a change made while supervised is
        // published even if a freeze comes in meanwhile (the freeze waits
        // for this task's acknowledgement, which comes after).
        let publish = self.mode() == Mode::Supervised || leaves_table;
        self.state.send_replace(state);
        if publish {
            on_change();
        }
    }
}
