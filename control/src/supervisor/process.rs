//! One OS process: spawned in its own process group, stopped with SIGTERM
//! then SIGKILL to the whole group, so nothing it started outlives it.
//! Children inherit cutover's environment minus its secrets
//! ([`withhold_env`]).
//!
//! A process may also be *adopted*: started by the cutover this one
//! replaced (`cutover upgrade`), so it is not our child. It is watched
//! through a pidfd, which becomes readable when the process exits; its
//! exit status belongs to its parent and cannot be read here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::RwLock;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::process::{Child, Command};

use crate::config::Command as AppCommand;

/// The admin token's default variable (SPEC §3), never passed to children.
pub const ADMIN_TOKEN_VAR: &str = "CUTOVER_ADMIN_TOKEN";

/// Variables of cutover's own environment that no child inherits, besides
/// [`ADMIN_TOKEN_VAR`]: the configured `admin.token_env`.
static WITHHELD: RwLock<BTreeSet<String>> = RwLock::new(BTreeSet::new());

/// Keeps `var` (a secret of cutover's, such as the configured
/// `admin.token_env`) out of every child's environment from now on.
pub fn withhold_env(var: &str) {
    if !var.is_empty() {
        WITHHELD
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(var.to_string());
    }
}

/// Sets a child's environment: cutover's own minus the withheld secrets,
/// plus `env` (which may set any variable explicitly, a withheld name too:
/// that value is the app's own, from its config).
pub fn child_env(cmd: &mut Command, env: &BTreeMap<String, String>) {
    cmd.env_remove(ADMIN_TOKEN_VAR);
    for var in WITHHELD.read().unwrap_or_else(|e| e.into_inner()).iter() {
        cmd.env_remove(var);
    }
    cmd.envs(env);
}

/// What to run and where.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub command: AppCommand,
    pub cwd: PathBuf,
    /// The full environment on top of cutover's own (minus its secrets).
    pub env: BTreeMap<String, String>,
    /// stdout and stderr are appended here.
    pub log: PathBuf,
}

/// Errors starting a process.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot open log file {path}: {source}")]
    Log { path: PathBuf, source: std::io::Error },
    #[error("cannot start {program:?} in {cwd}: {source}")]
    Spawn {
        program: String,
        cwd: PathBuf,
        source: std::io::Error,
    },
}

/// After SIGKILL, how long an adopted process gets to be seen gone (a
/// child is waited for without limit: its status is ours to collect).
const ADOPTED_KILL_WAIT: Duration = Duration::from_secs(5);

/// A running process, leader of its own process group: a child, or one
/// adopted from the previous cutover.
#[derive(Debug)]
pub struct Process {
    pid: u32,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Child(Child),
    /// A pidfd of a process we did not start.
    Adopted(AsyncFd<OwnedFd>),
}

impl Process {
    /// Starts `spec` in a new process group.
    pub fn spawn(spec: &ProcessSpec) -> Result<Self, SpawnError> {
        let log = open_log(&spec.log)?;
        let log_err = log.try_clone().map_err(|source| SpawnError::Log {
            path: spec.log.clone(),
            source,
        })?;
        let (program, args) = program_and_args(&spec.command, &spec.cwd);
        let mut cmd = Command::new(&program);
        child_env(&mut cmd, &spec.env);
        cmd.args(args)
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // Its own group: signals reach everything it starts, and a
            // Ctrl-C in cutover's terminal does not hit it directly.
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd.spawn().map_err(|source| SpawnError::Spawn {
            program: program.clone(),
            cwd: spec.cwd.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        Ok(Self {
            pid,
            kind: Kind::Child(child),
        })
    }

    /// Watches `pid`, a process group leader we did not start, through
    /// `pidfd` (opened on it before it was verified, so a reused pid cannot
    /// slip in between). Needs a tokio runtime.
    pub fn adopt(pid: u32, pidfd: OwnedFd) -> std::io::Result<Self> {
        // Deprecated because a generic `AsRawFd` might change its fd under
        // the registration; an `OwnedFd` owns its one fd for its whole
        // life, so this is sound, and the crate forbids the `unsafe`
        // `register_with_interest`.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(pidfd, Interest::READABLE)?;
        Ok(Self {
            pid,
            kind: Kind::Adopted(fd),
        })
    }

    /// Watches `pid`, any process group leader, through a pidfd opened
    /// now: checks made after this call are about this very process, not
    /// one that reused its pid. Needs a tokio runtime.
    pub fn watch(pid: u32) -> std::io::Result<Self> {
        let raw = i32::try_from(pid).map_err(|_| std::io::Error::other(format!("pid {pid} out of range")))?;
        let id = rustix::process::Pid::from_raw(raw).ok_or_else(|| std::io::Error::other("pid 0"))?;
        let pidfd = rustix::process::pidfd_open(id, rustix::process::PidfdFlags::empty())?;
        Self::adopt(pid, pidfd)
    }

    /// The leader's pid (also the process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process was adopted rather than started by us.
    pub fn is_adopted(&self) -> bool {
        matches!(self.kind, Kind::Adopted(_))
    }

    /// Waits for the leader to exit. `Ok(None)`: an adopted process exited,
    /// with a status only its parent could read.
    pub async fn wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match &mut self.kind {
            Kind::Child(child) => child.wait().await.map(Some),
            Kind::Adopted(fd) => {
                // Readable once the process exited, and it stays so: the
                // readiness is never cleared, so a second wait returns too.
                let _ready = fd.readable().await?;
                Ok(None)
            }
        }
    }

    /// SIGTERM to the group; SIGKILL after `timeout` if the leader still
    /// runs. Whatever the leader left behind in its group is killed too.
    pub async fn stop(mut self, timeout: Duration) -> Option<ExitStatus> {
        signal_group(self.pid, Signal::SIGTERM);
        let status = match tokio::time::timeout(timeout, self.wait()).await {
            Ok(status) => status.ok().flatten(),
            Err(_) => {
                tracing::warn!(pid = self.pid, ?timeout, "did not stop after SIGTERM; sending SIGKILL");
                signal_group(self.pid, Signal::SIGKILL);
                if self.is_adopted() {
                    if tokio::time::timeout(ADOPTED_KILL_WAIT, self.wait()).await.is_err() {
                        tracing::warn!(pid = self.pid, "adopted process still there after SIGKILL");
                    }
                    None
                } else {
                    self.wait().await.ok().flatten()
                }
            }
        };
        signal_group(self.pid, Signal::SIGKILL);
        status
    }

    /// Lets go of the process without signalling it: it runs on (a child
    /// is not killed on drop; tokio reaps it if it exits while we live).
    pub fn release(self) {
        tracing::debug!(pid = self.pid, "process released; left running");
    }
}

/// A future that resolves once process `pid` has exited (any process,
/// not only a child; a zombie has exited). It watches a pidfd opened now
/// ([`Process::watch`]), so a process that reuses the pid later is not
/// mistaken for it. Needs a tokio runtime.
pub fn exit_of(pid: u32) -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    let mut process = Process::watch(pid)?;
    Ok(async move {
        let _ = process.wait().await;
    })
}

