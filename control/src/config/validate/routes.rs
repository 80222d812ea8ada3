//! `routes:` — host patterns, path prefixes, and the apps they point at.

use std::collections::BTreeMap;

use super::Check;
use crate::config::model::{HostPattern, RouteConfig};
use crate::config::problem::join_key;
use crate::config::raw::{RawApp, RawRoute};
use crate::config::rules;
use crate::config::wording::closest;

impl Check<'_> {
    pub(super) fn routes(
        &mut self,
        raw: Option<&[RawRoute]>,
        apps: Option<&BTreeMap<String, RawApp>>,
    ) -> Vec<RouteConfig> {
        let Some(raw) = raw else {
            self.push(
                "routes",
                "missing key \"routes\": add at least one route, e.g. routes: [{ host: \"*\", path: /, app: web }]",
            );
            return Vec::new();
        };
        if raw.is_empty() {
            self.push(
                "routes",
                "no routes defined; add at least one, e.g. - { host: \"*\", path: /, app: web }",
            );
        }
        let names: Vec<&str> = apps.into_iter().flatten().map(|(name, _)| name.as_str()).collect();
        let mut routes: Vec<RouteConfig> = Vec::new();
        // Index of each route whose host and path are as written; a route
        // whose host or path was rejected holds a default there and is not
        // compared, or it would look like a duplicate of `host: "*"`.
        let mut comparable: Vec<usize> = Vec::new();
        for (i, route) in raw.iter().enumerate() {
            let at = format!("routes[{i}]");
            let route = self.route(&at, route, &names);
            let as_written = !self.findings.is_suppressed(&at)
                && !self.findings.any_within(&join_key(&at, "host"))
                && !self.findings.any_within(&join_key(&at, "path"));
            if as_written {
                let earlier = comparable
                    .iter()
                    .find(|&&j| routes[j].host == route.host && routes[j].path == route.path);
                if let Some(j) = earlier {
                    self.push(
                        &at,
                        format!(
                            "duplicate route: host {} path {} is already routed by routes[{j}]; remove one or change its host or path",
                            host_text(&route.host),
                            route.path
                        ),
                    );
                }
                comparable.push(i);
            }
            routes.push(route);
        }
        routes
    }

    fn route(&mut self, at: &str, raw: &RawRoute, apps: &[&str]) -> RouteConfig {
        let key = |k: &str| join_key(at, k);
        let host = match raw.host.as_deref() {
            None => HostPattern::Any,
            Some(text) => self.or(&key("host"), rules::host_pattern(text), HostPattern::Any),
        };
        let path = raw.path.clone().unwrap_or_else(|| "/".to_string());
        if let Err(message) = rules::route_path(&path) {
            self.push(key("path"), message);
        }
        let defined = if apps.is_empty() {
            "none".to_string()
        } else {
            apps.join(", ")
        };
        let app = match raw.app.as_deref() {
            None => {
                self.push(
                    key("app"),
                    format!("missing key \"app\": name the app this route sends traffic to; defined apps: {defined}"),
                );
                String::new()
            }
            // With no readable apps every name would look unknown; that is
            // reported once, at `apps`.
            Some(name) if !apps.contains(&name) && !apps.is_empty() && !self.findings.is_suppressed("apps") => {
                let hint = closest(name, apps)
                    .map(|n| format!(" (did you mean \"{n}\"?)"))
                    .unwrap_or_default();
                self.push(
                    key("app"),
                    format!("route points at unknown app \"{name}\"{hint}; defined apps: {defined}"),
                );
                name.to_string()
            }
            Some(name) => name.to_string(),
        };
        RouteConfig { host, path, app }
    }
}

/// A route host as the user would write it, for messages.
fn host_text(host: &HostPattern) -> String {
    match host {
        HostPattern::Any => "\"*\"".to_string(),
        HostPattern::Exact(name) => format!("\"{name}\""),
        HostPattern::Wildcard(suffix) => format!("\"*.{suffix}\""),
    }
}
