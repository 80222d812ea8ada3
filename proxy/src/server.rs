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
//!
//! At a self-upgrade the listening sockets outlive the process: the new
//! cutover starts with [`DataPlane::start_inheriting`] on the sockets the
//! old one hands it ([`DataPlane::listener_fds`]), both accept from the same
//! sockets for a moment, then the old one calls [`DataPlane::hand_over`]
//! (see `handover`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use tokio::sync::Notify;

use crate::handle::TableHandle;
use crate::handover::{self, BadInheritedSocket, InheritedListeners, InheritingService, SocketsError};
use crate::limits::{ConnectionGate, LimitedApp, Listeners, ParkedRelease};
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
    /// A socket handed over by the predecessor is not a listening TCP
    /// socket bound to the address it was handed over for.
    #[error(transparent)]
    Inherited(#[from] BadInheritedSocket),
    #[error("cannot duplicate a listening socket: {0}")]
    Duplicate(std::io::Error),
    #[error("the proxy did not start listening within 10s")]
    NotListening,
    #[error("the proxy could not start listening: {0}")]
    Listeners(String),
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
    parked: Arc<ParkedRelease>,
    thread: Option<JoinHandle<()>>,
    /// Duplicates of the listening sockets, for a successor; `None` once
    /// the data plane stops accepting, so a stopped data plane's sockets
    /// close (and refuse) as soon as pingora drops its own.
    listeners: Option<InheritedListeners>,
}

impl DataPlane {
    /// Starts pingora on `config.listen` (plain) and `config.tls_listen`
    /// (TLS, certificates from `config.settings.certs`), serving the tables
    /// of `table`. Returns once every listener accepts connections.
    pub fn start(
        config: DataPlaneConfig,
        table: Arc<TableHandle>,
        metrics: &ProxyMetrics,
    ) -> Result<Self, DataPlaneError> {
        Self::start_inheriting(config, table, metrics, Vec::new())
    }

    /// As [`DataPlane::start`], but every configured plain/TLS address found
    /// in `inherited` (keyed by `SocketAddr::to_string()`) uses that socket
    /// instead of binding: it listens already, so no connect is refused at
    /// any moment. Addresses not inherited are bound; inherited sockets
    /// matching no configured address are closed (with a warning). An
    /// inherited socket that is not a listening TCP socket bound to its
    /// key's address is [`DataPlaneError::Inherited`].
    pub fn start_inheriting(
        mut config: DataPlaneConfig,
        table: Arc<TableHandle>,
        metrics: &ProxyMetrics,
        inherited: InheritedListeners,
    ) -> Result<Self, DataPlaneError> {
        // Bound (or checked) here, so pingora never binds: its own bind
        // failure would be a panic, and an address it found taken it would
        // retry for 30 s.
        let addrs: Vec<SocketAddr> = config.listen.iter().chain(&config.tls_listen).copied().collect();
        let sockets = handover::sockets(&addrs, inherited).map_err(|e| match e {
            SocketsError::Bind(addr, source) => DataPlaneError::Bind { addr, source },
            SocketsError::Inherited(bad) => DataPlaneError::Inherited(bad),
            SocketsError::Dup(e) => DataPlaneError::Duplicate(e),
        })?;
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
        let tuning = config.settings.tuning;
        conf.upstream_keepalive_pool_size = tuning.upstream_pool;
        conf.listener_tasks_per_fd = tuning.listener_tasks.max(1);
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
        let parked = Arc::new(ParkedRelease::default());
        let app = LimitedApp::new(http, limits, Arc::clone(&gate), listeners, Arc::clone(&parked));
        let mut service = Service::new("cutover proxy".to_owned(), app);
        // The L4 write buffer keeps pingora's default (one MSS: a response
        // head and a small body leave in one write).
        let l4_buffer = L4BufferSettings::new(tuning.l4_read_buffer, DEFAULT_L4_WRITE_BUFFER_SIZE);
        for (key, _) in &sockets.for_pingora {
            service.add_listener(ListenerConfig::tcp(key.as_str()).l4_buffer(l4_buffer));
        }
        let (started, on_started) = std::sync::mpsc::sync_channel(1);
        server.add_service(InheritingService::new(service, sockets.for_pingora, started));

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

        // Not a connect probe: on an inherited socket it could be accepted
        // by the predecessor. The sockets listen already; this waits for
        // pingora to have built its listeners and spawned its accept loops.
        let started = on_started.recv_timeout(Duration::from_secs(10));
        let mut plane = Self {
            table,
            gate,
            handshakes,
            stop,
            parked,
            thread: Some(thread),
            listeners: Some(sockets.kept),
        };
        let failure = match started {
            Ok(Ok(())) => return Ok(plane),
            Ok(Err(reason)) => DataPlaneError::Listeners(reason),
            Err(_) => DataPlaneError::NotListening,
        };
        // Whatever pingora got going stops; the sockets close with it. The
        // table is the caller's: left as it is.
        plane.parked.release();
        plane.stop.notify_one();
        plane.listeners = None;
        Err(failure)
    }