/// Sends `signal` to process group `pgid`; a group that is already gone is
/// not an error.
pub fn signal_group(pgid: u32, signal: Signal) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return; // never signal init or "every process"
    }
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// Appends a line of cutover's own to an instance log.
pub fn log_line(path: &Path, line: &str) {
    if let Ok(mut file) = open_log(path) {
        let _ = writeln!(file, "[cutover] {line}");
    }
}

fn open_log(path: &Path) -> Result<File, SpawnError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SpawnError::Log {
            path: path.to_path_buf(),
            source,
        })?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| SpawnError::Log {
            path: path.to_path_buf(),
            source,
        })
}

/// An argv runs directly; a relative program path with a `/` is taken
/// relative to the app's `cwd` (Rust leaves that case unspecified). A
/// string runs under `sh -c`.
fn program_and_args(command: &AppCommand, cwd: &Path) -> (String, Vec<String>) {
    match command {
        AppCommand::Argv(argv) => {
            let program = &argv[0];
            let program = if program.contains('/') && Path::new(program).is_relative() {
                cwd.join(program).to_string_lossy().into_owned()
            } else {
                program.clone()
            };
            (program, argv[1..].to_vec())
        }
        AppCommand::Shell(script) => ("sh".to_string(), vec!["-c".to_string(), script.clone()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_program_is_resolved_against_cwd() {
        let (p, args) = program_and_args(
            &AppCommand::Argv(vec!["bin/app".into(), "-v".into()]),
            Path::new("/srv"),
        );
        assert_eq!(p, "/srv/bin/app");
        assert_eq!(args, vec!["-v"]);
        let (p, _) = program_and_args(&AppCommand::Argv(vec!["python3".into()]), Path::new("/srv"));
        assert_eq!(p, "python3", "a bare name is looked up in PATH");
    }

    /// Processes of group `pgid` that are not zombies (a zombie is dead; it
    /// only waits for its new parent to reap it).
    fn live_members(pgid: u32) -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
            .filter(|stat| {
                // pid (comm) state ppid pgrp ...
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let fields: Vec<&str> = rest.split_whitespace().collect();
                fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z"
            })
            .count()
    }

    #[tokio::test]
    async fn stop_kills_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("cutover-proc-{}", std::process::id()));
        let spec = ProcessSpec {
            // The shell ignores TERM and leaves a grandchild behind.
            command: AppCommand::Shell("trap '' TERM; sleep 300 & wait".into()),
            cwd: std::env::temp_dir(),
            env: BTreeMap::new(),
            log: dir.join("t.log"),
        };
        let process = Process::spawn(&spec).unwrap();
        let pgid = process.pid();
        tokio::time::sleep(Duration::from_millis(100)).await;
        process.stop(Duration::from_millis(200)).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while live_members(pgid) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(live_members(pgid), 0, "no process of the group survives");
        let _ = std::fs::remove_dir_all(dir);
    }
}
