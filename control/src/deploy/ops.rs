//! The real [`DeployOps`]: processes through the [`Supervisor`], traffic
//! through [`crate::routing::Routing`], hooks through [`Hook`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;

use super::canary::traffic::{Measure, SplitEnd, Traffic};
use super::drain::drain_and_stop;
use super::record::DeploymentLog;
use super::run::{DeployOps, HookKind, Version};
use crate::config::{AppConfig, CanaryConfig};
use crate::hooks::Hook;
use crate::journal::{Journal, NameKind};
use crate::supervisor::instance::{Instance, Role};
use crate::supervisor::Supervisor;

/// How long `build` may run.
const BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long `deploy` and `post_deploy` may run.
const DEPLOY_HOOK_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Called with the definition that serves once a deployment commits.
pub type OnCommit = Box<dyn Fn(&Arc<AppConfig>) + Send + Sync>;

/// bluegreen: takes the previous set after the swap, to keep it warm.
pub type OnWarm = Box<dyn Fn(Vec<Arc<Instance>>) + Send + Sync>;

/// One deployment's operations on one app.
pub struct AppOps {
    supervisor: Arc<Supervisor>,
    /// Hands out clone numbers, so no instance name is ever reused.
    journal: Arc<Journal>,
    previous: Arc<AppConfig>,
    target: Arc<AppConfig>,
    log: Arc<DeploymentLog>,
    /// Ports of the originals this deployment retired, by instance name, so
    /// the new originals get them back when free.
    ports: Mutex<BTreeMap<String, u16>>,
    on_commit: OnCommit,
    /// canary: how traffic is split (the route table in production).
    traffic: Option<Arc<dyn Traffic>>,
    /// bluegreen: who keeps the previous set warm.
    on_warm: Option<OnWarm>,
}

impl AppOps {
    pub fn new(
        supervisor: Arc<Supervisor>,
        journal: Arc<Journal>,
        previous: Arc<AppConfig>,
        target: Arc<AppConfig>,
        log: Arc<DeploymentLog>,
        on_commit: OnCommit,
    ) -> Self {
        Self {
            supervisor,
            journal,
            previous,
            target,
            log,
            ports: Mutex::new(BTreeMap::new()),
            on_commit,
            traffic: None,
            on_warm: None,
        }
    }

    /// With what the progressive strategies need: the traffic split
    /// (canary) and the keeper of the previous set (bluegreen).
    pub fn with_progressive(mut self, traffic: Arc<dyn Traffic>, on_warm: OnWarm) -> Self {
        self.traffic = Some(traffic);
        self.on_warm = Some(on_warm);
        self
    }

    fn candidates(&self) -> Vec<Arc<Instance>> {
        self.supervisor
            .app(self.app())
            .map(|a| a.candidates)
            .unwrap_or_default()
    }

    fn app(&self) -> &str {
        &self.target.name
    }

    fn config(&self, version: Version) -> &Arc<AppConfig> {
        match version {
            Version::Previous => &self.previous,
            Version::Target => &self.target,
        }
    }

    fn originals(&self) -> Vec<Arc<Instance>> {
        self.supervisor.app(self.app()).map(|a| a.originals).unwrap_or_default()
    }

    fn clones(&self) -> Vec<Arc<Instance>> {
        self.supervisor.app(self.app()).map(|a| a.clones).unwrap_or_default()
    }

