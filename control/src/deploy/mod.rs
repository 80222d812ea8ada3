//! The rollout controller: starts deployments (one per app at a time),
//! applies pushed configs (deploy, stage, or table swap), and keeps the
//! journal and the deployment history.
//!
//! - [`phase`]: the state machine (phases, outcomes, `transition`).
//! - [`run`]: the driver and the [`run::DeployOps`] it drives.
//! - [`ops`]: the real operations (supervisor, routing, hooks, draining).
//! - [`record`]: a deployment's record and live event log.
//! - [`metrics`]: deployment metrics.
//! - [`push`]: comparing a pushed config with the running one.
//! - [`gate`]: the one serialised path every verb takes.
//! - [`switches`]: the operator's switches (pause, resume, maintenance).
//! - [`boot`]: start-up (restoring the journal, closing cut deployments).
//! - [`canary`]: the canary strategy's steps, analysis and traffic seam.
//! - [`bluegreen`]: the previous set kept warm after a blue-green swap.
//! - [`verbs`]: rollback, promote, abort and the canary's status.

pub mod bluegreen;
pub mod boot;
pub mod canary;
pub mod drain;
#[cfg(test)]
mod fake;
pub mod gate;
pub mod metrics;
pub mod ops;
pub mod phase;
pub mod push;
pub mod record;
pub mod run;
pub mod switches;
pub mod verbs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::{self, AppConfig, Config, ConfigError, Strategy};
use crate::journal::{AppSource, Committed, Journal};
use crate::supervisor::Supervisor;
use canary::Steering;
use gate::{Exclusive, RunningEntry, RunningGuard};
use metrics::DeployMetrics;
use phase::Outcome;
use record::{Deployment, DeploymentLog, EventKind, Operation};

/// Deployments kept in memory for the API (older ones stay in the journal).
const RECENT: usize = 200;

/// Why a deployment or push was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("no app named {0:?}")]
    UnknownApp(String),
    #[error("a deployment of {app} is already running: {id}")]
    Conflict { app: String, id: String },
    #[error("{0}")]
    InvalidConfig(String),
    #[error("app {0} was removed and its instances are still stopping; try again once they are gone")]
    Retiring(String),
    #[error("cutover is stopping; it takes no new deployments or pushes")]
    Stopping,
    #[error("cutover is upgrading itself ({0}); try again once the upgrade ended")]
    Upgrading(String),
    #[error("no deployment {0:?}")]
    UnknownDeployment(String),
    #[error("deployment {id} is not waiting at a pause")]
    NotAtPause { id: String },
    #[error("deployment {id} already ended")]
    Ended { id: String },
    #[error("deployment {id} is past the point it can be aborted at (phase {phase}): the new version serves, or it is already going back")]
    TooLateToAbort { id: String, phase: String },
    #[error("{0} has no previous version to roll back to")]
    NothingToRollBack(String),
    #[error("the journal could not be written: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

/// A deployment that was started.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Started {
    pub app: String,
    pub id: String,
}

/// The config that currently applies and where it came from.
struct Active {
    config: Config,
    /// Per app, the config text its current definition came from.
    sources: BTreeMap<String, String>,
    /// Per app, a staged definition and its source.
    staged: BTreeMap<String, (Arc<AppConfig>, String)>,
}

/// The rollout controller.
pub struct Controller {
    supervisor: Arc<Supervisor>,
    journal: Arc<Journal>,
    metrics: DeployMetrics,
    /// Where relative paths in pushed configs are resolved from: the
    /// directory of the config file `cutover up` was started with.
    base_dir: PathBuf,
    active: Mutex<Active>,
    /// Serialises every verb (see [`gate`]).
    gate: Mutex<()>,
    /// Set once cutover stops: no new verb, cut deployments are `interrupted`.
    stopping: AtomicBool,
    /// What upgrade of cutover itself runs, if one does: no verb meanwhile
    /// (see [`gate::UpgradeGuard`]).
    upgrading: Mutex<Option<String>>,
    running: Mutex<BTreeMap<String, RunningEntry>>,
    recent: Mutex<Vec<Arc<DeploymentLog>>>,
    /// Apps removed by a push whose instances are still draining: their
    /// names (and so their instance names) cannot be taken again yet.
    retiring: Arc<Mutex<BTreeSet<String>>>,
    /// Per app: the running deployment's id and its steering (abort,
    /// promote, canary progress).
    steering: Mutex<BTreeMap<String, (String, Arc<Steering>)>>,
    /// Per app: the previous set a blue-green swap keeps warm.
    warm: Mutex<BTreeMap<String, bluegreen::Warm>>,
    /// How canaries get their share of traffic (the route table unless
    /// [`Controller::set_traffic`] said otherwise).
    traffic: std::sync::RwLock<Arc<dyn canary::traffic::Traffic>>,
}

