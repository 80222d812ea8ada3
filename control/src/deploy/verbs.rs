//! The verbs that steer or undo deployments: `rollback`, `promote`,
//! `abort`, and the canary's status (SPEC §2, §4, §5). Each goes through
//! the gate like deploy and push.

use std::sync::Arc;

use super::bluegreen::Warm;
use super::canary::{PromoteRefused, Steering, ANALYSIS_TICK};
use super::drain::drain_and_stop;
use super::gate::{Exclusive, RunningGuard};
use super::phase::{too_late_to_abort, Outcome, Phase};
use super::record::{Deployment, DeploymentLog, Operation};
use super::{Controller, DeployError, Started};
use crate::api::progressive::{AnalysisValue, CanaryStatus};
use crate::config::{self, AppConfig, Strategy};
use crate::journal::Committed;

/// What a rollback of one app does.
enum Plan {
    /// One table swap back to the warm blue-green set.
    SwapBack(Warm),
    /// A deployment of the previous committed definition (and its text).
    Deploy(Arc<AppConfig>, String),
}

impl Controller {
    /// Rolls `app` (every app that has a previous version when `None`)
    /// back: with a warm blue-green set, one table swap back; otherwise a
    /// deployment of the previous committed definition with the app's
    /// strategy. Either is a history record with operation `rollback`.
    /// 409 while the app runs anything; `NothingToRollBack` without a
    /// previous version.
    pub fn rollback(self: &Arc<Self>, app: Option<&str>) -> Result<Vec<Started>, DeployError> {
        let gate = self.exclusive();
        let previous = self.journal.state().previous;
        let apps: Vec<String> = match app {
            Some(name) => {
                if self.supervisor.app(name).is_none() {
                    return Err(DeployError::UnknownApp(name.to_string()));
                }
                vec![name.to_string()]
            }
            None => self
                .supervisor
                .app_names()
                .into_iter()
                .filter(|n| previous.contains_key(n) || self.has_warm(n))
                .collect(),
        };
        if apps.is_empty() {
            return Err(DeployError::NothingToRollBack("every app".into()));
        }
        for name in &apps {
            gate.refuse_when_stopping(name)?;
        }
        gate.refuse_busy(&apps)?;
        // Everything that can fail is checked before anything changes.
        let mut targets = Vec::new();
        for name in &apps {
            if self.has_warm(name) {
                targets.push(name.clone());
                continue;
            }
            let Some(entry) = previous.get(name) else {
                return Err(DeployError::NothingToRollBack(name.clone()));
            };
            self.previous_definition(name, &entry.config)?;
            targets.push(name.clone());
        }
        let first = self.journal.take_deployment_numbers(targets.len() as u64)?;
        let mut started = Vec::new();
        for (name, number) in targets.into_iter().zip(first..) {
            let plan = match self.take_warm(&name) {
                Some(warm) if warm.instances.iter().any(|i| i.state().ready_backend().is_some()) => {
                    Plan::SwapBack(warm)
                }
                unready => {
                    // A warm set none of whose instances is ready (they
                    // crashed) is no shortcut: deploy the previous version.
                    if let Some(warm) = unready {
                        tokio::spawn(warm.retire());
                    }
                    let source = previous.get(&name).map(|e| e.config.clone()).unwrap_or_default();
                    match self.previous_definition(&name, &source) {
                        Ok(target) => Plan::Deploy(target, source),
                        Err(e) => {
                            tracing::error!(app = %name, error = %e, "cannot roll back");
                            continue;
                        }
                    }
                }
            };
            started.push(match plan {
                Plan::SwapBack(warm) => self.start_swap_back(&gate, warm, number),
                Plan::Deploy(target, source) => {
                    self.start_operation(&gate, target, source, None, number, Operation::Rollback)
                }
            });
        }
        Ok(started)
    }

