//! cutover's control plane: configuration, the process supervisor, health
//! checks, hooks and the admin API. It changes the data plane only through
//! the [`cutover_proxy::TableHandle`] (via [`routing::Routing`]) and the
//! backends' drain signals.
//!
//! - [`config`]: `deploy.yaml` → validated [`config::Config`].
//! - [`certs`]: certificate files and the certificates the TLS listeners serve.
//! - [`supervisor`]: instances as child processes, readiness, restarts.
//! - [`routing`]: serving instances → route tables.
//! - [`deploy`]: the rollout controller (rolling, stopstart, push, staging).
//! - [`journal`]: what was deployed and staged, the deployment history.
//! - [`metrics`]: instance and table state as metrics, read at scrape time.
//! - [`hooks`]: `sh -c` hooks with timeouts.
//! - [`admin`]: the axum admin API.
//! - [`api`]: the admin API's request and answer types (server and CLI).
//! - [`state_lock`]: one cutover per `state_dir`, handed to a successor.
//! - [`upgrade`]: upgrade requests of cutover itself and their progress.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod certs;
pub mod config;
pub mod deploy;
pub mod hooks;
pub mod journal;
pub mod metrics;
pub mod routing;
pub mod state_lock;
pub mod supervisor;
pub mod upgrade;
