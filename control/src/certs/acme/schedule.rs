//! The ACME task: one per cutover, keeping a certificate for every host of
//! the current set.
//!
//! Each host has a due time. When it comes, an attempt starts (an order
//! under the whole-order deadline); attempts for different hosts run side
//! by side inside the task, so a failing host never holds up another. A
//! success is stored, installed and due again when a third of its lifetime
//! remains; a failure is due again after an exponential back-off with
//! jitter, the previous certificate (if any) serving meanwhile.
//!
//! Due times are wall-clock (`SystemTime`), like certificate validity, and
//! the task never sleeps longer than [`MAX_SLEEP`], so a suspended machine
//! or a clock step is noticed within minutes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cutover_proxy::tls::Challenges;
use futures_util::future::{AbortHandle, Abortable, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use instant_acme::Account;
use rand::Rng;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::cert::Issued;
use super::http::BoundedClient;
use super::status::{publish, HostStatus, StatusReport};
use super::storage::Storage;
use super::{account, order, AcmeError, Installer, Timing};
use crate::config::AcmeConfig;

/// The longest the task sleeps before looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_secs(300);

/// Orders running at once: enough that a slow or failing host does not
/// hold up the others, few enough not to flood the ACME server when many
/// hosts start together.
const MAX_PARALLEL: usize = 4;

/// The longest wait between retries, whatever the timing says (a due time
/// must stay within the clock's range).
const MAX_WAIT: Duration = Duration::from_secs(7 * 86_400);

/// The shortest wait before a host's next order, whatever the timing or
/// the certificate says: a certificate already due for renewal when it is
/// issued (a clock far ahead of the CA's, a lifetime of seconds) must not
/// turn into an order loop.
const MIN_WAIT: Duration = Duration::from_secs(1);

/// The running ACME task. Dropping it stops the task too; [`shutdown`]
/// also waits for it.
///
/// [`shutdown`]: AcmeService::shutdown
pub struct AcmeService {
    hosts: watch::Sender<Vec<String>>,
    status: Arc<Mutex<BTreeMap<String, HostStatus>>>,
    stop: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AcmeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeService").finish_non_exhaustive()
    }
}

/// What the task works with.
struct Context {
    config: AcmeConfig,
    storage: Storage,
    client: BoundedClient,
    challenges: Arc<Challenges>,
    installer: Arc<dyn Installer>,
    timing: Timing,
    /// Created or loaded at the first order, then shared by all.
    account: tokio::sync::Mutex<Option<Account>>,
}

/// One host as the task tracks it.
pub(super) struct Entry {
    /// The certificate being served.
    pub(super) current: Option<Served>,
    /// When the next attempt starts.
    pub(super) due: SystemTime,
    /// Failures since the last success.
    pub(super) failures: u32,
    /// The attempt running for this host, if any.
    pub(super) running: Option<AbortHandle>,
    /// Tells a finished attempt from one started for an earlier entry of
    /// the same host (removed, then added again).
    pub(super) attempt: u64,
    pub(super) last_error: Option<String>,
}

#[derive(Clone)]
pub(super) struct Served {
    pub(super) not_before: SystemTime,
    pub(super) not_after: SystemTime,
    pub(super) issuer: String,
}

