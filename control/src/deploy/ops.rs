//! The real [`DeployOps`]: processes through the [`Supervisor`], traffic
//! through [`crate::routing::Routing`], hooks through [`Hook`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;

use super::drain::drain_and_stop;
use super::record::DeploymentLog;
use super::run::{DeployOps, HookKind, Version};
use crate::config::AppConfig;
use crate::hooks::Hook;
use crate::journal::Journal;
use crate::supervisor::instance::Instance;
use crate::supervisor::Supervisor;

/// How long `build` may run.
const BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long `deploy` and `post_deploy` may run.
const DEPLOY_HOOK_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Called with the definition that serves once a deployment commits.
pub type OnCommit = Box<dyn Fn(&Arc<AppConfig>) + Send + Sync>;

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
        }
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
}
