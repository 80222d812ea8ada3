//! The body of every error answer.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every 4xx/5xx answer of the admin API, axum's own included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong and, where the caller can fix it, how.
    pub error: String,
    /// On a 409: the running deployment that is in the way (or the one
    /// that is not at a pause / already ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}
