//! The validated configuration the rest of cutover works with.
//!
//! Every value here has passed validation: durations are parsed, addresses
//! resolved, defaults filled in. Nothing downstream re-checks them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use ipnet::IpNet;
use serde::Serialize;

/// A whole, valid `deploy.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `proxy:`
    pub proxy: ProxyConfig,
    /// `admin:`
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
    /// Peers whose `X-Forwarded-*`/`Forwarded` headers are kept (and
    /// appended to); from anyone else they are replaced. Default none.
    pub trusted_proxies: Vec<IpNet>,
    /// `proxy.limits:`
    pub limits: LimitsConfig,
    /// `proxy.tls:`; `None`: plain HTTP only.
    pub tls: Option<TlsConfig>,
    /// HTTP/2 via ALPN on TLS listeners. Default true.
    pub http2: bool,
    /// HTTP/2 prior knowledge on plain listeners. Default false.
    pub h2c: bool,
    /// `proxy.long_lived:`
    pub long_lived: LongLivedConfig,
    /// `proxy.tuning:`
    pub tuning: TuningConfig,
}

/// `proxy.tls:` — TLS listeners and where their certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// At least one address, none shared with `proxy.listen` or
    /// `admin.listen`. Default `127.0.0.1:8443`.
    pub listen: Vec<SocketAddr>,
    /// Certificate files, chosen by SNI (exact host, then wildcard).
    pub certificates: Vec<CertificateConfig>,
    /// Certificates obtained and renewed automatically.
    pub acme: Option<AcmeConfig>,
    /// Plain listeners answer 308 to https for hosts with a certificate.
    /// Default false.
    pub redirect_http: bool,
    /// `Strict-Transport-Security` max-age on TLS answers; zero: not sent.
    pub hsts: Duration,
}

/// One certificate file pair and the hosts it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    /// Exact names or `*.suffix` wildcards, lowercased; at least one.
    pub hosts: Vec<String>,
    /// PEM chain, leaf first. Resolved against the config file's directory.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `proxy.tls.acme:` (RFC 8555).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The ACME server's directory URL (https).
    pub directory: String,
    /// Contact for the account, if any (`mailto:` is added).
    pub email: Option<String>,
    /// How the ACME server checks that cutover answers for a host.
    pub challenge: AcmeChallenge,
    /// Extra PEM roots trusted for the ACME server's own TLS.
    pub ca_roots: Option<PathBuf>,
    /// Exact hosts to obtain certificates for; empty: every exact route
    /// host without a certificate file.
    pub hosts: Vec<String>,
}

/// An ACME challenge type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcmeChallenge {
    /// `http-01`: answered on the plain listeners.
    Http01,
    /// `tls-alpn-01`: answered on the TLS listeners.
    TlsAlpn01,
}

impl AcmeChallenge {
    /// As written in `deploy.yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// `proxy.limits:` — what one client may hold (SPEC §4a "Limits").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// A client must send a complete request head within this. Default 10 s.
    pub header_timeout: Duration,
    /// An idle keep-alive client connection is closed after this. Default 75 s.
    pub keepalive_timeout: Duration,
    /// Client connections held at once; more are closed at accept. Default 8000.
    pub max_connections: usize,
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

/// `proxy.tuning:` — buffer and task sizes of the data plane. The defaults
/// are measured (BENCHMARKS.md, "Connection scale"); they apply at the next
/// start of cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TuningConfig {
    /// Bytes read ahead per client connection (pingora's L4 read buffer);
    /// 0: none. Default 0.
    pub l4_read_buffer: usize,
    /// Tasks accepting on each listener. Default 1.
    pub listener_tasks: usize,
    /// Idle upstream keep-alive connections kept over all backends.
    /// Default 256.
    pub upstream_pool: usize,
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
    /// Browser origins (`scheme://host[:port]`, lowercased, no trailing
    /// slash) allowed to call the API; a request with any other `Origin`
    /// gets 403. Default none.
    pub allowed_origins: Vec<String>,
}

/// One app: how to run it, check it and deploy it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConfig {
    /// The key under `apps:`; matches `[a-z0-9][a-z0-9_-]*`.
    pub name: String,
    /// How to start it.
    pub command: Command,
    /// Resolved against the config file's directory when relative. Default `.`.
    pub cwd: PathBuf,
    /// Extra environment for every instance, on top of cutover's own
    /// `PORT`, `CUTOVER_APP`, `CUTOVER_INSTANCE`, `CUTOVER_ROLE` (which it
    /// may not override).
    pub env: BTreeMap<String, String>,
    /// At least 1. Default 1.
    pub instances: u32,
    /// `health:`
    pub health: HealthConfig,
    /// `hooks:`
    pub hooks: Hooks,
    /// Default 30 s.
    pub drain_timeout: Duration,
    /// Default 10 s.
    pub stop_timeout: Duration,
    /// Default `stopstart`.
    pub deploy_strategy: Strategy,
    /// Default false.
    pub manual_deployments: bool,
    /// How cutover speaks to the app. Default `http1`. Part of the version
    /// (the binary must speak it): a change is deployed, and the table
    /// switches protocol with the instances.
    pub upstream: Upstream,
    /// `canary:` — how the canary strategy walks (used by `canary` only).
    pub canary: CanaryConfig,
    /// `bluegreen:` — how the bluegreen strategy keeps the previous set.
    pub bluegreen: BluegreenConfig,
    /// The directory of the app's own `502.html`, `503.html`, `504.html`
    /// and `maintenance.html` (each optional), resolved against the config
    /// file's directory like `cwd`; `None`: the proxy's built-in answers.
    /// A proxy setting, not part of the version: a push that changes only
    /// this applies it with a table swap, without a deployment.
    pub error_pages: Option<PathBuf>,
}

