//! What an app's requests get besides being served: held while the app is
//! paused, answered 503 while it is in maintenance. Set per app in the
//! route table ([`crate::RouteTableBuilder::mode`]), so each change is one
//! table swap and requests already at a backend are never affected.

use std::sync::Arc;
use std::time::Duration;

/// An app's mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AppMode {
    /// Requests go to backends.
    #[default]
    Serving,
    /// New requests wait, like requests held for a ready backend (same
    /// bounded count, same `cutover_held_requests` gauge), until a table
    /// without the pause arrives; `max_pause` after a request arrived it
    /// gets 503 with `Retry-After`.
    Paused {
        /// How long one request may wait.
        max_pause: Duration,
    },
    /// Every request gets 503 with `Retry-After` and the maintenance page
    /// (gRPC calls: status 14 UNAVAILABLE); none reaches a backend.
    Maintenance {
        /// Shown to clients (HTML-escaped in pages).
        message: Option<Arc<str>>,
    },
}
