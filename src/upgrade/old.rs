//! The running cutover's side of an upgrade (SPEC §10): start the new
//! binary, hand it the listeners and the state_dir lock, stop supervising
//! the apps, and let go only once it reports ready. Any failure before
//! that (the new process exits, hangs, speaks another protocol, or the
//! 30 s run out) stops the new process and resumes supervision: this
//! process serves on as if nothing happened.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use cutover_control::certs::acme::AcmeDriver;
use cutover_control::supervisor::orphans::reap_except;
use cutover_control::supervisor::process::signal_group;
use cutover_control::supervisor::Supervisor;
use cutover_control::upgrade::{UpgradeLog, UpgradeOutcome, UpgradeRequest, Upgrades};
use cutover_proxy::DataPlane;
use nix::sys::signal::Signal;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::wire::{self, Channel, Message};

/// How long the new process has from its start to reporting ready.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// What the hand-over needs from the running process.
pub struct Running<'a> {
    /// This process's own arguments after the program name (`up -c …`):
    /// the new process gets the same, plus `--takeover-fd 3`.
    pub args: &'a [OsString],
    pub data_plane: &'a DataPlane,
    /// The admin listener (a duplicate of the one axum serves) and its
    /// address.
    pub admin: (&'a str, BorrowedFd<'a>),
    pub state_lock: BorrowedFd<'a>,
    pub supervisor: &'a Arc<Supervisor>,
    pub upgrades: &'a Upgrades,
    /// The ACME driver: stopped before the successor starts its own.
    pub acme: &'a tokio::sync::Mutex<Option<AcmeDriver>>,
    /// `state_dir/run`: the pid files.
    pub run_dir: &'a Path,
}

/// How an attempt ended for this process.
pub enum Ended {
    /// The new process serves and owns the apps: drain and exit.
    HandedOver { successor: u32 },
    /// This process serves on.
    ServingOn,
}

/// Runs one upgrade to its end. `stop` resolves when this cutover is asked
/// to stop meanwhile: the upgrade then fails like any other.
pub async fn run(running: &Running<'_>, request: UpgradeRequest, stop: impl std::future::Future<Output = ()>) -> Ended {
    let UpgradeRequest { log, guard } = request;
    tokio::pin!(stop);
    let mut attempt = Attempt {
        log: &log,
        child: None,
        pid: None,
        frozen: None,
    };
    let result = tokio::select! {
        result = attempt.hand_over(running) => result,
        () = &mut stop => Err("cutover was asked to stop during the upgrade".to_string()),
    };
    match result {
        Ok((successor, channel)) => {
            // The new process serves: from here on nothing is undone, not
            // even by a stop signal (which then finds this process draining).
            attempt.commit(running, &channel).await;
            // Counted by the new process, whose counters live on.
            log.finish(
                UpgradeOutcome::Succeeded,
                format!(
                    "the new cutover (pid {successor}) serves and owns the apps; this one (pid {}) drains and exits",
                    std::process::id()
                ),
            );
            // Verbs stay refused here: this process is on its way out.
            std::mem::forget(guard);
            Ended::HandedOver { successor }
        }
        Err(reason) => {
            attempt.undo(running).await;
            running.upgrades.count(UpgradeOutcome::Failed);
            // Verbs are allowed again before the outcome is out: whoever
            // follows the upgrade may deploy as soon as it reads "failed".
            drop(guard);
            log.finish(
                UpgradeOutcome::Failed,
                format!("{reason}; the running cutover (pid {}) serves on", std::process::id()),
            );
            Ended::ServingOn
        }
    }
}

/// The state an attempt may have to undo.
struct Attempt<'l> {
    log: &'l UpgradeLog,
    child: Option<Child>,
    /// The new process's pid (its group's id), kept even once `child` has
    /// reaped it: its group may outlive it.
    pid: Option<u32>,
    /// Set while the supervisor is frozen: the pids handed over.
    frozen: Option<BTreeSet<u32>>,
}

