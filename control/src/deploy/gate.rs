//! The one serialised path for every verb that changes an app (push and
//! deploy today; rollback, abort, pause, maintenance join it the same way).
//!
//! A verb takes [`Controller::exclusive`], which serialises it with every
//! other verb of the controller, then, holding it:
//! 1. checks every conflict ([`Exclusive::refuse_busy`],
//!    [`Exclusive::running`]) and everything that can fail (parsing, the
//!    journal write that reserves deployment numbers) before changing
//!    anything, so a refused verb (409 with the running deployment's id)
//!    leaves routes, journal and processes as they were;
//! 2. applies its change (journal first, then memory, then processes and
//!    the route table);
//! 3. hands long work to a background task registered in the running map
//!    ([`Controller::start_deployment`]), whose [`RunningGuard`] releases
//!    the app on every path out of the task: normal end, error, panic or
//!    abort at shutdown.
//!
//! Verbs are short (no `await` under the gate): the gate is a plain mutex.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use super::phase::Outcome;
use super::record::DeploymentLog;
use super::{Controller, DeployError};
use crate::config::AppConfig;
use crate::journal::Committed;

/// An app's running operation.
pub(super) struct RunningEntry {
    pub log: Arc<DeploymentLog>,
    /// The definition the operation brings the app to.
    pub target: Arc<AppConfig>,
    /// Aborts the operation's task (at shutdown).
    pub task: Option<tokio::task::AbortHandle>,
}

/// Proof that the caller holds the controller's gate.
pub struct Exclusive<'a> {
    controller: &'a Controller,
    _gate: MutexGuard<'a, ()>,
}

impl Controller {
    /// Serialises the caller with every other verb of this controller.
    pub fn exclusive(&self) -> Exclusive<'_> {
        Exclusive {
            controller: self,
            _gate: self.gate.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

impl Exclusive<'_> {
    /// Refuses (409 with the running deployment's id) when any of `apps`
    /// has an operation running.
    pub fn refuse_busy<'s>(&self, apps: impl IntoIterator<Item = &'s String>) -> Result<(), DeployError> {
        for app in apps {
            // The running map is never held while a record is locked
            // (finishing a record frees its app under the record's lock).
            let busy = self.controller.lock_running().get(app).map(|e| Arc::clone(&e.log));
            if let Some(log) = busy {
                return Err(DeployError::Conflict {
                    app: app.clone(),
                    id: log.id(),
                });
            }
        }
        Ok(())
    }

    /// The running operation of `app`: its id and the definition it brings
    /// the app to.
    pub fn running(&self, app: &str) -> Option<(String, Arc<AppConfig>)> {
        let entry = self
            .controller
            .lock_running()
            .get(app)
            .map(|e| (Arc::clone(&e.log), Arc::clone(&e.target)));
        entry.map(|(log, target)| (log.id(), target))
    }

    /// Refuses every new verb once cutover is stopping, and while it
    /// upgrades itself.
    pub fn refuse_when_stopping(&self, app: &str) -> Result<(), DeployError> {
        if self.controller.stopping.load(Ordering::SeqCst) {
            tracing::debug!(app, "refused: cutover is stopping");
            return Err(DeployError::Stopping);
        }
        if let Some(upgrade) = self.controller.lock_upgrading().clone() {
            tracing::debug!(app, %upgrade, "refused: cutover is upgrading itself");
            return Err(DeployError::Upgrading(upgrade));
        }
        Ok(())
    }
}

/// Held while cutover upgrades itself (SPEC §10): every verb gets 409
/// meanwhile. Dropped when the upgrade failed (verbs are taken again); the
/// new process holds its own until its predecessor has exited.
#[must_use = "the upgrade ends when the guard is dropped"]
pub struct UpgradeGuard {
    controller: Arc<Controller>,
}

impl Drop for UpgradeGuard {
    fn drop(&mut self) {
        *self.controller.lock_upgrading() = None;
    }
}

