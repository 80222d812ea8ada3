//! Instances handed from one cutover to the next (`cutover upgrade`): what
//! the old process records about each, and how the new one checks a record
//! really names an instance of this state_dir before it takes the process
//! over.
//!
//! The new process opens a pidfd on the recorded pid *first*, then checks
//! the pid file and `/proc/<pid>`, then that the pidfd still reports the
//! process alive: a pid reused by another process between those steps
//! would make the pidfd report an exit, so what was checked is the process
//! the pidfd watches.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, Pid, PidfdFlags};
use serde::{Deserialize, Serialize};

use super::instance::Role;
use super::orphans::stat_of;
use super::pidfile::{self, HOOK_VAR, INSTANCE_VAR, STATE_DIR_VAR};
use super::ports::{self, PortLease};
use super::process::Process;

/// One running instance handed from the old cutover to the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub app: String,
    /// The instance's name (`web-0`, a promoted `web-clone-1`).
    pub name: String,
    /// A promoted clone is recorded as an original.
    pub role: Role,
    /// The process (and process group) id.
    pub pid: u32,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

/// A verified instance process, watched through its pidfd, with its port
/// reserved: what an adopted instance's task starts from.
#[derive(Debug)]
pub struct Adoption {
    process: Process,
    lease: PortLease,
}

impl Adoption {
    pub(super) fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub(super) fn port(&self) -> u16 {
        self.lease.port()
    }

    pub(super) fn into_parts(self) -> (Process, PortLease) {
        (self.process, self.lease)
    }
}

/// Checks `record` names a live instance of `state_dir`: its pid file
/// `state_dir/run/<name>.pid` names the pid, the process runs and leads its
/// own process group, and its environment carries this state_dir's marker,
/// the instance's name, `CUTOVER_APP` = the app and `PORT` = the port.
pub fn verify(record: &InstanceRecord, state_dir: &Path) -> Result<(), String> {
    let name = &record.name;
    verify_name(name)?;
    let state_dir = pidfile::canonical(state_dir);
    let pid_file = state_dir.join("run").join(format!("{name}.pid"));
    let pid = record.pid;
    match pidfile::read_pid(&pid_file) {
        Some(named) if named == pid => {}
        Some(named) => return Err(format!("{} names pid {named}, not {pid}", pid_file.display())),
        None => return Err(format!("no readable pid file {}", pid_file.display())),
    }
    let stat = stat_of(pid).ok_or_else(|| format!("pid {pid} is not running"))?;
    if stat.dead {
        return Err(format!("pid {pid} has exited"));
    }
    if stat.pgrp != pid {
        return Err(format!("pid {pid} does not lead its own process group"));
    }
    let environ = pidfile::environ(pid);
    let expect = |var: &str, value: &str| -> Result<(), String> {
        match pidfile::lookup(&environ, var) {
            Some(found) if found == value.as_bytes() => Ok(()),
            Some(found) => Err(format!(
                "pid {pid} has {var}={}, not {value}",
                String::from_utf8_lossy(found)
            )),
            None => Err(format!("pid {pid} has no {var} (not an instance of this cutover)")),
        }
    };
    // A hook of the instance (post_start) inherits its variables.
    if pidfile::lookup(&environ, HOOK_VAR).is_some() {
        return Err(format!("pid {pid} is a hook, not an instance"));
    }
    expect(STATE_DIR_VAR, &state_dir.to_string_lossy())?;
    expect(INSTANCE_VAR, name)?;
    expect("CUTOVER_APP", &record.app)?;
    expect("PORT", &record.port.to_string())
}

/// Refuses a name that is no file name of `run/` (it becomes a path).
pub(super) fn verify_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!("{name:?} is not an instance name"));
    }
    Ok(())
}

/// Takes over the process of `record`: pidfd first, then [`verify`], then
/// the pidfd must still see it running; its port is reserved in this
/// process. Needs a tokio runtime (the pidfd is registered with it).
pub fn adopt(record: &InstanceRecord, state_dir: &Path) -> Result<Adoption, String> {
    let pid = i32::try_from(record.pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| format!("{} is not a pid", record.pid))?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).map_err(|e| format!("pidfd_open({}): {e}", record.pid))?;
    verify(record, state_dir)?;
    if exited(&pidfd) {
        return Err(format!("pid {} exited while being verified", record.pid));
    }
    let lease = ports::reserve(record.port).map_err(|e| e.to_string())?;
    let process = Process::adopt(record.pid, pidfd).map_err(|e| format!("cannot watch pid {}: {e}", record.pid))?;
    Ok(Adoption { process, lease })
}

/// Whether the process behind `pidfd` has exited (it becomes readable).
fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let now = Timespec { tv_sec: 0, tv_nsec: 0 };
    match poll(&mut fds, Some(&now)) {
        Ok(ready) => ready > 0,
        // Cannot tell: the watch would not work either.
        Err(_) => true,
    }
}
