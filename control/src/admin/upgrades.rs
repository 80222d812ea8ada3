//! `POST /upgrade` and the SSE stream of an upgrade's progress
//! (`GET /upgrades/{id}/events`), read like a deployment's.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;

use super::{AdminState, ApiError};
use crate::upgrade::{UpgradeError, UpgradeEvent};

/// The body of `POST /upgrade`; empty or `{}` upgrades to the binary the
/// running cutover was started from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeBody {
    pub binary: Option<PathBuf>,
}

pub(super) async fn start(State(state): State<Arc<AdminState>>, body: Bytes) -> Result<Response, ApiError> {
    let request: UpgradeBody = if body.iter().all(u8::is_ascii_whitespace) {
        UpgradeBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("bad upgrade request: {e}; expected {{\"binary\": \"/path/to/cutover\"}} or nothing"),
            )
        })?
    };
    let log = state.upgrades.request(request.binary).map_err(|e| match e {
        UpgradeError::Refused(refused) => ApiError::from(refused),
        UpgradeError::BadBinary(message) => ApiError::new(StatusCode::BAD_REQUEST, message),
        UpgradeError::Unavailable => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        UpgradeError::NotHere(message) => ApiError::new(StatusCode::CONFLICT, message),
    })?;
    let id = log.id().to_string();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "events": format!("/upgrades/{id}/events"),
            "binary": log.binary(),
            "id": id,
        })),
    )
        .into_response())
}

/// Every event so far, then each new one; the stream ends after the outcome.
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

fn sse(event: &UpgradeEvent) -> SseEvent {
    SseEvent::default()
        .event(event.kind)
        .id(event.seq.to_string())
        .data(serde_json::to_string(event).unwrap_or_default())
}