impl Controller {
    /// A controller over `supervisor`, journaling to `journal`. `config` is
    /// what serves now, `source` its text.
    pub fn new(
        supervisor: Arc<Supervisor>,
        journal: Arc<Journal>,
        metrics: DeployMetrics,
        base_dir: PathBuf,
        config: Config,
        sources: BTreeMap<String, String>,
    ) -> Arc<Self> {
        let traffic: Arc<dyn canary::traffic::Traffic> = Arc::clone(supervisor.routing()) as _;
        Arc::new(Self {
            traffic: std::sync::RwLock::new(traffic),
            steering: Mutex::new(BTreeMap::new()),
            warm: Mutex::new(BTreeMap::new()),
            supervisor,
            journal,
            metrics,
            base_dir,
            active: Mutex::new(Active {
                config,
                sources,
                staged: BTreeMap::new(),
            }),
            gate: Mutex::new(()),
            stopping: AtomicBool::new(false),
            upgrading: Mutex::new(None),
            running: Mutex::new(BTreeMap::new()),
            recent: Mutex::new(Vec::new()),
            retiring: Arc::new(Mutex::new(BTreeSet::new())),
        })
    }

    /// Splits canary traffic through `traffic` from the next deployment
    /// on (the route table by default; tests measure with their own).
    pub fn set_traffic(&self, traffic: Arc<dyn canary::traffic::Traffic>) {
        *self.traffic.write().unwrap_or_else(|e| e.into_inner()) = traffic;
    }

