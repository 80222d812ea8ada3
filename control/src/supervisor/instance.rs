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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cutover_proxy::Backend;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::health::probe;
use super::pidfile::{self, PidFile, INSTANCE_VAR};
use super::ports::{self, PortLease};
use super::process::{log_line, Process, ProcessSpec};
use crate::config::AppConfig;
use crate::hooks::Hook;

/// Consecutive failed probes that take a ready instance out of the table.
const UNHEALTHY_AFTER: u32 = 3;
/// Restart backoff: doubles from the first value up to the second.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));
/// Running this long after becoming ready resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Longest wait the task schedules (about a year): config durations beyond
/// it are clamped, so `Instant + Duration` never overflows (a panic there
/// would end the task and leave its child unaccounted for).
const LONGEST_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);
/// How a start that ended with the process exiting is reported.
const EXITED_DURING_START: &str = "exited during start";
/// Immediate retries on another port when a start failed because someone
/// else took the leased port before the app bound it.
const PORT_RETRIES: u32 = 2;

/// Unique per process start, across all instances: keys the connection pool.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Whether an instance is the app's own or a temporary clone (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Original,
    Clone,
}

impl Role {
    /// The value of `CUTOVER_ROLE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Original => "original",
            Role::Clone => "clone",
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
    fn process_env(&self, port: u16) -> BTreeMap<String, String> {
        let mut env = self.env(port);
        if let Some(state_dir) = self.state_dir() {
            env.extend(pidfile::marker(state_dir, INSTANCE_VAR, &self.name));
        }
        env
    }

    /// `state_dir`, the parent of the pid file's `run/`.
    fn state_dir(&self) -> Option<&Path> {
        self.pid_file.as_deref()?.parent()?.parent()
    }
}

/// Shared view of an instance: its spec, its state, and the stop switch.
#[derive(Debug)]
pub struct Instance {
    spec: InstanceSpec,
    state: watch::Sender<InstanceState>,
    stop: watch::Sender<bool>,
    /// The process's pid while it runs (0 otherwise).
    pid: AtomicU64,
    /// Last port used; kept across restarts when free.
    port: AtomicU64,
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
        let instance = Arc::new(Self {
            port: AtomicU64::new(spec.preferred_port.map_or(0, u64::from)),
            spec,
            state: watch::channel(InstanceState::Starting { attempt: 0 }).0,
            stop: watch::channel(stopped).0,
            pid: AtomicU64::new(0),
            promoted: AtomicBool::new(false),
        });
        tokio::spawn(run(Arc::clone(&instance), on_change));
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

    /// Makes a clone an original for good.
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
        let mut rx = self.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                InstanceState::Ready(backend) => return Ok(Arc::clone(backend)),
                InstanceState::Failed(reason) => return Err(reason.clone()),
                InstanceState::Stopping | InstanceState::Stopped => return Err("stopped".into()),
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err("instance task ended".into());
            }
        }
    }

    /// Stops the process (SIGTERM, SIGKILL after `stop_timeout`) and waits
    /// until it is gone. Draining is the caller's job, before this.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let mut rx = self.state.subscribe();
        loop {
            if matches!(*rx.borrow_and_update(), InstanceState::Stopped) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    fn set(&self, state: InstanceState, on_change: &OnChange) {
        tracing::debug!(instance = %self.spec.name, state = state.name(), "instance state");
        self.state.send_replace(state);
        on_change();
    }
}

/// `now + wait`, with `wait` clamped to [`LONGEST_WAIT`].
fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait.min(LONGEST_WAIT)).unwrap_or(now)
}

