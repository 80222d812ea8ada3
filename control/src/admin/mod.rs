//! The admin HTTP API (SPEC §5): JSON, bearer token when configured,
//! Prometheus text at `/metrics`, certificates at `/certificates`.
//! Browsers are not trusted callers: every
//! request passes [`guard`] (Host, Origin, token, Content-Type) before any
//! handler runs, and every error is JSON ([`errors`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::certs::CertManager;
use crate::config::Strategy;
use crate::deploy::record::Deployment;
use crate::deploy::{Controller, DeployError};
use crate::supervisor::AppStatus;
use crate::upgrade::Upgrades;

mod certificates;
mod deployments;
mod errors;
pub mod guard;
mod upgrades;

/// What the admin handlers read.
pub struct AdminState {
    pub controller: Arc<Controller>,
    pub registry: Registry,
    /// Bearer token required on every request but `/healthz`, if set.
    pub token: Option<String>,
    pub started: Instant,
    /// The admin listener's address: a request's `Host` must name it (or
    /// `localhost` with its port), else 421.
    pub listen: SocketAddr,
    /// `admin.allowed_origins`: a request with any other `Origin` gets 403.
    pub allowed_origins: Vec<String>,
    /// The certificates in use (`/certificates`, and pushes that change them).
    pub certs: Arc<CertManager>,
    /// Upgrades of cutover itself (`/upgrade`).
    pub upgrades: Arc<Upgrades>,
    /// Set in a process that took over from a predecessor: its pid.
    pub upgraded_from: Option<u32>,
}

/// A JSON error answer: `{"error": "..."}` with a status code (and, for
/// a conflict, the running deployment's `id`).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            id: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<String>,
        }
        let body = Body {
            error: self.message,
            id: self.id,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        let status = match &e {
            DeployError::UnknownApp(_) | DeployError::UnknownDeployment(_) => StatusCode::NOT_FOUND,
            DeployError::Conflict { .. }
            | DeployError::Retiring(_)
            | DeployError::Upgrading(_)
            | DeployError::NotAtPause { .. }
            | DeployError::Ended { .. }
            | DeployError::NothingToRollBack(_) => StatusCode::CONFLICT,
            DeployError::InvalidConfig(_) => StatusCode::BAD_REQUEST,
            DeployError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            DeployError::Journal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let id = match &e {
            DeployError::Conflict { id, .. } | DeployError::NotAtPause { id } | DeployError::Ended { id } => {
                Some(id.clone())
            }
            _ => None,
        };
        Self {
            status,
            message: e.to_string(),
            id,
        }
    }
}

/// The admin router.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/deploy", post(deploy))
        .route("/push", post(push))
        .route("/certificates", get(certificates::list))
        .route("/certificates/reload", post(certificates::reload))
        .route("/deployments", get(deployments::list))
        .route("/deployments/{id}", get(deployments::one))
        .route("/deployments/{id}/events", get(deployments::events))
        .route("/upgrade", post(upgrades::start))
        .route("/upgrades/{id}/events", get(upgrades::events))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        // Layers run outside in: the last added runs first. `json_errors`
        // wraps everything, so even the guard's and axum's own refusals
        // leave as JSON; the guard (which also covers the fallback) runs
        // before any route, handler or extractor.
        .layer(middleware::from_fn_with_state(Arc::clone(&state), guard::guard))
        .layer(middleware::from_fn(errors::json_errors))
        .with_state(state)
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The body of `GET /status`.
#[derive(Debug, Serialize)]
pub struct StatusBody {
    pub version: &'static str,
    /// The pid of the cutover answering (it changes with each upgrade).
    pub pid: u32,
    /// The pid of the cutover this one took over from, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgraded_from: Option<u32>,
    /// The upgrade of cutover itself that runs, if one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrading: Option<String>,
    pub uptime_seconds: u64,
    pub route_table_generation: u64,
    pub apps: Vec<AppStatus>,
    /// Running deployments (without their events).
    pub deployments: Vec<Deployment>,
    /// Staged app versions, waiting for `cutover deploy`.
    pub staged: BTreeMap<String, String>,
}

async fn status(State(state): State<Arc<AdminState>>) -> Json<StatusBody> {
    let supervisor = state.controller.supervisor();
    Json(StatusBody {
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        upgraded_from: state.upgraded_from,
        upgrading: state.controller.upgrading(),
        uptime_seconds: state.started.elapsed().as_secs(),
        route_table_generation: supervisor.routing().table().load().generation(),
        apps: supervisor.status(),
        deployments: state.controller.running(),
        staged: state.controller.staged(),
    })
}

/// The body of `POST /deploy`; both fields optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub app: Option<String>,
    pub strategy: Option<Strategy>,
}

async fn deploy(State(state): State<Arc<AdminState>>, body: Bytes) -> Result<Response, ApiError> {
    let request: DeployRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DeployRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "bad deploy request: {e}; expected {{\"app\": \"web\", \"strategy\": \"rolling\"|\"stopstart\"}}"
                ),
            )
        })?
    };
    let started = state.controller.deploy(request.app.as_deref(), request.strategy)?;
    let id = started.first().map(|s| s.id.clone());
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id, "deployments": started })),
    )
        .into_response())
}

/// `?deploy_strategy=rolling`
#[derive(Debug, Deserialize)]
pub struct PushQuery {
    pub deploy_strategy: Option<Strategy>,
}

async fn push(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<PushQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{e}; deploy_strategy is rolling or stopstart"),
        )
    })?;
    let source = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the pushed config is not UTF-8 text"))?;
    let report = state.controller.push(source, query.deploy_strategy, &state.certs)?;
    let status = if report.deployments.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(report)).into_response())
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    let encoder = TextEncoder::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    encoder
        .encode(&state.registry.gather(), &mut buf)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, encoder.format_type().to_string())], buf).into_response())
}
