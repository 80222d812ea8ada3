//! `cutover up`: wires the data plane, the supervisor and the admin API,
//! then runs until SIGTERM or SIGINT and shuts down in order:
//!
//! 1. cut running deployments (recorded `interrupted`);
//! 2. stop accepting and let in-flight requests finish (bounded by the
//!    longest `drain_timeout`);
//! 3. stop every instance (SIGTERM, SIGKILL after `stop_timeout`);
//! 4. stop the admin API and exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cutover_control::admin::{self, AdminState};
use cutover_control::certs::CertManager;
use cutover_control::config::{self, Config};
use cutover_control::deploy::metrics::DeployMetrics;
use cutover_control::deploy::{boot, Controller};
use cutover_control::journal::{AppSource, Journal};
use cutover_control::metrics::StateCollector;
use cutover_control::routing::Routing;
use cutover_control::supervisor::{self, Supervisor};
use cutover_proxy::tls::Challenges;
use cutover_proxy::{DataPlane, DataPlaneConfig, Limits, ProxyMetrics, ProxySettings, RouteTable, TableHandle};
use tokio::signal::unix::{signal, SignalKind};

/// Runs `cutover up` on the config at `path`.
pub async fn run(path: PathBuf) -> anyhow::Result<ExitCode> {
    let config = match config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            crate::print_config_error(&e);
            return Ok(ExitCode::FAILURE);
        }
    };
    // Certificate files are part of the config: a bad one stops `up` before
    // anything starts, with the problems `cutover validate` prints.
    let certs = match CertManager::new(&config, &path.display().to_string()) {
        Ok(certs) => certs,
        Err(problems) => {
            crate::print_config_error(&config::ConfigError::Invalid(problems));
            return Ok(ExitCode::FAILURE);
        }
    };
    for warning in certs.warnings() {
        tracing::warn!("{warning}");
    }
    // One cutover per state_dir, before anything touches it (the orphan
    // reaper would stop a running cutover's live instances).
    let _state_lock = match cutover_control::state_lock::acquire(&config.state_dir) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("cutover: {e}");
            return Ok(e.exit_code());
        }
    };
    if let Some(var) = &config.admin.token_env {
        supervisor::process::withhold_env(var); // no child sees the admin token
    }
    let token = admin_token(&config)?;
    let source = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let base_dir = config_dir(&path);
    std::fs::create_dir_all(config.state_dir.join("logs"))
        .with_context(|| format!("cannot create state_dir {}", config.state_dir.display()))?;

    // Whatever a killed predecessor left running goes first.
    let reaped = supervisor::orphans::reap(&config.state_dir.join("run"));
    if !reaped.is_empty() {
        tracing::warn!(instances = ?reaped, "stopped instances left behind by a previous run");
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
    for app in serving.apps.keys() {
        deploy_metrics.app_configured(app);
    }
    routing.publish();

    // Bind the admin listener before anything starts, so a taken port fails
    // fast and leaves nothing behind.
    let admin_listener = admin::bind(config.admin.listen)
        .await
        .with_context(|| format!("cannot listen on admin address {}", config.admin.listen))?;

    let data_plane_config = DataPlaneConfig {
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
            http2: config.proxy.http2,
            h2c: config.proxy.h2c,
            redirect_http: config.proxy.tls.as_ref().is_some_and(|tls| tls.redirect_http),
            hsts: config.proxy.tls.as_ref().map_or(Duration::ZERO, |tls| tls.hsts),
            certs: certs.store(),
            challenges: Arc::clone(&challenges),
            ..ProxySettings::default()
        },
        grace: config::timing::shutdown_grace(&config),
    };
    let mut data_plane = {
        let table = Arc::clone(&table);
        let metrics = metrics.clone();
        tokio::task::spawn_blocking(move || DataPlane::start(data_plane_config, table, &metrics))
            .await
            .context("proxy start-up panicked")??
    };
    data_plane
        .register_metrics(&registry)
        .context("cannot register metrics")?;

    let supervisor = Arc::new(Supervisor::new(Arc::clone(&routing), &config.state_dir));
    registry
        .register(Box::new(StateCollector::new(Arc::downgrade(&supervisor))?))
        .context("cannot register metrics")?;
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
        .context("cannot register process metrics")?;
    for app in serving.apps.values() {
        supervisor.start_app(Arc::new(app.clone()));
    }
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
    if restored.config.apps != config.apps || restored.config.routes != config.routes {
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

    // ACME (`certs::acme`): after the data plane, which answers its http-01
    // and tls-alpn-01 challenges from `challenges`; it installs what it
    // obtains through `certs`, reports its hosts' states to
    // `/certificates`, and follows pushes (route hosts, `proxy.tls.acme`)
    // on `certs.pushed_config()`. Nothing runs without `proxy.tls.acme`.
    let acme = cutover_control::certs::acme::AcmeDriver::start(Arc::clone(&certs), Arc::clone(&challenges));

    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_controller = Arc::clone(&controller);
    let admin_state = Arc::new(AdminState {
        controller,
        registry,
        token,
        started: Instant::now(),
        listen: config.admin.listen,
        allowed_origins: config.admin.allowed_origins.clone(),
        certs,
    });
    let admin_task = tokio::spawn(async move {
        axum::serve(admin_listener, admin::router(admin_state))
            .with_graceful_shutdown(async move {
                let _ = admin_stopped.await;
            })
            .await
    });

    tracing::info!(
        proxy = %list(&config.proxy.listen),
        tls = %config.proxy.tls.as_ref().map_or_else(String::new, |tls| list(&tls.listen)),
        admin = %config.admin.listen,
        apps = config.apps.len(),
        config = %path.display(),
        "cutover is up"
    );

    let signal_name = wait_for_signal().await?;
    // A deployment cut by the stop is recorded `interrupted` (its followers
    // get that outcome); the next start serves the last committed version.
    tracing::info!(signal = signal_name, "shutting down: stopping deployments");
    admin_controller.stop_deployments().await;
    // No new order may start while the rest stops (a stored certificate
    // survives for the next start).
    acme.shutdown().await;
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
    Ok(ExitCode::SUCCESS)
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

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}