/// The instance's task: start, get ready, watch, restart, stop.
async fn run(instance: Arc<Instance>, on_change: OnChange) {
    let spec = &instance.spec;
    let mut stop = instance.stop.subscribe();
    let mut attempt = 0u32;
    let mut ever_ready = false;
    // The instance's port, reserved until the task ends; kept across
    // restarts while it stays free.
    let mut lease: Option<PortLease> = None;
    let mut port_retries = 0u32;
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        instance.set(InstanceState::Starting { attempt }, &on_change);
        let outcome = run_once(&instance, &on_change, &mut stop, &mut ever_ready, &mut lease).await;
        let reason = match outcome {
            Exit::Stopped => break,
            Exit::PortTaken { reason } if port_retries < PORT_RETRIES => {
                port_retries += 1;
                tracing::warn!(instance = %spec.name, %reason, "port taken by another process; retrying on another port");
                log_line(
                    &spec.log,
                    &format!("{reason}; port taken by another process, retrying on another port"),
                );
                lease = None;
                instance.port.store(0, Ordering::SeqCst);
                continue;
            }
            Exit::PortTaken { reason } => reason,
            Exit::Crashed { reason, was_stable } => {
                if was_stable {
                    attempt = 0;
                }
                reason
            }
        };
        port_retries = 0;
        if !ever_ready && !spec.retry_first_start {
            log_line(&spec.log, &format!("giving up: {reason}"));
            instance.set(InstanceState::Failed(reason), &on_change);
            // Stay failed until asked to stop, so `stop()` has a state to see.
            until_stopped(&mut stop).await;
            break;
        }
        let restart_in = backoff(attempt);
        attempt = attempt.saturating_add(1);
        tracing::warn!(instance = %spec.name, %reason, ?restart_in, "instance down; restarting");
        log_line(&spec.log, &format!("down ({reason}); restarting in {restart_in:?}"));
        instance.set(InstanceState::Crashed { reason, restart_in }, &on_change);
        if tokio::time::timeout(restart_in, until_stopped(&mut stop)).await.is_ok() {
            break;
        }
    }
    // Released before `Stopped` is seen: whoever waited for the stop may
    // start a successor on this port at once.
    drop(lease);
    instance.set(InstanceState::Stopped, &on_change);
}

enum Exit {
    Stopped,
    Crashed {
        reason: String,
        was_stable: bool,
    },
    /// Exited during start while another process holds its port: the app
    /// most likely could not bind it.
    PortTaken {
        reason: String,
    },
}

/// One process lifetime.
async fn run_once(
    instance: &Instance,
    on_change: &OnChange,
    stop: &mut watch::Receiver<bool>,
    ever_ready: &mut bool,
    lease: &mut Option<PortLease>,
) -> Exit {
    let spec = &instance.spec;
    let app = &spec.app;
    let port = match renew_lease(lease, instance.port()) {
        Ok(port) => port,
        Err(e) => return crashed(format!("no free port: {e}"), false),
    };
    instance.port.store(u64::from(port), Ordering::SeqCst);
    let env = spec.process_env(port);
    let process_spec = ProcessSpec {
        command: app.command.clone(),
        cwd: app.cwd.clone(),
        env: env.clone(),
        log: spec.log.clone(),
    };
    log_line(
        &spec.log,
        &format!("starting {} ({}) on port {port}", spec.name, spec.role.as_str()),
    );
    let mut process = match Process::spawn(&process_spec) {
        Ok(p) => p,
        Err(e) => return crashed(e.to_string(), false),
    };
    instance.pid.store(u64::from(process.pid()), Ordering::SeqCst);
    let _pid_file = spec.pid_file.as_deref().map(|path| PidFile::write(path, process.pid()));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let backend = Backend::new(addr, spec.name.as_str(), GENERATION.fetch_add(1, Ordering::SeqCst));

    // Readiness: health 2xx, then post_start, all within start_timeout; the
    // process exiting or a stop request ends the wait early.
    let deadline = deadline_after(app.health.start_timeout);
    let readiness = become_ready(spec, addr, &env, deadline);
    let exit = tokio::select! {
        ready = readiness => match ready {
            Ok(()) => None,
            Err(reason) => Some(Exit::Crashed { reason, was_stable: false }),
        },
        status = process.wait() => Some(crashed(format!("{EXITED_DURING_START} ({})", describe(status)), false)),
        _ = until_stopped(stop) => Some(Exit::Stopped),
    };
    if let Some(exit) = exit {
        instance.set(InstanceState::Stopping, on_change);
        process.stop(app.stop_timeout).await;
        instance.pid.store(0, Ordering::SeqCst);
        return port_taken_or(exit, port);
    }

    *ever_ready = true;
    let ready_at = Instant::now();
    tracing::info!(instance = %spec.name, %addr, "instance ready");
    log_line(&spec.log, &format!("ready on {addr}"));
    instance.set(InstanceState::Ready(Arc::clone(&backend)), on_change);

    // Watch: process exit, health, stop.
    let mut failures = 0u32;
    // Clamped: tokio's interval panics on a zero period and adds the period
    // to an `Instant` unchecked.
    let period = app.health.interval.clamp(Duration::from_millis(1), LONGEST_WAIT);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let exit = loop {
        tokio::select! {
            status = process.wait() => {
                break crashed(format!("exited ({})", describe(status)), ready_at.elapsed() >= STABLE_AFTER);
            }
            _ = until_stopped(stop) => break Exit::Stopped,
            _ = ticker.tick() => {
                match probe(addr, &app.health.path, app.health.timeout).await {
                    Ok(()) if failures >= UNHEALTHY_AFTER => {
                        failures = 0;
                        tracing::info!(instance = %spec.name, "instance healthy again");
                        instance.set(InstanceState::Ready(Arc::clone(&backend)), on_change);
                    }
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        if failures == UNHEALTHY_AFTER {
                            tracing::warn!(instance = %spec.name, error = %e, "instance unhealthy; out of the table");
                            log_line(&spec.log, &format!("unhealthy: {e}"));
                            instance.set(InstanceState::Unhealthy(Arc::clone(&backend)), on_change);
                        }
                    }
                }
            }
        }
    };
    instance.set(InstanceState::Stopping, on_change);
    process.stop(app.stop_timeout).await;
    instance.pid.store(0, Ordering::SeqCst);
    exit
}

