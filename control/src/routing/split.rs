//! The canary split as the control plane keeps it, and [`Traffic`] on the
//! route table.
//!
//! INTERIM: this build's data plane has no split yet (`proxy/src/split.rs`
//! lands with the data-plane branch of issue 12). Until then
//! [`Traffic::set_split`] refuses, so a canary deployment ends at its first
//! step (`rolled_back`, the canaries stopped, the stable version serving,
//! nothing changed). At merge, `split_adapter.rs.pending` next to this
//! file replaces it (`mv split_adapter.rs.pending split.rs`): same items,
//! the split published with `RouteTableBuilder::split` and measured by
//! `SplitStats`.

use std::sync::Arc;

use cutover_proxy::{AppId, RouteTableBuilder};

use super::Routing;
use crate::deploy::canary::traffic::{Measure, SplitEnd, Traffic};
use crate::supervisor::instance::Instance;

/// An app's canary set while a canary deployment walks its steps.
#[derive(Clone)]
pub struct CanarySet {
    /// The new version's instances (only the ready ones enter a table).
    pub instances: Vec<Arc<Instance>>,
    /// Their share of new requests, in basis points.
    pub weight_bp: u16,
    /// Clients keep the set they were first given (cookie).
    pub sticky: bool,
}

/// Adds `app`'s split to the table being built.
pub(super) fn add_split(_builder: &mut RouteTableBuilder, _id: AppId, _app: &str, _canary: &CanarySet) {
    // No split in this build's data plane: see the module comment.
}

impl Traffic for Routing {
    fn set_split(
        &self,
        _app: &str,
        _canaries: &[Arc<Instance>],
        _weight_bp: u16,
        _sticky: bool,
    ) -> Result<Arc<dyn Measure>, String> {
        Err("this build's data plane cannot split traffic between two versions".into())
    }

    fn end_split(&self, app: &str, keep: SplitEnd) -> u64 {
        match keep {
            SplitEnd::Stable => self.set_canary(app, None, None),
            SplitEnd::Canary(canaries) => self.set_canary(app, None, Some(canaries)),
        }
    }
}
