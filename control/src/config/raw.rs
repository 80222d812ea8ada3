//! `deploy.yaml` exactly as written, before any check.
//!
//! Every key is optional here, so a missing key is reported by the validator
//! with a helpful message rather than by serde; every struct denies unknown
//! keys (SPEC §3: "unknown keys are errors"). Durations stay strings until
//! validation parses them, so a bad one is reported with its key path. An
//! explicit `null` (`threads:` with nothing after it) means the same as
//! leaving the key out.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::model::{Strategy, Upstream};

/// The whole file.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with proxy, admin, state_dir, apps and routes"
)]
pub struct RawConfig {
    pub proxy: Option<RawProxy>,
    pub admin: Option<RawAdmin>,
    pub state_dir: Option<String>,
    pub apps: Option<BTreeMap<String, RawApp>>,
    pub routes: Option<Vec<RawRoute>>,
}

/// `proxy:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with listen, threads, hold_timeout, trusted_proxies, limits, tls, http2, h2c, long_lived and tuning"
)]
pub struct RawProxy {
    pub listen: Option<ListenList>,
    pub threads: Option<i64>,
    pub hold_timeout: Option<RawDuration>,
    pub trusted_proxies: Option<Vec<String>>,
    pub limits: Option<RawLimits>,
    pub tls: Option<RawTls>,
    pub http2: Option<bool>,
    pub h2c: Option<bool>,
    pub long_lived: Option<RawLongLived>,
    pub tuning: Option<RawTuning>,
}

/// `proxy.tls:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with listen, certificates, acme, redirect_http and hsts"
)]
pub struct RawTls {
    pub listen: Option<ListenList>,
    pub certificates: Option<Vec<RawCertificate>>,
    pub acme: Option<RawAcme>,
    pub redirect_http: Option<bool>,
    pub hsts: Option<RawDuration>,
}

/// One item of `proxy.tls.certificates:`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a certificate such as { hosts: [example.com], cert: certs/example.pem, key: certs/example.key }"
)]
pub struct RawCertificate {
    pub hosts: Option<Vec<String>>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// `proxy.tls.acme:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with directory, email, challenge, ca_roots and hosts"
)]
pub struct RawAcme {
    pub directory: Option<String>,
    pub email: Option<String>,
    pub challenge: Option<String>,
    pub ca_roots: Option<String>,
    pub hosts: Option<Vec<String>>,
}

/// `proxy.limits:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with header_timeout, keepalive_timeout and max_connections"
)]
pub struct RawLimits {
    pub header_timeout: Option<RawDuration>,
    pub keepalive_timeout: Option<RawDuration>,
    pub max_connections: Option<i64>,
}

/// `proxy.long_lived:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with spread, close_grace and idle_timeout"
)]
pub struct RawLongLived {
    pub spread: Option<RawDuration>,
    pub close_grace: Option<RawDuration>,
    pub idle_timeout: Option<RawDuration>,
}

/// `proxy.tuning:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with l4_read_buffer, listener_tasks and upstream_pool"
)]
pub struct RawTuning {
    pub l4_read_buffer: Option<i64>,
    pub listener_tasks: Option<i64>,
    pub upstream_pool: Option<i64>,
}

/// `admin:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with listen, token_env and allowed_origins"
)]
pub struct RawAdmin {
    pub listen: Option<String>,
    /// `Some("")` turns the token off; absent means the default variable.
    pub token_env: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
}

/// `apps.<name>:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of app settings such as { command: [\"bin/web\"] }"
)]
pub struct RawApp {
    pub command: Option<RawCommand>,
    pub cwd: Option<String>,
    pub env: Option<BTreeMap<String, EnvValue>>,
    pub instances: Option<i64>,
    pub health: Option<RawHealth>,
    pub hooks: Option<RawHooks>,
    pub drain_timeout: Option<RawDuration>,
    pub stop_timeout: Option<RawDuration>,
    pub deploy_strategy: Option<Strategy>,
    pub manual_deployments: Option<bool>,
    pub upstream: Option<Upstream>,
    pub error_pages: Option<String>,
    pub canary: Option<RawCanary>,
    pub bluegreen: Option<RawBluegreen>,
}

/// `apps.<name>.canary:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with steps, sticky and analysis")]
pub struct RawCanary {
    pub steps: Option<Vec<RawCanaryStep>>,
    pub sticky: Option<bool>,
    pub analysis: Option<RawAnalysis>,
}

/// One item of `apps.<name>.canary.steps:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a step such as { weight: 5, pause: 30s }")]
pub struct RawCanaryStep {
    pub weight: Option<i64>,
    /// A duration, or `manual`.
    pub pause: Option<RawDuration>,
}

/// `apps.<name>.canary.analysis:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with max_error_rate, max_latency_ratio and min_requests"
)]
pub struct RawAnalysis {
    pub max_error_rate: Option<RawPercent>,
    pub max_latency_ratio: Option<f64>,
    pub min_requests: Option<i64>,
}

/// `apps.<name>.bluegreen:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with keep_previous")]
pub struct RawBluegreen {
    pub keep_previous: Option<RawDuration>,
}

/// A percentage as written (`1%`, `0.5%`); a bare number is kept as text
/// so the validator can say to add the `%`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPercent(pub String);

impl<'de> Deserialize<'de> for RawPercent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PercentVisitor)
    }
}

struct PercentVisitor;

