//! Children a previous cutover left running (it was killed with SIGKILL,
//! or crashed): instances and hooks, found through their pid files and
//! their marker ([`super::pidfile`]), stopped before anything starts, so no
//! orphan outlives a restart.
//!
//! The caller must hold the state_dir lock ([`crate::state_lock`]): then no
//! live cutover owns anything marked with this state_dir, and everything
//! found is an orphan. The one exception, a predecessor handing its
//! instances over (`cutover upgrade`), goes through [`reap_except`]: the
//! instances being adopted are kept, everything else is reaped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::pidfile::{self, HOOK_VAR, INSTANCE_VAR, STATE_DIR_VAR};
use super::process::signal_group;

/// How long orphans get to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Stops every process group a predecessor on this state_dir left behind
/// and removes the pid files in `run_dir` (`state_dir/run`). Two sources:
///
/// - each pid file whose pid still carries the marker of the child the file
///   is named after (a reused pid does not);
/// - every other process whose environment names this state_dir (a child
///   killed between its spawn and its pid file, a hook's own children whose
///   leader already exited).
///
/// Each group gets SIGTERM, then SIGKILL after [`TERM_GRACE`] if anything
/// in it still runs. Returns the children's names.
pub fn reap(run_dir: &Path) -> Vec<String> {
    reap_except(run_dir, &BTreeSet::new())
}

/// As [`reap`], but the process groups in `keep` (the pids of the
/// instances a predecessor hands over) are neither signalled nor have
/// their pid files removed.
pub fn reap_except(run_dir: &Path, keep: &BTreeSet<u32>) -> Vec<String> {
    let state_dir = run_dir.parent().map(pidfile::canonical).unwrap_or_default();
    let state_dir = state_dir.to_string_lossy().into_owned();
    // Process group id → child name.
    let mut groups: BTreeMap<u32, String> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(run_dir) {
        for path in entries.filter_map(Result::ok).map(|e| e.path()) {
            let is_pid_file = path.extension().is_some_and(|e| e == "pid");
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let pid = pidfile::read_pid(&path).filter(|_| is_pid_file);
            if pid.is_some_and(|pid| keep.contains(&pid)) {
                continue;
            }
            if let Some(pid) = pid {
                if belongs_to(pid, name, &state_dir) {
                    groups.insert(pid, name.to_string());
                }
            }
            // A stale file (or a torn temporary one) names nothing running.
            let _ = std::fs::remove_file(&path);
        }
    }
    for (pgid, name) in marked_processes(&state_dir) {
        if keep.contains(&pgid) {
            continue;
        }
        groups.entry(pgid).or_insert(name);
    }
    if groups.is_empty() {
        return Vec::new();
    }
    for (pgid, name) in &groups {
        tracing::warn!(child = %name, pgid, "stopping a process left behind by a previous run");
        signal_group(*pgid, Signal::SIGTERM);
    }
    let deadline = Instant::now().checked_add(TERM_GRACE);
    while groups.keys().any(|g| group_alive(*g)) && deadline.is_some_and(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pgid in groups.keys() {
        signal_group(*pgid, Signal::SIGKILL);
    }
    groups.into_values().collect()
}

/// Is `pid` still the child cutover started as `name` on this state_dir?
/// (A pid may have been reused by an unrelated process since.) A child
/// started before cutover marked the state_dir is recognised by its name.
fn belongs_to(pid: u32, name: &str, state_dir: &str) -> bool {
    let environ = pidfile::environ(pid);
    let named = [INSTANCE_VAR, HOOK_VAR]
        .iter()
        .any(|var| pidfile::lookup(&environ, var) == Some(name.as_bytes()));
    let other_dir = matches!(pidfile::lookup(&environ, STATE_DIR_VAR), Some(dir) if dir != state_dir.as_bytes());
    named && !other_dir
}

/// Live processes (other than this one) whose environment names
/// `state_dir`: their process group id and child name.
fn marked_processes(state_dir: &str) -> Vec<(u32, String)> {
    let own = std::process::id();
    let own_group = stat_of(own).map_or(0, |s| s.pgrp);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own)
        .filter_map(|pid| {
            let stat = stat_of(pid).filter(|s| !s.dead)?;
            let environ = pidfile::environ(pid);
            if pidfile::lookup(&environ, STATE_DIR_VAR) != Some(state_dir.as_bytes()) {
                return None;
            }
            // Never our own group (cutover started from a hook, oddly).
            (stat.pgrp != own_group).then_some(())?;
            let name = [HOOK_VAR, INSTANCE_VAR]
                .iter()
                .find_map(|var| pidfile::lookup(&environ, var))
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_else(|| format!("pid {pid}"));
            Some((stat.pgrp, name))
        })
        .collect()
}

/// Does any live (non-zombie) process belong to group `pgid`?
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat_of)
        .any(|s| s.pgrp == pgid && !s.dead)
}

