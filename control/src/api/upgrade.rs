//! `POST /upgrade` and the events of an upgrade of cutover itself.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::UpgradeOutcome;

/// The body of `POST /upgrade`; empty or `{}` upgrades to the binary the
/// running cutover was started from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    /// An absolute path to the new cutover binary.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub binary: Option<PathBuf>,
}

/// The 202 answer of `POST /upgrade`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpgradeAnswer {
    pub id: String,
    /// Where its progress streams (`/upgrades/{id}/events`).
    pub events: String,
    /// The new binary.
    #[schema(value_type = String)]
    pub binary: PathBuf,
}

/// One event of an upgrade's stream (`GET /upgrades/{id}/events`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpgradeEvent {
    /// 0, 1, 2, … within the upgrade.
    pub seq: u64,
    /// RFC 3339, milliseconds.
    pub at: String,
    /// `step` or `outcome`.
    pub kind: String,
    pub message: String,
    /// Set on the last event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<UpgradeOutcome>,
}

impl From<&crate::upgrade::UpgradeEvent> for UpgradeEvent {
    fn from(event: &crate::upgrade::UpgradeEvent) -> Self {
        Self {
            seq: event.seq,
            at: event.at.clone(),
            kind: event.kind.to_string(),
            message: event.message.clone(),
            outcome: event.outcome,
        }
    }
}
