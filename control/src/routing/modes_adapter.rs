//! The data plane's side of what [`super::Routing`] keeps per app besides
//! its instances: the operator's switches become the table's `AppMode`,
//! the `error_pages` directory the table's `ErrorPages`.

use std::sync::Arc;

use cutover_proxy::{AppId, AppMode, ErrorPages, RouteTableBuilder};

use super::State;
use crate::deploy::switches::Wanted;

/// The data plane's mode for what the switches want.
fn app_mode(wanted: Wanted) -> AppMode {
    match wanted {
        Wanted::Serving => AppMode::Serving,
        Wanted::Paused { max_pause } => AppMode::Paused { max_pause },
        Wanted::Maintenance { message } => AppMode::Maintenance { message },
    }
}

/// Loads every app's error pages from its directory. Runs on every
/// `configure` (start-up and each push), so a push also re-reads pages
/// changed on disk. The files are small and local (at most four of 1 MiB,
/// checked when the config was given); a directory that cannot be read
/// leaves the app with the proxy's built-in answers, and says so.
pub(super) fn load_pages(state: &mut State) {
    let mut pages = std::collections::BTreeMap::new();
    for (app, dir) in &state.error_pages {
        match ErrorPages::from_dir(dir) {
            Ok(loaded) => {
                pages.insert(app.clone(), Arc::new(loaded));
            }
            Err(e) => tracing::error!(
                app = %app,
                dir = %dir.display(),
                error = %e,
                "cannot read the error pages; the proxy's built-in answers are used"
            ),
        }
    }
    state.pages = pages;
}

/// Adds `name`'s mode and error pages to the table being built.
pub(super) fn apply(builder: &mut RouteTableBuilder, state: &State, name: &str, id: AppId) {
    if let Some(switches) = state.switches.get(name) {
        builder.mode(id, app_mode(Wanted::of(switches)));
    }
    if let Some(pages) = state.pages.get(name) {
        builder.error_pages(id, Arc::clone(pages));
    }
}
