//! The previous set a blue-green swap keeps warm (SPEC §4 "bluegreen").
//!
//! The deployment ends `succeeded` at its swap; from then on the
//! controller, not the deployment, holds the previous set: running, out of
//! the table (no new request reaches it; requests and long-lived
//! connections it already had go on), for `keep_previous`. Within that
//! window `cutover rollback` is one table swap back ([`Controller::swap_back`]
//! via `verbs`); after it, or when a new deployment or a push replaces the
//! app, the set drains (long-lived clients notified) and stops. SIGTERM
//! stops it with every other instance; a restarted cutover has none (the
//! journal says the new version serves).

use std::sync::Arc;
use std::time::Duration;

use super::drain::drain_and_stop;
use super::Controller;
use crate::config::AppConfig;
use crate::supervisor::instance::Instance;

/// A previous set kept warm after a swap.
pub struct Warm {
    /// The definition it runs.
    pub config: Arc<AppConfig>,
    /// The config text that definition came from (journaled at a swap back).
    pub source: String,
    /// The instances, as `AppRuntime::previous` holds them too.
    pub instances: Vec<Arc<Instance>>,
    /// The deployment whose swap left it.
    pub deployment: String,
    /// Ends the window early (the set is taken for a swap back or retired).
    expiry: tokio::task::AbortHandle,
}

impl Warm {
    /// Drains and stops the set.
    pub async fn retire(self) {
        self.expiry.abort();
        drain_and_stop(&self.instances, self.config.drain_timeout, None).await;
        tracing::info!(app = %self.config.name, deployment = %self.deployment, "previous blue-green set stopped");
    }

    /// Keeps the set running: it is serving again (a swap back).
    pub fn keep(self) -> Vec<Arc<Instance>> {
        self.expiry.abort();
        self.instances
    }
}

/// Drains and stops `instances` in the background (no controller to hold them).
pub fn stop_in_background(instances: Vec<Arc<Instance>>, drain_timeout: Duration) {
    tokio::spawn(async move {
        drain_and_stop(&instances, drain_timeout, None).await;
    });
}

impl Controller {
    /// Holds `instances` (running `config`, from config text `source`)
    /// warm for `keep`, after deployment `id` swapped them out; then
    /// retires them unless taken before.
    pub(super) fn keep_warm(
        self: &Arc<Self>,
        config: &Arc<AppConfig>,
        source: String,
        instances: Vec<Arc<Instance>>,
        keep: Duration,
        id: &str,
    ) {
        let app = config.name.clone();
        self.supervisor.update(&app, |a| a.previous = instances.clone());
        // Held until the set is in the map: with `keep_previous: 0s` the
        // expiry may run at once on another worker, and must find it.
        let mut warm_sets = self.lock_warm();
        let expiry = {
            let controller = Arc::downgrade(self);
            let app = app.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(keep).await;
                let Some(controller) = controller.upgrade() else { return };
                let expired = {
                    let mut warm = controller.lock_warm();
                    match warm.get(&app) {
                        Some(w) if w.deployment == id => warm.remove(&app),
                        _ => None,
                    }
                };
                if let Some(warm) = expired {
                    controller.supervisor.update(&app, |a| a.previous.clear());
                    tracing::info!(app = %app, "keep_previous is over: the previous blue-green set drains and stops");
                    // Not `Warm::retire`: it would abort this very task.
                    drain_and_stop(&warm.instances, warm.config.drain_timeout, None).await;
                }
            })
            .abort_handle()
        };
        let replaced = warm_sets.insert(
            app,
            Warm {
                config: Arc::clone(config),
                source,
                instances,
                deployment: id.to_string(),
                expiry,
            },
        );
        drop(warm_sets);
        // Only one warm set per app: a deployment retires the last one
        // before it starts; this is the belt to that.
        if let Some(old) = replaced {
            tokio::spawn(old.retire());
        }
    }

    /// Takes `app`'s warm set, if any (the caller retires or keeps it).
    pub(super) fn take_warm(&self, app: &str) -> Option<Warm> {
        let warm = self.lock_warm().remove(app)?;
        self.supervisor.update(app, |a| a.previous.clear());
        Some(warm)
    }

    /// Whether `app` has a warm previous set.
    pub fn has_warm(&self, app: &str) -> bool {
        self.lock_warm().contains_key(app)
    }

    /// Forgets `app`'s warm set whose instances the caller stops (a push
    /// removing the app drains them with the rest).
    pub(super) fn forget_warm(&self, app: &str) {
        if let Some(warm) = self.lock_warm().remove(app) {
            warm.expiry.abort();
        }
    }

    fn lock_warm(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Warm>> {
        self.warm.lock().unwrap_or_else(|e| e.into_inner())
    }
}
