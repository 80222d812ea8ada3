//! `GET /certificates` and `POST /certificates/reload` (SPEC §5): the data
//! behind `cutover certs [--reload]`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::{AdminState, ApiError};
use crate::api::{CertInfo, CertificatesBody, ErrorBody};

/// Certificates in use: hosts, source, issuer, expiry, ACME renewal state.
#[utoipa::path(
    get,
    path = "/certificates",
    tag = "certificates",
    responses((status = 200, description = "one entry per served host", body = CertificatesBody))
)]
pub(super) async fn list(State(state): State<Arc<AdminState>>) -> Json<CertificatesBody> {
    Json(body(state.certs.list()))
}

fn body(certificates: Vec<crate::certs::CertInfo>) -> CertificatesBody {
    CertificatesBody {
        certificates: certificates.into_iter().map(CertInfo::from).collect(),
    }
}

/// Re-reads the certificate files in use; 400 with every problem (one per
/// line, `proxy.tls.certificates[0].cert: ...`) and nothing changed when a
/// file is bad.
#[utoipa::path(
    post,
    path = "/certificates/reload",
    tag = "certificates",
    request_body(content = Option<serde_json::Value>, description = "ignored (send `{}`)", content_type = "application/json"),
    responses(
        (status = 200, description = "reloaded; the certificates now in use", body = CertificatesBody),
        (status = 400, description = "a bad file: every problem, one a line; the certificates in use stay", body = ErrorBody),
        (status = 500, description = "the reload task failed", body = ErrorBody),
    )
)]
pub(super) async fn reload(State(state): State<Arc<AdminState>>) -> Result<Json<CertificatesBody>, ApiError> {
    let certs = Arc::clone(&state.certs);
    // File reads: off the runtime's worker threads.
    let reloaded = tokio::task::spawn_blocking(move || certs.reload())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the reload failed: {e}")))?;
    match reloaded {
        Ok(certificates) => Ok(Json(body(certificates))),
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
