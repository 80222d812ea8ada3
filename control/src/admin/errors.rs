//! Every error the admin API answers is JSON `{"error": "..."}` (SPEC §5),
//! including the ones axum writes itself: 405 from a method router (empty
//! body), 413 from the body limit and 400/415 from extractor rejections
//! (`text/plain`).

use axum::body::to_bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// axum's own error bodies are one short line; anything longer is cut.
const MAX_ORIGINAL_BODY: usize = 4096;

/// The middleware: rewrites a non-JSON 4xx/5xx answer as JSON, keeping its
/// status and headers (`Allow` on a 405, `WWW-Authenticate` on a 401).
pub(super) async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let original = to_bytes(body, MAX_ORIGINAL_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    // axum adds `Allow` to a 405 outside this layer; it still reaches the
    // client, since headers are kept.
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => format!("{method} is not allowed on {path} (see the Allow header)"),
        _ if !original.is_empty() => original,
        _ => status.canonical_reason().unwrap_or("error").to_ascii_lowercase(),
    };
    let mut json = ApiError::new(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().append(name, value.clone());
        }
    }
    json
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}
