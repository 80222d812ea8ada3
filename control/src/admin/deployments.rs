//! `GET /deployments`, `/deployments/{id}` and the SSE stream of a
//! deployment's events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};

use super::{AdminState, ApiError};
use crate::api::{wire_name, Deployment, DeploymentStreamEvent, ErrorBody, Event};
use crate::deploy::DeploymentRef;

/// Past and running deployments (and the switches' entries), newest last,
/// without their events.
#[utoipa::path(
    get,
    path = "/deployments",
    tag = "deployments",
    responses((status = 200, description = "the history", body = Vec<Deployment>))
)]
pub(super) async fn list(State(state): State<Arc<AdminState>>) -> Json<Vec<Deployment>> {
    Json(state.controller.deployments().iter().map(Deployment::summary).collect())
}

/// One deployment with its phases, timings, events and outcome.
#[utoipa::path(
    get,
    path = "/deployments/{id}",
    tag = "deployments",
    params(("id" = String, Path, description = "a deployment id, e.g. `web-3`")),
    responses(
        (status = 200, description = "the deployment", body = Deployment),
        (status = 404, description = "no such deployment", body = ErrorBody),
    )
)]
pub(super) async fn one(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<Deployment>, ApiError> {
    match state.controller.deployment(&id) {
        Some(DeploymentRef::Live(log)) => Ok(Json(log.snapshot())),
        Some(DeploymentRef::Past(record)) => Ok(Json(*record)),
        None => Err(not_found(&id)),
    }
}

/// Every event so far, then each new one as it happens; the stream ends
/// after the outcome.
#[utoipa::path(
    get,
    path = "/deployments/{id}/events",
    tag = "deployments",
    params(("id" = String, Path, description = "a deployment id, e.g. `web-3`")),
    responses(
        (status = 200, description = "server-sent events, every one so far then each new one: `event:` is the kind, `data:` an `Event` as JSON; the stream ends after the `outcome` event", body = DeploymentStreamEvent, content_type = "text/event-stream"),
        (status = 404, description = "no such deployment", body = ErrorBody),
    )
)]
pub(super) async fn events(State(state): State<Arc<AdminState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        match state.controller.deployment(&id) {
            None => return Err(not_found(&id)),
            Some(DeploymentRef::Past(record)) => Box::pin(stream::iter(record.events.into_iter().map(|e| Ok(sse(&e))))),
            Some(DeploymentRef::Live(log)) => {
                let changed = log.subscribe();
                Box::pin(
                    stream::unfold(
                        (log, changed, 0usize, false),
                        |(log, mut changed, sent, done)| async move {
                            if done {
                                return None;
                            }
                            loop {
                                let (events, finished) = log.events_since(sent);
                                if !events.is_empty() {
                                    let next = sent + events.len();
                                    let batch: Vec<Result<SseEvent, Infallible>> =
                                        events.iter().map(|e| Ok(sse(e))).collect();
                                    let all_sent = finished && log.events_since(next).0.is_empty();
                                    return Some((stream::iter(batch), (log, changed, next, all_sent)));
                                }
                                if finished {
                                    return None;
                                }
                                if changed.changed().await.is_err() {
                                    return None;
                                }
                            }
                        },
                    )
                    .flatten(),
                )
            }
        };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

fn sse(event: &Event) -> SseEvent {
    SseEvent::default()
        .event(wire_name(&event.kind))
        .id(event.seq.to_string())
        .data(serde_json::to_string(event).unwrap_or_default())
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no deployment {id:?}"))
}
