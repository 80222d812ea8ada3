//! `cutover up`: wires the data plane, the supervisor and the admin API,
//! then runs until SIGTERM or SIGINT and shuts down in order:
//!
//! 1. cut running deployments (recorded `interrupted`);
//! 2. stop accepting and let in-flight requests finish (bounded by the
//!    longest `drain_timeout`);
//! 3. stop every instance (SIGTERM, SIGKILL after `stop_timeout`);
//! 4. stop the admin API and exit.
//!
//! An upgrade (`cutover upgrade`, `POST /upgrade`, SIGUSR2) ends it the
//! other way: the new process took the listeners and the apps, so this one
//! stops its admin API, drains and exits without stopping any app
//! ([`crate::upgrade`]). Started by such an upgrade (`--takeover-fd`), `up`
//! inherits instead of binding and adopts instead of starting.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cutover_control::admin::{self, AdminState};
use cutover_control::certs::acme::AcmeDriver;
use cutover_control::certs::CertManager;
use cutover_control::config::{self, Config};
use cutover_control::deploy::metrics::DeployMetrics;
use cutover_control::deploy::{boot, Controller};
use cutover_control::journal::{AppSource, Journal};
use cutover_control::metrics::StateCollector;
use cutover_control::routing::Routing;
use cutover_control::state_lock::{self, StateLock};
use cutover_control::supervisor::orphans::stat_of;
use cutover_control::supervisor::process::Process;
use cutover_control::supervisor::{self, InstanceRecord, Supervisor};
use cutover_control::upgrade::{UpgradeOutcome, Upgrades};
use cutover_proxy::tls::Challenges;
use cutover_proxy::{DataPlane, DataPlaneConfig, Limits, ProxyMetrics, ProxySettings, RouteTable, TableHandle, Tuning};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::notify::{notify, NOTIFY_SOCKET};
use crate::upgrade::new::{self, Predecessor};
use crate::upgrade::old;

/// How a new process waits for the instances it adopted to pass a probe
/// before it serves (they normally answer the first one).
const ADOPTED_READY_WITHIN: Duration = Duration::from_secs(10);

/// What `cutover up` was started with.
pub struct Start {
    /// The config file.
    pub path: PathBuf,
    /// This process's arguments after the program name, without
    /// `--takeover-fd`: what an upgrade starts the new binary with.
    pub relaunch: Vec<OsString>,
    /// The binary this process runs (the default upgrade target).
    pub own_binary: PathBuf,
    /// The hand-over channel, when a running cutover started this one.
    pub takeover: Option<OwnedFd>,
}

/// `args` without any `--takeover-fd N` / `--takeover-fd=N`.
pub fn relaunch_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match arg.to_str() {
            Some("--takeover-fd") => skip_value = true,
            Some(a) if a.starts_with("--takeover-fd=") => {}
            _ => kept.push(arg),
        }
    }
    kept
}

/// Runs `cutover up`.
pub async fn run(start: Start) -> anyhow::Result<ExitCode> {
    let taking_over = start.takeover.is_some();
    match serve(start).await {
        // A successor that fails exits at once: tearing its runtime down
        // would drop the tasks of instances it adopted, and their pid files
        // with them, while its predecessor serves on with those apps.
        Err(e) if taking_over => {
            tracing::error!(error = %format!("{e:#}"), "cutover failed");
            eprintln!("cutover: {e:#}");
            std::process::exit(1);
        }
        result => result,
    }
}

