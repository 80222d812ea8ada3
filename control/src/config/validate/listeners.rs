//! `proxy:` and `admin:` — listeners, threads, the data plane's timeouts and
//! the admin API's exposure.

use std::net::SocketAddr;
use std::time::Duration;

use super::{default_threads, Check};
use crate::config::model::{AdminConfig, LongLivedConfig, ProxyConfig};
use crate::config::raw::{RawAdmin, RawProxy};
use crate::config::rules::{self, Zero};

/// Default admin token variable (SPEC §3).
pub(crate) const DEFAULT_TOKEN_ENV: &str = "CUTOVER_ADMIN_TOKEN";

impl Check<'_> {
    /// `proxy:`. Also returns each listener's index in `proxy.listen` as
    /// written (invalid entries are left out of the config), for messages.
    pub(super) fn proxy(&mut self, raw: &RawProxy) -> (ProxyConfig, Vec<usize>) {
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
        let threads = match raw.threads {
            None => default_threads(),
            Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
            Some(n) => {
                self.push(
                    "proxy.threads",
                    format!("threads must be at least 1, got {n}; leave it out to use one per CPU"),
                );
                1
            }
        };
        let hold_timeout = self.duration(
            "proxy.hold_timeout",
            raw.hold_timeout.as_ref(),
            Duration::from_secs(30),
            Zero::Forbidden,
        );
        let long_lived = raw.long_lived.clone().unwrap_or_default();
        let long_lived = LongLivedConfig {
            spread: self.duration(
                "proxy.long_lived.spread",
                long_lived.spread.as_ref(),
                Duration::from_secs(2),
                Zero::Allowed,
            ),
            close_grace: self.duration(
                "proxy.long_lived.close_grace",
                long_lived.close_grace.as_ref(),
                Duration::from_secs(1),
                Zero::Allowed,
            ),
            idle_timeout: self.duration(
                "proxy.long_lived.idle_timeout",
                long_lived.idle_timeout.as_ref(),
                Duration::from_secs(3600),
                Zero::Allowed,
            ),
        };
        let (indexes, listen) = listen.into_iter().unzip();
        let proxy = ProxyConfig {
            listen,
            threads,
            hold_timeout,
            long_lived,
        };
        (proxy, indexes)
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
        AdminConfig { listen, token_env }
    }
}