    /// The definition of `app` in journaled config text `source`.
    fn previous_definition(&self, app: &str, source: &str) -> Result<Arc<AppConfig>, DeployError> {
        let parsed = config::parse_journaled(source, "journal", &self.base_dir).map_err(|e| {
            DeployError::InvalidConfig(format!(
                "the previous version of {app} in the journal is not valid: {e}"
            ))
        })?;
        let mut apps = parsed.apps;
        apps.remove(app)
            .map(Arc::new)
            .ok_or_else(|| DeployError::NothingToRollBack(app.to_string()))
    }

    /// Starts the swap back to `warm` as deployment number `number`.
    fn start_swap_back(self: &Arc<Self>, _gate: &Exclusive<'_>, warm: Warm, number: u64) -> Started {
        let name = warm.config.name.clone();
        let current = self
            .supervisor
            .app(&name)
            .map_or_else(|| Arc::clone(&warm.config), |a| a.config);
        let id = format!("{name}-{number}");
        let mut record = Deployment::new(
            id.clone(),
            &name,
            Strategy::Bluegreen,
            current.version(),
            warm.config.version(),
        );
        record.operation = Operation::Rollback;
        let log = Arc::new(DeploymentLog::with_observer(record, Some(self.observer())));
        let target = Arc::clone(&warm.config);
        self.register_running(&name, &log, &target);
        let guard = RunningGuard {
            controller: Arc::clone(self),
            app: name.clone(),
            target,
            log: Arc::clone(&log),
            outcome: None,
        };
        let controller = Arc::clone(self);
        let task = tokio::spawn(async move {
            let mut guard = guard;
            guard.outcome = Some(controller.swap_back(warm, &guard.log).await);
        });
        if let Some(entry) = self.lock_running().get_mut(&name) {
            if Arc::ptr_eq(&entry.log, &log) {
                entry.task = Some(task.abort_handle());
            }
        }
        Started { app: name, id }
    }

    /// One table swap back to the warm set; the newer set drains and stops.
    async fn swap_back(&self, warm: Warm, log: &DeploymentLog) -> Outcome {
        let name = warm.config.name.clone();
        let back = Arc::clone(&warm.config);
        let source = warm.source.clone();
        log.phase_started(Phase::Swap);
        let newer = self.supervisor.app(&name).map(|a| a.originals).unwrap_or_default();
        let instances = warm.keep();
        self.supervisor.update(&name, |a| {
            a.originals = instances.clone();
            a.previous.clear();
            a.config = Arc::clone(&back);
        });
        let generation = self.supervisor.routing().serve(&name, instances);
        log.info(
            None,
            format!("traffic back on the previous set (route table generation {generation})"),
        );
        self.commit(&back, source, &log.id(), Committed::Target);
        let drain_timeout = back
            .drain_timeout
            .max(newer.first().map_or(back.drain_timeout, |i| i.spec().app.drain_timeout));
        drain_and_stop(&newer, drain_timeout, Some(log)).await;
        log.phase_finished(Phase::Swap, true);
        log.phase_started(Phase::Done);
        log.phase_finished(Phase::Done, true);
        Outcome::Succeeded
    }

    /// Moves deployment `id` past its manual pause (`full`: through every
    /// remaining step). `NotAtPause` unless it waits at one (or, with
    /// `full`, walks its steps); `Ended` once it finished.
    pub fn promote(&self, id: &str, full: bool) -> Result<(), DeployError> {
        let _gate = self.exclusive();
        let steering = self.running_steering(id)?;
        steering
            .promote(full)
            .map_err(|PromoteRefused::NotAtPause| DeployError::NotAtPause { id: id.to_string() })?;
        tracing::info!(deployment = id, full, "promoted");
        Ok(())
    }

