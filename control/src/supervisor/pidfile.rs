//! Pid files and the ownership marker of every child cutover starts
//! (instances and hooks), so a cutover restarted after a SIGKILL can find
//! and stop what its predecessor left running ([`super::orphans`]).
//!
//! Each child is a process-group leader. Its pid file, `state_dir/run/<name>.pid`,
//! holds that pid; its environment carries the marker:
//! `CUTOVER_STATE_DIR=<state_dir>` plus `CUTOVER_INSTANCE=<name>` (instances)
//! or `CUTOVER_HOOK=<name>` (hooks). A pid whose `/proc/<pid>/environ` lacks
//! the marker was reused by an unrelated process and is left alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Names the state_dir of the cutover that started the process.
pub const STATE_DIR_VAR: &str = "CUTOVER_STATE_DIR";
/// Names an instance (SPEC §3); also its pid file's name.
pub const INSTANCE_VAR: &str = "CUTOVER_INSTANCE";
/// Names a hook run; also its pid file's name.
pub const HOOK_VAR: &str = "CUTOVER_HOOK";

/// The form of a state_dir used in markers: absolute, symlinks resolved
/// when it exists, so every cutover on the same directory writes the same
/// text.
pub fn canonical(state_dir: &Path) -> PathBuf {
    state_dir
        .canonicalize()
        .unwrap_or_else(|_| std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf()))
}

/// The marker variables of a child named `name` (`var` is
/// [`INSTANCE_VAR`] or [`HOOK_VAR`]).
pub fn marker(state_dir: &Path, var: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (STATE_DIR_VAR.to_string(), state_dir.to_string_lossy().into_owned()),
        (var.to_string(), name.to_string()),
    ])
}

/// A process's environment, as `NAME=value` entries (empty when it is gone
/// or not ours to read).
pub fn environ(pid: u32) -> Vec<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).map(<[u8]>::to_vec).collect())
        .unwrap_or_default()
}

/// The value of `var` in an environment read by [`environ`].
pub fn lookup<'a>(environ: &'a [Vec<u8>], var: &str) -> Option<&'a [u8]> {
    environ.iter().find_map(|entry| {
        entry
            .strip_prefix(var.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"="))
    })
}

/// A pid file, removed when dropped, but only if it still names the pid it
/// was written for: a later process of the same name (a new clone with a
/// promoted clone's old name) may have replaced it, and that file is not
/// ours to delete.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
    /// Cleared by [`PidFile::keep`]: the file then outlives this value.
    remove_on_drop: bool,
}

impl PidFile {
    /// Writes `pid` to `path` (atomically: a reader never sees half a pid).
    pub fn write(path: &Path, pid: u32) -> Self {
        if let Err(e) = write_atomic(path, pid) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write pid file");
        }
        Self {
            path: path.to_path_buf(),
            pid,
            remove_on_drop: true,
        }
    }

    /// Takes over the pid file a previous cutover wrote for `pid` (an
    /// adopted instance), without rewriting it: removed when dropped, like
    /// one this process wrote.
    pub fn adopt(path: &Path, pid: u32) -> Self {
        Self {
            path: path.to_path_buf(),
            pid,
            remove_on_drop: true,
        }
    }

    /// Lets go of the file without removing it: its process runs on under
    /// another cutover (`cutover upgrade`), which removes it in turn.
    pub fn keep(mut self) {
        self.remove_on_drop = false;
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if self.remove_on_drop && read_pid(&self.path) == Some(self.pid) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The pid a pid file names, if it names one.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write_atomic(path: &Path, pid: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("pid.{pid}.tmp"));
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_is_removed_only_while_it_names_its_own_pid() {
        let dir = std::env::temp_dir().join(format!("cutover-pidfile-{}", std::process::id()));
        let path = dir.join("web-clone-0.pid");
        let old = PidFile::write(&path, 111);
        assert_eq!(read_pid(&path), Some(111));
        // A new process with the same name writes its own file...
        let new = PidFile::write(&path, 222);
        // ...and the old one going away must not delete it.
        drop(old);
        assert_eq!(read_pid(&path), Some(222), "the new owner's file survives");
        drop(new);
        assert!(!path.exists(), "the owner removes its own file");
        PidFile::write(&path, 333).keep();
        assert_eq!(read_pid(&path), Some(333), "a kept file survives its owner");
        drop(PidFile::adopt(&path, 333));
        assert!(!path.exists(), "an adopted file is removed like an own one");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn lookup_finds_exact_variables_only() {
        let env = vec![b"CUTOVER_INSTANCE_X=1".to_vec(), b"CUTOVER_INSTANCE=web-0".to_vec()];
        assert_eq!(lookup(&env, INSTANCE_VAR), Some(&b"web-0"[..]));
        assert_eq!(lookup(&env, HOOK_VAR), None);
    }
}
