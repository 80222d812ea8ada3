//! `POST /apps/{app}/pause`, `/resume` and `/maintenance` (SPEC §5, §9):
//! the operator's switches, one table swap each, answered with the app's
//! switches as they are after it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::{json_body, AdminState, ApiError};
use crate::api::{AppSwitches, ErrorBody, MaintenanceRequest, PauseRequest};

/// How long a paused app holds one request when the caller names no bound.
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(60);

/// Holds the app's new requests (in-flight ones finish) until resume; a
/// request held longer than `max_pause` gets 503 with `Retry-After`.
#[utoipa::path(
    post,
    path = "/apps/{app}/pause",
    tag = "apps",
    params(("app" = String, Path, description = "the app", example = "web")),
    request_body(content = PauseRequest, description = "`max_pause` optional (default 60s; 100ms to 1h)"),
    responses(
        (status = 200, description = "paused; the app's switches now", body = AppSwitches),
        (status = 400, description = "bad request body or `max_pause`", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
        (status = 409, description = "a deployment of the app runs (its `id`), the app is retiring, or cutover upgrades itself", body = ErrorBody),
        (status = 500, description = "the journal could not be written", body = ErrorBody),
        (status = 503, description = "cutover is stopping", body = ErrorBody),
    )
)]
pub(super) async fn pause(
    State(state): State<Arc<AdminState>>,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Json<AppSwitches>, ApiError> {
    let request: PauseRequest = json_body(&body, "pause", "{\"max_pause\": \"60s\"} (optional)")?;
    let max_pause = match request.max_pause.as_deref() {
        None => DEFAULT_MAX_PAUSE,
        Some(text) => max_pause(text)?,
    };
    Ok(Json(state.controller.pause(&app, max_pause)?))
}

/// `max_pause` as humantime; its bounds are the controller's
/// (`switches::MAX_PAUSE`), so the API and the controller cannot disagree.
fn max_pause(text: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("bad max_pause {text:?}: {e} (e.g. \"60s\", \"2m\")"),
        )
    })
}

/// Ends a pause: held requests go on.
#[utoipa::path(
    post,
    path = "/apps/{app}/resume",
    tag = "apps",
    params(("app" = String, Path, description = "the app", example = "web")),
    request_body(content = Option<serde_json::Value>, description = "ignored (send `{}`)", content_type = "application/json"),
    responses(
        (status = 200, description = "resumed (or was not paused); the app's switches now", body = AppSwitches),
        (status = 404, description = "no such app", body = ErrorBody),
        (status = 409, description = "a deployment of the app runs (its `id`), the app is retiring, or cutover upgrades itself", body = ErrorBody),
        (status = 500, description = "the journal could not be written", body = ErrorBody),
        (status = 503, description = "cutover is stopping", body = ErrorBody),
    )
)]
pub(super) async fn resume(
    State(state): State<Arc<AdminState>>,
    Path(app): Path<String>,
) -> Result<Json<AppSwitches>, ApiError> {
    Ok(Json(state.controller.resume(&app)?))
}

/// Maintenance on (every request gets 503 with the maintenance page and
/// `Retry-After`) or off.
#[utoipa::path(
    post,
    path = "/apps/{app}/maintenance",
    tag = "apps",
    params(("app" = String, Path, description = "the app", example = "web")),
    request_body(content = MaintenanceRequest, description = "`on` required; `message` optional, shown on the page"),
    responses(
        (status = 200, description = "the app's switches now", body = AppSwitches),
        (status = 400, description = "bad request body", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
        (status = 409, description = "a deployment of the app runs (its `id`), the app is retiring, or cutover upgrades itself", body = ErrorBody),
        (status = 500, description = "the journal could not be written", body = ErrorBody),
        (status = 503, description = "cutover is stopping", body = ErrorBody),
    )
)]
pub(super) async fn maintenance(
    State(state): State<Arc<AdminState>>,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Json<AppSwitches>, ApiError> {
    let request: MaintenanceRequest = json_body(
        &body,
        "maintenance",
        "{\"on\": true, \"message\": \"back at 10:00\"} (message optional)",
    )?;
    Ok(Json(state.controller.maintenance(&app, request.on, request.message)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pause_is_humantime_and_its_bounds_are_the_controllers() {
        assert_eq!(max_pause("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(max_pause(" 2m ").unwrap(), Duration::from_secs(120));
        // Out of bounds but well formed: the controller refuses it (400).
        assert_eq!(max_pause("2h").unwrap(), Duration::from_secs(7200));
        for bad in ["soon", "", "-1s", "1000000000000y"] {
            let e = max_pause(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.message.contains("max_pause"), "{}", e.message);
        }
    }
}