    fn traffic(&self) -> Arc<dyn canary::traffic::Traffic> {
        Arc::clone(&self.traffic.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
    }

    /// Parses config text the way a push does.
    pub fn parse(&self, source: &str, file: &str) -> Result<Config, ConfigError> {
        config::parse(source, file, &self.base_dir)
    }

    /// Deploys `app` (every app when `None`): its staged definition, or its
    /// current one again. `strategy` overrides the app's `deploy_strategy`.
    /// Every app is checked before any deployment starts.
    pub fn deploy(
        self: &Arc<Self>,
        app: Option<&str>,
        strategy: Option<Strategy>,
    ) -> Result<Vec<Started>, DeployError> {
        let gate = self.exclusive();
        let apps: Vec<String> = match app {
            Some(name) => {
                if self.supervisor.app(name).is_none() {
                    return Err(DeployError::UnknownApp(name.to_string()));
                }
                vec![name.to_string()]
            }
            None => self.supervisor.app_names(),
        };
        for name in &apps {
            gate.refuse_when_stopping(name)?;
        }
        gate.refuse_busy(&apps)?;
        let mut targets = Vec::new();
        for name in apps {
            let active = self.lock_active();
            let target = match active.staged.get(&name) {
                Some((config, source)) => (Arc::clone(config), source.clone()),
                None => {
                    let Some(app) = self.supervisor.app(&name) else {
                        continue;
                    };
                    let source = active.sources.get(&name).cloned().unwrap_or_default();
                    (app.config, source)
                }
            };
            targets.push(target);
        }
        let first = self.journal.take_deployment_numbers(targets.len() as u64)?;
        Ok(targets
            .into_iter()
            .zip(first..)
            .map(|((target, source), number)| self.start_deployment(&gate, target, source, strategy, number))
            .collect())
    }

    /// Starts one deployment of `target` in the background, as number
    /// `number` (taken from the journal by the caller). The caller checked
    /// that the app exists and runs nothing.
    fn start_deployment(
        self: &Arc<Self>,
        gate: &Exclusive<'_>,
        target: Arc<AppConfig>,
        source: String,
        strategy: Option<Strategy>,
        number: u64,
    ) -> Started {
        self.start_operation(gate, target, source, strategy, number, Operation::Deploy)
    }

    /// [`Self::start_deployment`], recorded as `operation` (a rollback is
    /// a deployment of the previous version). A warm blue-green set of the
    /// app is retired first: the new deployment replaces what it could
    /// swap back to.
    fn start_operation(
        self: &Arc<Self>,
        _gate: &Exclusive<'_>,
        target: Arc<AppConfig>,
        source: String,
        strategy: Option<Strategy>,
        number: u64,
        operation: Operation,
    ) -> Started {
        let name = target.name.clone();
        let strategy = strategy.unwrap_or(target.deploy_strategy);
        let previous = self
            .supervisor
            .app(&name)
            .map_or_else(|| Arc::clone(&target), |a| a.config);
        let id = format!("{name}-{number}");
        let mut record = Deployment::new(id.clone(), &name, strategy, previous.version(), target.version());
        record.operation = operation;
        let log = Arc::new(DeploymentLog::with_observer(record, Some(self.observer())));
        let warm = self.take_warm(&name);
        self.metrics.analysis_limits(&name, &target.canary.analysis);
        let steering = self.steer(&name, &id);
        self.register_running(&name, &log, &target);

        let previous_source = self.lock_active().sources.get(&name).cloned().unwrap_or_default();
        let on_commit = {
            let controller = Arc::clone(self);
            let target = Arc::clone(&target);
            let id = id.clone();
            Box::new(move |serving: &Arc<AppConfig>| {
                let (text, committed) = if Arc::ptr_eq(serving, &target) {
                    (source.clone(), Committed::Target)
                } else {
                    (previous_source.clone(), Committed::Previous)
                };
                controller.commit(serving, text, &id, committed);
            })
        };
        let on_warm = {
            let controller = Arc::downgrade(self);
            let previous = Arc::clone(&previous);
            let source = self.lock_active().sources.get(&name).cloned().unwrap_or_default();
            let keep = target.bluegreen.keep_previous;
            let id = id.clone();
            Box::new(move |instances| match controller.upgrade() {
                Some(controller) => controller.keep_warm(&previous, source.clone(), instances, keep, &id),
                None => bluegreen::stop_in_background(instances, previous.drain_timeout),
            })
        };
        let ops = ops::AppOps::new(
            Arc::clone(&self.supervisor),
            Arc::clone(&self.journal),
            previous,
            Arc::clone(&target),
            Arc::clone(&log),
            on_commit,
        )
        .with_progressive(self.traffic(), on_warm);
        let guard = RunningGuard {
            controller: Arc::clone(self),
            app: name.clone(),
            target,
            log: Arc::clone(&log),
            outcome: None,
        };
        let task = tokio::spawn(async move {
            let mut guard = guard;
            if let Some(warm) = warm {
                guard.log.info(None, "retiring the previous blue-green set first");
                warm.retire().await;
            }
            guard.outcome = Some(run::drive(strategy, &ops, &guard.log, &steering).await);
        });
        if let Some(entry) = self.lock_running().get_mut(&name) {
            if Arc::ptr_eq(&entry.log, &log) {
                entry.task = Some(task.abort_handle());
            }
        }
        Started { app: name, id }
    }

    /// Records that `serving` (from config text `source`) is what serves,
    /// and which version of deployment `id` that is. One journal write
    /// holds both, so a kill before the deployment's end still tells what
    /// serves. The journal is written first; memory follows what runs even
    /// if that write failed (the processes already changed).
    fn commit(&self, serving: &Arc<AppConfig>, source: String, id: &str, committed: Committed) {
        let name = serving.name.clone();
        let version = serving.version();
        // What `cutover rollback` goes back to: the version this commit
        // replaces, as it served until now (the journal has no `current`
        // for an app that never changed since `cutover up`). A rollback's
        // own commit makes the version it left the next one to go back to.
        let replaced = {
            let active = self.lock_active();
            active.config.apps.get(&name).map(|app| AppSource {
                version: app.version(),
                config: active.sources.get(&name).cloned().unwrap_or_default(),
            })
        };
        if let Err(e) = self.journal.update(|s| {
            s.current.insert(
                name.clone(),
                AppSource {
                    version: version.clone(),
                    config: source.clone(),
                },
            );
            if let Some(replaced) = replaced.filter(|r| r.version != version) {
                s.previous.insert(name.clone(), replaced);
            }
            s.commits.insert(id.to_string(), committed);
        }) {
            tracing::error!(error = %e, app = %name, "cannot journal the deployed version");
        }
        let mut active = self.lock_active();
        active.config.apps.insert(name.clone(), (**serving).clone());
        active.sources.insert(name, source);
    }

    /// A deployment's task ended (called by its [`RunningGuard`]). A
    /// deployed staged change is dropped first; then, in one step under the
    /// record's lock, the outcome is recorded, counted and the app freed,
    /// so whoever sees the outcome can start the next deployment (and its
    /// phase gauge is not reset by this one); then the history is written
    /// (a kill before that is closed at the next start from the journal's
    /// commit marker).
    fn finished(&self, app: &str, target: &Arc<AppConfig>, outcome: Outcome, log: &Arc<DeploymentLog>) {
        if outcome == Outcome::Succeeded {
            let staged_deployed = self
                .lock_active()
                .staged
                .get(app)
                .is_some_and(|(c, _)| c.version() == target.version());
            if staged_deployed {
                match self.journal.update(|s| {
                    s.staged.remove(app);
                }) {
                    Ok(()) => {
                        self.lock_active().staged.remove(app);
                    }
                    Err(e) => tracing::error!(error = %e, app, "cannot journal that the staged change was deployed"),
                }
            }
        }
        self.unsteer(app, &log.id());
        log.finish_with(outcome, |record| {
            self.metrics.finished(record, record.outcome.unwrap_or(outcome));
            let mut running = self.lock_running();
            if running.get(app).is_some_and(|e| Arc::ptr_eq(&e.log, log)) {
                running.remove(app);
            }
        });
        if let Err(e) = self.journal.append_history(&log.snapshot()) {
            tracing::error!(error = %e, "cannot append to the deployment history");
        }
    }

    /// Journal and metrics for every event.
    fn observer(&self) -> record::Observer {
        let journal = Arc::clone(&self.journal);
        let metrics = self.metrics.clone();
        Box::new(move |event, record| {
            if matches!(event.kind, EventKind::PhaseStarted | EventKind::PhaseFinished) {
                if let Err(e) = journal.save_running(record) {
                    tracing::error!(error = %e, deployment = %record.id, "cannot journal the deployment's phase");
                }
                metrics.phase(&record.app, record.phase);
            }
        })
    }

    /// Makes `log` `app`'s running operation (bringing it to `target`),
    /// keeps it among the recent ones and journals it as running. The
    /// caller holds the gate and checked that the app runs nothing.
    fn register_running(&self, app: &str, log: &Arc<DeploymentLog>, target: &Arc<AppConfig>) {
        self.lock_running().insert(
            app.to_string(),
            RunningEntry {
                log: Arc::clone(log),
                target: Arc::clone(target),
                task: None,
            },
        );
        self.remember(log);
        if let Err(e) = self.journal.save_running(&log.snapshot()) {
            tracing::error!(error = %e, deployment = %log.id(), "cannot journal the running operation");
        }
    }

    fn remember(&self, log: &Arc<DeploymentLog>) {
        let mut recent = self.lock_recent();
        recent.push(Arc::clone(log));
        let excess = recent.len().saturating_sub(RECENT);
        recent.drain(..excess);
    }

    /// Every deployment known: history from the journal, then this run's.
    pub fn deployments(&self) -> Vec<Deployment> {
        let live: Vec<Deployment> = self.lock_recent().iter().map(|l| l.snapshot()).collect();
        let mut all: Vec<Deployment> = self
            .journal
            .history()
            .into_iter()
            .filter(|d| !live.iter().any(|l| l.id == d.id))
            .collect();
        all.extend(live);
        all
    }

    /// One deployment's live log (this run) or record (history).
    pub fn deployment(&self, id: &str) -> Option<DeploymentRef> {
        if let Some(log) = self.lock_recent().iter().find(|l| l.id() == id) {
            return Some(DeploymentRef::Live(Arc::clone(log)));
        }
        self.journal
            .history()
            .into_iter()
            .find(|d| d.id == id)
            .map(|d| DeploymentRef::Past(Box::new(d)))
    }

    /// Running deployments (for status).
    pub fn running(&self) -> Vec<Deployment> {
        let logs: Vec<Arc<DeploymentLog>> = self.lock_running().values().map(|e| Arc::clone(&e.log)).collect();
        logs.iter().map(|l| l.snapshot().summary()).collect()
    }

    /// Staged apps and their versions (for status).
    pub fn staged(&self) -> BTreeMap<String, String> {
        self.lock_active()
            .staged
            .iter()
            .map(|(name, (config, _))| (name.clone(), config.version()))
            .collect()
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RunningEntry>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, Vec<Arc<DeploymentLog>>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A deployment found by id.
pub enum DeploymentRef {
    /// Of this run: can be followed.
    Live(Arc<DeploymentLog>),
    /// From the history.
    Past(Box<Deployment>),
}