    /// Duplicates (close-on-exec) of every plain and TLS listening socket,
    /// keyed by exact listen address string, for sending to a successor
    /// (which passes them to [`DataPlane::start_inheriting`]). An error once
    /// the data plane has stopped accepting.
    pub fn listener_fds(&self) -> std::io::Result<InheritedListeners> {
        let Some(listeners) = &self.listeners else {
            return Err(std::io::Error::other("the data plane no longer listens"));
        };
        // `try_clone` is `F_DUPFD_CLOEXEC`.
        listeners
            .iter()
            .map(|(key, fd)| fd.try_clone().map(|dup| (key.clone(), dup)))
            .collect()
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
        self.parked.release();
        self.stop.notify_one();
        self.table.close();
        self.listeners = None;
        self.drain(drain).await
    }

    /// The old process's end of a self-upgrade, once the successor serves
    /// the same sockets (from [`DataPlane::listener_fds`]): like
    /// [`DataPlane::shutdown`], but the sockets stay open and listening in
    /// the successor (pingora closes its descriptors, never `shutdown(2)`s
    /// the sockets), and long-lived clients get the *restart* notices
    /// spread over `long_lived.spread`: WebSocket close 1012, SSE `retry:`
    /// and a clean end, gRPC status 14. HTTP/2 clients get GOAWAY and idle
    /// HTTP/1 keep-alive connections are closed (pingora's graceful stop),
    /// so they reconnect, to the successor. Held requests keep waiting (up
    /// to their hold timeout): failing them now would fail them for nothing.
    /// Waits up to `drain` for in-flight requests; returns how many were
    /// still active when it gave up (0 when drained).
    pub async fn hand_over(&mut self, drain: Duration) -> usize {
        self.table.hand_over();
        self.stop.notify_one();
        self.listeners = None;
        // Idle keep-alive connections stay until their next request is
        // answered with `Connection: close` or the drain is over, whichever
        // comes first; every connection gone ends the wait early.
        let deadline = crate::time::after(drain);
        while tokio::time::Instant::now() < deadline && (self.table.active_requests() > 0 || self.gate.open() > 0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.parked.release();
        self.drain(PARKED_GRACE).await
    }

    /// Waits up to `drain` for the active requests to end; how many are left.
    async fn drain(&self, drain: Duration) -> usize {
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

/// After a hand-over's drain, how long requests that were still running
/// get once idle connections are released.
const PARKED_GRACE: Duration = Duration::from_millis(200);

/// pingora's shutdown trigger: resolves when [`DataPlane::shutdown`] asks.
struct StopWatch(Arc<Notify>);

#[async_trait]
impl ShutdownSignalWatch for StopWatch {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::GracefulTerminate
    }
}
