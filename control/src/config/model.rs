//! The validated configuration the rest of cutover works with.
//!
//! Every value here has passed validation: durations are parsed, addresses
//! resolved, defaults filled in. Nothing downstream re-checks them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// A whole, valid `deploy.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    /// Journal, deployment history and instance logs live here. Relative paths
    /// are resolved against the directory of the config file.
    pub state_dir: PathBuf,
    /// Apps by name, in name order (stable output for status and tests).
    pub apps: BTreeMap<String, AppConfig>,
    /// Routes in file order.
    pub routes: Vec<RouteConfig>,
}

/// `proxy:` — the public listeners and the data plane's knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// At least one address.
    pub listen: Vec<SocketAddr>,
    /// Worker threads; defaults to the number of CPUs.
    pub threads: usize,
    /// How long a request may wait for a ready backend. Default 30 s.
    pub hold_timeout: Duration,
    pub long_lived: LongLivedConfig,
}

/// `proxy.long_lived:` — WebSocket and SSE connections when their backend drains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongLivedConfig {
    /// Default 2 s.
    pub spread: Duration,
    /// Default 1 s.
    pub close_grace: Duration,
    /// Default 1 h.
    pub idle_timeout: Duration,
}

/// `admin:` — the admin API and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Default `127.0.0.1:9180`.
    pub listen: SocketAddr,
    /// Name of the environment variable holding the bearer token, if any.
    /// Default `CUTOVER_ADMIN_TOKEN` when the key is absent; `None` only when
    /// explicitly set to an empty string.
    pub token_env: Option<String>,
}

/// One app: how to run it, check it and deploy it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConfig {
    pub name: String,
    pub command: Command,
    /// Resolved against the config file's directory when relative. Default `.`.
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    /// At least 1. Default 1.
    pub instances: u32,
    pub health: HealthConfig,
    pub hooks: Hooks,
    /// Default 30 s.
    pub drain_timeout: Duration,
    /// Default 10 s.
    pub stop_timeout: Duration,
    /// Default `stopstart`.
    pub deploy_strategy: Strategy,
    /// Default false.
    pub manual_deployments: bool,
}

/// How an app is started.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Command {
    /// An argv list: run directly, no shell. Never empty.
    Argv(Vec<String>),
    /// A string: run as `sh -c <string>`. Never blank.
    Shell(String),
}

/// `apps.<name>.health:`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Starts with `/`. Default `/health`.
    pub path: String,
    /// Default 500 ms.
    pub interval: Duration,
    /// Default 2 s.
    pub timeout: Duration,
    /// Default 30 s.
    pub start_timeout: Duration,
}

/// `apps.<name>.hooks:` — shell snippets run with `sh -c`. An empty string
/// in the file means "no hook" and becomes `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Hooks {
    pub build: Option<String>,
    pub deploy: Option<String>,
    pub post_start: Option<String>,
    pub post_deploy: Option<String>,
}

/// A deploy strategy (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Rolling,
    Stopstart,
}

/// One entry of `routes:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub host: HostPattern,
    /// Starts with `/`. Default `/`.
    pub path: String,
    /// Names an app of `apps`.
    pub app: String,
}

/// The host side of a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `*`: any host.
    Any,
    /// `example.com`, lowercased.
    Exact(String),
    /// `*.example.com`: stored as the suffix `example.com`, lowercased.
    /// Matches any name ending in `.example.com`, not `example.com` itself.
    Wildcard(String),
}
