use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde_json::{Value, json};
use tickflow_core::codec::Batch;
use tickflow_model::UnixNanos;

use crate::AppState;
use crate::error::ApiError;

/// `POST /api/v1/ingest`: NDJSON or a JSON array of events. Answers 200 only once every event
/// of the body is durable in the log; a body with any unparseable line is refused whole (400
/// naming the line) so a producer can fix and resend it without doubling the good lines.
pub(crate) async fn ingest(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not UTF-8: {e}")))?;
    // Parsed straight into the log's encoding: no event structs or owned strings per tick.
    // An event line is rarely under 100 bytes: room for them all, so the batch is not
    // copied while it grows.
    let mut batch = Batch::with_capacity(body.len() / 100 + 1);
    tickflow_core::ingest::parse_body_into(text, "http", UnixNanos::now(), &mut batch)?;
    drop(body);
    if batch.is_empty() {
        return Err(ApiError::bad_request(
            "no events in the body: send NDJSON or a JSON array of events",
        ));
    }
    let pipeline = Arc::clone(&state.pipeline);
    let n = batch.len();
    let offsets = tokio::task::spawn_blocking(move || pipeline.ingest_batch("http", &batch))
        .await
        .map_err(|e| ApiError {
            status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            message: e.to_string(),
            line: None,
        })??;
    Ok(Json(
        json!({ "accepted": n, "first_offset": offsets.start, "last_offset": offsets.end.saturating_sub(1) }),
    ))
}