/// A start that ended with the process exiting while another process holds
/// its port (bound after the lease, before the app): most likely the app
/// could not bind, so the caller retries on another port.
fn port_taken_or(exit: Exit, port: u16) -> Exit {
    match exit {
        Exit::Crashed { reason, .. } if reason.starts_with(EXITED_DURING_START) && !ports::is_free(port) => {
            Exit::PortTaken { reason }
        }
        exit => exit,
    }
}

/// Keeps the leased port while it is still free (a restart keeps its
/// address), else leases a new one (the instance's last port first, which
/// a deployment sets to a retired original's). Returns the port.
fn renew_lease(lease: &mut Option<PortLease>, preferred: Option<u16>) -> std::io::Result<u16> {
    match lease.take() {
        Some(held) if ports::is_free(held.port()) => {
            let port = held.port();
            *lease = Some(held);
            Ok(port)
        }
        held => {
            let preferred = if held.is_some() { None } else { preferred };
            drop(held);
            let new = ports::lease(preferred)?;
            let port = new.port();
            *lease = Some(new);
            Ok(port)
        }
    }
}

/// Polls health until 2xx, then runs `post_start`; both before `deadline`.
async fn become_ready(
    spec: &InstanceSpec,
    addr: SocketAddr,
    env: &BTreeMap<String, String>,
    deadline: Instant,
) -> Result<(), String> {
    let health = &spec.app.health;
    let mut last_error = String::from("no probe answered yet");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "not ready within start_timeout {:?}: {last_error}",
                health.start_timeout
            ));
        }
        match probe(addr, &health.path, health.timeout.min(left)).await {
            Ok(()) => break,
            Err(e) => last_error = format!("GET {} {e}", health.path),
        }
        tokio::time::sleep(health.interval.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
    if let Some(script) = &spec.app.hooks.post_start {
        let left = deadline.saturating_duration_since(Instant::now());
        Hook {
            name: "post_start",
            script,
            cwd: &spec.app.cwd,
            env,
            timeout: left.max(Duration::from_millis(1)),
            log: &spec.log,
        }
        .run()
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Resolves once a stop was requested. (A plain `wait_for` would keep its
/// borrow guard in the `select!` state, making the task `!Send`.)
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn crashed(reason: String, was_stable: bool) -> Exit {
    Exit::Crashed { reason, was_stable }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

fn backoff(attempt: u32) -> Duration {
    let (first, max) = BACKOFF;
    first.saturating_mul(2u32.saturating_pow(attempt.min(16))).min(max)
}

#[cfg(test)]
#[path = "instance_tests.rs"]
mod tests;
