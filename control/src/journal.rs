//! The journal in `state_dir`: what was deployed, what is staged, and the
//! deployment history. Every write is atomic (temp file, fsync, rename,
//! fsync of the directory), so a crash leaves the old file or the new one,
//! never half of either.
//!
//! - `journal.json`: per app, the config text it was last deployed from
//!   (and its version); staged configs; the config whose routes apply; the
//!   next deployment number.
//! - `deployments/<id>.json`: a running deployment, rewritten on every
//!   phase transition.
//! - `history.jsonl`: finished deployments, one JSON object per line,
//!   append-only.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::deploy::record::Deployment;

/// A config text and the version of one app in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSource {
    pub version: String,
    /// The whole `deploy.yaml` text the app's definition comes from.
    pub config: String,
}

/// What `journal.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JournalState {
    /// Per app: the definition that serves.
    pub current: BTreeMap<String, AppSource>,
    /// Per app: a pushed definition waiting for `cutover deploy`.
    pub staged: BTreeMap<String, AppSource>,
    /// The config text whose routes and proxy settings apply.
    pub routes_config: Option<String>,
    pub next_deployment: u64,
}

/// Errors reading or writing the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("journal {path} is corrupt: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

/// The journal of one `state_dir`.
pub struct Journal {
    dir: PathBuf,
    state: Mutex<JournalState>,
}

impl Journal {
    /// Opens (or creates) the journal in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        fs::create_dir_all(state_dir.join("deployments")).map_err(io(state_dir))?;
        let path = state_dir.join("journal.json");
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| JournalError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => JournalState::default(),
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(Self {
            dir: state_dir.to_path_buf(),
            state: Mutex::new(state),
        })
    }

    /// A copy of the state.
    pub fn state(&self) -> JournalState {
        self.lock().clone()
    }

    /// Changes the state and writes it atomically.
    pub fn update(&self, change: impl FnOnce(&mut JournalState)) -> Result<(), JournalError> {
        let mut state = self.lock();
        change(&mut state);
        let bytes = serde_json::to_vec_pretty(&*state).map_err(|source| JournalError::Corrupt {
            path: self.dir.join("journal.json"),
            source,
        })?;
        write_atomic(&self.dir.join("journal.json"), &bytes)
    }

    /// Takes the next deployment number.
    pub fn next_deployment_number(&self) -> Result<u64, JournalError> {
        let mut n = 0;
        self.update(|s| {
            s.next_deployment += 1;
            n = s.next_deployment;
        })?;
        Ok(n)
    }

    /// Rewrites a running deployment's record.
    pub fn save_running(&self, deployment: &Deployment) -> Result<(), JournalError> {
        let bytes = serde_json::to_vec(deployment).map_err(|source| JournalError::Corrupt {
            path: self.running_path(&deployment.id),
            source,
        })?;
        write_atomic(&self.running_path(&deployment.id), &bytes)
    }

    /// Appends a finished deployment to the history and drops its running
    /// record.
    pub fn append_history(&self, deployment: &Deployment) -> Result<(), JournalError> {
        let path = self.dir.join("history.jsonl");
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(deployment).map_err(|source| JournalError::Corrupt {
            path: path.clone(),
            source,
        })?;
        line.push(b'\n');
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        file.write_all(&line).map_err(io)?;
        file.sync_data().map_err(io)?;
        let _ = fs::remove_file(self.running_path(&deployment.id));
        Ok(())
    }

    /// Finished deployments, oldest first. Lines that do not parse (a torn
    /// last line after a crash) are skipped.
    pub fn history(&self) -> Vec<Deployment> {
        let Ok(file) = File::open(self.dir.join("history.jsonl")) else {
            return Vec::new();
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect()
    }

    /// Deployments that were running when cutover last stopped.
    pub fn interrupted(&self) -> Vec<Deployment> {
        let Ok(entries) = fs::read_dir(self.dir.join("deployments")) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }

    fn running_path(&self, id: &str) -> PathBuf {
        self.dir.join("deployments").join(format!("{id}.json"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the
/// new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cutover-journal-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn state_survives_reopen() {
        let d = dir("reopen");
        let j = Journal::open(&d).unwrap();
        j.update(|s| {
            s.current.insert(
                "web".into(),
                AppSource {
                    version: "abc".into(),
                    config: "x".into(),
                },
            );
        })
        .unwrap();
        assert_eq!(j.next_deployment_number().unwrap(), 1);
        let j = Journal::open(&d).unwrap();
        assert_eq!(j.state().current["web"].version, "abc");
        assert_eq!(j.next_deployment_number().unwrap(), 2);
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn history_is_appended_and_running_records_are_found() {
        let d = dir("history");
        let j = Journal::open(&d).unwrap();
        let a = Deployment::new("web-1".into(), "web", Strategy::Rolling, "a".into(), "b".into());
        j.save_running(&a).unwrap();
        assert_eq!(j.interrupted().len(), 1);
        j.append_history(&a).unwrap();
        assert!(j.interrupted().is_empty());
        // A torn last line is ignored.
        let mut f = OpenOptions::new().append(true).open(d.join("history.jsonl")).unwrap();
        f.write_all(b"{\"id\": \"web-2\", \"ap").unwrap();
        let history = j.history();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].id, "web-1");
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn a_corrupt_journal_is_a_clear_error() {
        let d = dir("corrupt");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("journal.json"), "{not json").unwrap();
        let err = Journal::open(&d).err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
        let _ = fs::remove_dir_all(d);
    }
}