impl AcmeService {
    /// Starts the ACME task for `hosts` on the current tokio runtime.
    ///
    /// Before it returns, every still-valid certificate stored for these
    /// hosts (from the same ACME directory) is installed, so a restart
    /// serves at once without a new order. Fails only when `config` cannot
    /// be used (an unreadable `ca_roots`) or outside a tokio runtime; an
    /// unreachable ACME server is a per-host failure, retried.
    pub fn start(
        config: AcmeConfig,
        state_dir: &Path,
        hosts: Vec<String>,
        challenges: Arc<Challenges>,
        installer: Arc<dyn Installer>,
        timing: Timing,
    ) -> Result<Self, AcmeError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| AcmeError::Config("the ACME service must be started inside a tokio runtime".into()))?;
        let client = BoundedClient::new(config.ca_roots.as_deref(), timing.request_timeout)?;
        let storage = Storage::new(state_dir);
        // Left by a cutover killed mid-write; they may hold private keys.
        storage.remove_temp_files();
        let hosts = normalize(hosts);
        let context = Arc::new(Context {
            config,
            storage,
            client,
            challenges,
            installer,
            timing,
            account: tokio::sync::Mutex::new(None),
        });
        let mut entries = BTreeMap::new();
        for host in &hosts {
            entries.insert(host.clone(), context.new_entry(host, SystemTime::now()));
        }
        let status = Arc::new(Mutex::new(BTreeMap::new()));
        publish(&status, &entries);
        let (hosts_tx, hosts_rx) = watch::channel(hosts);
        let stop = Arc::new(Notify::new());
        let task = runtime.spawn(run(
            Arc::clone(&context),
            entries,
            hosts_rx,
            Arc::clone(&status),
            Arc::clone(&stop),
        ));
        Ok(Self {
            hosts: hosts_tx,
            status,
            stop,
            task: Some(task),
        })
    }

    /// Replaces the host set (after a push): new hosts get a certificate
    /// (a stored one at once, else an order), removed ones stop being
    /// served. Returns at once.
    pub fn set_hosts(&self, hosts: Vec<String>) {
        let hosts = normalize(hosts);
        self.hosts.send_if_modified(|current| {
            let changed = *current != hosts;
            *current = hosts;
            changed
        });
    }

    /// Every host's status, by host name.
    pub fn status(&self) -> Vec<HostStatus> {
        self.report().hosts()
    }

    /// A handle on the status that outlives the service, for
    /// `CertManager::set_acme_report` (`GET /certificates`).
    pub fn report(&self) -> StatusReport {
        StatusReport(Arc::clone(&self.status))
    }

    /// Stops the task and waits for it; pending challenge answers are
    /// withdrawn and nothing is left half-written (files are replaced
    /// atomically). The certificates stay served (a restart or the next
    /// cutover serves them from `state_dir` anyway); to stop serving them
    /// too (the config dropped `proxy.tls.acme`), call
    /// `set_hosts(Vec::new())` first.
    pub async fn shutdown(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for AcmeService {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Lowercase, each once, order kept; anything that is not a DNS name is
/// dropped (logged), since the host also names its files in `state_dir`.
fn normalize(hosts: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(hosts.len());
    for host in hosts {
        let host = host.to_ascii_lowercase();
        if !is_dns_name(&host) {
            tracing::warn!(host = host.as_str(), "not a DNS name; no ACME certificate for it");
            continue;
        }
        if !out.contains(&host) {
            out.push(host);
        }
    }
    out
}

/// Labels of letters, digits and hyphens, joined by dots, at most 253
/// bytes: what http-01 and tls-alpn-01 can prove, and safe as a file name.
fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Context {
    /// A host entering the set: its stored certificate is served at once
    /// (and due at its renewal time), otherwise it is due now.
    fn new_entry(&self, host: &str, now: SystemTime) -> Entry {
        let stored = self
            .storage
            .account_matches(&self.config.directory)
            .then(|| self.storage.load_cert(host, now))
            .flatten();
        let mut entry = Entry {
            current: None,
            due: now,
            failures: 0,
            running: None,
            attempt: 0,
            last_error: None,
        };
        if let Some(issued) = stored {
            tracing::info!(
                host,
                not_after = %humantime::format_rfc3339_seconds(issued.not_after),
                "serving the stored ACME certificate"
            );
            entry.due = issued.renew_at();
            self.install(&mut entry, &issued);
        }
        entry
    }

    fn install(&self, entry: &mut Entry, issued: &Issued) {
        self.installer.install(
            &issued.host,
            Arc::clone(&issued.key),
            issued.not_before,
            issued.not_after,
            &issued.issuer,
        );
        entry.current = Some(Served {
            not_before: issued.not_before,
            not_after: issued.not_after,
            issuer: issued.issuer.clone(),
        });
    }

    /// The shared account, loaded or created on first use.
    async fn account(&self) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let account = account::load_or_create(&self.config, &self.storage, &self.client).await?;
        *slot = Some(account.clone());
        Ok(account)
    }

    /// One attempt for `host`, bounded by the whole-order deadline.
    async fn attempt(self: Arc<Self>, host: String) -> Result<Issued, AcmeError> {
        let work = async {
            let account = self.account().await?;
            let issued = order::obtain(
                &account,
                &host,
                self.config.challenge,
                &self.challenges,
                self.timing.poll_limit.min(self.timing.order_deadline),
            )
            .await;
            if let Err(AcmeError::AccountGone(_)) = &issued {
                // Registered again at the next attempt; unless another
                // attempt already replaced it (its own order failed the
                // same way, or it registered the new one since).
                let mut slot = self.account.lock().await;
                if slot.as_ref().is_some_and(|current| current.id() == account.id()) {
                    slot.take();
                    self.storage.forget_account();
                }
            }
            let issued = issued?;
            // fsync off the runtime's worker threads.
            let storage = self.storage.clone();
            tokio::task::spawn_blocking(move || keep(&storage, issued, SystemTime::now()))
                .await
                .map_err(|e| AcmeError::Storage(format!("writing the certificate: {e}")))?
        };
        match tokio::time::timeout(self.timing.order_deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(AcmeError::Deadline(
                humantime::format_duration(self.timing.order_deadline).to_string(),
            )),
        }
    }
}

/// Stores a newly issued certificate, once it is fit to replace the one
/// served (and stored): one that is expired, not yet valid or already due
/// for renewal is this attempt's failure, neither stored nor installed.
fn keep(storage: &Storage, issued: Issued, now: SystemTime) -> Result<Issued, AcmeError> {
    issued.check_fresh(now)?;
    storage.save_cert(&issued)?;
    Ok(issued)
}

/// The wait before the next attempt after `failures` failures in a row:
/// `retry_first` doubling up to `retry_max`, then a random part of its
/// upper half taken off, so many cutovers (or hosts) failing together do
/// not retry in step; never under [`MIN_WAIT`].
fn backoff(timing: &Timing, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    let full = timing
        .retry_first
        .checked_mul(1u32 << doublings)
        .unwrap_or(timing.retry_max)
        .min(timing.retry_max);
    let factor: f64 = rand::rng().random_range(0.5..=1.0);
    Duration::try_from_secs_f64(full.as_secs_f64() * factor)
        .unwrap_or(full)
        .clamp(MIN_WAIT, MAX_WAIT)
}

type AttemptResult = (
    String,
    u64,
    Result<Result<Issued, AcmeError>, futures_util::future::Aborted>,
);

async fn run(
    context: Arc<Context>,
    mut entries: BTreeMap<String, Entry>,
    mut hosts: watch::Receiver<Vec<String>>,
    status: Arc<Mutex<BTreeMap<String, HostStatus>>>,
    stop: Arc<Notify>,
) {
    let mut attempts: FuturesUnordered<futures_util::future::BoxFuture<'static, AttemptResult>> =
        FuturesUnordered::new();
    let mut next_attempt: u64 = 0;
    loop {
        let now = SystemTime::now();
        let mut running = entries.values().filter(|e| e.running.is_some()).count();
        for (host, entry) in entries.iter_mut() {
            if running >= MAX_PARALLEL {
                break;
            }
            if entry.running.is_some() || entry.due > now {
                continue;
            }
            running += 1;
            next_attempt += 1;
            entry.attempt = next_attempt;
            tracing::info!(
                host = host.as_str(),
                attempt = entry.failures.saturating_add(1),
                "{} the ACME certificate",
                if entry.current.is_some() {
                    "renewing"
                } else {
                    "obtaining"
                }
            );
            let (handle, registration) = AbortHandle::new_pair();
            entry.running = Some(handle);
            // A panic inside the ACME crate or a parser is this attempt's
            // failure, never the end of the task (and of every renewal).
            let attempt = std::panic::AssertUnwindSafe(Arc::clone(&context).attempt(host.clone()))
                .catch_unwind()
                .map(|result| result.unwrap_or_else(|_| Err(AcmeError::Acme("the ACME client panicked".into()))));
            let work = Abortable::new(attempt, registration);
            let (host, attempt) = (host.clone(), next_attempt);
            attempts.push(Box::pin(async move { (host, attempt, work.await) }));
        }
        publish(&status, &entries);

        // At the limit, only a finishing attempt (or the clock check) can
        // start another.
        let sleep = entries
            .values()
            .filter(|e| e.running.is_none() && running < MAX_PARALLEL)
            .map(|e| e.due.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
            .min()
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        tokio::select! {
            // A host set given before `shutdown` is applied before it, so
            // `set_hosts(vec![])` then `shutdown()` stops serving them all.
            biased;
            changed = hosts.changed() => {
                if changed.is_err() {
                    // The service was dropped without shutdown.
                    break;
                }
                let wanted = hosts.borrow_and_update().clone();
                update_hosts(&context, &mut entries, &wanted);
            }
            () = stop.notified() => break,
            Some((host, attempt, result)) = attempts.next(), if !attempts.is_empty() => {
                let Ok(result) = result else { continue };
                let Some(entry) = entries.get_mut(&host).filter(|e| e.attempt == attempt) else {
                    continue;
                };
                entry.running = None;
                finish(&context, &host, entry, result);
            }
            () = tokio::time::sleep(sleep) => {}
        }
    }
    // Dropping the attempts withdraws their challenge answers.
    drop(attempts);
    tracing::debug!("ACME task stopped");
}

/// The host set changed: new hosts enter, removed ones are stopped and
/// no longer served.
fn update_hosts(context: &Context, entries: &mut BTreeMap<String, Entry>, wanted: &[String]) {
    let removed: Vec<String> = entries.keys().filter(|h| !wanted.contains(h)).cloned().collect();
    for host in removed {
        if let Some(entry) = entries.remove(&host) {
            if let Some(running) = entry.running {
                running.abort();
            }
            context.installer.remove(&host);
            tracing::info!(
                host = host.as_str(),
                "host left the ACME set; its certificate is no longer served"
            );
        }
    }
    let now = SystemTime::now();
    for host in wanted {
        if !entries.contains_key(host) {
            tracing::info!(host = host.as_str(), "host joined the ACME set");
            let entry = context.new_entry(host, now);
            entries.insert(host.clone(), entry);
        }
    }
}

fn finish(context: &Context, host: &str, entry: &mut Entry, result: Result<Issued, AcmeError>) {
    let now = SystemTime::now();
    match result {
        Ok(issued) => {
            context.install(entry, &issued);
            entry.failures = 0;
            entry.last_error = None;
            let earliest = now.checked_add(MIN_WAIT.max(context.timing.retry_first)).unwrap_or(now);
            entry.due = issued.renew_at().max(earliest);
            tracing::info!(
                host,
                issuer = issued.issuer.as_str(),
                not_after = %humantime::format_rfc3339_seconds(issued.not_after),
                renew_at = %humantime::format_rfc3339_seconds(entry.due),
                "ACME certificate obtained and served"
            );
        }
        Err(e) => {
            entry.failures = entry.failures.saturating_add(1);
            let wait = backoff(&context.timing, entry.failures);
            entry.due = now.checked_add(wait).unwrap_or(now);
            entry.last_error = Some(e.to_string());
            tracing::warn!(
                host,
                error = %e,
                failures = entry.failures,
                retry_in = %humantime::format_duration(Duration::from_secs(wait.as_secs())),
                "ACME attempt failed{}",
                if entry.current.is_some() { "; the current certificate keeps serving" } else { "" }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::AcmeState;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let timing = Timing {
            retry_first: Duration::from_secs(10),
            retry_max: Duration::from_secs(3600),
            ..Timing::default()
        };
        for (failures, full) in [(1, 10), (2, 20), (3, 40), (9, 2560), (10, 3600), (u32::MAX, 3600)] {
            for _ in 0..50 {
                let wait = backoff(&timing, failures);
                let full = Duration::from_secs(full);
                assert!(wait <= full && wait >= full / 2, "{failures} failures: {wait:?}");
            }
        }
        let spread: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(&timing, 3)).collect();
        assert!(spread.len() > 1, "jittered");
        let tiny = Timing {
            retry_first: Duration::ZERO,
            retry_max: Duration::MAX,
            ..Timing::default()
        };
        assert_eq!(backoff(&tiny, 1), MIN_WAIT, "never a tight loop");
        let huge = Timing {
            retry_first: Duration::MAX,
            retry_max: Duration::MAX,
            ..Timing::default()
        };
        assert_eq!(backoff(&huge, 5), MAX_WAIT, "no overflow");
    }

    #[test]
    fn only_dns_names_are_kept_once_and_lowercased() {
        let hosts = normalize(
            [
                "A.test", "a.test", "../etc", "x/y.test", ".test", "a..test", "-a.test", "", "b-1.test",
            ]
            .map(String::from)
            .to_vec(),
        );
        assert_eq!(hosts, ["a.test", "b-1.test"]);
    }

    /// A certificate the CA issued already expired, not yet valid or
    /// already due for renewal is a failed attempt: not stored (the one
    /// stored before stays), not installed, retried with back-off.
    #[test]
    fn a_stale_issued_certificate_is_a_failure_and_the_stored_one_stays() {
        let state = std::env::temp_dir().join(format!("cutover-acme-keep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let storage = Storage::new(&state);
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let served = crate::certs::acme::cert::tests::self_signed("a.test");
        keep(&storage, served.clone(), now).unwrap();
        let due = crate::certs::acme::cert::tests::valid_between("a.test", now - 60 * day, now + 29 * day);
        let err = keep(&storage, due, now).unwrap_err();
        assert!(err.to_string().contains("already due for renewal"), "{err}");
        let stored = storage.load_cert("a.test", now).unwrap();
        assert_eq!(
            stored.key.cert, served.key.cert,
            "the previous certificate is still stored"
        );

        let context = Context {
            config: config(None),
            storage,
            client: BoundedClient::new(None, Duration::from_secs(1)).unwrap(),
            challenges: Arc::new(Challenges::new()),
            installer: Arc::new(Nowhere),
            timing: Timing {
                retry_first: Duration::from_secs(60),
                retry_max: Duration::from_secs(3600),
                ..Timing::default()
            },
            account: tokio::sync::Mutex::new(None),
        };
        let mut entry = Entry {
            current: None,
            due: now,
            failures: 0,
            running: None,
            attempt: 1,
            last_error: None,
        };
        context.install(&mut entry, &served);
        finish(&context, "a.test", &mut entry, Err(err));
        assert_eq!(entry.failures, 1, "counted in the back-off");
        assert!(
            entry.due >= now + Duration::from_secs(30),
            "backed off, not ordered again at once"
        );
        assert_eq!(
            entry.current.as_ref().unwrap().not_after,
            served.not_after,
            "still serving"
        );
        let status = Arc::new(Mutex::new(BTreeMap::new()));
        publish(&status, &BTreeMap::from([("a.test".to_owned(), entry)]));
        let status = StatusReport(status).hosts();
        assert_eq!(status[0].state, AcmeState::Failed);
        assert!(status[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("already due for renewal"));
        let _ = std::fs::remove_dir_all(&state);
    }

    struct Nowhere;

    impl Installer for Nowhere {
        fn install(&self, _: &str, _: Arc<rustls::sign::CertifiedKey>, _: SystemTime, _: SystemTime, _: &str) {}
        fn remove(&self, _: &str) {}
    }

    fn config(ca_roots: Option<std::path::PathBuf>) -> AcmeConfig {
        AcmeConfig {
            directory: "https://127.0.0.1:1/dir".into(),
            email: None,
            challenge: crate::config::AcmeChallenge::Http01,
            ca_roots,
            hosts: Vec::new(),
        }
    }

    #[test]
    fn start_refuses_what_cannot_work_and_nothing_else() {
        let state = std::env::temp_dir().join(format!("cutover-acme-start-{}", std::process::id()));
        let start = |ca_roots| {
            AcmeService::start(
                config(ca_roots),
                &state,
                vec!["a.test".into()],
                Arc::new(Challenges::new()),
                Arc::new(Nowhere),
                Timing::default(),
            )
        };
        let err = start(None).unwrap_err();
        assert!(err.to_string().contains("tokio runtime"), "{err}");

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let err = start(Some(state.join("missing.pem"))).unwrap_err();
            assert!(err.to_string().contains("missing.pem"), "{err}");
            // An unreachable server is not an error at start: the host is
            // pending, then failed and retried.
            let service = start(None).unwrap();
            assert_eq!(service.status()[0].state, AcmeState::Pending);
            service.shutdown().await;
        });
        assert!(!state.exists(), "nothing written without an ACME server");
    }
}
