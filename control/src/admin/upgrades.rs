//! `POST /upgrade` and the SSE stream of an upgrade's progress
//! (`GET /upgrades/{id}/events`), read like a deployment's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};

use super::{json_body, AdminState, ApiError};
use crate::api::{ErrorBody, UpgradeAnswer, UpgradeEvent, UpgradeRequest, UpgradeStreamEvent};
use crate::upgrade::UpgradeError;

/// Replaces the running cutover by a new binary (SPEC §10); progress as
/// events at `/upgrades/{id}/events`.
#[utoipa::path(
    post,
    path = "/upgrade",
    tag = "upgrades",
    request_body(content = UpgradeRequest, description = "an empty body or `{}` upgrades to the binary the running cutover was started from"),
    responses(
        (status = 202, description = "the upgrade started", body = UpgradeAnswer),
        (status = 400, description = "bad request body, or the binary is not an absolute path to an executable regular file", body = ErrorBody),
        (status = 409, description = "a deployment or another upgrade runs, or the new process could not outlive this one (PID 1, minimal init)", body = ErrorBody),
        (status = 503, description = "cutover is stopping, or its upgrade task does not run", body = ErrorBody),
    )
)]
pub(super) async fn start(State(state): State<Arc<AdminState>>, body: Bytes) -> Result<Response, ApiError> {
    let request: UpgradeRequest = json_body(&body, "upgrade", "{\"binary\": \"/path/to/cutover\"} or nothing")?;
    let log = state.upgrades.request(request.binary).map_err(|e| match e {
        UpgradeError::Refused(refused) => ApiError::from(refused),
        UpgradeError::BadBinary(message) => ApiError::new(StatusCode::BAD_REQUEST, message),
        UpgradeError::Unavailable => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        UpgradeError::NotHere(message) => ApiError::new(StatusCode::CONFLICT, message),
    })?;
    let id = log.id().to_string();
    let answer = UpgradeAnswer {
        events: format!("/upgrades/{id}/events"),
        binary: log.binary().to_path_buf(),
        id,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// Every event so far, then each new one; the stream ends after the outcome.
#[utoipa::path(
    get,
    path = "/upgrades/{id}/events",
    tag = "upgrades",
    params(("id" = String, Path, description = "an upgrade id, from `POST /upgrade`")),
    responses(
        (status = 200, description = "server-sent events: `event:` is `step` or `outcome`, `data:` an `UpgradeEvent` as JSON; the stream ends after the outcome", body = UpgradeStreamEvent, content_type = "text/event-stream"),
        (status = 404, description = "no such upgrade (or one long past)", body = ErrorBody),
    )
)]
pub(super) async fn events(State(state): State<Arc<AdminState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let log = state
        .upgrades
        .get(&id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no upgrade {id:?}")))?;
    let changed = log.subscribe();
    let stream = stream::unfold(
        (log, changed, 0usize, false),
        |(log, mut changed, sent, done)| async move {
            if done {
                return None;
            }
            loop {
                let (events, ended) = log.events_since(sent);
                if !events.is_empty() {
                    let next = sent + events.len();
                    let all_sent = ended && log.events_since(next).0.is_empty();
                    let batch: Vec<Result<SseEvent, Infallible>> = events.iter().map(|e| Ok(sse(e))).collect();
                    return Some((stream::iter(batch), (log, changed, next, all_sent)));
                }
                if ended || changed.changed().await.is_err() {
                    return None;
                }
            }
        },
    )
    .flatten();
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

fn sse(event: &crate::upgrade::UpgradeEvent) -> SseEvent {
    SseEvent::default()
        .event(event.kind)
        .id(event.seq.to_string())
        .data(serde_json::to_string(&UpgradeEvent::from(event)).unwrap_or_default())
}
