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
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
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
///
/// An upgrade hands it to the successor (SPEC §10): the lock belongs to
/// the open file, not to the process, so the successor, given the file by
/// descriptor, holds the same lock, and it stays held while either process
/// runs. Neither may *unlock* it then (that would free it for both): the
/// old process lets go with [`StateLock::hand_over`], the new one takes it
/// with [`StateLock::inherit`] only once the hand-over is done.
#[derive(Debug)]
pub struct StateLock {
    file: Flock<File>,
}

impl StateLock {
    /// The locked file, to send to a successor.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The old process after a hand-over: forgets the lock without
    /// unlocking it. The successor's descriptor keeps it held; this one
    /// closes when the process exits.
    pub fn hand_over(self) {
        std::mem::forget(self.file);
    }

    /// The new process: takes the lock its predecessor sent, after checking
    /// the descriptor is `state_dir`'s lock file, and writes its pid into
    /// it. The lock is already held (by the shared open file): taking it
    /// again on that file cannot fail for another holder.
    pub fn inherit(fd: OwnedFd, state_dir: &Path) -> Result<Self, StateLockError> {
        let io = |source| StateLockError::Io {
            dir: state_dir.to_path_buf(),
            source,
        };
        let file = File::from(fd);
        let sent = file.metadata().map_err(io)?;
        let ours = std::fs::metadata(state_dir.join(LOCK_FILE)).map_err(io)?;
        if (sent.dev(), sent.ino()) != (ours.dev(), ours.ino()) {
            return Err(io(std::io::Error::other(
                "the predecessor sent another file than this state_dir's lock",
            )));
        }
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(StateLockError::Busy {
                    dir: state_dir.to_path_buf(),
                    holder: None,
                })
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        };
        // Failing here must not drop the lock: dropping a `Flock` unlocks
        // the open file, for the predecessor too. The pid is informational.
        if let Err(e) = write_pid(&mut file) {
            tracing::warn!(error = %e, "cannot write this process's pid into the state_dir lock file");
        }
        Ok(Self { file })
    }
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())
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
    write_pid(&mut file).map_err(io)?;
    Ok(StateLock { file })
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

    #[test]
    fn a_handed_over_lock_stays_held_by_the_successor_alone() {
        let dir = std::env::temp_dir().join(format!("cutover-lock-handover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let old = acquire(&dir).unwrap();
        // What the predecessor sends: a descriptor of the same open file.
        let sent = old.as_fd().try_clone_to_owned().unwrap();
        old.hand_over();
        let new = StateLock::inherit(sent, &dir).expect("the successor takes the sent lock");
        assert!(
            matches!(acquire(&dir), Err(StateLockError::Busy { .. })),
            "still held after the old process let go"
        );
        drop(new);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn another_file_than_the_lock_is_refused() {
        let dir = std::env::temp_dir().join(format!("cutover-lock-other-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(LOCK_FILE), "").unwrap();
        let other = File::create(dir.join("other")).unwrap();
        let err = StateLock::inherit(other.into(), &dir).unwrap_err();
        assert!(err.to_string().contains("another file"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
