//! Types of progressive delivery and the operator's switches: canary
//! progress, pause and maintenance, and the verbs' request bodies.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An app's operator switches, as `cutover status` shows them. Both are
/// journaled: a restarted cutover keeps them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AppSwitches {
    /// Set while the app is paused: new requests are held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Paused>,
    /// Set while the app is in maintenance: requests get 503 and the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
}

/// A pause: since when, and how long one request may be held by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Paused {
    /// RFC 3339.
    pub since: String,
    /// A request held longer than this gets 503 with `Retry-After`.
    pub max_pause_ms: u64,
}

/// Maintenance mode: since when, and the message the page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Maintenance {
    /// RFC 3339.
    pub since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A running canary's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CanaryStatus {
    /// The canary deployment's id.
    pub deployment: String,
    /// 1-based index of the current step; 0 before the first.
    pub step: usize,
    /// Number of steps.
    pub steps: usize,
    /// Share of new requests the new version gets now, in percent.
    pub weight: f64,
    /// `manual` while waiting for `cutover promote`, else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// What the analysis last saw, against its limits.
    pub analysis: Vec<AnalysisValue>,
}

/// One analysis measurement and its limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnalysisValue {
    /// `error_rate` (a fraction), `latency_ratio` (new p99 over stable
    /// p99) or `requests` (reached the new version in this step).
    pub metric: String,
    pub value: f64,
    /// The configured bound (`max_error_rate` as a fraction,
    /// `max_latency_ratio`, `min_requests`).
    pub limit: f64,
}

/// `POST /rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The app; every app with a previous version when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "web")]
    pub app: Option<String>,
}

/// `POST /deployments/{id}/promote`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// Through every remaining step, not only past the current pause.
    #[serde(default)]
    pub full: bool,
}

/// `POST /apps/{app}/pause`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Humantime (`60s`); how long one request may be held. Default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "60s")]
    pub max_pause: Option<String>,
}

/// `POST /apps/{app}/maintenance`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    pub on: bool,
    /// What the maintenance page says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "back at 10:00")]
    pub message: Option<String>,
}
