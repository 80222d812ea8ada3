//! The task behind each [`Instance`]: start (or adopt), get ready, watch,
//! restart, stop; and obey the supervision [`Mode`] (freeze, thaw,
//! release) that `cutover upgrade` drives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cutover_proxy::Backend;
use tokio::sync::watch;
use tokio::time::Instant;

use super::adopt::Adoption;
use super::health::probe;
use super::instance::{Ack, Instance, InstanceSpec, InstanceState, Mode, OnChange};
use super::pidfile::PidFile;
use super::ports::{self, PortLease};
use super::process::{log_line, Process, ProcessSpec};
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
pub(super) const LONGEST_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);
/// How a start that ended with the process exiting is reported.
const EXITED_DURING_START: &str = "exited during start";
/// Immediate retries on another port when a start failed because someone
/// else took the leased port before the app bound it.
const PORT_RETRIES: u32 = 2;

/// Unique per process start, across all instances: keys the connection pool.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// `now + wait`, with `wait` clamped to [`LONGEST_WAIT`].
pub(super) fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait.min(LONGEST_WAIT)).unwrap_or(now)
}

/// How the task ends.
enum End {
    /// Its process is stopped: state `Stopped`.
    Stopped,
    /// Its process runs on for another cutover; the state stays as it was
    /// (the route table of this one keeps it while it drains).
    Released,
}

/// The instance's task: start, get ready, watch, restart, stop.
pub(super) async fn run(instance: Arc<Instance>, on_change: OnChange, adoption: Option<Adoption>) {
    let spec = &instance.spec;
    let mut control = Control {
        stop: instance.stop.subscribe(),
        mode: instance.mode.subscribe(),
    };
    let mut attempt = 0u32;
    let mut ever_ready = false;
    // The instance's port, reserved until the task ends; kept across
    // restarts while it stays free.
    let (mut adopted, mut lease): (Option<Process>, Option<PortLease>) = match adoption {
        Some(adoption) => {
            let (process, lease) = adoption.into_parts();
            (Some(process), Some(lease))
        }
        None => (None, None),
    };
    let mut port_retries = 0u32;
    let end = loop {
        match control.hold(&instance.ack).await {
            Hold::Go => {}
            Hold::Stopped => break End::Stopped,
            Hold::Released => break End::Released,
        }
        instance.set(InstanceState::Starting { attempt }, &on_change);
        let outcome = run_once(
            &instance,
            &on_change,
            &mut control,
            &mut ever_ready,
            &mut lease,
            adopted.take(),
        )
        .await;
        let reason = match outcome {
            Exit::Stopped => break End::Stopped,
            Exit::Released => break End::Released,
            Exit::Frozen => {
                // Restarted at once on thaw (the top of the loop holds).
                let reason = "start stopped by a freeze (cutover upgrade)".to_string();
                log_line(&spec.log, &reason);
                instance.set(
                    InstanceState::Crashed {
                        reason,
                        restart_in: Duration::ZERO,
                    },
                    &on_change,
                );
                continue;
            }
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
            match control.stay(&instance.ack).await {
                Hold::Released => break End::Released,
                Hold::Go | Hold::Stopped => break End::Stopped,
            }
        }
        let restart_in = backoff(attempt);
        attempt = attempt.saturating_add(1);
        tracing::warn!(instance = %spec.name, %reason, ?restart_in, "instance down; restarting");
        log_line(&spec.log, &format!("down ({reason}); restarting in {restart_in:?}"));
        instance.set(InstanceState::Crashed { reason, restart_in }, &on_change);
        match control.wait_until(deadline_after(restart_in), &instance.ack).await {
            Hold::Go => {}
            Hold::Stopped => break End::Stopped,
            Hold::Released => break End::Released,
        }
    };
    // An adopted process the task never got to watch (stopped or released
    // before its first round) is ours all the same.
    if let Some(process) = adopted.take() {
        let pid_file = spec.pid_file.as_deref().map(|p| PidFile::adopt(p, process.pid()));
        match end {
            End::Stopped => {
                process.stop(spec.app.stop_timeout).await;
                instance.pid.store(0, Ordering::SeqCst);
            }
            End::Released => {
                process.release();
                if let Some(pid_file) = pid_file {
                    pid_file.keep();
                }
            }
        }
    }
    // Released before `Stopped` is seen: whoever waited for the stop may
    // start a successor on this port at once.
    drop(lease);
    if let End::Stopped = end {
        instance.set(InstanceState::Stopped, &on_change);
    }
    instance.ack.send_replace(Ack::Ended);
}

