//! What the ACME task tells about its hosts: [`HostStatus`] per host,
//! published as a whole after every change, read by `GET /certificates`
//! (through [`StatusReport`], the manager's [`AcmeReport`]) and by tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::schedule::Entry;
use crate::certs::manager::{AcmeReport, AcmeState, AcmeStatus};

/// One host's ACME status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    /// The host.
    pub host: String,
    /// Where its certificate stands.
    pub state: AcmeState,
    /// The served certificate's notBefore, if one is served.
    pub not_before: Option<SystemTime>,
    /// The served certificate's notAfter, if one is served.
    pub not_after: Option<SystemTime>,
    /// The served certificate's issuer, if one is served.
    pub issuer: Option<String>,
    /// The last attempt's error, while the host is `failed`.
    pub last_error: Option<String>,
    /// The next order: the renewal time when `valid`, the retry when
    /// `failed`; `None` while an order runs.
    pub next_attempt: Option<SystemTime>,
}

/// The hosts' status as the ACME task last published it; what
/// `GET /certificates` and `cutover certs` show through the
/// [`CertManager`](crate::certs::CertManager).
#[derive(Clone)]
pub struct StatusReport(pub(super) Arc<Mutex<BTreeMap<String, HostStatus>>>);

impl StatusReport {
    /// Every host's status, by host name.
    pub fn hosts(&self) -> Vec<HostStatus> {
        let status = self.0.lock().unwrap_or_else(|e| e.into_inner());
        status.values().cloned().collect()
    }
}

impl AcmeReport for StatusReport {
    fn acme_status(&self) -> Vec<AcmeStatus> {
        self.hosts()
            .into_iter()
            .map(|h| AcmeStatus {
                host: h.host,
                state: h.state,
                last_error: h.last_error,
                next_attempt: h.next_attempt,
            })
            .collect()
    }
}

/// Replaces the published status with `entries`' state.
pub(super) fn publish(status: &Mutex<BTreeMap<String, HostStatus>>, entries: &BTreeMap<String, Entry>) {
    let snapshot: BTreeMap<String, HostStatus> = entries
        .iter()
        .map(|(host, entry)| {
            let state = match (&entry.running, &entry.current, &entry.last_error) {
                (Some(_), None, _) => AcmeState::Pending,
                (Some(_), Some(_), _) => AcmeState::Renewing,
                (None, _, Some(_)) => AcmeState::Failed,
                (None, Some(_), None) => AcmeState::Valid,
                // Due, about to start.
                (None, None, None) => AcmeState::Pending,
            };
            let served = entry.current.as_ref();
            let status = HostStatus {
                host: host.clone(),
                state,
                not_before: served.map(|s| s.not_before),
                not_after: served.map(|s| s.not_after),
                issuer: served.map(|s| s.issuer.clone()),
                last_error: entry.last_error.clone(),
                next_attempt: entry.running.is_none().then_some(entry.due),
            };
            (host.clone(), status)
        })
        .collect();
    *status.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
}
