//! Applying a pushed config: compare it with what runs, then deploy (or
//! stage) changed apps, start added ones, retire removed ones, and swap
//! the table for route and proxy-setting changes (an app's `error_pages`
//! among them: not part of its definition, so a change of it alone
//! deploys nothing), swap the certificates when their files changed. A
//! config that does not validate (certificate files and error pages
//! included), or that conflicts with a running deployment, changes nothing
//! (see [`super::gate`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::drain::drain_and_stop;
use super::{Controller, DeployError, Started};
use crate::certs::CertManager;
use crate::config::{AppConfig, ConfigError, Problems, Strategy};
use crate::journal::AppSource;

/// What a push did.
#[derive(Debug, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PushReport {
    /// Deployments started for changed apps.
    pub deployments: Vec<Started>,
    /// Changed apps with `manual_deployments: true`: staged for `cutover deploy`.
    pub staged: Vec<String>,
    /// New apps, started.
    pub added: Vec<String>,
    /// Apps no longer in the config: drained and stopped.
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
    /// True when routes or proxy settings (an app's `error_pages` included)
    /// changed (applied by a table swap).
    pub routes_changed: bool,
    /// Settings that only apply at the next start of cutover.
    pub warnings: Vec<String>,
}

impl Controller {
    /// Applies the config text `source`. `strategy` overrides the apps'
    /// `deploy_strategy` for the deployments it starts. Changed certificate
    /// files are loaded into `certs` (all good, or nothing changes).
    pub fn push(
        self: &Arc<Self>,
        source: &str,
        strategy: Option<Strategy>,
        certs: &CertManager,
    ) -> Result<PushReport, DeployError> {
        let new = self.parse(source, "deploy.yaml").map_err(|e| match e {
            ConfigError::Invalid(problems) => invalid(&problems),
            other => DeployError::InvalidConfig(other.to_string()),
        })?;
        let gate = self.exclusive();
        gate.refuse_when_stopping("push")?;
        let old = self.lock_active().config.clone();
        let mut report = PushReport::default();
        // Certificate files are read and checked under the gate, before
        // anything changes: a bad one refuses the push like a bad config.
        let mut certs_plan = certs.prepare(&old.proxy, &new.proxy).map_err(|p| invalid(&p))?;

        // Every conflict is checked before anything changes.
        let mut changed = Vec::new();
        for (name, app) in &new.apps {
            let Some(current) = old.apps.get(name) else {
                // Its instance names would be taken twice while the
                // removed app's processes still run.
                if self.lock_retiring().contains(name) {
                    return Err(DeployError::Retiring(name.clone()));
                }
                report.added.push(name.clone());
                continue;
            };
            if let Some((id, target)) = gate.running(name) {
                // A deployment brings the app to `target`: the same
                // definition again is a no-op; any other (the old one
                // restated included) would be lost or would race it.
                if *target != *app {
                    return Err(DeployError::Conflict { app: name.clone(), id });
                }
                report.unchanged.push(name.clone());
            } else if definition_changed(current, app) {
                changed.push(name.clone());
            } else {
                report.unchanged.push(name.clone());
            }
        }
        report.removed = old
            .apps
            .keys()
            .filter(|n| !new.apps.contains_key(*n))
            .cloned()
            .collect();
        gate.refuse_busy(&report.removed)?;

        if new.proxy.listen != old.proxy.listen || new.proxy.threads != old.proxy.threads {
            report
                .warnings
                .push("proxy.listen and proxy.threads apply at the next start of cutover".into());
        }
        // Listener tasks, the L4 read buffer and the upstream pool are
        // fixed when pingora builds its services.
        if new.proxy.tuning != old.proxy.tuning {
            report
                .warnings
                .push("proxy.tuning applies at the next start of cutover".into());
        }
        report.warnings.append(&mut certs_plan.warnings);
        if new.admin != old.admin {
            report
                .warnings
                .push("admin settings apply at the next start of cutover".into());
        }
        if new.state_dir != old.state_dir {
            report
                .warnings
                .push("state_dir applies at the next start of cutover".into());
        }
        report.routes_changed = new.routes != old.routes
            || new.proxy.hold_timeout != old.proxy.hold_timeout
            || new.proxy.long_lived != old.proxy.long_lived
            || new
                .apps
                .iter()
                .any(|(name, app)| old.apps.get(name).is_some_and(|a| a.error_pages != app.error_pages));
        let (staging, deploying): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|name| new.apps[name].manual_deployments);

