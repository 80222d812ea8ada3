//! [`CertManager`]: every certificate the TLS listeners serve — the files
//! of `proxy.tls.certificates` and what the ACME service obtained — kept
//! together, published to the data plane's [`CertStore`] as one list
//! (files first, so a host named by a file wins) on every change, and shown
//! by `GET /certificates` and `cutover_certificate_expiry_timestamp_seconds`.
//!
//! The store is swapped whole: a handshake sees the old set or the new one,
//! never a mix, and a connection keeps the certificate it was given. Files
//! are loaded completely before anything is swapped, so a bad file changes
//! nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use cutover_proxy::tls::{CertEntry, CertSource, CertStore};
use prometheus::{GaugeVec, Opts, Registry};
use rustls::sign::CertifiedKey;
use serde::Serialize;
use tokio::sync::watch;

use super::files::{self, LoadedCert};
use crate::config::{CertificateConfig, Config, Problems, ProxyConfig};

/// Where an ACME host stands, as the ACME service last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AcmeState {
    /// No certificate yet; the first order is under way.
    Pending,
    /// A certificate serves; the next renewal is not due.
    Valid,
    /// A certificate serves and a renewal is under way.
    Renewing,
    /// The last attempt failed; it is retried at `next_attempt`. A
    /// certificate obtained earlier, if any, keeps serving.
    Failed,
}

/// The ACME service's report on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeStatus {
    /// The host, lowercase.
    pub host: String,
    pub state: AcmeState,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When the service tries next (renewal or retry), if planned.
    pub next_attempt: Option<SystemTime>,
}

/// Where `GET /certificates` reads the ACME hosts' states from: the ACME
/// service keeps them, the manager asks at every request. A closure
/// returning the list will do.
pub trait AcmeReport: Send + Sync + 'static {
    /// Every host the ACME service keeps a certificate for.
    fn acme_status(&self) -> Vec<AcmeStatus>;
}

impl<F> AcmeReport for F
where
    F: Fn() -> Vec<AcmeStatus> + Send + Sync + 'static,
{
    fn acme_status(&self) -> Vec<AcmeStatus> {
        self()
    }
}

/// One ACME certificate as installed.
#[derive(Clone)]
struct AcmeCert {
    key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
    issuer: String,
}

/// One host in `GET /certificates` (and `cutover certs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub host: String,
    /// `file` or `acme`.
    pub source: &'static str,
    /// The leaf's issuer; `None` for an ACME host without a certificate yet.
    pub issuer: Option<String>,
    /// RFC 3339.
    pub not_before: Option<String>,
    /// RFC 3339.
    pub not_after: Option<String>,
    /// For files: the PEM chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// For files: the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// For ACME hosts: the service's last report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeInfo>,
}

/// The ACME part of a [`CertInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AcmeInfo {
    pub state: AcmeState,
    pub last_error: Option<String>,
    /// RFC 3339.
    pub next_attempt: Option<String>,
}

/// What a push does to the certificates, decided by [`CertManager::prepare`]
/// before anything changes and applied by [`CertManager::commit`].
#[derive(Debug, Default)]
pub struct Prepared {
    /// The new file certificates, all loaded; `None`: the files in use stay.
    files: Option<Vec<LoadedCert>>,
    /// Settings that only apply at the next start of cutover.
    pub warnings: Vec<String>,
}

/// The certificates in use. See the module documentation.
pub struct CertManager {
    store: Arc<CertStore>,
    /// Whether `proxy.tls` was set at start, i.e. whether TLS listeners run.
    serving: bool,
    /// The config file as named in problems of `--reload`.
    file: String,
    state: Mutex<State>,
    expiry: GaugeVec,
    /// The config of the last push (the start-up one first), for the ACME
    /// service to see hosts come and go.
    pushed: watch::Sender<Arc<Config>>,
    /// The ACME service's states, once it runs.
    acme_report: Mutex<Option<Arc<dyn AcmeReport>>>,
}

