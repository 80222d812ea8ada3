//! The admin HTTP API (SPEC §5): JSON, bearer token when configured,
//! Prometheus text at `/metrics`, certificates at `/certificates`.
//! Browsers are not trusted callers: every
//! request passes [`guard`] (Host, Origin, token, Content-Type) before any
//! handler runs, and every error is JSON ([`errors`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::handler::Handler;
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::api::{AppStatus, DeployAnswer, DeployRequest, ErrorBody, PushQuery, PushReport, StatusBody};
use crate::certs::CertManager;
use crate::deploy::{Controller, DeployError};
use crate::upgrade::Upgrades;

mod apps;
mod certificates;
mod deployments;
mod errors;
pub mod guard;
pub mod openapi;
mod upgrades;
mod verbs;

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
        let body = ErrorBody {
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
            | DeployError::TooLateToAbort { .. }
            | DeployError::NothingToRollBack(_) => StatusCode::CONFLICT,
            DeployError::InvalidConfig(_) => StatusCode::BAD_REQUEST,
            DeployError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            DeployError::Journal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let id = match &e {
            DeployError::Conflict { id, .. }
            | DeployError::NotAtPause { id }
            | DeployError::Ended { id }
            | DeployError::TooLateToAbort { id, .. } => Some(id.clone()),
            _ => None,
        };
        Self {
            status,
            message: e.to_string(),
            id,
        }
    }
}

/// The admin router. Every route here is described in [`openapi::ApiDoc`]
/// (a unit test there reads this function and fails on a route the
/// document does not name).
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::serve))
        .route("/deploy", posted(deploy))
        .route("/push", posted(push))
        .route("/rollback", posted(verbs::rollback))
        .route("/certificates", get(certificates::list))
        .route("/certificates/reload", posted(certificates::reload))
        .route("/deployments", get(deployments::list))
        .route("/deployments/{id}", get(deployments::one))
        .route("/deployments/{id}/events", get(deployments::events))
        .route("/deployments/{id}/promote", posted(verbs::promote))
        .route("/deployments/{id}/abort", posted(verbs::abort))
        .route("/apps/{app}/pause", posted(apps::pause))
        .route("/apps/{app}/resume", posted(apps::resume))
        .route("/apps/{app}/maintenance", posted(apps::maintenance))
        .route("/upgrade", posted(upgrades::start))
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

/// A POST route: the Content-Type check ([`guard::content_type`]) runs on
/// this method's handler only, so a POST to a GET-only path is a 405.
fn posted<H, T>(handler: H) -> MethodRouter<Arc<AdminState>>
where
    H: Handler<T, Arc<AdminState>>,
    T: 'static,
{
    post(handler).layer(middleware::from_fn(guard::content_type))
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Parses a JSON request body into `T`. An empty body reads as `{}` (the
/// CLI sends one, but `curl -X POST` with only a Content-Type should work
/// too); a bad one is a 400 saying what was `expected`. Only an object is
/// a body: serde would also read a struct from an array (`[]`), which the
/// document does not allow.
pub(crate) fn json_body<T: DeserializeOwned>(body: &Bytes, what: &str, expected: &str) -> Result<T, ApiError> {
    let bad = |why: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("bad {what} request: {why}; expected {expected}"),
        )
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"{}").map_err(|e| bad(e.to_string()));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if !value.is_object() {
        return Err(bad("the body is not a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

/// cutover runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "cutover",
    security(()),
    responses((status = 200, description = "cutover runs (no token needed)", body = String, content_type = "text/plain"))
)]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Apps, instances, switches, canary progress, running deployments and
/// staged versions: the data behind `cutover status`.
#[utoipa::path(
    get,
    path = "/status",
    tag = "cutover",
    responses((status = 200, description = "the state of every app", body = StatusBody))
)]
async fn status(State(state): State<Arc<AdminState>>) -> Json<StatusBody> {
    let controller = &state.controller;
    let supervisor = controller.supervisor();
    let apps = supervisor
        .status()
        .into_iter()
        .map(|app| {
            let switches = controller.switches(&app.name);
            let canary = controller.canary_status(&app.name);
            AppStatus::new(app, switches, canary)
        })
        .collect();
    Json(StatusBody {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        upgraded_from: state.upgraded_from,
        upgrading: controller.upgrading(),
        uptime_seconds: state.started.elapsed().as_secs(),
        route_table_generation: supervisor.routing().table().load().generation(),
        apps,
        deployments: controller.running(),
        staged: controller.staged(),
    })
}

/// Deploys the staged changes of an app (or every app), or redeploys its
/// current version when nothing is staged.
#[utoipa::path(
    post,
    path = "/deploy",
    tag = "deployments",
    request_body(content = DeployRequest, description = "both fields optional; an empty body deploys every app"),
    responses(
        (status = 202, description = "deployments started, one per app", body = DeployAnswer),
        (status = 400, description = "bad request body", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
        (status = 409, description = "a deployment of the app runs (its `id`), the app is retiring, or cutover upgrades itself", body = ErrorBody),
        (status = 500, description = "the journal could not be written", body = ErrorBody),
        (status = 503, description = "cutover is stopping", body = ErrorBody),
    )
)]
async fn deploy(State(state): State<Arc<AdminState>>, body: Bytes) -> Result<Response, ApiError> {
    let request: DeployRequest = json_body(
        &body,
        "deploy",
        "{\"app\": \"web\", \"strategy\": \"rolling\"} (both optional)",
    )?;
    let started = state.controller.deploy(request.app.as_deref(), request.strategy)?;
    Ok((StatusCode::ACCEPTED, Json(DeployAnswer::new(started))).into_response())
}

/// Sends a new deploy.yaml: changed apps are deployed (or staged with
/// `manual_deployments`), routes and proxy settings apply at once.
#[utoipa::path(
    post,
    path = "/push",
    tag = "deployments",
    params(PushQuery),
    request_body(
        description = "a deploy.yaml",
        content(
            (String = "application/yaml"),
            (String = "application/x-yaml"),
            (String = "text/yaml"),
            (String = "application/json"),
        )
    ),
    responses(
        (status = 202, description = "applied; deployments started for changed apps", body = PushReport),
        (status = 200, description = "applied with nothing to deploy (staged, added, removed or unchanged apps)", body = PushReport),
        (status = 400, description = "a bad config (`line:col: message`, one problem a line) or query; the running config is unchanged", body = ErrorBody),
        (status = 409, description = "a deployment of a changed app runs, an app is retiring, or cutover upgrades itself", body = ErrorBody),
        (status = 500, description = "the journal could not be written", body = ErrorBody),
        (status = 503, description = "cutover is stopping", body = ErrorBody),
    )
)]
async fn push(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<PushQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad query: {e}")))?;
    let source = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the pushed config is not UTF-8 text"))?;
    let report: PushReport = state.controller.push(source, query.deploy_strategy, &state.certs)?;
    let status = if report.deployments.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(report)).into_response())
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "cutover",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
        (status = 500, description = "the metrics could not be encoded", body = ErrorBody),
    )
)]
async fn metrics(State(state): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    let encoder = TextEncoder::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    encoder
        .encode(&state.registry.gather(), &mut buf)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, encoder.format_type().to_string())], buf).into_response())
}