impl Controller {
    /// Marks an upgrade of cutover itself, described by `what`, as running.
    /// Refused (409) while cutover stops, while any deployment runs (with
    /// its id), and during another upgrade.
    pub fn begin_upgrade(self: &Arc<Self>, what: &str) -> Result<UpgradeGuard, DeployError> {
        let gate = self.exclusive();
        gate.refuse_when_stopping("upgrade")?;
        let running = self
            .lock_running()
            .iter()
            .next()
            .map(|(app, e)| (app.clone(), Arc::clone(&e.log)));
        if let Some((app, log)) = running {
            return Err(DeployError::Conflict { app, id: log.id() });
        }
        // A removed app's instances drain and stop in the background; they
        // belong to no app, so nothing would hand them over.
        if let Some(app) = self.lock_retiring().iter().next().cloned() {
            return Err(DeployError::Retiring(app));
        }
        *self.lock_upgrading() = Some(what.to_string());
        drop(gate);
        Ok(UpgradeGuard {
            controller: Arc::clone(self),
        })
    }

    /// The upgrade running, if any.
    pub fn upgrading(&self) -> Option<String> {
        self.lock_upgrading().clone()
    }

    fn lock_upgrading(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.upgrading.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Owned by a deployment's task: however the task ends (its outcome, an
/// error, a panic, an abort at shutdown), dropping it records the outcome
/// (`outcome`, set by the task when the driver returned, or the outcome of
/// a cut), counts it and frees the app in one step, then journals it.
pub(super) struct RunningGuard {
    pub controller: Arc<Controller>,
    pub app: String,
    pub target: Arc<AppConfig>,
    pub log: Arc<DeploymentLog>,
    pub outcome: Option<Outcome>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let outcome = match self.outcome {
            Some(outcome) => outcome,
            None => {
                let outcome = self.controller.cut_outcome(&self.log.id());
                self.log
                    .error(None, format!("deployment cut; recorded as {}", outcome.as_str()));
                outcome
            }
        };
        self.controller.finished(&self.app, &self.target, outcome, &self.log);
    }
}

impl Controller {
    /// The outcome of a deployment cut before its end: what its commit
    /// marker in the journal says serves; otherwise `interrupted` when
    /// cutover is stopping and `failed` when the task itself broke.
    pub(super) fn cut_outcome(&self, id: &str) -> Outcome {
        match self.journal.state().commits.get(id) {
            Some(committed) => committed_outcome(*committed),
            None if self.stopping.load(Ordering::SeqCst) => Outcome::Interrupted,
            None => Outcome::Failed,
        }
    }

