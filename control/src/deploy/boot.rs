//! Start-up: what serves after a restart. The journal wins over
//! `deploy.yaml`: every app comes back on the version it was last deployed
//! with; a difference from `deploy.yaml` is then applied like a push.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::{self, AppConfig, Config};
use crate::journal::Journal;

/// What to start with.
pub struct Restored {
    /// `deploy.yaml` with each journaled app's definition put back.
    pub config: Config,
    /// Per app, the config text its definition comes from.
    pub sources: BTreeMap<String, String>,
    /// Staged definitions with their config text.
    pub staged: Vec<(Arc<AppConfig>, String)>,
}

/// Combines the journal with `deploy.yaml` (`config`, text `source`).
pub fn restore(journal: &Journal, config: &Config, source: &str, base_dir: &Path) -> Restored {
    let state = journal.state();
    let mut restored = config.clone();
    let mut sources: BTreeMap<String, String> = config.apps.keys().map(|n| (n.clone(), source.to_string())).collect();

    if let Some(routes_source) = &state.routes_config {
        match config::parse(routes_source, "journal", base_dir) {
            Ok(journaled) => restored.routes = journaled.routes,
            Err(e) => tracing::warn!(error = %e, "journaled routes do not parse; using deploy.yaml's"),
        }
    }
    // Routes of the journaled config may name apps deploy.yaml dropped:
    // those apps come back too, and the push that follows removes them.
    for (name, entry) in &state.current {
        match app_from(&entry.config, name, base_dir) {
            Some(app) => {
                restored.apps.insert(name.clone(), app);
                sources.insert(name.clone(), entry.config.clone());
            }
            None => tracing::warn!(app = %name, "journaled definition does not parse; using deploy.yaml's"),
        }
    }
    // A route to an app that exists in neither would make the table
    // invalid; keep only routes to known apps.
    restored.routes.retain(|r| restored.apps.contains_key(&r.app));

    let staged = state
        .staged
        .iter()
        .filter_map(|(name, entry)| {
            app_from(&entry.config, name, base_dir).map(|app| (Arc::new(app), entry.config.clone()))
        })
        .collect();
    Restored {
        config: restored,
        sources,
        staged,
    }
}

fn app_from(source: &str, name: &str, base_dir: &Path) -> Option<AppConfig> {
    config::parse(source, "journal", base_dir).ok()?.apps.remove(name)
}
