//! Builds route tables from the configured routes and the instances each
//! app serves, and publishes them to the data plane.
//!
//! Which instances *serve* an app is the control plane's decision (the
//! originals normally, the clones during a rolling deploy); which of those
//! are *ready* is the instances' own state. A table contains exactly the
//! serving instances that are ready, so the table only ever points at
//! instances that passed readiness.
//!
//! An app's operator switches (pause, maintenance) and its error-page
//! directory live here per app too, not in a table: every table built,
//! whoever publishes it (a deployment's swaps included), carries them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use cutover_proxy::{
    AppId, AppMetrics, HostMatch, LongLivedSettings, ProxyMetrics, RouteTable, TableHandle, UpstreamProtocol,
};

use crate::api::progressive::AppSwitches;
use crate::config::{AppConfig, HostPattern, ProxyConfig, RouteConfig, Upstream};
use crate::supervisor::instance::{Instance, OnChange};

mod modes_adapter;

mod split;
pub use split::CanarySet;

/// The control plane's side of the route table.
pub struct Routing {
    table: Arc<TableHandle>,
    metrics: ProxyMetrics,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    routes: Vec<RouteConfig>,
    hold_timeout: Option<Duration>,
    long_lived: Option<LongLivedSettings>,
    apps: BTreeMap<String, AppRouting>,
    /// App ids are never reused, so a request routed on one table finds
    /// the same app (or none) on the next.
    next_id: u32,
    /// Per app: the operator's switches; apps with none are absent.
    switches: BTreeMap<String, AppSwitches>,
    /// Per app: its `error_pages` directory, if it has one.
    error_pages: BTreeMap<String, PathBuf>,
    /// Per app: its error pages, loaded by `configure`.
    pages: BTreeMap<String, Arc<cutover_proxy::ErrorPages>>,
}

struct AppRouting {
    id: AppId,
    metrics: Arc<AppMetrics>,
    serving: Vec<Arc<Instance>>,
    upstream: UpstreamProtocol,
    /// canary: the new version's instances and their share, while a
    /// canary deployment walks its steps (see [`split`]).
    canary: Option<CanarySet>,
}

/// An app as [`Routing::configure`] takes it: its config (name and
/// `upstream`), or only its name (upstream `http1`).
pub trait RoutedApp<'a> {
    /// The app's name.
    fn name(&self) -> &'a str;
    /// How the proxy speaks to its instances.
    fn upstream(&self) -> UpstreamProtocol;
    /// Its `error_pages` directory; none by default.
    fn error_pages(&self) -> Option<&'a Path> {
        None
    }
}

impl<'a> RoutedApp<'a> for &'a str {
    fn name(&self) -> &'a str {
        self
    }

    fn upstream(&self) -> UpstreamProtocol {
        UpstreamProtocol::Http1
    }
}

impl<'a> RoutedApp<'a> for &'a AppConfig {
    fn name(&self) -> &'a str {
        &self.name
    }

    fn upstream(&self) -> UpstreamProtocol {
        upstream_protocol(self.upstream)
    }

    fn error_pages(&self) -> Option<&'a Path> {
        self.error_pages.as_deref()
    }
}

/// The data plane's view of `apps.*.upstream`.
pub fn upstream_protocol(upstream: Upstream) -> UpstreamProtocol {
    match upstream {
        Upstream::Http1 => UpstreamProtocol::Http1,
        Upstream::H2c => UpstreamProtocol::H2c,
    }
}

impl Routing {
    /// Routing that publishes to `table`.
    pub fn new(table: Arc<TableHandle>, metrics: ProxyMetrics) -> Arc<Self> {
        Arc::new(Self {
            table,
            metrics,
            state: Mutex::new(State::default()),
        })
    }

    /// The data plane's table handle.
    pub fn table(&self) -> &Arc<TableHandle> {
        &self.table
    }

    /// A callback for instances: republish when their state changes.
    pub fn on_change(self: &Arc<Self>) -> OnChange {
        let routing: Weak<Self> = Arc::downgrade(self);
        Arc::new(move || {
            if let Some(routing) = routing.upgrade() {
                routing.publish();
            }
        })
    }