        // One journal write holds everything the push changes and the
        // numbers of the deployments it starts: if it fails, nothing did.
        let mut first = 0;
        self.journal.update(|s| {
            s.routes_config = Some(source.to_string());
            for name in &report.added {
                s.current.insert(
                    name.clone(),
                    AppSource {
                        version: new.apps[name].version(),
                        config: source.to_string(),
                    },
                );
            }
            for name in &report.removed {
                s.current.remove(name);
                s.staged.remove(name);
                s.previous.remove(name);
                s.switches.remove(name);
            }
            for name in &staging {
                s.staged.insert(
                    name.clone(),
                    AppSource {
                        version: new.apps[name].version(),
                        config: source.to_string(),
                    },
                );
            }
            first = s.next_deployment.saturating_add(1);
            s.next_deployment = s.next_deployment.saturating_add(deploying.len() as u64);
        })?;
        {
            let mut active = self.lock_active();
            active.config.proxy = new.proxy.clone();
            active.config.admin = new.admin.clone();
            active.config.routes = new.routes.clone();
            for name in &report.added {
                active.config.apps.insert(name.clone(), new.apps[name].clone());
                active.sources.insert(name.clone(), source.to_string());
            }
            for name in &report.removed {
                active.config.apps.remove(name);
                active.sources.remove(name);
                active.staged.remove(name);
            }
            for name in &staging {
                active
                    .staged
                    .insert(name.clone(), (Arc::new(new.apps[name].clone()), source.to_string()));
            }
            // Error pages apply with this push's table swap (below), to
            // every app, whatever else happens to it; the definitions kept
            // in memory follow, so a later deployment of one keeps them.
            for (name, app) in &new.apps {
                if let Some(current) = active.config.apps.get_mut(name) {
                    current.error_pages.clone_from(&app.error_pages);
                }
                if let Some((staged, _)) = active.staged.get_mut(name) {
                    with_error_pages(staged, app);
                }
            }
        }
        for (name, app) in &new.apps {
            self.supervisor
                .update(name, |runtime| with_error_pages(&mut runtime.config, app));
        }

        // The new certificates (if any) in one store swap; the ACME service
        // sees the pushed hosts.
        certs.commit(certs_plan, &new);

        // Added apps start first, so routes to them have instances to hold for.
        for name in &report.added {
            self.metrics.app_configured(name);
            self.metrics.analysis_limits(name, &new.apps[name].canary.analysis);
            self.supervisor.start_app(Arc::new(new.apps[name].clone()));
        }
        // One table swap for routes, hold timeout and the set of apps.
        let routing = self.supervisor.routing();
        routing.configure(&new.routes, &new.proxy, new.apps.values());
        routing.publish();
        for name in &report.removed {
            self.metrics.app_removed(name);
            self.retire_app(name);
        }
        for (name, number) in deploying.into_iter().zip(first..) {
            let app = Arc::new(new.apps[&name].clone());
            report
                .deployments
                .push(self.start_deployment(&gate, app, source.to_string(), strategy, number));
        }
        report.staged = staging;
        Ok(report)
    }

    /// Drains and stops a removed app's instances in the background.
    fn retire_app(&self, name: &str) {
        let Some(app) = self.supervisor.app(name) else { return };
        self.supervisor.remove_app(name);
        let instances: Vec<_> = app
            .originals
            .into_iter()
            .chain(app.clones)
            .chain(app.candidates)
            .chain(app.previous)
            .collect();
        self.forget_warm(name);
        let drain_timeout = app.config.drain_timeout;
        self.lock_retiring().insert(name.to_string());
        let retiring = Retiring {
            names: Arc::clone(&self.retiring),
            name: name.to_string(),
        };
        tokio::spawn(async move {
            drain_and_stop(&instances, drain_timeout, None).await;
            tracing::info!(app = %retiring.name, "removed app stopped");
            drop(retiring);
        });
    }

    pub(super) fn lock_retiring(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.retiring.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Restores staged changes from the journal (at start-up).
    pub fn restore_staged(&self, staged: Vec<(Arc<AppConfig>, String)>) {
        let mut active = self.lock_active();
        for (app, source) in staged {
            active.staged.insert(app.name.clone(), (app, source));
        }
    }
}

/// Whether `new` is another definition of the app than `current`, one to
/// deploy: any difference but `error_pages`, a proxy setting every push
/// applies by its table swap.
fn definition_changed(current: &AppConfig, new: &AppConfig) -> bool {
    if current.error_pages == new.error_pages {
        return current != new;
    }
    let mut new = new.clone();
    new.error_pages.clone_from(&current.error_pages);
    *current != new
}

/// Gives `config` the error pages of `pushed` (a new `Arc` when they differ).
fn with_error_pages(config: &mut Arc<AppConfig>, pushed: &AppConfig) {
    if config.error_pages != pushed.error_pages {
        let mut changed = (**config).clone();
        changed.error_pages.clone_from(&pushed.error_pages);
        *config = Arc::new(changed);
    }
}

/// A refused config's problems, one per line, without the file name (the
/// pusher knows which file it sent).
fn invalid(problems: &Problems) -> DeployError {
    DeployError::InvalidConfig(
        problems
            .0
            .iter()
            .map(|p| {
                p.to_string()
                    .trim_start_matches("deploy.yaml:")
                    .trim_start()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// A removed app's name, held while its instances drain and stop; released
/// however the retiring task ends.
struct Retiring {
    names: Arc<Mutex<BTreeSet<String>>>,
    name: String,
}

impl Drop for Retiring {
    fn drop(&mut self) {
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.name);
    }
}