enum Exit {
    Stopped,
    /// The process runs on, for another cutover.
    Released,
    /// A start stopped because supervision was frozen.
    Frozen,
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

/// One process lifetime: a fresh process, or `adopted` (ready-checked
/// again, without `post_start`).
async fn run_once(
    instance: &Instance,
    on_change: &OnChange,
    control: &mut Control,
    ever_ready: &mut bool,
    lease: &mut Option<PortLease>,
    adopted: Option<Process>,
) -> Exit {
    let spec = &instance.spec;
    let app = &spec.app;
    let adopting = adopted.is_some();
    let (mut process, port, pid_file) = match adopted {
        Some(process) => {
            let port = lease.as_ref().map_or(0, PortLease::port);
            let pid = process.pid();
            tracing::info!(instance = %spec.name, pid, port, "adopting an instance of the previous cutover; its exit status cannot be read (not our child)");
            log_line(
                &spec.log,
                &format!(
                    "adopted {} (pid {pid}, port {port}) from the previous cutover; \
                     not our child, so its exit status cannot be read",
                    spec.name
                ),
            );
            let pid_file = spec.pid_file.as_deref().map(|path| PidFile::adopt(path, pid));
            (process, port, pid_file)
        }
        None => {
            let port = match renew_lease(lease, instance.port()) {
                Ok(port) => port,
                Err(e) => return crashed(format!("no free port: {e}"), false),
            };
            instance.port.store(u64::from(port), Ordering::SeqCst);
            let process_spec = ProcessSpec {
                command: app.command.clone(),
                cwd: app.cwd.clone(),
                env: spec.process_env(port),
                log: spec.log.clone(),
            };
            log_line(
                &spec.log,
                &format!("starting {} ({}) on port {port}", spec.name, spec.role.as_str()),
            );
            let process = match Process::spawn(&process_spec) {
                Ok(p) => p,
                Err(e) => return crashed(e.to_string(), false),
            };
            let pid_file = spec.pid_file.as_deref().map(|path| PidFile::write(path, process.pid()));
            (process, port, pid_file)
        }
    };
    instance.pid.store(u64::from(process.pid()), Ordering::SeqCst);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let backend = Backend::new(addr, spec.name.as_str(), GENERATION.fetch_add(1, Ordering::SeqCst));

    // Readiness: health 2xx, then post_start (not for an adopted process:
    // it ran when the process started), all within start_timeout; the
    // process exiting, a stop request or a freeze ends the wait early. A
    // post_start hook still running is killed with its group when the
    // readiness future is dropped.
    let deadline = deadline_after(app.health.start_timeout);
    let env = spec.process_env(port);
    let readiness = become_ready(spec, addr, &env, deadline, !adopting);
    let exit = tokio::select! {
        ready = readiness => match ready {
            Ok(()) => None,
            Err(reason) => Some(Exit::Crashed { reason, was_stable: false }),
        },
        status = process.wait() => Some(crashed(format!("{EXITED_DURING_START} ({})", describe(status)), false)),
        _ = control.interrupted() => Some(control.interruption()),
    };
    if let Some(exit) = exit {
        instance.set(InstanceState::Stopping, on_change);
        process.stop(app.stop_timeout).await;
        instance.pid.store(0, Ordering::SeqCst);
        drop(pid_file);
        return port_taken_or(exit, port);
    }

    *ever_ready = true;
    let ready_at = Instant::now();
    tracing::info!(instance = %spec.name, %addr, "instance ready");
    log_line(&spec.log, &format!("ready on {addr}"));
    instance.set(InstanceState::Ready(Arc::clone(&backend)), on_change);

    // Watch: process exit, health, stop, freeze.
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
            _ = control.interrupted() => match control.hold(&instance.ack).await {
                // Thawed: a process that exited meanwhile is seen by the
                // next `wait` (a crash). The failure count stays: an
                // instance that was unhealthy at the freeze rejoins the
                // table at its first passing probe, as it would have.
                Hold::Go => ticker.reset(),
                Hold::Stopped => break Exit::Stopped,
                Hold::Released => break Exit::Released,
            },
            _ = ticker.tick() => {
                let result = probe(addr, &app.health.path, app.health.timeout).await;
                if control.mode() != Mode::Supervised {
                    // Frozen while probing: the result is not acted upon.
                    continue;
                }
                match result {
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
    if let Exit::Released = exit {
        tracing::info!(instance = %spec.name, pid = process.pid(), "released to the next cutover; left running");
        log_line(&spec.log, "handed over to the next cutover; left running");
        process.release();
        if let Some(pid_file) = pid_file {
            pid_file.keep();
        }
        return exit;
    }
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

/// Polls health until 2xx, then runs `post_start` (when `post_start`);
/// both before `deadline`.
async fn become_ready(
    spec: &InstanceSpec,
    addr: SocketAddr,
    env: &BTreeMap<String, String>,
    deadline: Instant,
    post_start: bool,
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
    if let Some(script) = spec.app.hooks.post_start.as_ref().filter(|_| post_start) {
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

/// The task's two switches: stop, and the supervision mode.
struct Control {
    stop: watch::Receiver<bool>,
    mode: watch::Receiver<Mode>,
}

/// What a hold ended with.
enum Hold {
    /// Supervised (again): carry on.
    Go,
    Stopped,
    Released,
}

impl Control {
    fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Resolves once a stop is asked or the mode leaves `Supervised`.
    async fn interrupted(&mut self) {
        tokio::select! {
            _ = until_value(&mut self.stop, |stop| *stop) => {}
            _ = until_value(&mut self.mode, |mode| *mode != Mode::Supervised) => {}
        }
    }

    /// How a start that [`Control::interrupted`] ends: stopped, released
    /// (a process not ready yet serves nobody: it is stopped either way)
    /// or frozen.
    fn interruption(&self) -> Exit {
        if *self.stop.borrow() {
            Exit::Stopped
        } else if self.mode() == Mode::Released {
            Exit::Released
        } else {
            Exit::Frozen
        }
    }

    /// Obeys the mode: acknowledges it, and while frozen waits until
    /// thawed (`Go`), released or stopped. A stop wins over everything.
    async fn hold(&mut self, ack: &watch::Sender<Ack>) -> Hold {
        loop {
            if *self.stop.borrow_and_update() {
                return Hold::Stopped;
            }
            match *self.mode.borrow_and_update() {
                Mode::Supervised => {
                    ack.send_replace(Ack::Applied(Mode::Supervised));
                    return Hold::Go;
                }
                Mode::Released => return Hold::Released,
                Mode::Frozen => {
                    ack.send_replace(Ack::Applied(Mode::Frozen));
                }
            }
            tokio::select! {
                _ = changed(&mut self.stop) => {}
                _ = changed(&mut self.mode) => {}
            }
        }
    }

    /// Waits for `deadline` (a restart's backoff); a freeze meanwhile
    /// holds the restart until thawed, and the rest of the backoff is
    /// waited then.
    async fn wait_until(&mut self, deadline: Instant, ack: &watch::Sender<Ack>) -> Hold {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Hold::Go,
                _ = self.interrupted() => match self.hold(ack).await {
                    Hold::Go => {}
                    other => return other,
                },
            }
        }
    }

    /// Waits for a stop or a release, freezes and thaws included.
    async fn stay(&mut self, ack: &watch::Sender<Ack>) -> Hold {
        loop {
            self.interrupted().await;
            match self.hold(ack).await {
                Hold::Go => {}
                other => return other,
            }
        }
    }
}

/// Resolves once `rx` holds a value `pred` accepts. (A plain `wait_for`
/// would keep its borrow guard in the `select!` state, making the task
/// `!Send`.)
async fn until_value<T>(rx: &mut watch::Receiver<T>, pred: impl FnMut(&T) -> bool) {
    if rx.wait_for(pred).await.is_err() {
        // The sender lives in the instance, which the task holds: never.
        std::future::pending::<()>().await;
    }
}

/// Resolves on the next change of `rx`.
async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn crashed(reason: String, was_stable: bool) -> Exit {
    Exit::Crashed { reason, was_stable }
}

fn describe(status: std::io::Result<Option<std::process::ExitStatus>>) -> String {
    match status {
        Ok(Some(status)) => status.to_string(),
        Ok(None) => "exit status unknown: an adopted process is not cutover's child".to_string(),
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