/// `apps.<name>.canary:` (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryConfig {
    /// At least one; weights 1..=100 and never decreasing. Default 5%/30s,
    /// 25%/1m, 50%/manual.
    pub steps: Vec<CanaryStep>,
    /// A client keeps the version it was first given (cookie). Default true.
    pub sticky: bool,
    /// `canary.analysis:`
    pub analysis: AnalysisConfig,
}

/// One step of a canary: the new version's share of new requests, then a pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanaryStep {
    /// Percent, 1..=100.
    pub weight: u8,
    /// How long the step lasts once it has enough requests.
    pub pause: StepPause,
}

/// A canary step's pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPause {
    /// The step passes after this long (and `min_requests`).
    For(Duration),
    /// `manual`: the step waits for `cutover promote`.
    Manual,
}

/// `apps.<name>.canary.analysis:` — the limits the new version is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalysisConfig {
    /// The new version's share of 5xx answers and failed connections, in
    /// basis points (`1%` = 100). Default 100.
    pub max_error_rate_bp: u32,
    /// The new version's p99 over the stable version's, in thousandths
    /// (`1.5` = 1500). Default 1500.
    pub max_latency_ratio_milli: u32,
    /// Requests that must reach the new version in a step before it can pass. Default 50.
    pub min_requests: u64,
}

impl AnalysisConfig {
    /// `max_error_rate` as a fraction (0.01 for `1%`).
    pub fn max_error_rate(&self) -> f64 {
        f64::from(self.max_error_rate_bp) / 10_000.0
    }

    /// `max_latency_ratio` as written (1.5).
    pub fn max_latency_ratio(&self) -> f64 {
        f64::from(self.max_latency_ratio_milli) / 1000.0
    }
}

impl Default for CanaryConfig {
    fn default() -> Self {
        Self {
            steps: vec![
                CanaryStep {
                    weight: 5,
                    pause: StepPause::For(Duration::from_secs(30)),
                },
                CanaryStep {
                    weight: 25,
                    pause: StepPause::For(Duration::from_secs(60)),
                },
                CanaryStep {
                    weight: 50,
                    pause: StepPause::Manual,
                },
            ],
            sticky: true,
            analysis: AnalysisConfig::default(),
        }
    }
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            max_error_rate_bp: 100,
            max_latency_ratio_milli: 1500,
            min_requests: 50,
        }
    }
}

/// `apps.<name>.bluegreen:` (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BluegreenConfig {
    /// How long the previous set stays warm after the swap. Default 5m.
    pub keep_previous: Duration,
}

impl Default for BluegreenConfig {
    fn default() -> Self {
        Self {
            keep_previous: Duration::from_secs(5 * 60),
        }
    }
}

/// The protocol between cutover and an app (`apps.*.upstream`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upstream {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 prior knowledge over plain TCP (gRPC and other HTTP/2
    /// backends); WebSocket and SSE still reach it over HTTP/1.1.
    H2c,
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
    /// Before anything changes; failure aborts the deploy.
    pub build: Option<String>,
    /// Once per deploy, after the new version starts, before it gets traffic.
    pub deploy: Option<String>,
    /// After every instance start (clones too); must exit 0 before traffic.
    pub post_start: Option<String>,
    /// After traffic reached the new version.
    pub post_deploy: Option<String>,
}

/// A deploy strategy (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Clone, route, upgrade, switch: no moment without a ready instance.
    Rolling,
    /// Drain and stop, then start the new version; requests are held meanwhile.
    Stopstart,
    /// The new version beside the stable one, step by step, judged by
    /// the proxy's own measurements.
    Canary,
    /// A full new set, one table swap, the previous set kept warm.
    Bluegreen,
}

impl Strategy {
    /// Every strategy, for metric series created at 0.
    pub const ALL: [Strategy; 4] = [
        Strategy::Rolling,
        Strategy::Stopstart,
        Strategy::Canary,
        Strategy::Bluegreen,
    ];

    /// As written in `deploy.yaml` and shown in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::Stopstart => "stopstart",
            Strategy::Canary => "canary",
            Strategy::Bluegreen => "bluegreen",
        }
    }
}

