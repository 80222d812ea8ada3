//! The admin API's request and answer types, shared by the axum handlers
//! (`admin`) and the CLI client, and described by the OpenAPI document
//! served at `/openapi.json` ([`crate::admin::openapi`]).
//!
//! Every body the API accepts or answers is one of these types: the
//! handlers build them and the CLI deserializes into them, so a renamed
//! field breaks the build (or a test), never shows up as `?` in a table.
//! Types that also serve inside the controller (a [`Deployment`] is its
//! journal record too) live there and are re-exported here.

pub mod certs;
pub mod deploy;
pub mod error;
pub mod progressive;
pub mod status;
pub mod stream;
pub mod upgrade;

use serde::Serialize;

pub use crate::certs::manager::AcmeInfo;
pub use crate::certs::AcmeState;
pub use crate::config::Strategy;
pub use crate::deploy::phase::{Outcome, Phase};
pub use crate::deploy::push::PushReport;
pub use crate::deploy::record::{Deployment, Event, EventKind, Operation, PhaseTiming};
pub use crate::deploy::Started;
pub use crate::supervisor::instance::Role;
pub use crate::upgrade::UpgradeOutcome;

pub use certs::{CertInfo, CertificatesBody};
pub use deploy::{DeployAnswer, DeployRequest, PushQuery};
pub use error::ErrorBody;
pub use progressive::{
    AnalysisValue, AppSwitches, CanaryStatus, Maintenance, MaintenanceRequest, PauseRequest, Paused, PromoteRequest,
    RollbackRequest,
};
pub use status::{AppStatus, InstanceStatus, StatusBody};
pub use stream::{DeploymentStreamEvent, UpgradeStreamEvent};
pub use upgrade::{UpgradeAnswer, UpgradeEvent, UpgradeRequest};

/// The name a unit enum value has on the wire (`rolling`, `maintenance_on`,
/// `rolled_back`): what its own serde attributes make of it, so a variant
/// added to the enum shows under its wire name with no list to update.
pub fn wire_name<T: Serialize + std::fmt::Debug>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        // Not a unit variant (no such type is passed): its Debug form.
        _ => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_the_serde_names() {
        assert_eq!(wire_name(&Strategy::Stopstart), "stopstart");
        assert_eq!(wire_name(&Operation::MaintenanceOn), "maintenance_on");
        assert_eq!(wire_name(&Outcome::RolledBack), Outcome::RolledBack.as_str());
    }
}
