//! cutover's data plane.
//!
//! A pingora reverse proxy that serves whatever [`RouteTable`] the control
//! plane last published through a [`TableHandle`]. This crate knows nothing
//! of processes, YAML or deploys: it takes a route table and reports what its
//! connections do (in-flight counts per [`Backend`], metrics).
//!
//! - [`access`]: the access log event.
//! - [`router`]: host and path matching.
//! - [`table`]: the immutable snapshot and backend selection.
//! - [`backend`]: a backend's in-flight counter and drain wait.
//! - [`handle`]: the `ArcSwap` holder and its change signal.
//! - [`forwarded`]: the X-Forwarded-* headers, trusted proxies.
//! - [`service`]: the pingora `ProxyHttp` hooks (the request path).
//! - [`longlived`]: WebSocket and SSE: taken over, tracked, closed with notice.
//! - [`grpc`]: gRPC calls to h2c apps: taken over, multiplexed on one
//!   connection per backend, ended with status 14 when their backend drains.
//! - [`tls`]: certificates by SNI, pending ACME challenges.
//! - [`limits`]: `proxy.limits`: connection limit, head deadline, keep-alive
//!   timeout, head size and `Host` checks.
//! - [`server`]: starting and stopping pingora.
//! - [`handover`]: listening sockets inherited from a predecessor, handed
//!   to a successor (self-upgrade).
//! - [`metrics`]: Prometheus families with pre-resolved label handles.
//! - [`split`]: a canary beside the stable backends: weighted pick, sticky
//!   cookie, per-version measurements.
//! - [`mode`]: paused and maintenance apps.
//! - [`pages`]: the proxy's own error answers (HTML, JSON, plain text).

// `deny`, not `forbid`: `longlived::socket` alone allows it (a dup of the
// upstream fd for ending event streams on pingora's path), and says why.
#![deny(unsafe_code)]

pub mod access;
pub mod backend;
pub mod forwarded;
pub mod grpc;
pub mod handle;
pub mod handover;
mod hold;
pub mod limits;
pub mod longlived;
pub mod metrics;
pub mod mode;
pub mod pages;
pub mod router;
pub mod server;
pub mod service;
pub mod settings;
pub mod split;
pub mod table;
mod takeover;
pub mod time;
pub mod tls;

pub use backend::{Backend, InflightGuard, LongLivedGuard};
pub use handle::TableHandle;
pub use handover::InheritedListeners;
pub use longlived::{LongLivedSettings, Stop};
pub use metrics::{AppMetrics, ProxyMetrics};
pub use mode::AppMode;
pub use pages::ErrorPages;
pub use router::{AppId, DuplicateRoute, HostMatch, Router};
pub use server::{DataPlane, DataPlaneConfig, DataPlaneError};
pub use service::CutoverProxy;
pub use settings::{Limits, ProxySettings, Tuning};
pub use split::{Choice, Split, SplitStats, Version, VersionSnapshot, VersionStats};
pub use table::{AppEntry, RouteTable, RouteTableBuilder, UpstreamProtocol};
