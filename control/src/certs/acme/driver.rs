//! [`AcmeDriver`]: ACME as the config says, for the life of the process.
//!
//! It follows the config of every push ([`CertManager::pushed_config`], the
//! start-up config first) and keeps one [`AcmeService`] in step with it:
//! - `proxy.tls.acme` appears: the service starts (stored certificates
//!   serve at once, missing ones are ordered);
//! - the route hosts (or `acme.hosts`) change: [`AcmeService::set_hosts`];
//! - the rest of the `acme` block changes (directory, challenge, email,
//!   `ca_roots`) or `state_dir` does: the service restarts with it; the
//!   certificates it served keep serving until the new one replaces them,
//!   except for hosts no longer in the set;
//! - `proxy.tls.acme` goes away: every ACME certificate stops serving.
//!
//! Its status reaches `GET /certificates` through
//! [`CertManager::set_acme_report`].

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use cutover_proxy::tls::Challenges;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{acme_hosts, AcmeService, Timing};
use crate::certs::manager::AcmeStatus;
use crate::certs::CertManager;
use crate::config::{AcmeConfig, Config};

/// The task that runs ACME as pushes configure it. Dropping it stops the
/// task too; [`AcmeDriver::shutdown`] also waits for it.
pub struct AcmeDriver {
    stop: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AcmeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeDriver").finish_non_exhaustive()
    }
}

/// The running service and what it was started with.
struct Running {
    acme: AcmeConfig,
    state_dir: PathBuf,
    service: AcmeService,
}

impl AcmeDriver {
    /// Starts following `certs.pushed_config()` on the current tokio
    /// runtime; challenge answers go to `challenges` (the data plane's).
    /// Call it once the data plane listens, so http-01 can be answered.
    pub fn start(certs: Arc<CertManager>, challenges: Arc<Challenges>) -> Self {
        Self::start_with(certs, challenges, Timing::default())
    }

    /// [`AcmeDriver::start`] with other timing (tests).
    pub fn start_with(certs: Arc<CertManager>, challenges: Arc<Challenges>, timing: Timing) -> Self {
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(follow(certs, challenges, timing, Arc::clone(&stop)));
        Self { stop, task: Some(task) }
    }

    /// Stops ACME and waits for it. The certificates stay served until the
    /// process ends (a graceful stop or an upgrade's handover).
    pub async fn shutdown(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for AcmeDriver {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn follow(certs: Arc<CertManager>, challenges: Arc<Challenges>, timing: Timing, stop: Arc<Notify>) {
    let mut pushed = certs.pushed_config();
    let mut running: Option<Running> = None;
    loop {
        let config: Arc<Config> = pushed.borrow_and_update().clone();
        running = apply(running, &config, &certs, &challenges, &timing).await;
        tokio::select! {
            () = stop.notified() => break,
            changed = pushed.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    if let Some(running) = running {
        running.service.shutdown().await;
    }
}

/// Brings the running service in step with `config`.
async fn apply(
    running: Option<Running>,
    config: &Config,
    certs: &Arc<CertManager>,
    challenges: &Arc<Challenges>,
    timing: &Timing,
) -> Option<Running> {
    let wanted = config.proxy.tls.as_ref().and_then(|tls| tls.acme.clone());
    let hosts = acme_hosts(config);
    match (running, wanted) {
        (Some(running), Some(acme)) if same_service(&running.acme, &acme) && running.state_dir == config.state_dir => {
            running.service.set_hosts(hosts);
            Some(Running { acme, ..running })
        }
        (Some(running), wanted) => {
            let old_hosts: BTreeSet<String> = running.service.status().into_iter().map(|s| s.host).collect();
            match wanted {
                None => {
                    tracing::info!("proxy.tls.acme removed: ACME certificates are no longer served");
                    running.service.set_hosts(Vec::new());
                    running.service.shutdown().await;
                    certs.set_acme_report(Arc::new(Vec::<AcmeStatus>::new));
                    None
                }
                Some(acme) => {
                    tracing::info!("proxy.tls.acme changed: restarting ACME with it");
                    running.service.shutdown().await;
                    for host in old_hosts.iter().filter(|h| !hosts.contains(h)) {
                        certs.remove_acme(host);
                    }
                    start(acme, config, hosts, certs, challenges, timing)
                }
            }
        }
        (None, Some(acme)) => start(acme, config, hosts, certs, challenges, timing),
        (None, None) => None,
    }
}

/// Whether `a` and `b` differ at most in their host lists, which
/// `set_hosts` follows without a restart.
fn same_service(a: &AcmeConfig, b: &AcmeConfig) -> bool {
    a.directory == b.directory && a.email == b.email && a.challenge == b.challenge && a.ca_roots == b.ca_roots
}

fn start(
    acme: AcmeConfig,
    config: &Config,
    hosts: Vec<String>,
    certs: &Arc<CertManager>,
    challenges: &Arc<Challenges>,
    timing: &Timing,
) -> Option<Running> {
    let started = AcmeService::start(
        acme.clone(),
        &config.state_dir,
        hosts,
        Arc::clone(challenges),
        Arc::clone(certs) as Arc<dyn super::Installer>,
        timing.clone(),
    );
    match started {
        Ok(service) => {
            certs.set_acme_report(Arc::new(service.report()));
            Some(Running {
                acme,
                state_dir: config.state_dir.clone(),
                service,
            })
        }
        Err(e) => {
            // Only a config it cannot use (an unreadable ca_roots); the
            // next push that fixes it starts ACME.
            tracing::error!(error = %e, "cannot start ACME");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AcmeChallenge;

    #[test]
    fn only_the_host_list_changes_without_a_restart() {
        let base = AcmeConfig {
            directory: "https://acme.test/dir".into(),
            email: None,
            challenge: AcmeChallenge::Http01,
            ca_roots: None,
            hosts: vec!["a.test".into()],
        };
        let hosts = AcmeConfig {
            hosts: vec!["b.test".into()],
            ..base.clone()
        };
        assert!(same_service(&base, &hosts));
        for other in [
            AcmeConfig {
                directory: "https://other.test/dir".into(),
                ..base.clone()
            },
            AcmeConfig {
                email: Some("ops@example.com".into()),
                ..base.clone()
            },
            AcmeConfig {
                challenge: AcmeChallenge::TlsAlpn01,
                ..base.clone()
            },
            AcmeConfig {
                ca_roots: Some("/roots.pem".into()),
                ..base.clone()
            },
        ] {
            assert!(!same_service(&base, &other), "{other:?}");
        }
    }
}