async fn serve(start: Start) -> anyhow::Result<ExitCode> {
    // First: a SIGUSR2 (a reload) or SIGTERM during start-up must not kill
    // cutover by the default action, leaving its apps behind.
    let mut signals = Signals::new()?;
    let path = start.path.clone();
    // Taking over: the predecessor's listeners and lock first, so whatever
    // fails below is reported to it.
    let mut predecessor = match start.takeover {
        Some(fd) => match Predecessor::connect(fd).await {
            Ok(predecessor) => Some(predecessor),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot take over from the running cutover");
                return Ok(ExitCode::FAILURE);
            }
        },
        None => None,
    };
    let config = match config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            crate::print_config_error(&e);
            return Ok(give_up(predecessor.as_ref(), &format!("the config does not load: {e}")).await);
        }
    };
    // Certificate files are part of the config: a bad one stops `up` before
    // anything starts, with the problems `cutover validate` prints.
    let certs = match CertManager::new(&config, &path.display().to_string()) {
        Ok(certs) => certs,
        Err(problems) => {
            crate::print_config_error(&config::ConfigError::Invalid(problems));
            return Ok(give_up(predecessor.as_ref(), "a certificate file is refused (see its log)").await);
        }
    };
    for warning in certs.warnings() {
        tracing::warn!("{warning}");
    }

    // One cutover per state_dir, before anything touches it (the orphan
    // reaper would stop a running cutover's live instances). A successor
    // shares its predecessor's lock and takes it for itself once it owns
    // the apps.
    let mut state_lock = match &predecessor {
        Some(_) => None,
        None => match state_lock::acquire(&config.state_dir) {
            Ok(lock) => Some(HeldLock::Locked(lock)),
            Err(e) => {
                eprintln!("cutover: {e}");
                return Ok(e.exit_code());
            }
        },
    };
    if let Some(var) = &config.admin.token_env {
        supervisor::process::withhold_env(var); // no child sees the admin token
    }
    supervisor::process::withhold_env(NOTIFY_SOCKET); // systemd's, not the apps'
    let token = admin_token(&config)?;
    let source = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let base_dir = config_dir(&path);
    std::fs::create_dir_all(config.state_dir.join("logs"))
        .with_context(|| format!("cannot create state_dir {}", config.state_dir.display()))?;
    let run_dir = config.state_dir.join("run");

    // Whatever a killed predecessor left running goes first (a live
    // predecessor's apps are adopted instead, below).
    if predecessor.is_none() {
        let reaped = supervisor::orphans::reap(&run_dir);
        if !reaped.is_empty() {
            tracing::warn!(instances = ?reaped, "stopped instances left behind by a previous run");
        }
    }
    let journal = Arc::new(Journal::open(&config.state_dir)?);

    let registry = prometheus::Registry::new();
    let metrics = ProxyMetrics::new(&registry).context("cannot register metrics")?;
    let deploy_metrics = DeployMetrics::new(&registry).context("cannot register metrics")?;
    certs.register_metrics(&registry).context("cannot register metrics")?;
    // One set of pending ACME challenges: the data plane answers them, the
    // ACME service fills them.
    let challenges = Arc::new(Challenges::new());
    // Deployments a killed predecessor left unfinished are closed before
    // anything is restored, so staged changes they deployed are gone.
    boot::close_interrupted(&journal, &deploy_metrics);
    let restored = boot::restore(&journal, &config, &source, &base_dir);
    let table = TableHandle::new(RouteTable::default());
    let routing = Routing::new(Arc::clone(&table), metrics.clone());
    let serving = &restored.config;
    routing.configure(&serving.routes, &serving.proxy, serving.apps.values());
    // A pause or maintenance switch outlives a restart (and an upgrade):
    // in place before the first table is published.
    boot::restore_switches(&journal, &routing, serving);
    for (name, app) in &serving.apps {
        deploy_metrics.app_configured(name);
        deploy_metrics.analysis_limits(name, &app.canary.analysis);
    }
    routing.publish();

    // The admin listener: inherited, or bound before anything starts, so a
    // taken port fails fast and leaves nothing behind.
    let inherited_admin = match predecessor.as_mut().map(|p| p.admin_listener(config.admin.listen)) {
        Some(Ok(listener)) => listener,
        Some(Err(e)) => return Ok(give_up(predecessor.as_ref(), &format!("{e:#}")).await),
        None => None,
    };
    let admin_listener = match inherited_admin {
        Some(listener) => tokio::net::TcpListener::from_std(listener)?,
        None => match admin::bind(config.admin.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                let reason = format!("cannot listen on admin address {}: {e}", config.admin.listen);
                if predecessor.is_some() {
                    return Ok(give_up(predecessor.as_ref(), &reason).await);
                }
                bail!(reason);
            }
        },
    };
    // Kept for a later upgrade of this process.
    let admin_fd = admin_listener.as_fd().try_clone_to_owned()?;

    let data_plane_config = data_plane_config(&config, &certs, &challenges);
    let supervisor = Arc::new(Supervisor::new(Arc::clone(&routing), &config.state_dir));
    registry
        .register(Box::new(StateCollector::new(Arc::downgrade(&supervisor))?))
        .context("cannot register metrics")?;
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
        .context("cannot register process metrics")?;

    let data_plane = match &mut predecessor {
        None => {
            let data_plane = start_data_plane(data_plane_config, &table, &metrics, Vec::new()).await?;
            for app in serving.apps.values() {
                supervisor.start_app(Arc::new(app.clone()));
            }
            data_plane
        }
        Some(predecessor) => {
            let records = match predecessor.prepared().await {
                Ok(records) => records,
                Err(e) => return Ok(give_up(Some(predecessor), &format!("{e:#}")).await),
            };
            adopt(&supervisor, serving, &run_dir, records).await;
            let inherited = std::mem::take(&mut predecessor.proxy);
            match start_data_plane(data_plane_config, &table, &metrics, inherited).await {
                Ok(data_plane) => data_plane,
                Err(e) => return Ok(give_up(Some(predecessor), &format!("{e:#}")).await),
            }
        }
    };
    let mut data_plane = data_plane;
    data_plane
        .register_metrics(&registry)
        .context("cannot register metrics")?;
    crate::memory::trim_after_closes(Arc::clone(data_plane.connections()));

    journal.update(|state| {
        for (name, app) in &serving.apps {
            state.current.entry(name.clone()).or_insert_with(|| AppSource {
                version: app.version(),
                config: restored.sources.get(name).cloned().unwrap_or_else(|| source.clone()),
            });
        }
    })?;
    let controller = Controller::new(
        Arc::clone(&supervisor),
        Arc::clone(&journal),
        deploy_metrics,
        base_dir,
        restored.config.clone(),
        restored.sources.clone(),
    );
    controller.restore_staged(restored.staged);
    let deploy_yaml_changed = restored.config.apps != config.apps || restored.config.routes != config.routes;
    if deploy_yaml_changed && predecessor.is_some() {
        // An upgrade changes the binary, nothing else.
        tracing::warn!("deploy.yaml differs from what the previous cutover served; `cutover push` applies it");
    } else if deploy_yaml_changed {
        // deploy.yaml changed while cutover was down: apply it like a push.
        match controller.push(&source, None, &certs) {
            Ok(report) => tracing::info!(
                deployments = ?report.deployments,
                staged = ?report.staged,
                added = ?report.added,
                removed = ?report.removed,
                "deploy.yaml differs from the journal; applied it like a push"
            ),
            Err(e) => tracing::error!(error = %e, "cannot apply deploy.yaml's changes"),
        }
    }
    let (upgrades, mut upgrade_requests) =
        Upgrades::new(Arc::clone(&controller), start.own_binary.clone()).context("cannot register metrics")?;
    upgrades.register(&registry).context("cannot register metrics")?;
    // A successor takes no verb until its predecessor has exited: that one
    // may still drain requests into the apps.
    let takeover_guard = match &predecessor {
        Some(p) => Some(
            controller
                .begin_upgrade(&format!("taking over from pid {}", p.pid))
                .context("cannot mark the takeover")?,
        ),
        None => None,
    };

    // ACME (`certs::acme`): after the data plane, which answers its http-01
    // and tls-alpn-01 challenges from `challenges`; it installs what it
    // obtains through `certs`, reports its hosts' states to
    // `/certificates`, and follows pushes (route hosts, `proxy.tls.acme`)
    // on `certs.pushed_config()`. Nothing runs without `proxy.tls.acme`.
    // A successor starts it once its predecessor stopped its own.
    let acme = tokio::sync::Mutex::new(None::<AcmeDriver>);
    if predecessor.is_none() {
        *acme.lock().await = Some(AcmeDriver::start(Arc::clone(&certs), Arc::clone(&challenges)));
    }

    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_controller = Arc::clone(&controller);
    let admin_state = Arc::new(AdminState {
        controller,
        registry,
        token,
        started: Instant::now(),
        listen: config.admin.listen,
        allowed_origins: config.admin.allowed_origins.clone(),
        certs: Arc::clone(&certs),
        upgrades: Arc::clone(&upgrades),
        upgraded_from: predecessor.as_ref().map(|p| p.pid),
    });
    let admin_task = tokio::spawn(async move {
        axum::serve(admin_listener, admin::router(admin_state))
            .with_graceful_shutdown(async move {
                let _ = admin_stopped.await;
            })
            .await
    });

    match predecessor.take() {
        None => notify("READY=1"),
        Some(mut predecessor) => {
            let released = predecessor.ready().await;
            // From here on this process owns the apps and the state_dir.
            if let new::Released::Gone = released {
                tracing::warn!(
                    pid = predecessor.pid,
                    "the previous cutover went away during the hand-over"
                );
            }
            state_lock = predecessor.take_lock().map(|fd| {
                // A second descriptor of the same open file: if taking the
                // lock fails, this one still holds it.
                let spare = fd.try_clone();
                match (StateLock::inherit(fd, &config.state_dir), spare) {
                    (Ok(lock), _) => HeldLock::Locked(lock),
                    (Err(e), Ok(spare)) => {
                        tracing::error!(error = %e, "cannot take the state_dir lock over; its file stays open, so it stays held");
                        HeldLock::Raw(spare)
                    }
                    (Err(e), Err(dup)) => {
                        tracing::error!(error = %e, %dup, "cannot take the state_dir lock over");
                        HeldLock::None
                    }
                }
            });
            for app in serving.apps.keys() {
                supervisor.fill_app(app);
            }
            *acme.lock().await = Some(AcmeDriver::start(Arc::clone(&certs), Arc::clone(&challenges)));
            upgrades.count(UpgradeOutcome::Succeeded);
            notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
            let pid = predecessor.pid;
            let predecessor_exit = predecessor.take_exit();
            tracing::info!(predecessor = pid, "took over: serving and supervising the apps");
            tokio::spawn(async move {
                predecessor_exit.await;
                drop(takeover_guard);
                tracing::info!(
                    predecessor = pid,
                    "the previous cutover exited; deployments are taken again"
                );
            });
        }
    }

    tracing::info!(
        proxy = %list(&config.proxy.listen),
        tls = %config.proxy.tls.as_ref().map_or_else(String::new, |tls| list(&tls.listen)),
        admin = %config.admin.listen,
        apps = config.apps.len(),
        config = %path.display(),
        pid = std::process::id(),
        "cutover is up"
    );

    let admin_addr = config.admin.listen.to_string();
    let ending = loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Sig::Upgrade => match upgrades.request(None) {
                    Ok(log) => tracing::info!(upgrade = %log.id(), binary = %log.binary().display(), "SIGUSR2: upgrading"),
                    Err(e) => tracing::warn!(error = %e, "SIGUSR2: no upgrade"),
                },
                Sig::Stop(name) => break Ending::Stop(name),
            },
            Some(request) = upgrade_requests.recv() => {
                let Some(lock) = state_lock.as_ref().and_then(HeldLock::as_fd) else {
                    tracing::error!("no state_dir lock to hand over; upgrade refused");
                    continue;
                };
                let running = old::Running {
                    args: &start.relaunch,
                    data_plane: &data_plane,
                    admin: (&admin_addr, admin_fd.as_fd()),
                    state_lock: lock,
                    supervisor: &supervisor,
                    upgrades: &upgrades,
                    acme: &acme,
                    run_dir: &run_dir,
                };
                // Handed over, this process must end as such (never stop the
                // apps, never unlock), even if a stop signal came meanwhile.
                if let old::Ended::HandedOver { successor } = old::run(&running, request, signals.stop()).await {
                    break Ending::HandedOver(successor);
                }
                if let Some(name) = signals.stopped {
                    break Ending::Stop(name);
                }
            }
        }
    };

    match ending {
        Ending::Stop(signal_name) => {
            notify("STOPPING=1");
            // A deployment cut by the stop is recorded `interrupted` (its
            // followers get that outcome); the next start serves the last
            // committed version.
            tracing::info!(signal = signal_name, "shutting down: stopping deployments");
            admin_controller.stop_deployments().await;
            // No new order may start while the rest stops (a stored
            // certificate survives for the next start).
            if let Some(acme) = acme.lock().await.take() {
                acme.shutdown().await;
            }
            tracing::info!("shutting down: draining requests");
            let left = data_plane.shutdown(config::timing::shutdown_drain(&config)).await;
            if left > 0 {
                tracing::warn!(requests = left, "requests still running at the drain deadline are cut");
            }
            tracing::info!("stopping apps");
            supervisor.stop_all().await;
            let _ = admin_stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
            tracing::info!("cutover stopped");
        }
        Ending::HandedOver(successor) => {
            // The successor holds the lock: this process must never unlock
            // it, not even by unwinding from a panic below.
            if let Some(lock) = state_lock.take() {
                lock.hand_over();
            }
            // New admin requests go to the successor, which serves the same
            // socket; the upgrade's follower already has its outcome. The
            // spare copy kept for an upgrade closes too: should the
            // successor die, a listening socket nobody accepts on must not
            // outlive it here, swallowing connections while this drains.
            drop(admin_fd);
            let _ = admin_stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
            tracing::info!(successor, "handed over: draining requests, apps keep running");
            let left = data_plane.hand_over(config::timing::shutdown_drain(&config)).await;
            if left > 0 {
                tracing::warn!(requests = left, "requests still running at the drain deadline are cut");
            }
            tracing::info!(successor, "cutover handed over and stopped");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How the main loop ended.
enum Ending {
    /// SIGTERM or SIGINT: stop everything.
    Stop(&'static str),
    /// An upgrade: the successor (its pid) owns everything but this
    /// process's open requests.
    HandedOver(u32),
}

/// The state_dir lock as this process holds it.
enum HeldLock {
    Locked(StateLock),
    /// Inherited but not taken as a [`StateLock`]: the open file still
    /// holds the lock.
    Raw(OwnedFd),
    /// Lost (could not even be kept open): no upgrade can hand it over.
    None,
}

impl HeldLock {
    fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            HeldLock::Locked(lock) => Some(lock.as_fd()),
            HeldLock::Raw(fd) => Some(fd.as_fd()),
            HeldLock::None => None,
        }
    }

    /// After a hand-over: let go without unlocking (see [`StateLock`]).
    fn hand_over(self) {
        match self {
            HeldLock::Locked(lock) => lock.hand_over(),
            HeldLock::Raw(fd) => std::mem::forget(fd),
            HeldLock::None => {}
        }
    }
}

/// A successor that cannot take over: tells its predecessor why (which
/// then serves on) and exits at once, so no destructor touches an app
/// process, a pid file or the shared lock. Without a predecessor, just the
/// exit code.
async fn give_up(predecessor: Option<&Predecessor>, reason: &str) -> ExitCode {
    let Some(predecessor) = predecessor else {
        return ExitCode::FAILURE;
    };
    tracing::error!(%reason, "cannot take over from the running cutover");
    predecessor.fail(reason).await;
    std::process::exit(1);
}

/// A successor adopts what its predecessor ran: everything marked with this
/// state_dir that was not handed over (leftovers) is stopped first; a
/// record of an app this process does not serve, or one that fails
/// verification, is stopped after (it was the predecessor's, unsupervised
/// now), so `fill_app` replaces it and no instance runs twice.
async fn adopt(supervisor: &Supervisor, serving: &Config, run_dir: &std::path::Path, records: Vec<InstanceRecord>) {
    let keep: BTreeSet<u32> = records.iter().map(|r| r.pid).collect();
    let dir = run_dir.to_path_buf();
    let reaped = tokio::task::spawn_blocking(move || supervisor::orphans::reap_except(&dir, &keep))
        .await
        .unwrap_or_default();
    if !reaped.is_empty() {
        tracing::warn!(processes = ?reaped, "stopped processes the previous cutover did not hand over");
    }
    let mut adopted = Vec::new();
    for app in serving.apps.values() {
        let mine: Vec<InstanceRecord> = records.iter().filter(|r| r.app == app.name).cloned().collect();
        adopted.extend(supervisor.adopt_app(Arc::new(app.clone()), &mine));
    }
    let adopted_pids: BTreeSet<u32> = adopted.iter().filter_map(|i| i.pid()).collect();
    let left: Vec<InstanceRecord> = records.into_iter().filter(|r| !adopted_pids.contains(&r.pid)).collect();
    if !left.is_empty() {
        let stop_timeout = |app: &str| {
            serving
                .apps
                .get(app)
                .map_or(Duration::from_secs(10), |a| a.stop_timeout)
        };
        let stops = left
            .iter()
            .map(|record| stop_unadopted(record, run_dir, stop_timeout(&record.app)));
        futures_util::future::join_all(stops).await;
    }
    // Ready before this process accepts anything (they normally are at
    // once); one that is not keeps being checked, and restarted if it fails.
    let ready = futures_util::future::join_all(adopted.iter().map(|instance| async move {
        tokio::time::timeout(ADOPTED_READY_WITHIN, instance.ready())
            .await
            .ok()?
            .ok()
    }))
    .await;
    tracing::info!(
        adopted = adopted.len(),
        ready = ready.iter().filter(|r| r.is_some()).count(),
        "adopted the running instances"
    );
}

/// Stops a handed-over instance that could not be adopted (its
/// `/proc/<pid>/environ` rewritten by a process title, say): only while its
/// pid file still names it and it still leads its own group, which is what
/// the predecessor's record says; SIGTERM to the group, SIGKILL after
/// `stop_timeout` ([`Process::stop`], on a pidfd opened before the checks).
async fn stop_unadopted(record: &InstanceRecord, run_dir: &std::path::Path, stop_timeout: Duration) {
    let pid_file = run_dir.join(format!("{}.pid", record.name));
    let process = Process::watch(record.pid).ok();
    let leads_its_group = stat_of(record.pid).is_some_and(|s| !s.dead && s.pgrp == record.pid);
    let ours = supervisor::pidfile::read_pid(&pid_file) == Some(record.pid) && leads_its_group;
    let Some(process) = process.filter(|_| ours) else {
        tracing::warn!(instance = %record.name, pid = record.pid, "a handed-over instance is gone or not ours any more; left alone");
        return;
    };
    tracing::warn!(instance = %record.name, pid = record.pid, "stopping a handed-over instance that could not be adopted; a fresh one replaces it");
    process.stop(stop_timeout).await;
    if supervisor::pidfile::read_pid(&pid_file) == Some(record.pid) {
        let _ = std::fs::remove_file(&pid_file);
    }
}

/// The data plane's config, from `config`.
fn data_plane_config(config: &Config, certs: &CertManager, challenges: &Arc<Challenges>) -> DataPlaneConfig {
    DataPlaneConfig {
        listen: config.proxy.listen.clone(),
        tls_listen: config
            .proxy
            .tls
            .as_ref()
            .map(|tls| tls.listen.clone())
            .unwrap_or_default(),
        threads: config.proxy.threads,
        settings: ProxySettings {
            hold_timeout: config.proxy.hold_timeout,
            long_lived: cutover_control::routing::long_lived_settings(&config.proxy),
            trusted_proxies: config.proxy.trusted_proxies.clone().into(),
            limits: Limits {
                header_timeout: config.proxy.limits.header_timeout,
                keepalive_timeout: config.proxy.limits.keepalive_timeout,
                max_connections: config.proxy.limits.max_connections,
            },
            tuning: Tuning {
                l4_read_buffer: config.proxy.tuning.l4_read_buffer,
                listener_tasks: config.proxy.tuning.listener_tasks,
                upstream_pool: config.proxy.tuning.upstream_pool,
            },
            http2: config.proxy.http2,
            h2c: config.proxy.h2c,
            redirect_http: config.proxy.tls.as_ref().is_some_and(|tls| tls.redirect_http),
            hsts: config.proxy.tls.as_ref().map_or(Duration::ZERO, |tls| tls.hsts),
            certs: certs.store(),
            challenges: Arc::clone(challenges),
            ..ProxySettings::default()
        },
        grace: config::timing::shutdown_grace(config),
    }
}

/// Starts pingora (on a blocking thread: it waits for its listeners).
async fn start_data_plane(
    config: DataPlaneConfig,
    table: &Arc<TableHandle>,
    metrics: &ProxyMetrics,
    inherited: Vec<(String, OwnedFd)>,
) -> anyhow::Result<DataPlane> {
    let table = Arc::clone(table);
    let metrics = metrics.clone();
    Ok(
        tokio::task::spawn_blocking(move || DataPlane::start_inheriting(config, table, &metrics, inherited))
            .await
            .context("proxy start-up panicked")??,
    )
}

/// The bearer token, from the environment variable `admin.token_env` names.
/// A non-loopback admin listener without a token is refused.
fn admin_token(config: &Config) -> anyhow::Result<Option<String>> {
    let token = config
        .admin
        .token_env
        .as_deref()
        .and_then(|var| std::env::var(var).ok())
        .filter(|t| !t.is_empty());
    if token.is_none() && !config.admin.listen.ip().is_loopback() {
        bail!(
            "admin.listen {} is not a loopback address: set a token in ${} (admin.token_env)",
            config.admin.listen,
            config.admin.token_env.as_deref().unwrap_or("CUTOVER_ADMIN_TOKEN")
        );
    }
    Ok(token)
}

/// The directory relative paths in the config are resolved against.
fn config_dir(path: &std::path::Path) -> PathBuf {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

/// The signals `up` acts on.
enum Sig {
    Stop(&'static str),
    Upgrade,
}

struct Signals {
    term: Signal,
    int: Signal,
    usr2: Signal,
    /// Set when [`Signals::stop`] saw SIGTERM or SIGINT.
    stopped: Option<&'static str>,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            usr2: signal(SignalKind::user_defined2()).context("cannot watch SIGUSR2")?,
            stopped: None,
        })
    }

    async fn next(&mut self) -> Sig {
        tokio::select! {
            _ = self.term.recv() => Sig::Stop("SIGTERM"),
            _ = self.int.recv() => Sig::Stop("SIGINT"),
            _ = self.usr2.recv() => Sig::Upgrade,
        }
    }

    /// During an upgrade: resolves on SIGTERM or SIGINT (recorded in
    /// `stopped`); a SIGUSR2 meanwhile is refused like any second upgrade.
    async fn stop(&mut self) {
        loop {
            match self.next().await {
                Sig::Stop(name) => {
                    self.stopped = Some(name);
                    return;
                }
                Sig::Upgrade => tracing::warn!("SIGUSR2 ignored: an upgrade is running"),
            }
        }
    }
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPS: &str = "apps:\n  web: { command: [bin/web] }\nroutes:\n  - app: web\n";

    fn settings_of(source: &str) -> ProxySettings {
        let config = config::parse(source, "deploy.yaml", std::path::Path::new("/srv/site")).unwrap();
        let certs = CertManager::new(&config, "deploy.yaml").unwrap();
        data_plane_config(&config, &certs, &Arc::new(Challenges::new())).settings
    }

    #[test]
    fn proxy_tuning_reaches_the_data_plane() {
        let source =
            format!("proxy:\n  tuning: {{ l4_read_buffer: 65536, listener_tasks: 4, upstream_pool: 0 }}\n{APPS}");
        assert_eq!(
            settings_of(&source).tuning,
            Tuning {
                l4_read_buffer: 65536,
                listener_tasks: 4,
                upstream_pool: 0,
            }
        );
    }

    #[test]
    fn without_proxy_tuning_the_data_plane_keeps_its_own_defaults() {
        assert_eq!(settings_of(APPS).tuning, Tuning::default());
    }
}