#[derive(Default)]
struct State {
    /// `proxy.tls.certificates` as loaded; `reload` reads these paths again.
    configs: Vec<CertificateConfig>,
    files: Vec<LoadedCert>,
    acme: BTreeMap<String, AcmeCert>,
    /// Label sets of the expiry gauge now set, so gone hosts are removed.
    series: BTreeSet<(String, &'static str)>,
}

impl CertManager {
    /// Loads the certificate files of `config` (all must be good: a bad
    /// one is a problem of the config, which `cutover up` refuses).
    /// `file` names the config in problems.
    pub fn new(config: &Config, file: &str) -> Result<Arc<Self>, Problems> {
        let configs = config
            .proxy
            .tls
            .as_ref()
            .map(|tls| tls.certificates.clone())
            .unwrap_or_default();
        let loaded = files::load_all(&configs, file, SystemTime::now())?;
        let expiry = GaugeVec::new(
            Opts::new(
                "cutover_certificate_expiry_timestamp_seconds",
                "When each served host's certificate expires (notAfter, Unix seconds)",
            ),
            &["host", "source"],
        )
        .expect("the expiry gauge's name and labels are valid");
        let manager = Arc::new(Self {
            store: Arc::new(CertStore::new()),
            serving: config.proxy.tls.is_some(),
            file: file.to_string(),
            state: Mutex::new(State {
                configs,
                files: loaded,
                ..State::default()
            }),
            expiry,
            pushed: watch::Sender::new(Arc::new(config.clone())),
            acme_report: Mutex::new(None),
        });
        manager.publish(&mut manager.lock());
        Ok(manager)
    }

    /// Warnings about the files in use that do not stop them serving (keys
    /// readable by every user), for the start-up log.
    pub fn warnings(&self) -> Vec<String> {
        files::key_warnings(&self.lock().configs)
    }

    /// The store to put into `ProxySettings::certs`.
    pub fn store(&self) -> Arc<CertStore> {
        Arc::clone(&self.store)
    }

