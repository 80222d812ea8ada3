//! Upgrading cutover itself (SPEC §10), as the admin API and the signal
//! handler see it: a request ([`Upgrades::request`]) is checked, marked
//! running on the controller (every verb gets 409 meanwhile), and handed to
//! the orchestrator that `cutover up` runs (src/upgrade/), which reports its
//! progress into the request's [`UpgradeLog`]. Followers read that log as
//! server-sent events (`GET /upgrades/{id}/events`), like a deployment's.
//!
//! The processes, sockets and the hand-over itself are the orchestrator's;
//! nothing here touches them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{IntCounterVec, Opts, Registry};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::deploy::gate::UpgradeGuard;
use crate::deploy::{Controller, DeployError};

/// Upgrades kept for `GET /upgrades/{id}/events`.
const RECENT: usize = 20;

/// Why an upgrade was not started.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("{0}")]
    BadBinary(String),
    #[error(transparent)]
    Refused(#[from] DeployError),
    #[error("cutover cannot upgrade itself right now: its upgrade task is not running")]
    Unavailable,
    #[error("{0}")]
    NotHere(String),
}

/// How an upgrade ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeOutcome {
    /// The new process serves; this one drains and exits.
    Succeeded,
    /// The new process was stopped; this one serves on.
    Failed,
}

impl UpgradeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeOutcome::Succeeded => "succeeded",
            UpgradeOutcome::Failed => "failed",
        }
    }
}

/// One progress event.
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeEvent {
    /// 0, 1, 2, … within the upgrade.
    pub seq: u64,
    /// RFC 3339, milliseconds.
    pub at: String,
    /// `step` or `outcome`.
    pub kind: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<UpgradeOutcome>,
}

/// The progress of one upgrade.
#[derive(Debug)]
pub struct UpgradeLog {
    id: String,
    binary: PathBuf,
    events: Mutex<Vec<UpgradeEvent>>,
    changed: watch::Sender<()>,
}

