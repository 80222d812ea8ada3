//! `POST /deploy`, `POST /rollback` and `POST /push`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Started, Strategy};

/// The body of `POST /deploy`; both fields optional (an empty body too).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The app; every app when absent.
    #[serde(default)]
    #[schema(example = "web")]
    pub app: Option<String>,
    /// Default: the app's `deploy_strategy`.
    #[serde(default)]
    pub strategy: Option<Strategy>,
}

/// The 202 answer of `POST /deploy` and `POST /rollback`: the deployments
/// started, one per app, each followed at `/deployments/{id}/events`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeployAnswer {
    /// The first deployment's id (the only one when one app was named).
    pub id: Option<String>,
    pub deployments: Vec<Started>,
}

impl DeployAnswer {
    /// The answer for `started`.
    pub fn new(started: Vec<Started>) -> Self {
        Self {
            id: started.first().map(|s| s.id.clone()),
            deployments: started,
        }
    }
}

/// The query of `POST /push`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PushQuery {
    /// Overrides the apps' `deploy_strategy` for the deployments the push
    /// starts.
    #[serde(default)]
    pub deploy_strategy: Option<Strategy>,
}