    /// Registers `cutover_certificate_expiry_timestamp_seconds`.
    pub fn register_metrics(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.expiry.clone()))
    }

    /// The config of every push as it is applied (the start-up config
    /// first): the ACME service watches it for `proxy.tls.acme` and route
    /// hosts.
    pub fn pushed_config(&self) -> watch::Receiver<Arc<Config>> {
        self.pushed.subscribe()
    }

    // === pushes and reloads ===

    /// What a push from `old` to `new` does to the certificates: changed
    /// files are loaded (all of them, or the push is refused with their
    /// problems and nothing changes); settings fixed at start give warnings.
    /// Call under the controller's gate, so pushes prepare and commit in turn.
    pub fn prepare(&self, old: &ProxyConfig, new: &ProxyConfig) -> Result<Prepared, Problems> {
        let mut prepared = Prepared {
            files: None,
            warnings: restart_warnings(self.serving, old, new),
        };
        let Some(tls) = &new.tls else {
            return Ok(prepared);
        };
        let changed = if self.serving {
            self.lock().configs != tls.certificates
        } else {
            old.tls.as_ref().map(|t| &t.certificates) != Some(&tls.certificates)
        };
        if changed {
            // Checked even when no TLS listener runs yet, so the next start
            // does not fail on files a push accepted.
            let loaded = files::load_all(&tls.certificates, "deploy.yaml", SystemTime::now())?;
            prepared.warnings.extend(files::key_warnings(&tls.certificates));
            if self.serving {
                prepared.files = Some(loaded);
            }
        }
        Ok(prepared)
    }

    /// Applies what [`prepare`](Self::prepare) decided for the pushed
    /// `new` config, once the push can no longer fail.
    pub fn commit(&self, prepared: Prepared, new: &Config) {
        if let Some(loaded) = prepared.files {
            let mut state = self.lock();
            state.configs = new
                .proxy
                .tls
                .as_ref()
                .map(|tls| tls.certificates.clone())
                .unwrap_or_default();
            state.files = loaded;
            self.publish(&mut state);
        }
        self.pushed.send_replace(Arc::new(new.clone()));
    }

    /// Reads the certificate files in use again (`cutover certs --reload`),
    /// e.g. after they were renewed in place. All or nothing: a bad file is
    /// reported and the certificates in use stay.
    pub fn reload(&self) -> Result<Vec<CertInfo>, Problems> {
        // Held while reading, so a push's commit cannot slip in between
        // reading the old paths and swapping their certificates in.
        let mut state = self.lock();
        let loaded = files::load_all(&state.configs, &self.file, SystemTime::now())?;
        state.files = loaded;
        self.publish(&mut state);
        drop(state);
        Ok(self.list())
    }

    // === the ACME service's side ===

    /// Serves `key` for `host` (an ACME certificate, newly obtained or
    /// renewed), replacing the host's previous one. A certificate file
    /// naming the same host still wins.
    pub fn install_acme(
        &self,
        host: &str,
        key: impl Into<Arc<CertifiedKey>>,
        not_before: SystemTime,
        not_after: SystemTime,
        issuer: impl Into<String>,
    ) {
        let mut state = self.lock();
        state.acme.insert(
            host.to_ascii_lowercase(),
            AcmeCert {
                key: key.into(),
                not_before,
                not_after,
                issuer: issuer.into(),
            },
        );
        self.publish(&mut state);
    }

    /// Stops serving `host`'s ACME certificate (the host left the config).
    pub fn remove_acme(&self, host: &str) {
        let mut state = self.lock();
        if state.acme.remove(&host.to_ascii_lowercase()).is_some() {
            self.publish(&mut state);
        }
    }

    /// Where `GET /certificates` reads the ACME hosts' states from (set once
    /// the ACME service runs; replaces any earlier source).
    pub fn set_acme_report(&self, report: Arc<dyn AcmeReport>) {
        *self.acme_report.lock().unwrap_or_else(PoisonError::into_inner) = Some(report);
    }

    // === status ===

    /// One entry per host: files in config order, then ACME hosts by name
    /// (those still waiting for their first certificate included).
    pub fn list(&self) -> Vec<CertInfo> {
        // Asked before taking the state lock: the report is the ACME
        // service's, which may be installing a certificate right now.
        let report = self.acme_report.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let statuses = report.map(|r| r.acme_status()).unwrap_or_default();
        list(&self.lock(), &statuses)
    }

    /// Rebuilds the store and the expiry series from `state`.
    fn publish(&self, state: &mut State) {
        let mut entries: Vec<CertEntry> = state
            .files
            .iter()
            .map(|file| CertEntry {
                hosts: file.config.hosts.clone(),
                key: Arc::clone(&file.key),
                source: CertSource::File,
            })
            .collect();
        entries.extend(state.acme.iter().map(|(host, cert)| CertEntry {
            hosts: vec![host.clone()],
            key: Arc::clone(&cert.key),
            source: CertSource::Acme,
        }));
        self.store.replace(&entries);

        let served: BTreeMap<(String, &'static str), SystemTime> = served(state)
            .map(|(host, source, not_after)| ((host, source.as_str()), not_after))
            .collect();
        for gone in state.series.iter().filter(|key| !served.contains_key(*key)) {
            // Absent only if never set; either way the series is gone.
            let _ = self.expiry.remove_label_values(&[&gone.0, gone.1]);
        }
        for ((host, source), not_after) in &served {
            self.expiry
                .with_label_values(&[host.as_str(), source])
                .set(unix_seconds(*not_after));
        }
        state.series = served.into_keys().collect();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every served host with its source and expiry: file hosts, then ACME
/// hosts no file names (a file wins in the store).
fn served(state: &State) -> impl Iterator<Item = (String, CertSource, SystemTime)> + '_ {
    let file_hosts: BTreeSet<&str> = state
        .files
        .iter()
        .flat_map(|f| f.config.hosts.iter().map(String::as_str))
        .collect();
    let files = state.files.iter().flat_map(|f| {
        f.config
            .hosts
            .iter()
            .map(|h| (h.clone(), CertSource::File, f.not_after))
    });
    let acme = state
        .acme
        .iter()
        .filter(move |(host, _)| !file_hosts.contains(host.as_str()))
        .map(|(host, cert)| (host.clone(), CertSource::Acme, cert.not_after));
    files.chain(acme)
}

fn list(state: &State, statuses: &[AcmeStatus]) -> Vec<CertInfo> {
    let mut out = Vec::new();
    let mut named = BTreeSet::new();
    for file in &state.files {
        for host in &file.config.hosts {
            named.insert(host.as_str());
            out.push(CertInfo {
                host: host.clone(),
                source: CertSource::File.as_str(),
                issuer: Some(file.issuer.clone()),
                not_before: Some(files::rfc3339(file.not_before)),
                not_after: Some(files::rfc3339(file.not_after)),
                cert: Some(file.config.cert.clone()),
                key: Some(file.config.key.clone()),
                acme: None,
            });
        }
    }
    let statuses: BTreeMap<String, &AcmeStatus> = statuses.iter().map(|s| (s.host.to_ascii_lowercase(), s)).collect();
    let acme_hosts: BTreeSet<&String> = state.acme.keys().chain(statuses.keys()).collect();
    for host in acme_hosts {
        if named.contains(host.as_str()) {
            continue;
        }
        let cert = state.acme.get(host);
        let acme = match statuses.get(host) {
            Some(status) => AcmeInfo {
                state: status.state,
                last_error: status.last_error.clone(),
                next_attempt: status.next_attempt.map(files::rfc3339),
            },
            None => AcmeInfo {
                state: if cert.is_some() {
                    AcmeState::Valid
                } else {
                    AcmeState::Pending
                },
                last_error: None,
                next_attempt: None,
            },
        };
        out.push(CertInfo {
            host: host.clone(),
            source: CertSource::Acme.as_str(),
            issuer: cert.map(|c| c.issuer.clone()),
            not_before: cert.map(|c| files::rfc3339(c.not_before)),
            not_after: cert.map(|c| files::rfc3339(c.not_after)),
            cert: None,
            key: None,
            acme: Some(acme),
        });
    }
    out
}

/// The `proxy.tls`, `http2` and `h2c` changes a push cannot apply: the TLS
/// listeners and the data plane's edge settings are built once, at start.
pub fn restart_warnings(serving: bool, old: &ProxyConfig, new: &ProxyConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    match (&old.tls, &new.tls) {
        (_, Some(_)) if !serving && old.tls != new.tls => warnings.push(
            "proxy.tls applies at the next start of cutover (no TLS listener runs now); its certificate files were checked"
                .to_string(),
        ),
        (Some(_), None) if serving => warnings.push(
            "removing proxy.tls applies at the next start of cutover; the TLS listeners keep serving their certificates until then"
                .to_string(),
        ),
        (Some(old_tls), Some(new_tls)) if serving => {
            if old_tls.listen != new_tls.listen {
                warnings.push("proxy.tls.listen applies at the next start of cutover".to_string());
            }
            if old_tls.redirect_http != new_tls.redirect_http || old_tls.hsts != new_tls.hsts {
                warnings.push("proxy.tls.redirect_http and proxy.tls.hsts apply at the next start of cutover".to_string());
            }
        }
        _ => {}
    }
    if old.http2 != new.http2 || old.h2c != new.h2c {
        warnings.push("proxy.http2 and proxy.h2c apply at the next start of cutover".to_string());
    }
    warnings
}

/// Unix seconds, as the gauge holds them (negative before 1970).
fn unix_seconds(time: SystemTime) -> f64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs() as f64,
        Err(before) => -(before.duration().as_secs() as f64),
    }
}