/// One entry of `routes:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Which request hosts match. Default `*`.
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

// === impl AppConfig ===

impl AppConfig {
    /// The app's version: a 12-hex-digit digest of its definition (command,
    /// cwd, env, hooks, and `upstream: h2c`; SPEC §3 "an app's version is its definition").
    ///
    /// Stable across runs and builds (FNV-1a 64 over a length-prefixed
    /// encoding, no randomly seeded hasher), so the journal can compare
    /// versions written by an earlier process. Instance count, timeouts and
    /// strategy are not part of it: changing them is not a new version.
    pub fn version(&self) -> String {
        let mut digest = Fnv1a::default();
        match &self.command {
            Command::Argv(argv) => {
                digest.field(b"argv");
                digest.number(argv.len());
                for arg in argv {
                    digest.field(arg.as_bytes());
                }
            }
            Command::Shell(script) => {
                digest.field(b"shell");
                digest.field(script.as_bytes());
            }
        }
        digest.field(self.cwd.as_os_str().as_encoded_bytes());
        // BTreeMap iterates in key order: the encoding is canonical.
        digest.number(self.env.len());
        for (name, value) in &self.env {
            digest.field(name.as_bytes());
            digest.field(value.as_bytes());
        }
        for hook in [
            &self.hooks.build,
            &self.hooks.deploy,
            &self.hooks.post_start,
            &self.hooks.post_deploy,
        ] {
            match hook {
                None => digest.field(b"-"),
                Some(script) => {
                    digest.field(b"+");
                    digest.field(script.as_bytes());
                }
            }
        }
        // The protocol the app speaks belongs to its binary: a change is a
        // new version (deployed, so the table switches protocol with the
        // instances). Only h2c is written, so every http1 app keeps the
        // version earlier builds gave it.
        if self.upstream == Upstream::H2c {
            digest.field(b"upstream=h2c");
        }
        let hex = format!("{:016x}", digest.0);
        hex[..12].to_string()
    }
}

/// 64-bit FNV-1a. Fields are written with their length first, so
/// `["ab", "c"]` and `["a", "bc"]` digest differently.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn number(&mut self, n: usize) {
        self.bytes(&(n as u64).to_le_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        self.number(bytes.len());
        self.bytes(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> AppConfig {
        AppConfig {
            name: "web".into(),
            command: Command::Argv(vec!["bin/web".into()]),
            cwd: PathBuf::from("/srv/app"),
            env: BTreeMap::from([("APP_VERSION".to_string(), "v1".to_string())]),
            instances: 1,
            health: HealthConfig {
                path: "/health".into(),
                interval: Duration::from_millis(500),
                timeout: Duration::from_secs(2),
                start_timeout: Duration::from_secs(30),
            },
            hooks: Hooks::default(),
            drain_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            deploy_strategy: Strategy::Stopstart,
            manual_deployments: false,
            upstream: Upstream::Http1,
            canary: CanaryConfig::default(),
            bluegreen: BluegreenConfig::default(),
            error_pages: None,
        }
    }

    #[test]
    fn version_is_twelve_hex_digits_and_stable_across_runs() {
        let version = web().version();
        assert_eq!(version.len(), 12);
        assert!(version.chars().all(|c| c.is_ascii_hexdigit()));
        // Pinned: a change here would make every running app look changed
        // to a journal written by an older build.
        assert_eq!(version, PINNED_WEB_VERSION);
    }

    const PINNED_WEB_VERSION: &str = "66ae022d7e11";

    #[test]
    fn version_changes_with_the_definition() {
        let base = web().version();
        let mut env = web();
        env.env.insert("APP_VERSION".into(), "v2".into());
        assert_ne!(env.version(), base);
        let mut command = web();
        command.command = Command::Shell("bin/web".into());
        assert_ne!(command.version(), base);
        let mut hooks = web();
        hooks.hooks.build = Some("make".into());
        assert_ne!(hooks.version(), base);
        let mut cwd = web();
        cwd.cwd = PathBuf::from("/srv/other");
        assert_ne!(cwd.version(), base);
        let mut h2c = web();
        h2c.upstream = Upstream::H2c;
        assert_ne!(h2c.version(), base, "the protocol belongs to the binary");
    }

    #[test]
    fn version_ignores_how_the_app_is_run() {
        let base = web().version();
        let mut scaled = web();
        scaled.instances = 4;
        scaled.deploy_strategy = Strategy::Rolling;
        scaled.drain_timeout = Duration::from_secs(5);
        scaled.manual_deployments = true;
        scaled.error_pages = Some(PathBuf::from("/srv/pages"));
        assert_eq!(scaled.version(), base);
    }

    #[test]
    fn version_fields_cannot_run_into_each_other() {
        let mut a = web();
        a.command = Command::Argv(vec!["ab".into(), "c".into()]);
        let mut b = web();
        b.command = Command::Argv(vec!["a".into(), "bc".into()]);
        assert_ne!(a.version(), b.version());
    }
}