    /// Stops every running deployment (SIGTERM): no new verb is admitted,
    /// each task is aborted (its guard records `interrupted`, or what its
    /// commit says, and journals it), and this returns once every app is
    /// released.
    pub async fn stop_deployments(&self) {
        let tasks: Vec<tokio::task::AbortHandle> = {
            let _gate = self.exclusive();
            self.stopping.store(true, Ordering::SeqCst);
            self.lock_running().values().filter_map(|e| e.task.clone()).collect()
        };
        for task in &tasks {
            task.abort();
        }
        // Aborted tasks drop their guard on their next poll; wait for it.
        let deadline = tokio::time::Instant::now().checked_add(std::time::Duration::from_secs(10));
        while !self.lock_running().is_empty() {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                tracing::warn!("deployments still running at shutdown");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// The outcome a commit marker stands for.
pub(super) fn committed_outcome(committed: Committed) -> Outcome {
    match committed {
        Committed::Target => Outcome::Succeeded,
        Committed::Previous => Outcome::RolledBack,
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::Strategy;
    use crate::deploy::metrics::DeployMetrics;
    use crate::deploy::record::Deployment;
    use crate::journal::Journal;
    use crate::routing::Routing;
    use crate::supervisor::Supervisor;

    struct Fixture {
        controller: Arc<Controller>,
        journal: Arc<Journal>,
        registry: prometheus::Registry,
        dir: PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture(tag: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("cutover-gate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let source =
            "apps:\n  web:\n    command: [\"sleep\", \"60\"]\nroutes:\n  - { host: \"*\", path: \"/\", app: web }\n";
        let config = crate::config::parse(source, "deploy.yaml", Path::new("/")).unwrap();
        let registry = prometheus::Registry::new();
        let table = cutover_proxy::TableHandle::new(cutover_proxy::RouteTable::default());
        let routing = Routing::new(table, cutover_proxy::ProxyMetrics::new(&registry).unwrap());
        let supervisor = Arc::new(Supervisor::new(routing, &dir));
        let journal = Arc::new(Journal::open(&dir).unwrap());
        let controller = Controller::new(
            supervisor,
            Arc::clone(&journal),
            DeployMetrics::new(&registry).unwrap(),
            dir.clone(),
            config,
            Default::default(),
        );
        Fixture {
            controller,
            journal,
            registry,
            dir,
        }
    }

    /// Registers a running deployment of `web` whose task is `work`.
    fn run_task<F>(f: &Fixture, id: &str, work: F) -> (Arc<DeploymentLog>, tokio::task::JoinHandle<()>)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let target = Arc::new(f.controller.lock_active().config.apps["web"].clone());
        let log = Arc::new(DeploymentLog::new(Deployment::new(
            id.into(),
            "web",
            Strategy::Rolling,
            "a".into(),
            "b".into(),
        )));
        f.controller.lock_running().insert(
            "web".into(),
            RunningEntry {
                log: Arc::clone(&log),
                target: Arc::clone(&target),
                task: None,
            },
        );
        let guard = RunningGuard {
            controller: Arc::clone(&f.controller),
            app: "web".into(),
            target,
            log: Arc::clone(&log),
            outcome: None,
        };
        let task = tokio::spawn(async move {
            let _guard = guard;
            work.await;
        });
        f.controller.lock_running().get_mut("web").unwrap().task = Some(task.abort_handle());
        (log, task)
    }

    fn counted(f: &Fixture, outcome: &str) -> u64 {
        crate::deploy::metrics::outcome_count(&f.registry, outcome) as u64
    }

    #[tokio::test]
    async fn a_panicking_deploy_task_releases_the_app_as_failed() {
        let f = fixture("panic");
        let (log, task) = run_task(&f, "web-1", async { panic!("the deploy task broke") });
        assert!(task.await.unwrap_err().is_panic());
        assert!(f.controller.running().is_empty(), "the app is free again");
        assert_eq!(log.snapshot().outcome, Some(Outcome::Failed));
        assert_eq!(f.journal.history().last().unwrap().outcome, Some(Outcome::Failed));
        assert_eq!(counted(&f, "failed"), 1);
        assert!(f.controller.exclusive().refuse_busy(&["web".to_string()]).is_ok());
    }

    #[tokio::test]
    async fn a_stop_interrupts_running_deployments_and_admits_nothing_new() {
        let f = fixture("stop");
        let (log, _task) = run_task(&f, "web-1", std::future::pending());
        assert!(matches!(
            f.controller.exclusive().refuse_busy(&["web".to_string()]),
            Err(DeployError::Conflict { id, .. }) if id == "web-1"
        ));
        f.controller.stop_deployments().await;
        assert!(f.controller.running().is_empty());
        let record = log.snapshot();
        assert_eq!(record.outcome, Some(Outcome::Interrupted));
        assert_eq!(record.events.last().unwrap().outcome, Some(Outcome::Interrupted));
        assert_eq!(f.journal.history().last().unwrap().outcome, Some(Outcome::Interrupted));
        assert_eq!(counted(&f, "interrupted"), 1);
        assert!(f.controller.deploy(Some("web"), None).is_err(), "no verb once stopping");
    }

    #[tokio::test]
    async fn a_deployment_cut_after_its_commit_gets_the_committed_outcome() {
        let f = fixture("committed");
        f.journal
            .update(|s| {
                s.commits.insert("web-1".into(), Committed::Target);
            })
            .unwrap();
        let (log, _task) = run_task(&f, "web-1", std::future::pending());
        f.controller.stop_deployments().await;
        assert_eq!(log.snapshot().outcome, Some(Outcome::Succeeded));
        assert!(
            f.journal.state().commits.is_empty(),
            "the marker goes with the history line"
        );
    }
}
