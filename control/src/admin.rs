//! The admin HTTP API (SPEC §5): JSON, bearer token when configured,
//! Prometheus text at `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::supervisor::{AppStatus, Supervisor};

/// What the admin handlers read.
pub struct AdminState {
    pub supervisor: Arc<Supervisor>,
    pub registry: Registry,
    /// Bearer token required on every request but `/healthz`, if set.
    pub token: Option<String>,
    pub started: Instant,
}

/// A JSON error answer: `{"error": "..."}` with a status code.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// The admin router.
pub fn router(state: Arc<AdminState>) -> Router {
    let protected = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn require_token(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &state.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Constant time in the token's content; the length is not secret.
        let ok: bool = given.as_bytes().ct_eq(expected.as_bytes()).into();
        if !ok {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (set CUTOVER_ADMIN_TOKEN)",
            )
            .into_response();
        }
    }
    next.run(request).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The body of `GET /status`.
#[derive(Debug, Serialize)]
pub struct StatusBody {
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub route_table_generation: u64,
    pub apps: Vec<AppStatus>,
}

async fn status(State(state): State<Arc<AdminState>>) -> Json<StatusBody> {
    let supervisor = &state.supervisor;
    Json(StatusBody {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        route_table_generation: supervisor.routing().table().load().generation(),
        apps: supervisor.status(),
    })
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    let encoder = TextEncoder::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    encoder
        .encode(&state.registry.gather(), &mut buf)
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode metrics: {e}"),
            )
        })?;
    Ok((
        [(header::CONTENT_TYPE, encoder.format_type().to_string())],
        buf,
    )
        .into_response())
}