impl Visitor<'_> for PercentVisitor {
    type Value = RawPercent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a percentage such as 1% or 0.5%")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPercent, E> {
        Ok(RawPercent(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPercent, E> {
        Ok(RawPercent(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPercent, E> {
        Ok(RawPercent(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawPercent, E> {
        Ok(RawPercent(v.to_string()))
    }
}

/// `apps.<name>.health:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { path: /health, interval: 500ms }"
)]
pub struct RawHealth {
    pub path: Option<String>,
    pub interval: Option<RawDuration>,
    pub timeout: Option<RawDuration>,
    pub start_timeout: Option<RawDuration>,
}

/// `apps.<name>.hooks:`
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of hook names (build, deploy, post_start, post_deploy) to shell commands"
)]
pub struct RawHooks {
    pub build: Option<String>,
    pub deploy: Option<String>,
    pub post_start: Option<String>,
    pub post_deploy: Option<String>,
}

/// One item of `routes:`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route such as { host: \"*\", path: /, app: web }"
)]
pub struct RawRoute {
    pub host: Option<String>,
    pub path: Option<String>,
    pub app: Option<String>,
}

/// A duration as written (`500ms`, `30s`, `1h`), parsed by the validator.
/// A bare `0` is accepted as zero; any other bare number needs a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = RawDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration with a unit such as 500ms, 30s or 1h")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
        Ok(RawDuration(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
        if v == 0 {
            return Ok(RawDuration("0".to_string()));
        }
        Err(E::custom(format!(
            "invalid duration {v}: a number needs a unit, e.g. {v}s or {v}ms"
        )))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!("invalid duration {v}: durations cannot be negative"))),
        }
    }
}

/// `proxy.listen:` — a list of addresses; a single string is taken as a list
/// of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenList(pub Vec<String>);

impl<'de> Deserialize<'de> for ListenList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListenVisitor)
    }
}

struct ListenVisitor;

impl<'de> Visitor<'de> for ListenVisitor {
    type Value = ListenList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of addresses such as [\"127.0.0.1:8080\"]")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenList, E> {
        Ok(ListenList(vec![v.to_string()]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ListenList, A::Error> {
        let mut list = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            list.push(item);
        }
        Ok(ListenList(list))
    }
}

/// `command:` — an argv list (run directly) or a string (run by `sh -c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawCommand {
    Argv(Vec<String>),
    Shell(String),
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CommandVisitor)
    }
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = RawCommand;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings such as [\"bin/web\", \"--verbose\"] or a shell command string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCommand, E> {
        Ok(RawCommand::Shell(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCommand, A::Error> {
        let mut argv = Vec::new();
        while let Some(arg) = seq.next_element::<String>()? {
            argv.push(arg);
        }
        Ok(RawCommand::Argv(argv))
    }
}

/// An `env:` value. Strings, whole numbers and booleans are accepted and
/// passed as written (`WORKERS: 4` is `"4"`); other numbers must be quoted,
/// because YAML would not keep them as written (`1.10` reads as `1.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvValue(pub String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EnvValueVisitor)
    }
}

struct EnvValueVisitor;

impl Visitor<'_> for EnvValueVisitor {
    type Value = EnvValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvValue, E> {
        Ok(EnvValue(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<EnvValue, E> {
        Ok(EnvValue(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnvValue, E> {
        Ok(EnvValue(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnvValue, E> {
        Ok(EnvValue(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<EnvValue, E> {
        Err(E::custom(format!(
            "the number {v} may not be kept as written; put it in quotes, e.g. \"{v}\""
        )))
    }

    fn visit_unit<E: de::Error>(self) -> Result<EnvValue, E> {
        Err(E::custom(
            "the value is empty; write \"\" for an empty string or remove the variable",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(yaml: &str) -> Result<RawApp, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn command_is_a_list_or_a_string() {
        let argv = app("command: [bin/web, --port, \"8080\"]").unwrap();
        let expected = ["bin/web", "--port", "8080"].map(String::from).to_vec();
        assert_eq!(argv.command, Some(RawCommand::Argv(expected)));
        let shell = app("command: bin/web --port $PORT").unwrap();
        let expected = RawCommand::Shell("bin/web --port $PORT".into());
        assert_eq!(shell.command, Some(expected));
        assert!(app("command: { a: b }").is_err());
    }

    #[test]
    fn durations_stay_strings_and_bare_numbers_need_a_unit() {
        let health: RawHealth = serde_yaml::from_str("{ interval: 500ms, timeout: 0 }").unwrap();
        assert_eq!(health.interval, Some(RawDuration("500ms".into())));
        assert_eq!(health.timeout, Some(RawDuration("0".into())));
        let err = serde_yaml::from_str::<RawHealth>("timeout: 30").unwrap_err();
        assert!(
            err.to_string().contains("invalid duration 30: a number needs a unit"),
            "{err}"
        );
    }

    #[test]
    fn env_values_accept_plain_scalars() {
        let raw = app("env: { A: x, B: 4, C: true }").unwrap();
        let env = raw.env.unwrap();
        let values: Vec<&str> = env.values().map(|v| v.0.as_str()).collect();
        assert_eq!(values, ["x", "4", "true"]);
        assert!(app("env: { A: 1.10 }").is_err());
        assert!(app("env: { A: }").is_err());
    }

    #[test]
    fn listen_accepts_one_address_or_a_list() {
        let one: RawProxy = serde_yaml::from_str("listen: 127.0.0.1:8080").unwrap();
        assert_eq!(one.listen, Some(ListenList(vec!["127.0.0.1:8080".into()])));
        let two: RawProxy = serde_yaml::from_str("listen: [\"[::1]:80\", \"0.0.0.0:81\"]").unwrap();
        assert_eq!(two.listen.map(|l| l.0.len()), Some(2));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(app("comand: [x]").is_err());
        assert!(serde_yaml::from_str::<RawRoute>("{ app: web, hots: x }").is_err());
    }
}
