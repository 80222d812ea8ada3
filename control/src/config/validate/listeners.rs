//! `proxy:` and `admin:` — listeners, threads, the data plane's timeouts and
//! the admin API's exposure.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{default_threads, Check};
use crate::config::bounds;
use crate::config::model::{AdminConfig, LimitsConfig, LongLivedConfig, ProxyConfig, TlsConfig, TuningConfig};
use crate::config::raw::{RawAdmin, RawLimits, RawProxy, RawTuning};
use crate::config::rules;

/// Default admin token variable (SPEC §3).
pub(crate) const DEFAULT_TOKEN_ENV: &str = "CUTOVER_ADMIN_TOKEN";

/// Default `proxy.limits.max_connections` (SPEC §3).
const DEFAULT_MAX_CONNECTIONS: usize = 8000;

/// Default `proxy.tuning`: the data plane's own defaults
/// (`cutover_proxy::Tuning`), measured in BENCHMARKS.md, "Connection scale".
pub(crate) const DEFAULT_TUNING: TuningConfig = TuningConfig {
    l4_read_buffer: 0,
    listener_tasks: 1,
    upstream_pool: 256,
};

impl Check<'_> {
    /// `proxy:`. Also returns each listener's index in `proxy.listen` as
    /// written (invalid entries are left out of the config), for messages.
    pub(super) fn proxy(&mut self, raw: &RawProxy, base_dir: &Path) -> (ProxyConfig, Vec<usize>) {
        // (index as written, address)
        let mut listen: Vec<(usize, SocketAddr)> = Vec::new();
        match &raw.listen {
            None => listen.push((0, SocketAddr::from(([127, 0, 0, 1], 8080)))),
            Some(list) if list.0.is_empty() => self.push(
                "proxy.listen",
                "no listen address; give at least one, e.g. [\"127.0.0.1:8080\"]",
            ),
            Some(list) => {
                for (i, text) in list.0.iter().enumerate() {
                    let key_path = format!("proxy.listen[{i}]");
                    let Ok(addr) = rules::listen_addr(text).map_err(|m| self.push(&key_path, m)) else {
                        continue;
                    };
                    let earlier = listen.iter().find(|(_, other)| rules::listeners_conflict(addr, *other));
                    if let Some((j, other)) = earlier {
                        self.push(
                            &key_path,
                            format!(
                                "{addr} conflicts with proxy.listen[{j}] ({other}); each listener needs its own address and port"
                            ),
                        );
                    }
                    listen.push((i, addr));
                }
            }
        }
        let (min_threads, max_threads) = bounds::THREADS;
        let threads = match raw.threads {
            None => default_threads(),
            Some(n) if (min_threads..=max_threads).contains(&n) => usize::try_from(n).unwrap_or(1),
            Some(n) => {
                self.push(
                    "proxy.threads",
                    format!(
                        "threads must be between {min_threads} and {max_threads}, got {n}; leave it out to use one per CPU"
                    ),
                );
                1
            }
        };
        let hold_timeout = self.duration(
            "proxy.hold_timeout",
            raw.hold_timeout.as_ref(),
            Duration::from_secs(30),
            bounds::HOLD_TIMEOUT,
        );
        let trusted_proxies = self.trusted_proxies(raw.trusted_proxies.as_deref().unwrap_or_default());
        let limits = self.limits(raw.limits.as_ref().unwrap_or(&RawLimits::default()));
        let long_lived = raw.long_lived.clone().unwrap_or_default();
        let long_lived = LongLivedConfig {
            spread: self.duration(
                "proxy.long_lived.spread",
                long_lived.spread.as_ref(),
                Duration::from_secs(2),
                bounds::SPREAD,
            ),
            close_grace: self.duration(
                "proxy.long_lived.close_grace",
                long_lived.close_grace.as_ref(),
                Duration::from_secs(1),
                bounds::CLOSE_GRACE,
            ),
            idle_timeout: self.duration(
                "proxy.long_lived.idle_timeout",
                long_lived.idle_timeout.as_ref(),
                Duration::from_secs(3600),
                bounds::IDLE_TIMEOUT,
            ),
        };
        let tuning = self.tuning(raw.tuning.as_ref().unwrap_or(&RawTuning::default()));
        let tls = raw.tls.as_ref().map(|tls| self.tls(tls, &listen, base_dir));
        let (indexes, listen) = listen.into_iter().unzip();
        let proxy = ProxyConfig {
            listen,
            threads,
            hold_timeout,
            trusted_proxies,
            limits,
            tls,
            http2: raw.http2.unwrap_or(true),
            h2c: raw.h2c.unwrap_or(false),
            long_lived,
            tuning,
        };
        (proxy, indexes)
    }

    /// `proxy.trusted_proxies:` — CIDRs or single addresses.
    fn trusted_proxies(&mut self, raw: &[String]) -> Vec<ipnet::IpNet> {
        raw.iter()
            .enumerate()
            .filter_map(|(i, text)| {
                rules::cidr(text)
                    .map_err(|m| self.push(format!("proxy.trusted_proxies[{i}]"), m))
                    .ok()
            })
            .collect()
    }

    /// `proxy.limits:`
    fn limits(&mut self, raw: &RawLimits) -> LimitsConfig {
        let max_connections = self.count(
            "proxy.limits.max_connections",
            raw.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            bounds::MAX_CONNECTIONS,
        );
        LimitsConfig {
            header_timeout: self.duration(
                "proxy.limits.header_timeout",
                raw.header_timeout.as_ref(),
                Duration::from_secs(10),
                bounds::HEADER_TIMEOUT,
            ),
            keepalive_timeout: self.duration(
                "proxy.limits.keepalive_timeout",
                raw.keepalive_timeout.as_ref(),
                Duration::from_secs(75),
                bounds::KEEPALIVE_TIMEOUT,
            ),
            max_connections,
        }
    }

    /// `proxy.tuning:`
    fn tuning(&mut self, raw: &RawTuning) -> TuningConfig {
        TuningConfig {
            l4_read_buffer: self.count(
                "proxy.tuning.l4_read_buffer",
                raw.l4_read_buffer,
                DEFAULT_TUNING.l4_read_buffer,
                bounds::L4_READ_BUFFER,
            ),
            listener_tasks: self.count(
                "proxy.tuning.listener_tasks",
                raw.listener_tasks,
                DEFAULT_TUNING.listener_tasks,
                bounds::LISTENER_TASKS,
            ),
            upstream_pool: self.count(
                "proxy.tuning.upstream_pool",
                raw.upstream_pool,
                DEFAULT_TUNING.upstream_pool,
                bounds::UPSTREAM_POOL,
            ),
        }
    }

    /// The admin listener may not take a TLS listener's port.
    pub(super) fn admin_not_on_tls(&mut self, admin: &AdminConfig, tls: Option<&TlsConfig>) {
        let tls_listen = tls.map(|tls| tls.listen.as_slice()).unwrap_or_default();
        if let Some((i, p)) = tls_listen
            .iter()
            .enumerate()
            .find(|(_, p)| rules::listeners_conflict(admin.listen, **p))
        {
            self.push(
                "admin.listen",
                format!(
                    "{} conflicts with proxy.tls.listen[{i}] ({p}); give the admin API its own port, e.g. 127.0.0.1:9180",
                    admin.listen
                ),
            );
        }
    }

    /// `admin:`. `proxy` is the proxy's listeners with their indexes as
    /// written.
    pub(super) fn admin(&mut self, raw: &RawAdmin, proxy: &[(usize, SocketAddr)]) -> AdminConfig {
        let default_listen = SocketAddr::from(([127, 0, 0, 1], 9180));
        let listen = match &raw.listen {
            None => default_listen,
            Some(text) => self.or("admin.listen", rules::listen_addr(text), default_listen),
        };
        let taken = proxy.iter().find(|(_, p)| rules::listeners_conflict(listen, *p));
        if let Some((i, p)) = taken {
            self.push(
                "admin.listen",
                format!(
                    "{listen} conflicts with proxy listener proxy.listen[{i}] ({p}); give the admin API its own port, e.g. 127.0.0.1:9180"
                ),
            );
        }
        let token_env = match raw.token_env.as_deref() {
            None => Some(DEFAULT_TOKEN_ENV.to_string()),
            Some("") => None,
            Some(name) => {
                if let Err(message) = rules::env_name(name, "token_env") {
                    self.push("admin.token_env", message);
                }
                Some(name.to_string())
            }
        };
        if token_env.is_none() && !listen.ip().is_loopback() {
            self.push(
                "admin.token_env",
                format!(
                    "the admin API listens on {listen}, reachable from other machines, without a token; \
                     set token_env to the name of an environment variable holding a bearer token, \
                     or listen on 127.0.0.1"
                ),
            );
        }
        let allowed_origins = raw
            .allowed_origins
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, text)| {
                rules::origin(text)
                    .map_err(|m| self.push(format!("admin.allowed_origins[{i}]"), m))
                    .ok()
            })
            .collect();
        AdminConfig {
            listen,
            token_env,
            allowed_origins,
        }
    }
}
