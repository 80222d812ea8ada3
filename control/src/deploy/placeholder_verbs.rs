//! THROWAWAY (removed at merge): the progressive-delivery verbs with the
//! exact signatures of `deploy/verbs.rs` and `deploy/switches.rs`, so the
//! admin API compiles in the API helper's worktree. Nothing depends on
//! what they do: each refuses (naming the app or deployment) or answers a
//! default.

use std::sync::Arc;
use std::time::Duration;

use super::{Controller, DeployError, Started};
use crate::api::progressive::{AppSwitches, CanaryStatus};

impl Controller {
    pub fn rollback(self: &Arc<Self>, app: Option<&str>) -> Result<Vec<Started>, DeployError> {
        Err(DeployError::NothingToRollBack(app.unwrap_or("any app").to_string()))
    }

    pub fn promote(&self, id: &str, _full: bool) -> Result<(), DeployError> {
        Err(DeployError::UnknownDeployment(id.to_string()))
    }

    pub fn abort(&self, id: &str) -> Result<(), DeployError> {
        Err(DeployError::UnknownDeployment(id.to_string()))
    }

    pub fn canary_status(&self, _app: &str) -> Option<CanaryStatus> {
        None
    }

    pub fn pause(&self, app: &str, _max_pause: Duration) -> Result<AppSwitches, DeployError> {
        Err(DeployError::UnknownApp(app.to_string()))
    }

    pub fn resume(&self, app: &str) -> Result<AppSwitches, DeployError> {
        Err(DeployError::UnknownApp(app.to_string()))
    }

    pub fn maintenance(&self, app: &str, _on: bool, _message: Option<String>) -> Result<AppSwitches, DeployError> {
        Err(DeployError::UnknownApp(app.to_string()))
    }

    pub fn switches(&self, _app: &str) -> AppSwitches {
        AppSwitches::default()
    }
}
