//! `GET /certificates` and `POST /certificates/reload` (SPEC §5): the data
//! behind `cutover certs [--reload]`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::{AdminState, ApiError};
use crate::certs::CertInfo;

/// The body of `GET /certificates`: one entry per served host (and per
/// ACME host still waiting for its first certificate).
#[derive(Debug, Serialize)]
pub struct CertificatesBody {
    pub certificates: Vec<CertInfo>,
}

pub(super) async fn list(State(state): State<Arc<AdminState>>) -> Json<CertificatesBody> {
    Json(CertificatesBody {
        certificates: state.certs.list(),
    })
}

/// Re-reads the certificate files in use; 400 with every problem (one per
/// line, `proxy.tls.certificates[0].cert: ...`) and nothing changed when a
/// file is bad.
pub(super) async fn reload(State(state): State<Arc<AdminState>>) -> Result<Json<CertificatesBody>, ApiError> {
    let certs = Arc::clone(&state.certs);
    // File reads: off the runtime's worker threads.
    let reloaded = tokio::task::spawn_blocking(move || certs.reload())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the reload failed: {e}")))?;
    match reloaded {
        Ok(certificates) => Ok(Json(CertificatesBody { certificates })),
        Err(problems) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            problems
                .iter()
                .map(|p| match &p.key_path {
                    Some(key) => format!("{key}: {}", p.message),
                    None => p.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )),
    }
}
