//! `GET /status`: the data behind `cutover status`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::progressive::{AppSwitches, CanaryStatus};
use super::{Deployment, Role};
use crate::supervisor;

/// The body of `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusBody {
    /// cutover's version.
    pub version: String,
    /// The pid of the cutover answering (it changes with each upgrade).
    pub pid: u32,
    /// The pid of the cutover this one took over from, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgraded_from: Option<u32>,
    /// The upgrade of cutover itself that runs, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrading: Option<String>,
    pub uptime_seconds: u64,
    pub route_table_generation: u64,
    pub apps: Vec<AppStatus>,
    /// Running deployments (without their events).
    pub deployments: Vec<Deployment>,
    /// Staged app versions, waiting for `cutover deploy`.
    pub staged: BTreeMap<String, String>,
}

/// One app in `cutover status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppStatus {
    pub name: String,
    /// The current version (a hash of the app's definition).
    pub version: String,
    pub instances: Vec<InstanceStatus>,
    /// Pause and maintenance.
    pub switches: AppSwitches,
    /// The app's running canary, if one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
}

impl AppStatus {
    /// The supervisor's view of an app with the controller's switches and
    /// canary progress.
    pub fn new(app: supervisor::AppStatus, switches: AppSwitches, canary: Option<CanaryStatus>) -> Self {
        Self {
            name: app.name,
            version: app.version,
            instances: app.instances.into_iter().map(InstanceStatus::from).collect(),
            switches,
            canary,
        }
    }
}

/// One instance in `cutover status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceStatus {
    pub name: String,
    pub role: Role,
    pub version: String,
    /// `127.0.0.1:PORT` once it has a port.
    pub address: Option<String>,
    pub pid: Option<u32>,
    /// Where it is in its life (`starting`, `ready`, `draining`, …).
    pub state: String,
    /// Requests it is answering.
    pub inflight: u64,
    /// WebSocket and SSE connections.
    pub long_lived: u64,
    /// Its backend's generation while it serves.
    pub generation: Option<u64>,
}

impl From<supervisor::InstanceStatus> for InstanceStatus {
    fn from(i: supervisor::InstanceStatus) -> Self {
        Self {
            name: i.name,
            role: i.role,
            version: i.version,
            address: i.address,
            pid: i.pid,
            state: i.state.to_string(),
            inflight: i.inflight,
            long_lived: i.long_lived,
            generation: i.generation,
        }
    }
}