    /// Stops deployment `id` at its next safe point and returns to the
    /// previous version (outcome `aborted`). `TooLateToAbort` once its new
    /// version serves alone (or it is already going back), `Ended` once it
    /// finished.
    pub fn abort(&self, id: &str) -> Result<(), DeployError> {
        let _gate = self.exclusive();
        let steering = self.running_steering(id)?;
        // Once the new version serves alone (rolling's switch, stopstart's
        // start, the canary's promote, the blue-green swap) there is no
        // previous version left to return to: say so rather than accept an
        // abort that cannot happen.
        let record = self
            .lock_running()
            .values()
            .find(|e| e.log.id() == id)
            .map(|e| Arc::clone(&e.log));
        if let Some(record) = record.map(|log| log.snapshot()) {
            if too_late_to_abort(record.strategy, record.phase) {
                let phase = record.phase.map_or("done", Phase::as_str);
                return Err(DeployError::TooLateToAbort {
                    id: id.to_string(),
                    phase: phase.to_string(),
                });
            }
        }
        steering.abort();
        tracing::warn!(deployment = id, "abort requested");
        Ok(())
    }

    /// The running canary of `app`, if one runs.
    pub fn canary_status(&self, app: &str) -> Option<CanaryStatus> {
        let (id, steering) = self.lock_steering().get(app).cloned()?;
        let target = self
            .lock_running()
            .get(app)
            .map(|e| (Arc::clone(&e.log), Arc::clone(&e.target)));
        let (log, target) = target?;
        if log.snapshot().strategy != Strategy::Canary || log.is_finished() {
            return None;
        }
        let limits = target.canary.analysis;
        let progress = steering.progress();
        let judgement = progress.as_ref().and_then(|p| p.judgement.clone());
        let analysis = vec![
            AnalysisValue {
                metric: "error_rate".into(),
                value: judgement.as_ref().map_or(0.0, |j| j.error_rate),
                limit: limits.max_error_rate(),
            },
            AnalysisValue {
                metric: "latency_ratio".into(),
                value: judgement.as_ref().and_then(|j| j.latency_ratio).unwrap_or(0.0),
                limit: limits.max_latency_ratio(),
            },
            AnalysisValue {
                metric: "requests".into(),
                value: judgement.as_ref().map_or(0.0, |j| j.requests as f64),
                limit: limits.min_requests as f64,
            },
        ];
        Some(CanaryStatus {
            deployment: id,
            step: progress.as_ref().map_or(0, |p| p.step + 1),
            steps: target.canary.steps.len(),
            weight: progress.as_ref().map_or(0.0, |p| f64::from(p.weight)),
            waiting: progress.filter(|p| p.waiting_manual).map(|_| "manual".to_string()),
            analysis,
        })
    }

    /// The steering of running deployment `id`; `Ended` or
    /// `UnknownDeployment` when it does not run.
    fn running_steering(&self, id: &str) -> Result<Arc<Steering>, DeployError> {
        let found = self
            .lock_steering()
            .values()
            .find(|(running, _)| running == id)
            .map(|(_, s)| Arc::clone(s));
        match found {
            Some(steering) => Ok(steering),
            None if self.deployment(id).is_some() => Err(DeployError::Ended { id: id.to_string() }),
            None => Err(DeployError::UnknownDeployment(id.to_string())),
        }
    }

    /// Registers the steering of deployment `id` of `app`, its canary
    /// progress shown in the metrics.
    pub(super) fn steer(&self, app: &str, id: &str) -> Arc<Steering> {
        let metrics = self.metrics.clone();
        let name = app.to_string();
        let steering = Arc::new(Steering::new(
            ANALYSIS_TICK,
            Some(Box::new(move |progress| metrics.canary_progress(&name, progress))),
        ));
        self.lock_steering()
            .insert(app.to_string(), (id.to_string(), Arc::clone(&steering)));
        steering
    }

    /// Drops the steering of deployment `id` of `app` (it ended).
    pub(super) fn unsteer(&self, app: &str, id: &str) {
        let mut steering = self.lock_steering();
        if steering.get(app).is_some_and(|(running, _)| running == id) {
            steering.remove(app);
        }
        drop(steering);
        self.metrics.canary_progress(app, None);
    }

    fn lock_steering(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, (String, Arc<Steering>)>> {
        self.steering.lock().unwrap_or_else(|e| e.into_inner())
    }
}