    /// Sets the routes, the proxy settings that live in the table
    /// (`hold_timeout`, `long_lived`) and the apps that exist with their
    /// `upstream` (given their configs; names alone mean `http1`); apps no
    /// longer named lose their slot and their metric series. Does not
    /// publish.
    pub fn configure<'a, A: RoutedApp<'a>>(
        &self,
        routes: &[RouteConfig],
        proxy: &ProxyConfig,
        apps: impl IntoIterator<Item = A>,
    ) {
        let mut state = self.lock();
        let apps: Vec<A> = apps.into_iter().collect();
        let wanted: Vec<&str> = apps.iter().map(RoutedApp::name).collect();
        let gone: Vec<String> = state
            .apps
            .keys()
            .filter(|name| !wanted.contains(&name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            state.apps.remove(&name);
            state.switches.remove(&name);
            state.error_pages.remove(&name);
            self.metrics.remove_app(&name);
        }
        for name in wanted {
            if !state.apps.contains_key(name) {
                let id = AppId(state.next_id);
                state.next_id += 1;
                let metrics = self.metrics.app(name);
                state.apps.insert(
                    name.to_string(),
                    AppRouting {
                        id,
                        metrics,
                        serving: Vec::new(),
                        upstream: UpstreamProtocol::Http1,
                        canary: None,
                    },
                );
            }
        }
        for app in &apps {
            if let Some(slot) = state.apps.get_mut(app.name()) {
                slot.upstream = app.upstream();
            }
            match app.error_pages() {
                Some(dir) => state.error_pages.insert(app.name().to_string(), dir.to_path_buf()),
                None => state.error_pages.remove(app.name()),
            };
        }
        state.routes = routes.to_vec();
        state.hold_timeout = Some(proxy.hold_timeout);
        state.long_lived = Some(long_lived_settings(proxy));
        modes_adapter::load_pages(&mut state);
    }

    /// Makes `instances` the ones serving `app`, in one table swap.
    pub fn serve(&self, app: &str, instances: Vec<Arc<Instance>>) -> u64 {
        {
            let mut state = self.lock();
            if let Some(slot) = state.apps.get_mut(app) {
                slot.serving = instances;
            }
        }
        self.publish()
    }

    /// canary: `app`'s canary set from now on (`None`: no split), and,
    /// when given, its serving set, in one table swap.
    pub fn set_canary(&self, app: &str, canary: Option<CanarySet>, serving: Option<Vec<Arc<Instance>>>) -> u64 {
        {
            let mut state = self.lock();
            if let Some(slot) = state.apps.get_mut(app) {
                slot.canary = canary;
                if let Some(serving) = serving {
                    slot.serving = serving;
                }
            }
        }
        self.publish()
    }

    /// Sets `app`'s operator switches, in one table swap. Returns the new
    /// generation. An app that is not configured keeps none.
    pub fn set_switches(&self, app: &str, switches: AppSwitches) -> u64 {
        {
            let mut state = self.lock();
            if state.apps.contains_key(app) {
                put_switches(&mut state, app, switches);
            }
        }
        self.publish()
    }

    /// canary: `app`'s canary set, if it has one.
    pub fn canary(&self, app: &str) -> Option<CanarySet> {
        self.lock().apps.get(app).and_then(|a| a.canary.clone())
    }

    /// Sets the switches of every configured app named in `switches` (at
    /// start-up, from the journal). Does not publish.
    pub fn restore_switches(&self, switches: BTreeMap<String, AppSwitches>) {
        let mut state = self.lock();
        for (app, switches) in switches {
            if state.apps.contains_key(&app) {
                put_switches(&mut state, &app, switches);
            }
        }
    }

    /// `app`'s operator switches (none for an unknown app).
    pub fn switches(&self, app: &str) -> AppSwitches {
        self.lock().switches.get(app).cloned().unwrap_or_default()
    }

    /// `app`'s `error_pages` directory, as last configured.
    pub fn error_pages(&self, app: &str) -> Option<PathBuf> {
        self.lock().error_pages.get(app).cloned()
    }

    /// The instances serving `app`.
    pub fn serving(&self, app: &str) -> Vec<Arc<Instance>> {
        self.lock().apps.get(app).map(|a| a.serving.clone()).unwrap_or_default()
    }

    /// Builds the table from the current state and publishes it. Returns
    /// the new generation.
    pub fn publish(&self) -> u64 {
        // Build under the lock so concurrent publishes cannot reorder an
        // older view after a newer one.
        let state = self.lock();
        let mut builder = RouteTable::builder();
        if let Some(timeout) = state.hold_timeout {
            builder.hold_timeout(timeout);
        }
        if let Some(settings) = state.long_lived {
            builder.long_lived(settings);
        }
        for (name, app) in &state.apps {
            let backends: Vec<_> = app
                .serving
                .iter()
                .filter_map(|i| i.state().ready_backend().cloned())
                .collect();
            // Each serving instance's long-lived series reads 0 from now on.
            self.metrics
                .serving_instances(name, backends.iter().map(|b| b.instance().to_string()).collect());
            builder.app(app.id, name.as_str(), backends, Arc::clone(&app.metrics));
            // The protocol of the version that serves: a table swap only
            // ever serves one version of an app (rolling swaps whole sets,
            // stopstart serves nothing in between), so a push that moves
            // an app to h2c changes the protocol with the swap that brings
            // in the new instances, never under the old ones.
            let upstream = app
                .serving
                .first()
                .map_or(app.upstream, |instance| upstream_protocol(instance.spec().app.upstream));
            builder.upstream(app.id, upstream);
            modes_adapter::apply(&mut builder, &state, name, app.id);
            if let Some(canary) = &app.canary {
                split::add_split(&mut builder, app.id, name, canary);
            }
        }
        for route in &state.routes {
            let Some(app) = state.apps.get(&route.app) else {
                continue;
            };
            let host = match &route.host {
                HostPattern::Any => HostMatch::Any,
                HostPattern::Exact(h) => HostMatch::Exact(h.clone()),
                HostPattern::Wildcard(s) => HostMatch::Wildcard(s.clone()),
            };
            if let Err(e) = builder.route(host, &route.path, app.id) {
                // Validation refuses duplicates; never reached with a valid config.
                tracing::error!(error = %e, "route skipped");
            }
        }
        self.table.publish(builder.build())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps `switches` for `app`; none at all is no entry.
fn put_switches(state: &mut State, app: &str, switches: AppSwitches) {
    if switches == AppSwitches::default() {
        state.switches.remove(app);
    } else {
        state.switches.insert(app.to_string(), switches);
    }
}

/// The data plane's view of `proxy.long_lived`.
pub fn long_lived_settings(proxy: &ProxyConfig) -> LongLivedSettings {
    LongLivedSettings {
        spread: proxy.long_lived.spread,
        close_grace: proxy.long_lived.close_grace,
        idle_timeout: proxy.long_lived.idle_timeout,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::api::progressive::Maintenance;

    fn routing(source: &str) -> (Arc<Routing>, crate::config::Config) {
        let config = crate::config::parse_journaled(source, "deploy.yaml", Path::new("/srv")).unwrap();
        let metrics = ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
        let routing = Routing::new(TableHandle::new(RouteTable::default()), metrics);
        routing.configure(&config.routes, &config.proxy, config.apps.values());
        (routing, config)
    }

    fn maintenance() -> AppSwitches {
        AppSwitches {
            paused: None,
            maintenance: Some(Maintenance {
                since: "2026-01-01T00:00:00.000Z".into(),
                message: None,
            }),
        }
    }

    #[test]
    fn switches_and_error_pages_live_per_app_and_go_with_it() {
        let two = "apps:\n  web: { command: [w], error_pages: pages }\n  api: { command: [a] }\nroutes:\n  - { path: /, app: web }\n  - { path: /api, app: api }\n";
        let (routing, _) = routing(two);
        assert_eq!(routing.error_pages("web"), Some(PathBuf::from("/srv/pages")));
        assert_eq!(routing.error_pages("api"), None);
        let before = routing.table().load().generation();
        let generation = routing.set_switches("api", maintenance());
        assert_eq!(generation, before + 1, "one table swap");
        assert_eq!(routing.switches("api"), maintenance());
        // Every later table carries them: they are not part of one table.
        routing.serve("api", Vec::new());
        assert_eq!(routing.switches("api"), maintenance());
        // An app that is not configured keeps none.
        routing.set_switches("nope", maintenance());
        assert_eq!(routing.switches("nope"), AppSwitches::default());
        // Cleared switches leave no entry behind.
        routing.set_switches("api", AppSwitches::default());
        assert_eq!(routing.switches("api"), AppSwitches::default());
        routing.set_switches("api", maintenance());

        // Configured without api and without web's pages: both go.
        let one = "apps:\n  web: { command: [w] }\nroutes:\n  - { path: /, app: web }\n";
        let config = crate::config::parse_journaled(one, "deploy.yaml", Path::new("/srv")).unwrap();
        routing.configure(&config.routes, &config.proxy, config.apps.values());
        assert_eq!(routing.switches("api"), AppSwitches::default());
        assert_eq!(routing.error_pages("web"), None);
        // Configured back: api starts with no switch.
        let config = crate::config::parse_journaled(two, "deploy.yaml", Path::new("/srv")).unwrap();
        routing.configure(&config.routes, &config.proxy, config.apps.values());
        assert_eq!(routing.switches("api"), AppSwitches::default());
        assert_eq!(routing.error_pages("web"), Some(PathBuf::from("/srv/pages")));
    }

    #[test]
    fn restored_switches_are_set_without_a_publish() {
        let (routing, _) = routing("apps:\n  web: { command: [w] }\nroutes:\n  - { path: /, app: web }\n");
        let before = routing.table().load().generation();
        routing.restore_switches(BTreeMap::from([
            ("web".to_string(), maintenance()),
            ("gone".to_string(), maintenance()),
        ]));
        assert_eq!(routing.table().load().generation(), before);
        assert_eq!(routing.switches("web"), maintenance());
        assert_eq!(routing.switches("gone"), AppSwitches::default());
    }
}
