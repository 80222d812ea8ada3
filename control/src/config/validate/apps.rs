//! `apps:` — names, commands, environment, health checks and hooks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Check;
use crate::config::bounds;
use crate::config::model::{AppConfig, Command, HealthConfig, Hooks, Strategy};
use crate::config::problem::join_key;
use crate::config::raw::{EnvValue, RawApp, RawCommand, RawHealth, RawHooks};
use crate::config::rules;

impl Check<'_> {
    pub(super) fn apps(
        &mut self,
        raw: Option<&BTreeMap<String, RawApp>>,
        base_dir: &Path,
    ) -> BTreeMap<String, AppConfig> {
        let Some(raw) = raw else {
            self.push(
                "apps",
                "missing key \"apps\": define at least one app, e.g. apps: { web: { command: [\"bin/web\"] } }",
            );
            return BTreeMap::new();
        };
        if raw.is_empty() {
            self.push(
                "apps",
                "no apps defined; add at least one, e.g. web: { command: [\"bin/web\"] }",
            );
        }
        for name in raw.keys() {
            if let Err(message) = rules::app_name_collision(name, raw.keys().map(String::as_str)) {
                self.push(join_key("apps", name), message);
            }
        }
        raw.iter()
            .map(|(name, app)| (name.clone(), self.app(name, app, base_dir)))
            .collect()
    }

    fn app(&mut self, name: &str, raw: &RawApp, base_dir: &Path) -> AppConfig {
        let at = join_key("apps", name);
        if let Err(message) = rules::app_name(name) {
            self.push(&at, message);
        }
        let key = |k: &str| join_key(&at, k);
        let (min, max) = bounds::INSTANCES;
        let instances = match raw.instances {
            None => 1,
            Some(n) if (min..=max).contains(&n) => u32::try_from(n).unwrap_or(1),
            Some(n) => {
                self.push(
                    key("instances"),
                    format!("instances must be between {min} and {max}, got {n}"),
                );
                1
            }
        };
        AppConfig {
            name: name.to_string(),
            command: self.command(&key("command"), raw.command.as_ref()),
            cwd: self.dir(&key("cwd"), raw.cwd.as_deref(), ".", base_dir),
            env: self.env(&key("env"), raw.env.as_ref()),
            instances,
            health: self.health(&key("health"), raw.health.as_ref().unwrap_or(&RawHealth::default())),
            hooks: self.hooks(&key("hooks"), raw.hooks.as_ref().unwrap_or(&RawHooks::default())),
            drain_timeout: self.duration(
                &key("drain_timeout"),
                raw.drain_timeout.as_ref(),
                Duration::from_secs(30),
                bounds::DRAIN_TIMEOUT,
            ),
            stop_timeout: self.duration(
                &key("stop_timeout"),
                raw.stop_timeout.as_ref(),
                Duration::from_secs(10),
                bounds::STOP_TIMEOUT,
            ),
            deploy_strategy: raw.deploy_strategy.unwrap_or(Strategy::Stopstart),
            manual_deployments: raw.manual_deployments.unwrap_or(false),
            upstream: raw.upstream.unwrap_or_default(),
            canary: self.canary(&key("canary"), raw.canary.as_ref()),
            bluegreen: self.bluegreen(&key("bluegreen"), raw.bluegreen.as_ref()),
            error_pages: self.error_pages(&key("error_pages"), raw.error_pages.as_deref(), base_dir),
        }
    }

    /// `error_pages`: a directory resolved like `cwd`; blank or absent means
    /// none. Its files are checked by `config::error_pages` (only for a
    /// config a user gives, not for the journal's).
    fn error_pages(&mut self, at: &str, raw: Option<&str>, base_dir: &Path) -> Option<PathBuf> {
        let text = raw.filter(|t| !t.trim().is_empty())?;
        if let Err(message) = rules::no_nul(text) {
            self.push(at, message);
        }
        Some(super::resolve(base_dir, text))
    }

    fn command(&mut self, at: &str, raw: Option<&RawCommand>) -> Command {
        let placeholder = Command::Argv(vec!["true".to_string()]);
        match raw {
            None => {
                self.push(
                    at,
                    "missing key \"command\": give an argv list such as [\"bin/web\"] or a shell string such as \"bin/web --port $PORT\"",
                );
                placeholder
            }
            Some(RawCommand::Argv(argv)) if argv.is_empty() => {
                self.push(
                    at,
                    "command is an empty list; give the program to run first, e.g. [\"bin/web\"]",
                );
                placeholder
            }
            Some(RawCommand::Argv(argv)) => {
                if argv[0].trim().is_empty() {
                    self.push(
                        format!("{at}[0]"),
                        "the program name is empty; give the program to run, e.g. bin/web",
                    );
                }
                for (i, arg) in argv.iter().enumerate() {
                    if let Err(message) = rules::no_nul(arg) {
                        self.push(format!("{at}[{i}]"), message);
                    }
                }
                Command::Argv(argv.clone())
            }
            Some(RawCommand::Shell(script)) => {
                if script.trim().is_empty() {
                    self.push(
                        at,
                        "command is blank; give a shell command such as \"bin/web\" or an argv list",
                    );
                }
                if let Err(message) = rules::no_nul(script) {
                    self.push(at, message);
                }
                Command::Shell(script.clone())
            }
        }
    }

    fn env(&mut self, at: &str, raw: Option<&BTreeMap<String, EnvValue>>) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (name, value) in raw.into_iter().flatten() {
            let key_path = if name.is_empty() {
                at.to_string()
            } else {
                join_key(at, name)
            };
            if let Err(message) = rules::env_name(name, "env key") {
                self.push(&key_path, message);
            } else if rules::RESERVED_ENV.contains(&name.as_str()) {
                self.push(
                    &key_path,
                    format!(
                        "{name} is set by cutover for every instance ({}); remove it or use another name",
                        rules::RESERVED_ENV.join(", ")
                    ),
                );
            }
            if let Err(message) = rules::no_nul(&value.0) {
                self.push(&key_path, format!("value {message}"));
            }
            env.insert(name.clone(), value.0.clone());
        }
        env
    }

    fn health(&mut self, at: &str, raw: &RawHealth) -> HealthConfig {
        let key = |k: &str| join_key(at, k);
        let path = raw.path.clone().unwrap_or_else(|| "/health".to_string());
        if let Err(message) = rules::health_path(&path) {
            self.push(key("path"), message);
        }
        let interval = self.duration(
            &key("interval"),
            raw.interval.as_ref(),
            Duration::from_millis(500),
            bounds::HEALTH_INTERVAL,
        );
        let timeout = self.duration(
            &key("timeout"),
            raw.timeout.as_ref(),
            Duration::from_secs(2),
            bounds::HEALTH_TIMEOUT,
        );
        let start_timeout = self.duration(
            &key("start_timeout"),
            raw.start_timeout.as_ref(),
            Duration::from_secs(30),
            bounds::START_TIMEOUT,
        );
        if timeout > start_timeout {
            self.push(
                key("timeout"),
                format!(
                    "timeout ({}) is longer than start_timeout ({}), so one check could outlast the whole start; \
                     lower timeout or raise start_timeout",
                    humantime::format_duration(timeout),
                    humantime::format_duration(start_timeout)
                ),
            );
        }
        HealthConfig {
            path,
            interval,
            timeout,
            start_timeout,
        }
    }

    fn hooks(&mut self, at: &str, raw: &RawHooks) -> Hooks {
        let mut hook = |name: &str, script: &Option<String>| {
            let script = script.as_deref().filter(|s| !s.trim().is_empty())?;
            if let Err(message) = rules::no_nul(script) {
                self.push(join_key(at, name), message);
            }
            Some(script.to_string())
        };
        Hooks {
            build: hook("build", &raw.build),
            deploy: hook("deploy", &raw.deploy),
            post_start: hook("post_start", &raw.post_start),
            post_deploy: hook("post_deploy", &raw.post_deploy),
        }
    }
}
