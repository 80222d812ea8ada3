//! The supervisor's side of `cutover upgrade`. The old process freezes its
//! instances ([`Supervisor::freeze`]), then either thaws them (the upgrade
//! failed) or releases them to the new process; the new process adopts
//! them ([`Supervisor::adopt_app`]) and, once the old one let go, starts
//! whatever it could not adopt ([`Supervisor::fill_app`]).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use super::adopt::{self, InstanceRecord};
use super::instance::{Instance, InstanceSpec, Mode, Role};
use super::process::log_line;
use super::task::LONGEST_WAIT;
use super::{AppRuntime, Supervisor};
use crate::config::AppConfig;

/// Slack on top of the longest thing a task may be busy with when the
/// mode changes (stopping a process, a probe): the bound of every wait
/// for an acknowledgement.
const ACK_GRACE: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Old process. Stops supervising every instance without stopping the
    /// processes that serve: no more probes, no restarts, no state change
    /// published (the route table stays as it is: the old process keeps
    /// routing to them while it drains). Instances still starting (not
    /// ready yet, their `post_start` hook included) are stopped; instances
    /// waiting to restart stay waiting. Returns once every instance task
    /// acknowledged (each within its `stop_timeout` + `health.timeout` +
    /// 5 s), with the records of every app instance whose process runs and
    /// passed readiness (ready or unhealthy), by app and name.
    pub async fn freeze(&self) -> Vec<InstanceRecord> {
        let instances = {
            let all = self.all();
            self.frozen.store(true, Ordering::SeqCst);
            all.iter().filter_map(std::sync::Weak::upgrade).collect::<Vec<_>>()
        };
        let acked = join_all(instances.iter().map(|i| {
            let app = &i.spec().app;
            let within = app
                .stop_timeout
                .saturating_add(app.health.timeout)
                .saturating_add(ACK_GRACE);
            i.set_mode(Mode::Frozen, within.min(LONGEST_WAIT))
        }))
        .await;
        let members = self.app_members();
        let mut records: Vec<InstanceRecord> = instances
            .iter()
            .zip(acked)
            .filter(|(instance, acked)| {
                if !acked {
                    tracing::warn!(instance = %instance.name(), "instance did not acknowledge the freeze; not handed over");
                }
                *acked
            })
            .filter(|(instance, _)| members.iter().any(|m| Arc::ptr_eq(m, instance)))
            .filter_map(|(instance, _)| instance.record())
            .collect();
        records.sort_by(|a, b| (&a.app, &a.name).cmp(&(&b.app, &b.name)));
        tracing::info!(instances = records.len(), "supervision frozen");
        records
    }

    /// Old process, the upgrade failed: supervision resumes as before the
    /// freeze. An instance whose process exited while frozen is handled as
    /// a crash (restarted with backoff); one the freeze stopped is
    /// restarted at once.
    pub async fn thaw(&self) {
        let instances = {
            let all = self.all();
            self.frozen.store(false, Ordering::SeqCst);
            all.iter().filter_map(std::sync::Weak::upgrade).collect::<Vec<_>>()
        };
        join_all(instances.iter().map(|i| i.set_mode(Mode::Supervised, ACK_GRACE))).await;
        tracing::info!("supervision thawed");
    }

    /// Old process, the new one is ready: every instance task ends for
    /// good without stopping its process nor removing its pid file, and
    /// no instance starts any more; `stop_all` afterwards touches none of
    /// them. (A task still stopping a start the freeze interrupted gets
    /// its `stop_timeout` + 5 s to end.)
    pub async fn release(&self) {
        let instances = {
            let all = self.all();
            self.closing.store(true, Ordering::SeqCst);
            all.iter().filter_map(std::sync::Weak::upgrade).collect::<Vec<_>>()
        };
        let ended = join_all(instances.iter().map(|i| {
            let within = i.spec().app.stop_timeout.saturating_add(ACK_GRACE);
            i.set_mode(Mode::Released, within.min(LONGEST_WAIT))
        }))
        .await;
        let late = ended.iter().filter(|ended| !**ended).count();
        if late > 0 {
            tracing::warn!(late, "instance tasks did not end in time after the release");
        }
        tracing::info!(instances = instances.len(), "instances released to the next cutover");
    }

    /// New process: makes `records` (those of `app`) the app's serving set,
    /// each adopted without restarting it: verified ([`adopt::verify`]
    /// behind a pidfd opened first), watched for exit through the pidfd,
    /// health-checked to ready within `start_timeout` (no `post_start`
    /// again), then supervised like a spawned instance: probed, restarted
    /// through the normal spawn path if it dies, stopped by
    /// `stop`/`stop_all`. Its port stays reserved, its pid file is now this
    /// process's to remove. A record that fails verification is logged (in
    /// the instance's log too) and skipped. Call it once per configured
    /// app, with no records if none: it registers the app like
    /// [`Supervisor::start_app`] and publishes its set. Returns the
    /// adopted instances.
    pub fn adopt_app(&self, app: Arc<AppConfig>, records: &[InstanceRecord]) -> Vec<Arc<Instance>> {
        let state_dir = self.run_dir.parent().unwrap_or(&self.run_dir).to_path_buf();
        let mut names = BTreeSet::new();
        let mut adopted = Vec::new();
        for record in records.iter().filter(|r| r.app == app.name) {
            if !names.insert(record.name.as_str()) {
                tracing::warn!(instance = %record.name, "instance recorded twice; adopted once");
                continue;
            }
            let adoption = match adopt::adopt(record, &state_dir) {
                Ok(adoption) => adoption,
                Err(reason) => {
                    tracing::warn!(instance = %record.name, pid = record.pid, %reason, "instance not adopted");
                    if adopt::verify_name(&record.name).is_ok() {
                        log_line(
                            &self.log_path(&record.name),
                            &format!("not adopted from the previous cutover (pid {}): {reason}", record.pid),
                        );
                    }
                    continue;
                }
            };
            let spec = InstanceSpec {
                app: Arc::clone(&app),
                log: self.log_path(&record.name),
                pid_file: Some(self.run_dir.join(format!("{}.pid", record.name))),
                name: record.name.clone(),
                role: record.role,
                preferred_port: Some(record.port),
                // It served already: a failed readiness check restarts it.
                retry_first_start: true,
            };
            let instance = self.start(spec, Some(adoption));
            if matches!(record.role, Role::Clone | Role::Canary | Role::Green) {
                // It serves as one of the app's own from now on, like a
                // clone a failed rollback keeps.
                instance.promote();
            }
            adopted.push(instance);
        }
        self.lock().insert(
            app.name.clone(),
            AppRuntime {
                config: Arc::clone(&app),
                originals: adopted.clone(),
                clones: Vec::new(),
                candidates: Vec::new(),
                previous: Vec::new(),
            },
        );
        self.routing.serve(&app.name, adopted.clone());
        tracing::info!(app = %app.name, adopted = adopted.len(), recorded = names.len(), "instances adopted");
        adopted
    }

    /// New process, after the old one let go: starts fresh original
    /// instances (names `{app}-{i}` not in use, retrying failed starts,
    /// ready-gated like [`Supervisor::start_app`]) until the app has
    /// `instances` instances, and serves them with the adopted ones (an app
    /// with nothing adopted has its requests held until they are ready).
    /// Returns the started ones; none for an app not registered.
    pub fn fill_app(&self, app: &str) -> Vec<Arc<Instance>> {
        let Some(runtime) = self.app(app) else {
            return Vec::new();
        };
        let in_use: BTreeSet<String> = runtime
            .originals
            .iter()
            .chain(&runtime.clones)
            .map(|i| i.name().to_string())
            .collect();
        let missing = usize::try_from(runtime.config.instances)
            .unwrap_or(usize::MAX)
            .saturating_sub(runtime.originals.len());
        let started: Vec<Arc<Instance>> = (0..=u32::MAX)
            .filter(|i| !in_use.contains(&format!("{app}-{i}")))
            .take(missing)
            .map(|i| self.spawn(self.original_spec(&runtime.config, i, None, true)))
            .collect();
        if started.is_empty() {
            return started;
        }
        let mut serving = Vec::new();
        self.update(app, |a| {
            a.originals.extend(started.iter().cloned());
            serving = a.originals.clone();
        });
        self.routing.serve(app, serving);
        tracing::info!(app, started = started.len(), "started the instances not adopted");
        started
    }

    /// The instances of every app (originals and clones).
    fn app_members(&self) -> Vec<Arc<Instance>> {
        self.lock()
            .values()
            .flat_map(|a| a.originals.iter().chain(&a.clones).cloned())
            .collect()
    }
}
