//! The journal in `state_dir`: what was deployed, what is staged, and the
//! deployment history. Every write is atomic (temp file, fsync, rename,
//! fsync of the directory), so a crash leaves the old file or the new one,
//! never half of either.
//!
//! - `journal.json`: per app, the config text it was last deployed from
//!   (and its version); staged configs; the config whose routes apply; the
//!   next deployment number; the operator's switches per app.
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

use crate::api::progressive::AppSwitches;
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
    /// Per app: the number the next clone's name gets (`web-clone-<n>`),
    /// so no instance name is reused, not even across restarts.
    #[serde(default)]
    pub next_clone: BTreeMap<String, u64>,
    /// Running deployments that committed a version: deployment id →
    /// which one. Written in the same atomic write as `current`, so after
    /// a kill between commit and finish the journal still tells what serves.
    #[serde(default)]
    pub commits: BTreeMap<String, Committed>,
    /// Per app: the definition that served before the current one, written
    /// with every commit that changes the version (`cutover rollback`
    /// deploys it).
    #[serde(default)]
    pub previous: BTreeMap<String, AppSource>,
    /// Per app: the number the next canary's name gets (`web-canary-<n>`).
    #[serde(default)]
    pub next_canary: BTreeMap<String, u64>,
    /// Per app: the number the next green instance's name gets (`web-green-<n>`).
    #[serde(default)]
    pub next_green: BTreeMap<String, u64>,
    /// Per app: the operator's switches (pause, maintenance) in effect; an
    /// app with none is absent. Restored at start-up, so a restarted
    /// cutover keeps them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub switches: BTreeMap<String, AppSwitches>,
}

/// Which family of never-reused instance names a number is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// `web-clone-<n>`.
    Clone,
    /// `web-canary-<n>`.
    Canary,
    /// `web-green-<n>`.
    Green,
}

