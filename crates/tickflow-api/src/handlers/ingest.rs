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

/// Refuses a request without the token of the HTTP source `source` it writes to, when that
/// source has one (401; 429 once its address has failed too often).
pub(crate) fn authorize(
    state: &AppState,
    ip: std::net::IpAddr,
    plan: &tickflow_pipeline::config::HttpSourcePlan,
    headers: &axum::http::HeaderMap,
    source: &str,
) -> Result<(), ApiError> {
    let Some(token) = &plan.token else {
        return Ok(());
    };
    crate::auth::check(state, ip, headers, &token.0, "ingest", || {
        format!("source {source:?} needs the header `Authorization: Bearer <token>` with its token")
    })
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
            retry_after: None,
        });
    };
    let ip = crate::auth::peer(request.extensions());
    authorize(&state, ip, plan, request.headers(), source)?;
    // Room for the body in the budget of bodies in flight, held until the answer.
    let _room = admit(&state, request.headers())?;
    // Read only now, within the router's body limit (413 past it), and in time: a producer
    // that stops sending halfway must not hold its share of the budget.
    let body_timeout = state.pipeline.plan().http.body_timeout;
    let body = tokio::time::timeout(body_timeout, Bytes::from_request(request, &()))
        .await
        .map_err(|_| ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request body did not arrive within {} s ([http] body_timeout_secs); send it again",
                body_timeout.as_secs()
            ),
            line: None,
            retry_after: None,
        })??;
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

/// A share of `[http] max_inflight_mb` for a body of the request's `Content-Length` (the
/// body limit when it has none), or 503 with `Retry-After` when bodies already in flight
/// hold the budget: memory stays bounded however many producers send at once.
fn admit(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let http = &state.pipeline.plan().http;
    let bytes = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(http.max_body_bytes)
        .min(http.max_body_bytes);
    let kib = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    Arc::clone(&state.inflight)
        .try_acquire_many_owned(kib)
        .map_err(|_| {
            state.pipeline.metrics().ingest_refused.add("busy", 1);
            ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!(
                    "ingest is at its memory budget ({} MiB of request bodies in flight, [http] max_inflight_mb): send again shortly",
                    http.max_inflight_bytes >> 20
                ),
                line: None,
                retry_after: Some(1),
            }
        })
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
    let appended = tokio::task::spawn_blocking(move || pipeline.ingest_batch(&source, &batch))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: e.to_string(),
            line: None,
            retry_after: None,
        })?;
    appended.map_err(|e| {
        let reason = match &e {
            tickflow_pipeline::Error::Log(tickflow_log::Error::DiskFull { .. }) => {
                Some("disk_full")
            }
            tickflow_pipeline::Error::LogUnavailable(_) => Some("log_unavailable"),
            _ => None,
        };
        if let Some(reason) = reason {
            state.pipeline.metrics().ingest_refused.add(reason, 1);
        }
        ApiError::from(e)
    })
}