    async fn run_hook(&self, name: &'static str, script: &str, timeout: Duration) -> Result<(), String> {
        let mut env = self.target.env.clone();
        env.insert("CUTOVER_APP".into(), self.app().to_string());
        let log = self.supervisor.log_path(&format!("{}-hooks", self.app()));
        self.log.info(None, format!("running {name} hook"));
        let result = Hook {
            name,
            script,
            cwd: &self.target.cwd,
            env: &env,
            timeout,
            log: &log,
        }
        .run()
        .await;
        match result {
            Ok(output) => {
                for line in output.lines().filter(|l| !l.trim().is_empty()) {
                    self.log.info(None, format!("{name}: {line}"));
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits until every instance is ready; on the first failure stops all
    /// of them and reports it.
    async fn wait_all_ready(&self, instances: &[Arc<Instance>]) -> Result<(), String> {
        let results = join_all(
            instances
                .iter()
                .map(|i| async move { (i.name().to_string(), i.ready().await) }),
        )
        .await;
        let mut failure = None;
        for (name, result) in results {
            match result {
                Ok(backend) => self.log.info(Some(&name), format!("ready on {}", backend.addr())),
                Err(reason) => {
                    self.log.error(Some(&name), format!("not ready: {reason}"));
                    failure.get_or_insert(format!("{name} not ready: {reason}"));
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(reason) => {
                join_all(instances.iter().map(|i| i.stop())).await;
                Err(reason)
            }
        }
    }

    /// Whether a canary of this deployment can be judged at all: both
    /// versions must be reachable the same way (one app entry speaks one
    /// upstream protocol), and the app's requests must reach a version
    /// (paused or in maintenance, none does: the steps would wait forever).
    fn canary_possible(&self) -> Result<(), String> {
        if self.previous.upstream != self.target.upstream {
            return Err(format!(
                "a canary cannot split the app between two upstream protocols ({} and {}); \
                 deploy this change with rolling or bluegreen",
                crate::routing::upstream_protocol(self.previous.upstream).as_str(),
                crate::routing::upstream_protocol(self.target.upstream).as_str()
            ));
        }
        let switches = self.supervisor.routing().switches(self.app());
        if switches.maintenance.is_some() || switches.paused.is_some() {
            return Err(
                "the app is paused or in maintenance, so no request reaches either version and the \
                 canary could not be judged; resume it (or end maintenance) first"
                    .into(),
            );
        }
        Ok(())
    }

    async fn drain_and_stop(&self, instances: &[Arc<Instance>]) {
        let drain_timeout = self.previous.drain_timeout.max(self.target.drain_timeout);
        drain_and_stop(instances, drain_timeout, Some(&self.log)).await;
    }
}

#[async_trait]
impl DeployOps for AppOps {
    async fn hook(&self, kind: HookKind) -> Result<(), String> {
        let (name, script, timeout) = match kind {
            HookKind::Build => ("build", &self.target.hooks.build, BUILD_TIMEOUT),
            HookKind::PostDeploy => ("post_deploy", &self.target.hooks.post_deploy, DEPLOY_HOOK_TIMEOUT),
        };
        match script {
            Some(script) => self.run_hook(name, script, timeout).await,
            None => Ok(()),
        }
    }

    async fn start_clones(&self) -> Result<(), String> {
        let count = self.originals().len().max(1);
        // Clone names are never reused (`web-clone-<n>`, n per app, kept in
        // the journal): a promoted clone keeps its name for its whole life,
        // and a later clone must not share its pid file, log or metrics.
        let first = self
            .journal
            .take_clone_numbers(self.app(), count as u64)
            .map_err(|e| format!("cannot name the clones: {e}"))?;
        let clones: Vec<_> = (first..first.saturating_add(count as u64))
            .map(|n| {
                let index = usize::try_from(n).unwrap_or(usize::MAX);
                self.supervisor.spawn(self.supervisor.clone_spec(&self.previous, index))
            })
            .collect();
        for clone in &clones {
            self.log.info(
                Some(clone.name()),
                format!("starting clone (version {})", self.previous.version()),
            );
        }
        self.supervisor.update(self.app(), |a| a.clones = clones.clone());
        let result = self.wait_all_ready(&clones).await;
        if result.is_err() {
            self.supervisor.update(self.app(), |a| a.clones.clear());
        }
        result
    }

    async fn route_to_clones(&self) {
        let generation = self.supervisor.routing().serve(self.app(), self.clones());
        self.log.info(
            None,
            format!("traffic now goes to the clones (route table generation {generation})"),
        );
    }

    async fn route_to_none(&self) {
        let generation = self.supervisor.routing().serve(self.app(), Vec::new());
        self.log.info(
            None,
            format!("app out of the route table; requests are held (generation {generation})"),
        );
    }

    async fn retire_originals(&self) {
        let originals = self.originals();
        {
            let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
            for o in &originals {
                if let Some(port) = o.port() {
                    ports.insert(o.name().to_string(), port);
                }
            }
        }
        self.drain_and_stop(&originals).await;
        self.supervisor.update(self.app(), |a| a.originals.clear());
    }

    async fn start_originals(&self, version: Version) -> Result<(), String> {
        let config = self.config(version);
        let ports = self.ports.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let originals: Vec<_> = (0..config.instances)
            .map(|i| {
                let port = ports.get(&format!("{}-{i}", config.name)).copied();
                self.supervisor
                    .spawn(self.supervisor.original_spec(config, i, port, false))
            })
            .collect();
        for o in &originals {
            self.log
                .info(Some(o.name()), format!("starting version {}", config.version()));
        }
        self.supervisor.update(self.app(), |a| a.originals = originals.clone());
        let mut result = self.wait_all_ready(&originals).await;
        if result.is_ok() && version == Version::Target {
            if let Some(script) = &config.hooks.deploy {
                result = self.run_hook("deploy", script, DEPLOY_HOOK_TIMEOUT).await;
                if result.is_err() {
                    join_all(originals.iter().map(|i| i.stop())).await;
                }
            }
        }
        if result.is_err() {
            self.supervisor.update(self.app(), |a| a.originals.clear());
        }
        result
    }

    async fn route_to_originals(&self) {
        let generation = self.supervisor.routing().serve(self.app(), self.originals());
        self.log.info(
            None,
            format!("traffic now goes to the originals (route table generation {generation})"),
        );
    }

    async fn retire_clones(&self) {
        let clones = self.clones();
        self.drain_and_stop(&clones).await;
        self.supervisor.update(self.app(), |a| a.clones.clear());
    }

    async fn promote_clones(&self) {
        let clones = self.clones();
        for clone in &clones {
            clone.promote();
        }
        self.supervisor
            .update(self.app(), |a| a.originals = std::mem::take(&mut a.clones));
        self.log.warn(None, "the clones now serve as the app's instances");
    }

    async fn revive_previous(&self) {
        self.log.warn(
            None,
            "starting the previous version again; it will keep retrying until ready",
        );
        self.supervisor.start_app(Arc::clone(&self.previous));
    }

    async fn commit(&self, serving: Version) {
        let config = Arc::clone(self.config(serving));
        self.supervisor.update(self.app(), |a| a.config = Arc::clone(&config));
        (self.on_commit)(&config);
    }

    async fn start_candidates(&self, role: Role) -> Result<(), String> {
        if role == Role::Canary {
            self.canary_possible()?;
        }
        let count = u64::from(self.target.instances.max(1));
        let (kind, what) = match role {
            Role::Green => (NameKind::Green, "green"),
            _ => (NameKind::Canary, "canary"),
        };
        // Names are never reused (`web-canary-<n>`, `web-green-<n>`): the
        // instances keep them when they become the app's own.
        let first = self
            .journal
            .take_instance_numbers(self.app(), kind, count)
            .map_err(|e| format!("cannot name the {what} instances: {e}"))?;
        let instances: Vec<_> = (first..first.saturating_add(count))
            .map(|n| {
                let spec = match role {
                    Role::Green => self.supervisor.green_spec(&self.target, n),
                    _ => self.supervisor.canary_spec(&self.target, n),
                };
                self.supervisor.spawn(spec)
            })
            .collect();
        for i in &instances {
            self.log.info(
                Some(i.name()),
                format!("starting {what} instance (version {})", self.target.version()),
            );
        }
        self.supervisor.update(self.app(), |a| a.candidates = instances.clone());
        let mut result = self.wait_all_ready(&instances).await;
        if result.is_ok() {
            if let Some(script) = &self.target.hooks.deploy {
                result = self.run_hook("deploy", script, DEPLOY_HOOK_TIMEOUT).await;
                if result.is_err() {
                    join_all(instances.iter().map(|i| i.stop())).await;
                }
            }
        }
        // The deploy hook may have run for minutes: bluegreen swaps right
        // after this phase, so the candidates must still be ready now.
        if result.is_ok() && role == Role::Green {
            result = self.confirm_candidates_ready().await;
            if result.is_err() {
                join_all(instances.iter().map(|i| i.stop())).await;
            }
        }
        if result.is_err() {
            self.supervisor.update(self.app(), |a| a.candidates.clear());
        }
        result
    }

    async fn confirm_candidates_ready(&self) -> Result<(), String> {
        let candidates = self.candidates();
        if candidates.is_empty() {
            return Err("the new version has no instance left".into());
        }
        let within = self.target.health.start_timeout;
        for instance in &candidates {
            match tokio::time::timeout(within, instance.ready()).await {
                Ok(Ok(_)) => {}
                Ok(Err(reason)) => return Err(format!("{} is not ready: {reason}", instance.name())),
                Err(_) => {
                    return Err(format!(
                        "{} did not get ready again within {}",
                        instance.name(),
                        humantime::format_duration(within)
                    ))
                }
            }
        }
        Ok(())
    }

    async fn split(&self, weight_bp: u16, sticky: bool) -> Result<Arc<dyn Measure>, String> {
        let traffic = self.traffic.as_ref().ok_or("no traffic split configured")?;
        let measure = traffic.set_split(self.app(), &self.candidates(), weight_bp, sticky)?;
        self.log.info(
            None,
            format!(
                "route table: {}% of new requests to the canaries",
                f64::from(weight_bp) / 100.0
            ),
        );
        Ok(measure)
    }

    async fn retire_candidates(&self) {
        if let Some(traffic) = &self.traffic {
            let generation = traffic.end_split(self.app(), SplitEnd::Stable);
            self.log.info(
                None,
                format!("the new version's instances left the route table (generation {generation})"),
            );
        }
        let candidates = self.candidates();
        self.drain_and_stop(&candidates).await;
        self.supervisor.update(self.app(), |a| a.candidates.clear());
    }

    async fn promote_canaries(&self) {
        let canaries = self.candidates();
        let stable = self.originals();
        for canary in &canaries {
            canary.promote();
        }
        self.supervisor.update(self.app(), |a| {
            a.originals = canaries.clone();
            a.candidates.clear();
        });
        let generation = match &self.traffic {
            Some(traffic) => traffic.end_split(self.app(), SplitEnd::Canary(canaries)),
            None => self.supervisor.routing().serve(self.app(), canaries),
        };
        self.log.info(
            None,
            format!("the new version serves alone (route table generation {generation})"),
        );
        self.drain_and_stop(&stable).await;
    }

    async fn swap_to_green(&self) {
        let green = self.candidates();
        let previous = self.originals();
        for instance in &green {
            instance.promote();
        }
        self.supervisor.update(self.app(), |a| {
            a.originals = green.clone();
            a.candidates.clear();
        });
        let generation = self.supervisor.routing().serve(self.app(), green);
        self.log.info(
            None,
            format!("traffic now goes to the green set (route table generation {generation})"),
        );
        match &self.on_warm {
            Some(keep) => {
                self.log.info(
                    None,
                    format!(
                        "the previous set stays warm for {} (cutover rollback swaps back)",
                        humantime::format_duration(self.target.bluegreen.keep_previous)
                    ),
                );
                keep(previous);
            }
            None => self.drain_and_stop(&previous).await,
        }
    }

    fn canary(&self) -> CanaryConfig {
        self.target.canary.clone()
    }
}
