//! [`RawConfig`] → [`Config`]: defaults filled in, every value checked.
//!
//! Validation never stops early. Each field is checked on its own and a bad
//! value is replaced by its default so the rest can still be checked; the
//! caller throws the result away if any problem was found. One file per part
//! of `deploy.yaml`: `listeners` (`proxy:` and `admin:`), `apps`, `routes`.

mod apps;
mod listeners;
mod progressive;
mod routes;
mod tls;

#[cfg(test)]
pub(crate) use listeners::DEFAULT_TUNING;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::bounds::{self, DurationBounds};
use super::model::{AppConfig, Config, ProxyConfig};
use super::problem::join_key;
use super::problem::Findings;
use super::raw::{RawAdmin, RawConfig, RawDuration, RawProxy};
use super::rules;
use super::timing;

/// Checks `raw`, pushing every problem into `findings`. Relative `cwd` and
/// `state_dir` are resolved against `base_dir`. The returned config is only
/// meaningful when `findings` is empty.
pub(crate) fn validate(raw: &RawConfig, base_dir: &Path, findings: &mut Findings) -> Config {
    let mut check = Check { findings };
    let (proxy, indexes) = check.proxy(raw.proxy.as_ref().unwrap_or(&RawProxy::default()), base_dir);
    let listeners: Vec<_> = indexes.into_iter().zip(proxy.listen.iter().copied()).collect();
    let admin = check.admin(raw.admin.as_ref().unwrap_or(&RawAdmin::default()), &listeners);
    check.admin_not_on_tls(&admin, proxy.tls.as_ref());
    let state_dir = check.dir("state_dir", raw.state_dir.as_deref(), ".cutover", base_dir);
    let apps = check.apps(raw.apps.as_ref(), base_dir);
    let routes = check.routes(raw.routes.as_deref(), raw.apps.as_ref());
    check.notices_fit_in_drains(&proxy, &apps, raw);
    Config {
        proxy,
        admin,
        state_dir,
        apps,
        routes,
    }
}

/// The validator's state: where problems go.
struct Check<'a> {
    findings: &'a mut Findings,
}

impl Check<'_> {
    fn push(&mut self, key_path: impl Into<String>, message: impl Into<String>) {
        self.findings.push(key_path, message);
    }

    /// The value in `result`, or else: records the problem at `key_path`
    /// and gives `fallback`.
    fn or<T>(&mut self, key_path: &str, result: Result<T, String>, fallback: T) -> T {
        result.unwrap_or_else(|message| {
            self.push(key_path, message);
            fallback
        })
    }

    /// An optional duration within `bounds`: `default` when absent.
    fn duration(
        &mut self,
        key_path: &str,
        raw: Option<&RawDuration>,
        default: Duration,
        bounds: DurationBounds,
    ) -> Duration {
        debug_assert!(bounds.contains(default), "default of {key_path} out of its bounds");
        match raw {
            None => default,
            Some(text) => self.or(key_path, rules::duration(&text.0, bounds), default),
        }
    }

    /// An optional whole number within `min..=max`: `default` when absent.
    fn count(&mut self, key_path: &str, raw: Option<i64>, default: usize, (min, max): (i64, i64)) -> usize {
        debug_assert!(
            i64::try_from(default).is_ok_and(|d| (min..=max).contains(&d)),
            "default of {key_path} out of its bounds"
        );
        match raw {
            None => default,
            Some(n) if (min..=max).contains(&n) => usize::try_from(n).unwrap_or(default),
            Some(n) => {
                self.push(key_path, format!("must be between {min} and {max}, got {n}"));
                default
            }
        }
    }

    /// Per app, `spread + close_grace <= drain_timeout`: a draining app's
    /// long-lived clients get their notice within `spread` and then
    /// `close_grace` to answer, and the drain deadline cuts whatever is
    /// left, so a shorter drain could cut a client with no notice. Checked
    /// only where all three values are as written (or defaulted), not
    /// replaced after a problem already reported.
    fn notices_fit_in_drains(&mut self, proxy: &ProxyConfig, apps: &BTreeMap<String, AppConfig>, raw: &RawConfig) {
        if self.findings.any_within("proxy.long_lived") {
            return;
        }
        let long_lived = &proxy.long_lived;
        let window = timing::notice_window(long_lived);
        for (name, app) in apps {
            let at = join_key(&join_key("apps", name), "drain_timeout");
            if app.drain_timeout >= window || self.findings.any_within(&at) {
                continue;
            }
            let written = raw
                .apps
                .as_ref()
                .and_then(|apps| apps.get(name))
                .is_some_and(|app| app.drain_timeout.is_some());
            let drain = rules::human(app.drain_timeout);
            let drain = if written {
                drain
            } else {
                format!("{drain}, the default")
            };
            self.push(
                at,
                format!(
                    "drain_timeout ({drain}) is shorter than proxy.long_lived.spread + close_grace ({} + {} = {}), \
                     so a WebSocket or SSE client could be cut before its close notice; raise drain_timeout to at \
                     least {}, or lower proxy.long_lived.spread or close_grace",
                    rules::human(long_lived.spread),
                    rules::human(long_lived.close_grace),
                    rules::human(window),
                    rules::human(window),
                ),
            );
        }
    }

    /// A directory: relative paths are resolved against `base_dir`.
    fn dir(&mut self, key_path: &str, raw: Option<&str>, default: &str, base_dir: &Path) -> PathBuf {
        let text = raw.unwrap_or(default);
        if text.is_empty() {
            self.push(
                key_path,
                format!("is empty; use . for the config file's directory, or leave it out for {default}"),
            );
        }
        if let Err(message) = rules::no_nul(text) {
            self.push(key_path, message);
        }
        resolve(base_dir, text)
    }
}

/// One worker per CPU (at most the `proxy.threads` bound); 1 if the count
/// is unknown.
pub(crate) fn default_threads() -> usize {
    let max = usize::try_from(bounds::THREADS.1).unwrap_or(1);
    std::thread::available_parallelism().map_or(1, |n| n.get().min(max))
}

/// `base_dir/path` for a relative path, without `.` components (`.` is
/// `base_dir` itself). `..` is kept: it cannot be removed without asking the
/// file system about symlinks.
pub(crate) fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let joined = base_dir.join(path);
    let resolved: PathBuf = joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if resolved.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        resolved
    }
}