impl Attempt<'_> {
    /// The hand-over, step by step, up to the successor reporting ready:
    /// its pid, and the channel to tell it the apps are released.
    async fn hand_over(&mut self, running: &Running<'_>) -> Result<(u32, Channel), String> {
        let binary = self.log.binary().to_path_buf();
        let (channel, theirs) = Channel::pair().map_err(|e| format!("cannot make the hand-over channel: {e}"))?;
        let child =
            spawn(&binary, running.args, &theirs).map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        drop(theirs);
        let pid = child.id().unwrap_or(0);
        self.child = Some(child);
        self.pid = Some(pid).filter(|p| *p != 0);
        self.log.step(format!("started {} (pid {pid})", binary.display()));
        let deadline = cutover_proxy::time::after(READY_WITHIN);
        match self.next(&channel, deadline, "its hello").await?.0 {
            Message::Hello { protocol, .. } if protocol == wire::PROTOCOL => {}
            Message::Hello { protocol, .. } => {
                return Err(format!(
                    "the new binary speaks hand-over protocol {protocol}, this one {}",
                    wire::PROTOCOL
                ))
            }
            other => return Err(unexpected(&other, "its hello")),
        }

        let listeners = running
            .data_plane
            .listener_fds()
            .map_err(|e| format!("cannot duplicate the listeners: {e}"))?;
        let (admin_addr, admin_fd) = running.admin;
        let mut fds: Vec<BorrowedFd<'_>> = listeners.iter().map(|(_, fd)| fd.as_fd()).collect();
        fds.push(admin_fd);
        fds.push(running.state_lock);
        let message = Message::Listeners {
            proxy: listeners.iter().map(|(addr, _)| addr.clone()).collect(),
            admin: admin_addr.to_string(),
        };
        channel
            .send(&message, &fds)
            .await
            .map_err(|e| format!("cannot send the listeners: {e}"))?;
        drop(fds);
        drop(listeners);
        self.log.step(format!(
            "sent {} proxy listener(s), the admin listener and the state_dir lock",
            fds_count(&message)
        ));

        match self.next(&channel, deadline, "its config and journal").await?.0 {
            Message::Prepared => {}
            other => return Err(unexpected(&other, "its config and journal")),
        }

        let instances = running.supervisor.freeze().await;
        self.frozen = Some(instances.iter().map(|i| i.pid).collect());
        self.log.step(format!(
            "stopped supervising; {} running instance(s) to adopt",
            instances.len()
        ));
        channel
            .send(&Message::Frozen { instances }, &[])
            .await
            .map_err(|e| format!("cannot send the instances: {e}"))?;

        match self.next(&channel, deadline, "it to serve").await?.0 {
            Message::Ready => {}
            other => return Err(unexpected(&other, "it to serve")),
        }
        self.log.step(format!("the new cutover (pid {pid}) serves"));
        Ok((pid, channel))
    }

    /// After `Ready`: the new process owns the apps, whatever happens to
    /// either process. It starts its ACME driver once released.
    async fn commit(&mut self, running: &Running<'_>, channel: &Channel) {
        // The child is not stopped when its handle goes: it is the server.
        self.child = None;
        self.pid = None;
        if let Some(acme) = running.acme.lock().await.take() {
            acme.shutdown().await;
        }
        running.supervisor.release().await;
        self.frozen = None;
        if let Err(e) = channel.send(&Message::Released, &[]).await {
            tracing::warn!(error = %e, "could not tell the new cutover the apps are released; it takes them anyway");
        }
    }

    async fn next(
        &mut self,
        channel: &Channel,
        deadline: Instant,
        want: &str,
    ) -> Result<(Message, Vec<OwnedFd>), String> {
        next_message(channel, self.child.as_mut(), deadline, want).await
    }

    /// After a failure: the new process and whatever it started are stopped
    /// (SIGKILL to its group: it owns nothing yet), supervision resumes.
    async fn undo(&mut self, running: &Running<'_>) {
        if let Some(pid) = self.pid.take() {
            signal_group(pid, Signal::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                Ok(Ok(status)) => self.log.step(format!("stopped the new cutover ({status})")),
                _ => tracing::error!("the new cutover did not exit after SIGKILL within 10s"),
            }
        }
        if let Some(handed) = self.frozen.take() {
            // The new process may have restarted an adopted instance that
            // died meanwhile: anything marked with this state_dir that is
            // not what was handed over goes before supervision resumes.
            let run_dir = running.run_dir.to_path_buf();
            let reaped = tokio::task::spawn_blocking(move || reap_except(&run_dir, &handed))
                .await
                .unwrap_or_default();
            if !reaped.is_empty() {
                self.log.step(format!(
                    "stopped what the new cutover had started: {}",
                    reaped.join(", ")
                ));
            }
            running.supervisor.thaw().await;
            self.log.step("supervising the apps again");
        }
    }
}

/// The next message from the new process, or why there is none: it exited,
/// closed the channel, gave up, or the deadline passed.
async fn next_message(
    channel: &Channel,
    child: Option<&mut Child>,
    deadline: Instant,
    want: &str,
) -> Result<(Message, Vec<OwnedFd>), String> {
    let Some(child) = child else {
        return Err("the new cutover is gone".into());
    };
    tokio::select! {
        received = channel.recv() => match received {
            Ok(Some((Message::Failed { reason }, _))) => Err(format!("the new cutover gave up: {reason}")),
            Ok(Some(message)) => Ok(message),
            Ok(None) => Err(exited(child, want).await),
            Err(e) => Err(format!("the hand-over channel failed while waiting for {want}: {e}")),
        },
        status = child.wait() => Err(match status {
            Ok(status) => format!("the new cutover exited ({status}) while this one waited for {want}"),
            Err(e) => format!("cannot watch the new cutover: {e}"),
        }),
        () = tokio::time::sleep_until(deadline) => Err(format!(
            "the new cutover was not ready within {}s (waiting for {want})",
            READY_WITHIN.as_secs()
        )),
    }
}

/// The channel closed: the new process most likely exited; say how.
async fn exited(child: &mut Child, want: &str) -> String {
    match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
        Ok(Ok(status)) => format!("the new cutover exited ({status}) while this one waited for {want}"),
        _ => format!("the new cutover closed the hand-over channel while this one waited for {want}"),
    }
}

fn unexpected(message: &Message, want: &str) -> String {
    format!("the new cutover sent {message:?} while this one waited for {want}")
}

fn fds_count(message: &Message) -> usize {
    match message {
        Message::Listeners { proxy, .. } => proxy.len(),
        _ => 0,
    }
}

/// Starts `binary` with this process's arguments plus the hand-over
/// descriptor; same environment, same working directory, same stdout and
/// stderr (its logs go where this one's go).
fn spawn(binary: &Path, args: &[OsString], channel: &OwnedFd) -> std::io::Result<Child> {
    let fd = channel.as_raw_fd();
    let mut command = Command::new(binary);
    command
        .args(args)
        .arg("--takeover-fd")
        .arg(wire::CHILD_FD.to_string())
        .stdin(Stdio::null())
        // Its own group, so a failed attempt is stopped with everything it
        // started (a wrapper script's children too).
        .process_group(0)
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes two async-signal-safe system calls (fcntl or dup2).
    unsafe {
        command.pre_exec(move || wire::map_to_child_fd(fd));
    }
    command.spawn()
}
