//! `POST /rollback`, `POST /deployments/{id}/promote` and
//! `POST /deployments/{id}/abort` (SPEC §5): the verbs that steer
//! deployments, all through the controller's gate.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{json_body, AdminState, ApiError};
use crate::api::{DeployAnswer, Deployment, ErrorBody, PromoteRequest, RollbackRequest};
use crate::deploy::DeploymentRef;

/// Deploys the previous committed version of an app (or of every app that
/// has one) with the app's strategy; with `bluegreen` while the previous
/// set is still warm, one table swap back.
#[utoipa::path(
    post,
    path = "/rollback",
    tag = "deployments",
    request_body(content = RollbackRequest, description = "`app` optional; an empty body rolls back every app that has a previous version"),
    responses(
        (status = 202, description = "rollbacks started, one per app, followed like deployments", body = DeployAnswer),
        (status = 400, description = "bad request body", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
        (status = 409, description = "nothing to roll back to, a deployment of the app runs (its `id`), the app is retiring, or cutover upgrades itself", body = ErrorBody),
        (status = 500, description = "the journal could not be written", body = ErrorBody),
        (status = 503, description = "cutover is stopping", body = ErrorBody),
    )
)]
pub(super) async fn rollback(State(state): State<Arc<AdminState>>, body: Bytes) -> Result<Response, ApiError> {
    let request: RollbackRequest = json_body(&body, "rollback", "{\"app\": \"web\"} (app optional)")?;
    let started = state.controller.rollback(request.app.as_deref())?;
    Ok((StatusCode::ACCEPTED, Json(DeployAnswer::new(started))).into_response())
}

/// Moves a canary past its `manual` pause, or (`full`) through every
/// remaining step.
#[utoipa::path(
    post,
    path = "/deployments/{id}/promote",
    tag = "deployments",
    params(("id" = String, Path, description = "the running canary deployment's id")),
    request_body(content = PromoteRequest, description = "`full` optional (default false)"),
    responses(
        (status = 200, description = "promoted; the deployment as it is now", body = Deployment),
        (status = 400, description = "bad request body", body = ErrorBody),
        (status = 404, description = "no such deployment", body = ErrorBody),
        (status = 409, description = "the deployment is not at a pause, or already ended (its `id`)", body = ErrorBody),
        (status = 500, description = "the journal could not be written", body = ErrorBody),
        (status = 503, description = "cutover is stopping", body = ErrorBody),
    )
)]
pub(super) async fn promote(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Deployment>, ApiError> {
    let request: PromoteRequest = json_body(&body, "promote", "{\"full\": false} (optional)")?;
    state.controller.promote(&id, request.full)?;
    Ok(Json(deployment(&state, &id)?))
}

/// Stops a running deployment and returns to the previous version, failing
/// no request; its outcome is `aborted`.
#[utoipa::path(
    post,
    path = "/deployments/{id}/abort",
    tag = "deployments",
    params(("id" = String, Path, description = "the running deployment's id")),
    request_body(content = Option<serde_json::Value>, description = "ignored (send `{}`)", content_type = "application/json"),
    responses(
        (status = 200, description = "the abort is under way; the deployment as it is now (follow `/deployments/{id}/events` for its end)", body = Deployment),
        (status = 404, description = "no such deployment", body = ErrorBody),
        (status = 409, description = "the deployment already ended, or its new version already serves alone (its `id`)", body = ErrorBody),
        (status = 500, description = "the journal could not be written", body = ErrorBody),
        (status = 503, description = "cutover is stopping", body = ErrorBody),
    )
)]
pub(super) async fn abort(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<Deployment>, ApiError> {
    state.controller.abort(&id)?;
    Ok(Json(deployment(&state, &id)?))
}

/// The record of `id` without its events (what `/deployments` lists).
fn deployment(state: &AdminState, id: &str) -> Result<Deployment, ApiError> {
    match state.controller.deployment(id) {
        Some(DeploymentRef::Live(log)) => Ok(log.snapshot().summary()),
        Some(DeploymentRef::Past(record)) => Ok(record.summary()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no deployment {id:?}"))),
    }
}
