//! Running the pingora server: built in code, run on its own thread, stopped
//! programmatically.
//!
//! pingora's `Server::run` blocks on its own runtimes, so it cannot run
//! inside ours (pingora issues #169, #292): it gets a plain thread. Its
//! shutdown sleeps the whole grace period unconditionally (#719), so we do
//! not rely on it for draining: [`DataPlane::shutdown`] tells pingora to stop
//! accepting, waits for *our* count of active requests to reach zero, and
//! returns; the caller then stops the apps and exits the process, which ends
//! the pingora thread wherever it is in its sleep.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use tokio::sync::Notify;

use crate::handle::TableHandle;
use crate::limits::{ConnectionGate, LimitedApp, Listeners};
use crate::metrics::ProxyMetrics;
use crate::service::{CutoverProxy, ProxySettings};
use crate::tls::{HandshakeMetrics, TlsAcceptor};

/// What the data plane listens on and how it runs.
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    /// Public plain listeners.
    pub listen: Vec<SocketAddr>,
    /// Public TLS listeners (`proxy.tls.listen`), serving
    /// `settings.certs` by SNI.
    pub tls_listen: Vec<SocketAddr>,
    /// Worker threads.
    pub threads: usize,
    /// The request path's settings.
    pub settings: ProxySettings,
    /// Backstop: pingora drops whatever is left this long after shutdown
    /// starts, if the process is still running by then.
    pub grace: Duration,
}

/// Errors starting the data plane.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the proxy did not start listening on {0} within 10s")]
    NotListening(SocketAddr),
    #[error("cannot start the proxy thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot create the connection metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A running data plane.
pub struct DataPlane {
    table: Arc<TableHandle>,
    gate: Arc<ConnectionGate>,
    handshakes: HandshakeMetrics,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl DataPlane {
    /// Starts pingora on `config.listen` (plain) and `config.tls_listen`
    /// (TLS, certificates from `config.settings.certs`), serving the tables
    /// of `table`. Returns once every listener accepts connections.
    pub fn start(
        mut config: DataPlaneConfig,
        table: Arc<TableHandle>,
        metrics: &ProxyMetrics,
    ) -> Result<Self, DataPlaneError> {
        // pingora panics on a bind failure; check first for a clear error.
        for addr in config.listen.iter().chain(&config.tls_listen) {
            TcpListener::bind(addr).map_err(|source| DataPlaneError::Bind { addr: *addr, source })?;
        }
        if let Some(first) = config.tls_listen.first() {
            config.settings.https_port = first.port();
        }

        let mut conf = ServerConf {
            threads: config.threads.max(1),
            grace_period_seconds: Some(config.grace.as_secs().max(1)),
            graceful_shutdown_timeout_seconds: Some(1),
            // Our own attempt limit (ProxySettings::max_attempts) governs.
            max_retries: config.settings.max_attempts as usize + 1,
            ..ServerConf::default()
        };
        conf.upstream_keepalive_pool_size = 256;
        conf.work_stealing = false;
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();

        let settings = &config.settings;
        let limits = settings.limits;
        let handshakes = HandshakeMetrics::new()?;
        // Built once: the resolvers read the stores at every handshake.
        let acceptor = match config.tls_listen.is_empty() {
            true => None,
            false => Some(Arc::new(TlsAcceptor::new(
                Arc::clone(&settings.certs),
                Arc::clone(&settings.challenges),
                settings.http2,
                handshakes.clone(),
            )?)),
        };
        let listeners = Listeners::new(&config.listen, &config.tls_listen, acceptor, settings.h2c);
        let gate = Arc::new(ConnectionGate::new(limits.max_connections, listeners.addrs())?);
        let proxy = CutoverProxy::new(Arc::clone(&table), settings.clone(), metrics);
        let mut http = pingora::proxy::http_proxy(&server.configuration, proxy);
        // `h2c` stays off in pingora: `LimitedApp` reads the preface itself,
        // under the head deadline (pingora's own peek has no timeout).
        let mut options = HttpServerOptions::default();
        options.h2c = false;
        options.h2_idle_timeout = Some(limits.keepalive_timeout);
        http.server_options = Some(options);
        // pingora's proxy app, behind `proxy.limits` and our TLS (see
        // `limits` and `tls::acceptor`). TLS listeners are plain TCP ones
        // to pingora: the app tells them apart by local address.
        let app = LimitedApp::new(http, limits, Arc::clone(&gate), listeners);
        let mut service = Service::new("cutover proxy".to_owned(), app);
        for addr in config.listen.iter().chain(&config.tls_listen) {
            service.add_tcp(&addr.to_string());
        }
        server.add_service(service);

        let stop = Arc::new(Notify::new());
        let watch = StopWatch(Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("pingora".into())
            .spawn(move || {
                server.run(RunArgs {
                    shutdown_signal: Box::new(watch),
                })
            })
            .map_err(DataPlaneError::Thread)?;

        for addr in config.listen.iter().chain(&config.tls_listen) {
            wait_listening(*addr)?;
        }
        Ok(Self {
            table,
            gate,
            handshakes,
            stop,
            thread: Some(thread),
        })
    }

    /// The table handle this data plane serves.
    pub fn table(&self) -> &Arc<TableHandle> {
        &self.table
    }

    /// Registers the client connection metrics
    /// (`cutover_connections_refused_total`,
    /// `cutover_client_connections{listener}`,
    /// `cutover_tls_handshakes_total{result}`).
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        self.gate.register(registry)?;
        self.handshakes.register(registry)
    }

    /// The gate counting client connections (`proxy.limits.max_connections`).
    pub fn connections(&self) -> &Arc<ConnectionGate> {
        &self.gate
    }

    /// Stops accepting connections, tells held requests to give up, and
    /// waits up to `drain` for in-flight requests to finish. Returns how
    /// many were still active when it gave up (0 when drained).
    pub async fn shutdown(&mut self, drain: Duration) -> usize {
        self.stop.notify_one();
        self.table.close();
        let deadline = crate::time::after(drain);
        loop {
            let active = self.table.active_requests();
            if active == 0 || tokio::time::Instant::now() >= deadline {
                return active;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the pingora thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

/// pingora's shutdown trigger: resolves when [`DataPlane::shutdown`] asks.
struct StopWatch(Arc<Notify>);

#[async_trait]
impl ShutdownSignalWatch for StopWatch {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::GracefulTerminate
    }
}

fn wait_listening(addr: SocketAddr) -> Result<(), DataPlaneError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(DataPlaneError::NotListening(addr))
}