/// What `/proc/<pid>/stat` says about a process.
/// What `/proc/<pid>/stat` says of a process.
pub struct Stat {
    pub pgrp: u32,
    /// Zombie or dead: gone, only waiting for its parent to reap it.
    pub dead: bool,
}

/// A process's group and whether it is gone; `None` once it is reaped.
pub fn stat_of(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid pgrp ...; comm may contain anything, so split
    // after its last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some(Stat {
        pgrp,
        dead: state.starts_with(['Z', 'X']),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use super::*;

    fn state_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cutover-orphans-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        pidfile::canonical(&dir)
    }

    /// A detached group `sh -c 'sleep 300 & wait'` with `env`, as a killed
    /// cutover would leave it; the leader is reaped by a thread so it does
    /// not linger as our zombie.
    fn orphan(env: &[(String, String)]) -> u32 {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 300 & wait"])
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        std::thread::spawn(move || child.wait());
        // Wait until the group has its grandchild, so a kill finds both.
        let deadline = Instant::now() + Duration::from_secs(5);
        while members(pid) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        pid
    }

    fn members(pgid: u32) -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(stat_of)
            .filter(|s| s.pgrp == pgid && !s.dead)
            .count()
    }

    fn env_of(dir: &Path, var: &str, name: &str) -> Vec<(String, String)> {
        pidfile::marker(dir, var, name).into_iter().collect()
    }

    #[test]
    fn hooks_and_instances_with_pid_files_are_stopped_as_groups() {
        let dir = state_dir("files");
        let hook = orphan(&env_of(&dir, HOOK_VAR, "hook-build-1"));
        let instance = orphan(&env_of(&dir, INSTANCE_VAR, "web-0"));
        std::fs::write(dir.join("run/hook-build-1.pid"), format!("{hook}\n")).unwrap();
        std::fs::write(dir.join("run/web-0.pid"), format!("{instance}\n")).unwrap();
        let mut reaped = reap(&dir.join("run"));
        reaped.sort();
        assert_eq!(reaped, vec!["hook-build-1".to_string(), "web-0".to_string()]);
        assert_eq!(members(hook), 0, "the hook and its children are gone");
        assert_eq!(members(instance), 0);
        assert_eq!(std::fs::read_dir(dir.join("run")).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn kept_groups_and_their_pid_files_are_left_alone() {
        let dir = state_dir("keep");
        let adopted = orphan(&env_of(&dir, INSTANCE_VAR, "web-0"));
        let left = orphan(&env_of(&dir, INSTANCE_VAR, "web-1"));
        // Marked, with no pid file: found through /proc, kept all the same.
        let adopted_unfiled = orphan(&env_of(&dir, INSTANCE_VAR, "web-2"));
        std::fs::write(dir.join("run/web-0.pid"), format!("{adopted}\n")).unwrap();
        std::fs::write(dir.join("run/web-1.pid"), format!("{left}\n")).unwrap();
        let keep = BTreeSet::from([adopted, adopted_unfiled]);
        assert_eq!(reap_except(&dir.join("run"), &keep), vec!["web-1".to_string()]);
        assert_eq!(members(left), 0, "the rest is reaped");
        assert_eq!(members(adopted), 2, "a kept group is not signalled");
        assert_eq!(members(adopted_unfiled), 2);
        assert_eq!(
            pidfile::read_pid(&dir.join("run/web-0.pid")),
            Some(adopted),
            "its pid file stays"
        );
        assert!(!dir.join("run/web-1.pid").exists());
        signal_group(adopted, Signal::SIGKILL);
        signal_group(adopted_unfiled, Signal::SIGKILL);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_marked_child_without_a_pid_file_is_stopped_too() {
        // Killed between spawn and pid file.
        let dir = state_dir("nofile");
        let hook = orphan(&env_of(&dir, HOOK_VAR, "hook-deploy-2"));
        assert_eq!(reap(&dir.join("run")), vec!["hook-deploy-2".to_string()]);
        assert_eq!(members(hook), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn processes_of_other_state_dirs_and_reused_pids_are_left_alone() {
        let dir = state_dir("mine");
        let other = state_dir("other");
        let foreign = orphan(&env_of(&other, INSTANCE_VAR, "web-0"));
        let unmarked = orphan(&[]);
        // Pid files naming them: one from another state_dir with the same
        // instance name, one whose pid was reused by an unrelated process.
        std::fs::write(dir.join("run/web-0.pid"), format!("{foreign}\n")).unwrap();
        std::fs::write(dir.join("run/web-1.pid"), format!("{unmarked}\n")).unwrap();
        assert!(reap(&dir.join("run")).is_empty());
        assert_eq!(members(foreign), 2);
        assert_eq!(members(unmarked), 2);
        signal_group(foreign, Signal::SIGKILL);
        signal_group(unmarked, Signal::SIGKILL);
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(other);
    }
}
