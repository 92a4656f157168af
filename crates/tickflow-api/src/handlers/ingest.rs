use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use tickflow_core::codec::Batch;
use tickflow_model::UnixNanos;

use crate::AppState;
use crate::error::ApiError;

/// `POST /api/v1/ingest`: the HTTP ingest source called `http`; see [`ingest_to`].
pub(crate) async fn ingest(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    ingest_to(state, "http", request).await
}

/// `POST /api/v1/ingest/{source}`: the HTTP ingest source with that id.
pub(crate) async fn ingest_source(
    State(state): State<AppState>,
    Path(source): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    ingest_to(state, &source, request).await
}

/// Equal bytes, compared in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a request without the token of the HTTP source `source` it writes to, when that
/// source has one (401).
pub(crate) fn authorize(
    plan: &tickflow_pipeline::config::HttpSourcePlan,
    headers: &axum::http::HeaderMap,
    source: &str,
) -> Result<(), ApiError> {
    let Some(token) = &plan.token else {
        return Ok(());
    };
    // The scheme is case-insensitive (RFC 9110); the token is not.
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    if same_secret(given.as_bytes(), token.0.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: format!(
                "source {source:?} needs the header `Authorization: Bearer <token>` with its token"
            ),
            line: None,
        })
    }
}

/// NDJSON or a JSON array of events, appended under the HTTP source `source`. Answers 200
/// only once every event of the body is durable in the log; a body with any unparseable line
/// is refused whole (400 naming the line) so a producer can fix and resend it without
/// doubling the good lines. A source with a token refuses requests without it (401) before
/// their body is read.
async fn ingest_to(
    state: AppState,
    source: &str,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let Some(plan) = state.pipeline.plan().http_source(source) else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "no HTTP ingest source is called {source:?}: add [[sources]] type = \"http\" with that id"
            ),
            line: None,
        });
    };
    authorize(plan, request.headers(), source)?;
    // Read only now, within the router's body limit (413 past it).
    let body = Bytes::from_request(request, &()).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not UTF-8: {e}")))?;
    // Parsed straight into the log's encoding: no event structs or owned strings per tick.
    // An event line is rarely under 100 bytes: room for them all, so the batch is not
    // copied while it grows.
    let mut batch = Batch::with_capacity(body.len() / 100 + 1);
    // The open default endpoint keeps the ingest format's rule (a line may name its source);
    // a named endpoint's events are its own, so no producer can pass as another source.
    let rule = if source == "http" {
        tickflow_core::ingest::SourceRule::Default(source)
    } else {
        tickflow_core::ingest::SourceRule::Only(source)
    };
    tickflow_core::ingest::parse_body_for(text, rule, UnixNanos::now(), &mut batch)?;
    drop(body);
    if batch.is_empty() {
        return Err(ApiError::bad_request(
            "no events in the body: send NDJSON or a JSON array of events",
        ));
    }
    let n = batch.len();
    let offsets = append(&state, source, batch).await?;
    Ok(Json(
        json!({ "accepted": n, "first_offset": offsets.start, "last_offset": offsets.end.saturating_sub(1) }),
    ))
}

/// Appends `batch` under `source` off the async workers (the log waits for its fsync or
/// the broker's ack); its log offsets once durable.
pub(crate) async fn append(
    state: &AppState,
    source: &str,
    batch: Batch,
) -> Result<std::ops::Range<u64>, ApiError> {
    let pipeline = Arc::clone(&state.pipeline);
    let source = source.to_string();
    Ok(
        tokio::task::spawn_blocking(move || pipeline.ingest_batch(&source, &batch))
            .await
            .map_err(|e| ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: e.to_string(),
                line: None,
            })??,
    )
}