impl UpgradeLog {
    fn new(id: String, binary: PathBuf) -> Self {
        Self {
            id,
            binary,
            events: Mutex::new(Vec::new()),
            changed: watch::channel(()).0,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The new binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Records a step (also logged).
    pub fn step(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(upgrade = %self.id, "{message}");
        self.push("step", message, None);
    }

    /// Records the outcome; later events are ignored.
    pub fn finish(&self, outcome: UpgradeOutcome, message: impl Into<String>) {
        let message = message.into();
        match outcome {
            UpgradeOutcome::Succeeded => tracing::info!(upgrade = %self.id, "upgrade succeeded: {message}"),
            UpgradeOutcome::Failed => tracing::error!(upgrade = %self.id, "upgrade failed: {message}"),
        }
        self.push("outcome", message, Some(outcome));
    }

    /// The outcome, once there is one.
    pub fn outcome(&self) -> Option<UpgradeOutcome> {
        self.lock().last().and_then(|e| e.outcome)
    }

    /// Events from number `from` on, and whether the upgrade has ended.
    pub fn events_since(&self, from: usize) -> (Vec<UpgradeEvent>, bool) {
        let events = self.lock();
        let ended = events.last().is_some_and(|e| e.outcome.is_some());
        (events.get(from..).map(<[_]>::to_vec).unwrap_or_default(), ended)
    }

    /// Fires after every new event.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    fn push(&self, kind: &'static str, message: String, outcome: Option<UpgradeOutcome>) {
        let mut events = self.lock();
        if events.last().is_some_and(|e| e.outcome.is_some()) {
            return;
        }
        let seq = events.len() as u64;
        events.push(UpgradeEvent {
            seq,
            at: crate::deploy::record::now_rfc3339(),
            kind,
            message,
            outcome,
        });
        drop(events);
        self.changed.send_replace(());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<UpgradeEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An upgrade handed to the orchestrator. Verbs stay refused until `guard`
/// is dropped.
pub struct UpgradeRequest {
    pub log: Arc<UpgradeLog>,
    pub guard: UpgradeGuard,
}

/// The upgrades of this process: requests, their logs, their metric.
pub struct Upgrades {
    controller: Arc<Controller>,
    /// The binary this process was started from (read at start-up: once a
    /// package manager replaced the file, `/proc/self/exe` names a deleted
    /// file, while the path names the new one, which is what SIGUSR2 wants).
    own_binary: PathBuf,
    orchestrator: mpsc::Sender<UpgradeRequest>,
    recent: Mutex<VecDeque<Arc<UpgradeLog>>>,
    next: AtomicU64,
    total: IntCounterVec,
}

impl Upgrades {
    /// Upgrades through `controller`'s gate, handed to whoever holds the
    /// receiver (the orchestrator). `own_binary`: the default new binary.
    pub fn new(
        controller: Arc<Controller>,
        own_binary: PathBuf,
    ) -> prometheus::Result<(Arc<Self>, mpsc::Receiver<UpgradeRequest>)> {
        let total = IntCounterVec::new(
            Opts::new(
                "cutover_upgrades_total",
                "Upgrades of cutover itself, by outcome (the new process counts a success, the old one a failure)",
            ),
            &["outcome"],
        )?;
        for outcome in [UpgradeOutcome::Succeeded, UpgradeOutcome::Failed] {
            total.with_label_values(&[outcome.as_str()]);
        }
        // One at a time: the controller refuses a second one anyway.
        let (orchestrator, requests) = mpsc::channel(1);
        let upgrades = Arc::new(Self {
            controller,
            own_binary,
            orchestrator,
            recent: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(1),
            total,
        });
        Ok((upgrades, requests))
    }

    /// Registers `cutover_upgrades_total`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.total.clone()))
    }

    /// Counts an upgrade's outcome.
    pub fn count(&self, outcome: UpgradeOutcome) {
        self.total.with_label_values(&[outcome.as_str()]).inc();
    }

    /// The binary an upgrade without `--binary` starts.
    pub fn own_binary(&self) -> &Path {
        &self.own_binary
    }

    /// Starts an upgrade to `binary` (default: [`Upgrades::own_binary`]).
    /// Refused when the binary is not an absolute path to an executable
    /// regular file, while a deployment or another upgrade runs, and while
    /// cutover stops.
    pub fn request(&self, binary: Option<PathBuf>) -> Result<Arc<UpgradeLog>, UpgradeError> {
        if let Some(why) = cannot_outlive_the_old_process() {
            return Err(UpgradeError::NotHere(why));
        }
        let binary = binary.unwrap_or_else(|| self.own_binary.clone());
        check_binary(&binary)?;
        let id = format!(
            "upgrade-{}-{}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::SeqCst)
        );
        let guard = self.controller.begin_upgrade(&id)?;
        let log = Arc::new(UpgradeLog::new(id, binary));
        self.orchestrator
            .try_send(UpgradeRequest {
                log: Arc::clone(&log),
                guard,
            })
            .map_err(|_| UpgradeError::Unavailable)?;
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.push_back(Arc::clone(&log));
        while recent.len() > RECENT {
            recent.pop_front();
        }
        Ok(log)
    }

    /// A recent upgrade's log.
    pub fn get(&self, id: &str) -> Option<Arc<UpgradeLog>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().find(|l| l.id() == id).cloned()
    }
}

/// Why a new process could not outlive this one, if it could not: the old
/// process exits at the end of an upgrade, and when it is a PID namespace's
/// init (a container's entrypoint), or the only child of a minimal init
/// that exits with it (tini, dumb-init), its exit ends the container, the
/// new process and the apps with it.
fn cannot_outlive_the_old_process() -> Option<String> {
    const MINIMAL_INITS: [&str; 5] = ["tini", "dumb-init", "docker-init", "catatonit", "s6-svscan"];
    if std::process::id() == 1 {
        return Some(
            "cutover runs as PID 1 (a container's entrypoint): its exit would end the container; \
             restart the container to upgrade, or run cutover under a supervisor"
                .into(),
        );
    }
    let parent = std::os::unix::process::parent_id();
    let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    let init = init.trim();
    (parent == 1 && MINIMAL_INITS.contains(&init)).then(|| {
        format!(
            "cutover's parent is {init}, which exits when cutover does: an upgrade would end the container; \
             restart the container to upgrade"
        )
    })
}

/// An absolute path to an executable regular file (after symlinks).
fn check_binary(binary: &Path) -> Result<(), UpgradeError> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |why: String| {
        Err(UpgradeError::BadBinary(format!(
            "cannot upgrade to {}: {why}",
            binary.display()
        )))
    };
    if !binary.is_absolute() {
        return bad("not an absolute path".into());
    }
    match std::fs::metadata(binary) {
        Err(e) => bad(e.to_string()),
        Ok(meta) if !meta.is_file() => bad("not a regular file".into()),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => bad("not executable".into()),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_executable_regular_files_are_accepted() {
        assert!(check_binary(Path::new("/bin/sh")).is_ok());
        let refused = |p: &str| check_binary(Path::new(p)).unwrap_err().to_string();
        assert!(refused("sh").contains("not an absolute path"));
        assert!(refused("/").contains("not a regular file"));
        assert!(refused("/etc/hostname-that-does-not-exist").contains("No such file"));
        let dir = std::env::temp_dir().join(format!("cutover-upgrade-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert!(refused(plain.to_str().unwrap()).contains("not executable"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn events_after_the_outcome_are_ignored() {
        let log = UpgradeLog::new("upgrade-1-1".into(), PathBuf::from("/bin/true"));
        log.step("starting");
        log.finish(UpgradeOutcome::Failed, "exited");
        log.step("late");
        let (events, ended) = log.events_since(0);
        assert!(ended);
        assert_eq!(events.len(), 2);
        assert_eq!(log.outcome(), Some(UpgradeOutcome::Failed));
        assert_eq!(log.events_since(2).0.len(), 0);
        assert_eq!(log.events_since(99).0.len(), 0);
    }
}
