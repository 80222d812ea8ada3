//! One cutover per `state_dir`: an exclusive `flock` on `state_dir/lock`,
//! held for the life of the process. The kernel drops it when the process
//! dies however it dies (SIGKILL too), so a stale lock cannot exist, and
//! the file is opened close-on-exec, so no child (which may outlive a
//! killed cutover) inherits it.
//!
//! It must be taken before anything touches the state_dir: the orphan
//! reaper ([`crate::supervisor::orphans`]) stops whatever carries the
//! state_dir's marker, which, with a second cutover running, would be that
//! cutover's live instances.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Exit code of `cutover up` when another cutover holds the state_dir
/// (`EX_TEMPFAIL`: nothing was changed; try again once it stopped).
pub const BUSY_EXIT_CODE: u8 = 75;

/// The lock file inside a state_dir.
pub const LOCK_FILE: &str = "lock";

/// Why the state_dir could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    #[error(
        "state_dir {dir} is in use by another cutover{}: stop it first, or give this one its own state_dir",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Busy { dir: PathBuf, holder: Option<u32> },
    #[error("cannot lock state_dir {dir}: {source}")]
    Io { dir: PathBuf, source: std::io::Error },
}

impl StateLockError {
    /// The exit code `cutover up` reports it with.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            StateLockError::Busy { .. } => ExitCode::from(BUSY_EXIT_CODE),
            StateLockError::Io { .. } => ExitCode::FAILURE,
        }
    }
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    _file: Flock<File>,
}

/// Takes the state_dir's lock without waiting (creating the directory and
/// the lock file when missing) and writes this process's pid into it, for
/// the message a second cutover prints. Fails with
/// [`StateLockError::Busy`] at once, changing nothing, when another
/// process holds it.
pub fn acquire(state_dir: &Path) -> Result<StateLock, StateLockError> {
    let io = |source| StateLockError::Io {
        dir: state_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    // Not truncated on open: the holder's pid stays readable until we hold
    // the lock ourselves.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(state_dir.join(LOCK_FILE))
        .map_err(io)?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(StateLockError::Busy {
                dir: state_dir.to_path_buf(),
                holder: text.trim().parse().ok(),
            });
        }
        Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
    };
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(StateLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("cutover-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = acquire(&dir).unwrap();
        // flock locks belong to the open file: a second open in the same
        // process conflicts just like another process would.
        let err = acquire(&dir).unwrap_err();
        assert!(
            matches!(err, StateLockError::Busy { holder: Some(pid), .. } if pid == std::process::id()),
            "{err:?}"
        );
        assert!(err.to_string().contains("in use by another cutover"), "{err}");
        assert_eq!(err.exit_code(), ExitCode::from(BUSY_EXIT_CODE));
        drop(first);
        let again = acquire(&dir).expect("free once the holder is gone");
        drop(again);
        let _ = std::fs::remove_dir_all(dir);
    }
}
