//! Start-up: what serves after a restart. The journal wins over
//! `deploy.yaml`: every app comes back on the version it was last deployed
//! with; a difference from `deploy.yaml` is then applied like a push.
//! Deployments the previous run left unfinished are closed first
//! ([`close_interrupted`]), consistently with what the journal says serves.
//! The operator's switches come back too ([`restore_switches`]), before
//! the first table is published.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::gate::committed_outcome;
use super::metrics::DeployMetrics;
use super::phase::Outcome;
use super::record::{now_rfc3339, Event, EventKind};
use crate::config::{self, AppConfig, Config};
use crate::journal::Journal;
use crate::routing::Routing;

/// Closes the deployments a killed cutover left in `deployments/`: one
/// that committed a version (a kill between commit and its end) gets the
/// outcome that version stands for (`succeeded`, `rolled_back`); any other
/// is `interrupted` (the last committed version serves, as the journal
/// says). Each goes to the history and `cutover_deployments_total`.
/// Returns their ids.
pub fn close_interrupted(journal: &Journal, metrics: &DeployMetrics) -> Vec<String> {
    let commits = journal.state().commits;
    let mut closed = Vec::new();
    for mut record in journal.interrupted() {
        let outcome = match record.outcome {
            Some(outcome) => outcome,
            None => commits
                .get(&record.id)
                .copied()
                .map_or(Outcome::Interrupted, committed_outcome),
        };
        if record.outcome.is_none() {
            record.outcome = Some(outcome);
            record.finished_at = Some(now_rfc3339());
            record.phase = None;
            record.events.push(Event {
                seq: record.events.len() as u64,
                at: now_rfc3339(),
                kind: EventKind::Outcome,
                phase: None,
                instance: None,
                message: format!("deployment {} (cutover was killed during it)", outcome.as_str()),
                duration_ms: None,
                outcome: Some(outcome),
            });
        }
        tracing::warn!(deployment = %record.id, outcome = outcome.as_str(), "closing a deployment the previous run left unfinished");
        if outcome == Outcome::Succeeded {
            let staged_deployed = journal
                .state()
                .staged
                .get(&record.app)
                .is_some_and(|s| s.version == record.to_version);
            if staged_deployed {
                if let Err(e) = journal.update(|s| {
                    s.staged.remove(&record.app);
                }) {
                    tracing::error!(error = %e, app = %record.app, "cannot journal that the staged change was deployed");
                }
            }
        }
        match journal.append_history(&record) {
            Ok(()) => {
                metrics.finished(&record, outcome);
                closed.push(record.id);
            }
            Err(e) => tracing::error!(error = %e, deployment = %record.id, "cannot close the interrupted deployment"),
        }
    }
    closed
}

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

    // The last pushed config also says each app's error pages (a proxy
    // setting, applied by a push whether or not the app was deployed or
    // its change staged).
    let mut error_pages = BTreeMap::new();
    if let Some(routes_source) = &state.routes_config {
        match config::parse_journaled(routes_source, "journal", base_dir) {
            Ok(journaled) => {
                restored.routes = journaled.routes;
                error_pages = journaled.apps.into_iter().map(|(n, a)| (n, a.error_pages)).collect();
            }
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
    for (name, app) in &mut restored.apps {
        if let Some(pages) = error_pages.get(name) {
            app.error_pages.clone_from(pages);
        }
    }
    // A route to an app that exists in neither would make the table
    // invalid; keep only routes to known apps.
    restored.routes.retain(|r| restored.apps.contains_key(&r.app));

    let staged = state
        .staged
        .iter()
        .filter_map(|(name, entry)| {
            let mut app = app_from(&entry.config, name, base_dir)?;
            if let Some(pages) = error_pages.get(name) {
                app.error_pages.clone_from(pages);
            }
            Some((Arc::new(app), entry.config.clone()))
        })
        .collect();
    Restored {
        config: restored,
        sources,
        staged,
    }
}

fn app_from(source: &str, name: &str, base_dir: &Path) -> Option<AppConfig> {
    config::parse_journaled(source, "journal", base_dir)
        .ok()?
        .apps
        .remove(name)
}

/// Puts the journaled operator switches (pause, maintenance) of the apps
/// of `config` (what serves after [`restore`]) back into `routing`, after
/// its `configure` and before its first publish, so a restarted cutover
/// never serves a paused or maintained app for a moment. Switches of apps
/// that no longer exist are dropped from the journal.
pub fn restore_switches(journal: &Journal, routing: &Routing, config: &Config) {
    let mut switches = journal.state().switches;
    let gone: Vec<String> = switches
        .keys()
        .filter(|app| !config.apps.contains_key(*app))
        .cloned()
        .collect();
    if !gone.is_empty() {
        match journal.update(|s| s.switches.retain(|app, _| !gone.contains(app))) {
            Ok(()) => tracing::info!(apps = ?gone, "dropped the switches of removed apps"),
            Err(e) => tracing::error!(error = %e, "cannot drop the switches of removed apps"),
        }
        switches.retain(|app, _| !gone.contains(app));
    }
    for (app, s) in &switches {
        tracing::info!(app = %app, paused = s.paused.is_some(), maintenance = s.maintenance.is_some(), "switches restored");
    }
    routing.restore_switches(switches);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy;
    use crate::deploy::record::Deployment;
    use crate::journal::{AppSource, Committed};

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("cutover-boot-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn running(journal: &Journal, id: &str) {
        let record = Deployment::new(id.into(), "web", Strategy::Rolling, "v1".into(), "v2".into());
        journal.save_running(&record).unwrap();
    }

    #[test]
    fn a_killed_deployment_is_interrupted_unless_it_committed() {
        let d = dir("close");
        let journal = Journal::open(&d).unwrap();
        let registry = prometheus::Registry::new();
        let metrics = DeployMetrics::new(&registry).unwrap();
        running(&journal, "web-1");
        running(&journal, "web-2");
        running(&journal, "web-3");
        // web-2 was killed between its commit and its end: v2 serves.
        journal
            .update(|s| {
                s.current.insert(
                    "web".into(),
                    AppSource {
                        version: "v2".into(),
                        config: String::new(),
                    },
                );
                s.commits.insert("web-2".into(), Committed::Target);
                s.commits.insert("web-3".into(), Committed::Previous);
                s.staged.insert(
                    "web".into(),
                    AppSource {
                        version: "v2".into(),
                        config: String::new(),
                    },
                );
            })
            .unwrap();
        let mut closed = close_interrupted(&journal, &metrics);
        closed.sort();
        assert_eq!(closed, ["web-1", "web-2", "web-3"]);
        let outcome = |id: &str| {
            journal
                .history()
                .into_iter()
                .find(|d| d.id == id)
                .and_then(|d| d.outcome)
        };
        assert_eq!(outcome("web-1"), Some(Outcome::Interrupted));
        assert_eq!(outcome("web-2"), Some(Outcome::Succeeded));
        assert_eq!(outcome("web-3"), Some(Outcome::RolledBack));
        let state = journal.state();
        assert!(state.commits.is_empty());
        assert!(state.staged.is_empty(), "the deployed staged change is gone");
        // Closed once: the next start finds nothing to close.
        assert!(close_interrupted(&journal, &metrics).is_empty());
        let interrupted = crate::deploy::metrics::outcome_count(&registry, "interrupted");
        assert_eq!(interrupted, 1.0);
        let _ = std::fs::remove_dir_all(d);
    }
}
