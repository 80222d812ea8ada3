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

pub mod boot;
pub mod drain;
pub mod metrics;
pub mod ops;
pub mod phase;
pub mod push;
pub mod record;
pub mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::{self, AppConfig, Config, ConfigError, Strategy};
use crate::journal::{AppSource, Journal};
use crate::supervisor::Supervisor;
use metrics::DeployMetrics;
use phase::Outcome;
use record::{Deployment, DeploymentLog, EventKind};

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
    #[error("the journal could not be written: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

/// A deployment that was started.
#[derive(Debug, Clone, Serialize)]
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
    running: Mutex<BTreeMap<String, Arc<DeploymentLog>>>,
    recent: Mutex<Vec<Arc<DeploymentLog>>>,
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
        Arc::new(Self {
            supervisor,
            journal,
            metrics,
            base_dir,
            active: Mutex::new(Active {
                config,
                sources,
                staged: BTreeMap::new(),
            }),
            running: Mutex::new(BTreeMap::new()),
            recent: Mutex::new(Vec::new()),
        })
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
    pub fn deploy(
        self: &Arc<Self>,
        app: Option<&str>,
        strategy: Option<Strategy>,
    ) -> Result<Vec<Started>, DeployError> {
        let apps: Vec<String> = match app {
            Some(name) => {
                if self.supervisor.app(name).is_none() {
                    return Err(DeployError::UnknownApp(name.to_string()));
                }
                vec![name.to_string()]
            }
            None => self.supervisor.app_names(),
        };
        self.refuse_running(&apps)?;
        let mut started = Vec::new();
        for name in apps {
            let (target, source) = {
                let active = self.lock_active();
                match active.staged.get(&name) {
                    Some((config, source)) => (Arc::clone(config), source.clone()),
                    None => {
                        let Some(app) = self.supervisor.app(&name) else {
                            continue;
                        };
                        let source = active.sources.get(&name).cloned().unwrap_or_default();
                        (app.config, source)
                    }
                }
            };
            started.push(self.start_deployment(target, source, strategy)?);
        }
        Ok(started)
    }

    /// Deployments of `apps` that are running refuse the request.
    fn refuse_running(&self, apps: &[String]) -> Result<(), DeployError> {
        let running = self.lock_running();
        for app in apps {
            if let Some(log) = running.get(app) {
                return Err(DeployError::Conflict {
                    app: app.clone(),
                    id: log.id(),
                });
            }
        }
        Ok(())
    }

    /// Starts one deployment of `target` in the background.
    fn start_deployment(
        self: &Arc<Self>,
        target: Arc<AppConfig>,
        source: String,
        strategy: Option<Strategy>,
    ) -> Result<Started, DeployError> {
        let name = target.name.clone();
        let current = self
            .supervisor
            .app(&name)
            .ok_or_else(|| DeployError::UnknownApp(name.clone()))?;
        let strategy = strategy.unwrap_or(target.deploy_strategy);
        let mut running = self.lock_running();
        if let Some(log) = running.get(&name) {
            return Err(DeployError::Conflict {
                app: name,
                id: log.id(),
            });
        }
        let number = self.journal.next_deployment_number()?;
        let id = format!("{name}-{number}");
        let record = Deployment::new(id.clone(), &name, strategy, current.config.version(), target.version());
        let log = Arc::new(DeploymentLog::with_observer(record, Some(self.observer())));
        running.insert(name.clone(), Arc::clone(&log));
        drop(running);
        self.remember(&log);
        if let Err(e) = self.journal.save_running(&log.snapshot()) {
            tracing::error!(error = %e, deployment = %id, "cannot journal the deployment");
        }

        let previous_source = self.lock_active().sources.get(&name).cloned().unwrap_or_default();
        let controller = Arc::clone(self);
        let on_commit = {
            let controller = Arc::clone(self);
            let target = Arc::clone(&target);
            Box::new(move |serving: &Arc<AppConfig>| {
                let text = if Arc::ptr_eq(serving, &target) {
                    source.clone()
                } else {
                    previous_source.clone()
                };
                controller.commit(serving, text);
            })
        };
        let ops = ops::AppOps::new(
            Arc::clone(&self.supervisor),
            current.config,
            Arc::clone(&target),
            Arc::clone(&log),
            on_commit,
        );
        let started = Started { app: name.clone(), id };
        tokio::spawn(async move {
            let outcome = run::execute(strategy, &ops, &log).await;
            controller.finished(&name, &target, outcome, &log);
        });
        Ok(started)
    }

    /// Records that `serving` (from config text `source`) is what serves.
    fn commit(&self, serving: &Arc<AppConfig>, source: String) {
        let name = serving.name.clone();
        {
            let mut active = self.lock_active();
            active.config.apps.insert(name.clone(), (**serving).clone());
            active.sources.insert(name.clone(), source.clone());
        }
        let version = serving.version();
        if let Err(e) = self.journal.update(|s| {
            s.current.insert(
                name.clone(),
                AppSource {
                    version,
                    config: source,
                },
            );
        }) {
            tracing::error!(error = %e, app = %name, "cannot journal the deployed version");
        }
    }

    fn finished(&self, app: &str, target: &Arc<AppConfig>, outcome: Outcome, log: &Arc<DeploymentLog>) {
        let record = log.snapshot();
        if outcome == Outcome::Succeeded {
            let mut active = self.lock_active();
            if active
                .staged
                .get(app)
                .is_some_and(|(c, _)| c.version() == target.version())
            {
                active.staged.remove(app);
                if let Err(e) = self.journal.update(|s| {
                    s.staged.remove(app);
                }) {
                    tracing::error!(error = %e, app, "cannot journal that the staged change was deployed");
                }
            }
        }
        if let Err(e) = self.journal.append_history(&record) {
            tracing::error!(error = %e, "cannot append to the deployment history");
        }
        self.metrics.finished(&record, outcome);
        self.lock_running().remove(app);
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
        self.lock_running().values().map(|l| l.snapshot().summary()).collect()
    }

    /// Staged apps and their versions (for status).
    pub fn staged(&self) -> BTreeMap<String, String> {
        self.lock_active()
            .staged
            .iter()
            .map(|(name, (config, _))| (name.clone(), config.version()))
            .collect()
    }

    /// Closes deployments the previous run left unfinished.
    pub fn close_interrupted(&self) {
        for mut record in self.journal.interrupted() {
            if record.outcome.is_none() {
                record.outcome = Some(Outcome::Failed);
                record.finished_at = Some(record::now_rfc3339());
                record.phase = None;
            }
            tracing::warn!(deployment = %record.id, "deployment was interrupted by a cutover restart; recorded as failed");
            if let Err(e) = self.journal.append_history(&record) {
                tracing::error!(error = %e, deployment = %record.id, "cannot close the interrupted deployment");
            }
        }
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<DeploymentLog>>> {
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
