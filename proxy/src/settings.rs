//! The data plane's settings: what `deploy.yaml`'s `proxy:` section becomes
//! once the binary has validated it.

use std::sync::Arc;
use std::time::Duration;

use crate::longlived::LongLivedSettings;
use crate::tls::{CertStore, Challenges};

/// The data plane's request-path settings.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// How long a request may wait for a ready backend, unless the route
    /// table sets it.
    pub hold_timeout: Duration,
    /// At most this many requests are held at once; more get 503 at once.
    pub max_held: usize,
    /// TCP connect timeout to a backend.
    pub connect_timeout: Duration,
    /// Idle pooled upstream connections are closed after this. Kept below
    /// the common backend keep-alive timeout (Node's 5 s), so the proxy
    /// closes first and never reuses a connection the backend is closing.
    pub upstream_idle_timeout: Duration,
    /// Failed attempts (connect errors, stale connections) after which a
    /// request gives up.
    pub max_attempts: u32,
    /// WebSocket/SSE drain settings, unless the route table sets them.
    pub long_lived: LongLivedSettings,
    /// Peers whose forwarded headers are kept and appended to; from any
    /// other peer they are replaced (SPEC §4a).
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    /// What one client may hold (`proxy.limits`).
    pub limits: Limits,
    /// The certificates the TLS listeners serve (filled by the control
    /// plane: files and ACME).
    pub certs: Arc<CertStore>,
    /// ACME challenges pending validation (answered before routing).
    pub challenges: Arc<Challenges>,
    /// HTTP/2 via ALPN on TLS listeners (`proxy.http2`).
    pub http2: bool,
    /// HTTP/2 prior knowledge on plain listeners (`proxy.h2c`).
    pub h2c: bool,
    /// Plain listeners answer 308 to https for hosts with a certificate
    /// (`proxy.tls.redirect_http`).
    pub redirect_http: bool,
    /// `Strict-Transport-Security: max-age` on TLS answers; zero: not sent
    /// (`proxy.tls.hsts`).
    pub hsts: Duration,
    /// The port `redirect_http` sends clients to (left out of the
    /// `Location` when 443). [`DataPlane::start`](crate::DataPlane::start)
    /// sets it to the first TLS listener's port.
    pub https_port: u16,
    /// Buffer and task sizes (`proxy.tuning`).
    pub tuning: Tuning,
}

/// Buffer and task sizes (`proxy.tuning`). The defaults are measured
/// (BENCHMARKS.md, "Connection scale"); changing them trades memory per
/// connection against throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Bytes pingora buffers ahead for each client connection's reads
    /// (its L4 read buffer, allocated at accept and held for the
    /// connection's life); 0: reads go straight into the request's own
    /// buffers.
    pub l4_read_buffer: usize,
    /// Tasks accepting on each listener.
    pub listener_tasks: usize,
    /// Idle upstream keep-alive connections kept, over all backends.
    pub upstream_pool: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            l4_read_buffer: 0,
            listener_tasks: 1,
            upstream_pool: 256,
        }
    }
}

/// What one client may hold (`proxy.limits`, SPEC §4a "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A client must send a complete request head within this.
    pub header_timeout: Duration,
    /// An idle keep-alive client connection is closed after this.
    pub keepalive_timeout: Duration,
    /// Client connections held at once; more are closed at accept.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            max_connections: 8000,
        }
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            hold_timeout: Duration::from_secs(30),
            max_held: 10_000,
            connect_timeout: Duration::from_secs(2),
            upstream_idle_timeout: Duration::from_secs(4),
            max_attempts: 16,
            long_lived: LongLivedSettings::default(),
            trusted_proxies: Arc::from([]),
            limits: Limits::default(),
            certs: Arc::new(CertStore::new()),
            challenges: Arc::new(Challenges::new()),
            http2: true,
            h2c: false,
            redirect_http: false,
            hsts: Duration::ZERO,
            https_port: 443,
            tuning: Tuning::default(),
        }
    }
}