/// Which version of a deployment serves, once it committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Committed {
    /// The version being deployed.
    Target,
    /// The version that served before (a rollback committed it).
    Previous,
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

    /// Changes the state and writes it atomically. The change is applied
    /// to a copy, written, and only then kept: a failed write leaves both
    /// the file and the memory as they were.
    pub fn update(&self, change: impl FnOnce(&mut JournalState)) -> Result<(), JournalError> {
        let mut state = self.lock();
        let mut next = state.clone();
        change(&mut next);
        let bytes = serde_json::to_vec_pretty(&next).map_err(|source| JournalError::Corrupt {
            path: self.dir.join("journal.json"),
            source,
        })?;
        write_atomic(&self.dir.join("journal.json"), &bytes)?;
        *state = next;
        Ok(())
    }

    /// Takes `count` clone numbers of `app`: the first of them (the rest
    /// follow it).
    pub fn take_clone_numbers(&self, app: &str, count: u64) -> Result<u64, JournalError> {
        let mut first = 0;
        self.update(|s| {
            let next = s.next_clone.entry(app.to_string()).or_insert(0);
            first = *next;
            *next = next.saturating_add(count);
        })?;
        Ok(first)
    }

    /// Takes `count` numbers of `app`'s `kind` of instance names: the first
    /// of them (the rest follow it).
    pub fn take_instance_numbers(&self, app: &str, kind: NameKind, count: u64) -> Result<u64, JournalError> {
        let mut first = 0;
        self.update(|s| {
            let counters = match kind {
                NameKind::Clone => &mut s.next_clone,
                NameKind::Canary => &mut s.next_canary,
                NameKind::Green => &mut s.next_green,
            };
            let next = counters.entry(app.to_string()).or_insert(0);
            first = *next;
            *next = next.saturating_add(count);
        })?;
        Ok(first)
    }

    /// Takes the next deployment number.
    pub fn next_deployment_number(&self) -> Result<u64, JournalError> {
        self.take_deployment_numbers(1)
    }

    /// Takes `count` deployment numbers in one write: the first of them
    /// (the rest follow it).
    pub fn take_deployment_numbers(&self, count: u64) -> Result<u64, JournalError> {
        let mut first = 0;
        self.update(|s| {
            first = s.next_deployment.saturating_add(1);
            s.next_deployment = s.next_deployment.saturating_add(count);
        })?;
        Ok(first)
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
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        if !ends_with_newline(&mut file).map_err(io)? {
            // A torn last line (a crash mid-append): the record starts on
            // a line of its own, so the torn one stays alone and is skipped.
            line.insert(0, b'\n');
        }
        file.write_all(&line).map_err(io)?;
        file.sync_data().map_err(io)?;
        let _ = fs::remove_file(self.running_path(&deployment.id));
        if self.lock().commits.contains_key(&deployment.id) {
            self.update(|s| {
                s.commits.remove(&deployment.id);
            })?;
        }
        Ok(())
    }

    /// Finished deployments, oldest first. Lines that do not parse (a torn
    /// line after a crash) are skipped with a warning.
    pub fn history(&self) -> Vec<Deployment> {
        let path = self.dir.join("history.jsonl");
        let Ok(file) = File::open(&path) else {
            return Vec::new();
        };
        BufReader::new(file)
            .split(b'\n')
            .map_while(Result::ok)
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .filter_map(|(n, line)| match serde_json::from_slice(&line) {
                Ok(deployment) => Some(deployment),
                Err(e) => {
                    tracing::warn!(file = %path.display(), line = n + 1, error = %e, "skipping a torn history line");
                    None
                }
            })
            .collect()
    }

    /// Deployments that were running when cutover last stopped. Temporary
    /// files a crash left mid-write are removed (the record they were
    /// replacing is still there).
    pub fn interrupted(&self) -> Vec<Deployment> {
        let Ok(entries) = fs::read_dir(self.dir.join("deployments")) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for path in entries.filter_map(Result::ok).map(|e| e.path()) {
            match path.extension().and_then(|e| e.to_str()) {
                Some("json") => match fs::read(&path).map(|b| serde_json::from_slice::<Deployment>(&b)) {
                    Ok(Ok(deployment)) => found.push(deployment),
                    Ok(Err(e)) => {
                        tracing::warn!(file = %path.display(), error = %e, "unreadable running deployment record; removed");
                        let _ = fs::remove_file(&path);
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "cannot read a running deployment record")
                    }
                },
                Some("tmp") => {
                    let _ = fs::remove_file(&path);
                }
                _ => {}
            }
        }
        found
    }

    fn running_path(&self, id: &str) -> PathBuf {
        self.dir.join("deployments").join(format!("{id}.json"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `file` is empty or ends with a newline.
fn ends_with_newline(file: &mut File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
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

    fn record(id: &str) -> Deployment {
        Deployment::new(id.into(), "web", Strategy::Rolling, "a".into(), "b".into())
    }

    #[test]
    fn a_record_appended_after_a_torn_line_is_kept() {
        let d = dir("torn-append");
        let j = Journal::open(&d).unwrap();
        j.append_history(&record("web-1")).unwrap();
        let mut f = OpenOptions::new().append(true).open(d.join("history.jsonl")).unwrap();
        f.write_all(b"{\"id\": \"web-2\", \"ap").unwrap();
        j.append_history(&record("web-3")).unwrap();
        let ids: Vec<String> = j.history().into_iter().map(|d| d.id).collect();
        assert_eq!(ids, ["web-1", "web-3"]);
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn a_stale_temporary_record_is_removed_not_replayed() {
        let d = dir("stale-tmp");
        let j = Journal::open(&d).unwrap();
        let tmp = d.join("deployments").join("web-1.tmp");
        fs::write(&tmp, serde_json::to_vec(&record("web-1")).unwrap()).unwrap();
        assert!(j.interrupted().is_empty());
        assert!(!tmp.exists());
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn a_failed_write_changes_neither_file_nor_memory() {
        let d = dir("failed-write");
        let j = Journal::open(&d).unwrap();
        j.update(|s| s.next_deployment = 7).unwrap();
        // The temporary file's place is taken by a directory: the write fails.
        fs::create_dir_all(d.join("journal.tmp")).unwrap();
        assert!(j.update(|s| s.next_deployment = 8).is_err());
        assert_eq!(j.state().next_deployment, 7);
        assert_eq!(Journal::open(&d).unwrap().state().next_deployment, 7);
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn clone_numbers_are_never_taken_twice_even_after_reopen() {
        let d = dir("clones");
        let j = Journal::open(&d).unwrap();
        assert_eq!(j.take_clone_numbers("web", 2).unwrap(), 0);
        assert_eq!(j.take_clone_numbers("web", 2).unwrap(), 2);
        assert_eq!(j.take_clone_numbers("api", 1).unwrap(), 0);
        let j = Journal::open(&d).unwrap();
        assert_eq!(j.take_clone_numbers("web", 1).unwrap(), 4);
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn canary_and_green_numbers_are_counted_apart_and_survive_reopen() {
        let d = dir("names");
        let j = Journal::open(&d).unwrap();
        assert_eq!(j.take_instance_numbers("web", NameKind::Canary, 2).unwrap(), 0);
        assert_eq!(j.take_instance_numbers("web", NameKind::Green, 1).unwrap(), 0);
        assert_eq!(j.take_instance_numbers("web", NameKind::Clone, 1).unwrap(), 0);
        let j = Journal::open(&d).unwrap();
        assert_eq!(j.take_instance_numbers("web", NameKind::Canary, 1).unwrap(), 2);
        assert_eq!(j.take_instance_numbers("web", NameKind::Green, 1).unwrap(), 1);
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn a_journal_written_before_previous_existed_still_opens() {
        let d = dir("old-format");
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("journal.json"),
            r#"{"current": {}, "staged": {}, "routes_config": null, "next_deployment": 3}"#,
        )
        .unwrap();
        let j = Journal::open(&d).unwrap();
        assert!(j.state().previous.is_empty());
        assert_eq!(j.state().next_deployment, 3);
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn a_commit_marker_lives_until_the_deployment_is_in_the_history() {
        let d = dir("commits");
        let j = Journal::open(&d).unwrap();
        j.update(|s| {
            s.commits.insert("web-1".into(), Committed::Target);
        })
        .unwrap();
        assert_eq!(Journal::open(&d).unwrap().state().commits["web-1"], Committed::Target);
        j.append_history(&record("web-1")).unwrap();
        assert!(Journal::open(&d).unwrap().state().commits.is_empty());
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn switches_survive_reopen_and_older_journals_have_none() {
        use crate::api::progressive::Paused;
        let d = dir("switches");
        fs::create_dir_all(&d).unwrap();
        // Written before switches existed.
        fs::write(
            d.join("journal.json"),
            r#"{"current": {}, "staged": {}, "routes_config": null, "next_deployment": 3}"#,
        )
        .unwrap();
        let j = Journal::open(&d).unwrap();
        assert!(j.state().switches.is_empty());
        let paused = AppSwitches {
            paused: Some(Paused {
                since: "2026-01-01T00:00:00.000Z".into(),
                max_pause_ms: 60_000,
            }),
            maintenance: None,
        };
        j.update(|s| {
            s.switches.insert("web".into(), paused.clone());
        })
        .unwrap();
        let j = Journal::open(&d).unwrap();
        assert_eq!(j.state().switches["web"], paused);
        assert_eq!(j.state().next_deployment, 3);
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
