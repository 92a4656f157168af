use axum::Json;
use axum::extract::State;
use axum::extract::rejection::StringRejection;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tickflow_query::{Format, Snapshot};

use crate::AppState;
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    format: Option<String>,
}

/// `POST /api/v1/sql` with `{"sql": "...", "format": "json|csv|table"}` or the statement as
/// plain text. Sees rows the moment they are processed, flushed to Parquet or not. The
/// `Server-Timing` header carries the time spent planning and running the query.
pub(crate) async fn sql(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Result<String, StringRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let request = if body.trim_start().starts_with('{') {
        serde_json::from_str::<SqlRequest>(&body).map_err(|e| {
            ApiError::bad_request(format!("expected {{\"sql\": \"SELECT ...\"}}: {e}"))
        })?
    } else {
        SqlRequest {
            sql: body,
            format: None,
        }
    };
    if request.sql.trim().is_empty() {
        return Err(ApiError::bad_request("empty SQL statement"));
    }
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = match request.format.as_deref() {
        Some(f) => f.parse::<Format>().map_err(ApiError::bad_request)?,
        None if accept.contains(ARROW_STREAM) => {
            let started = std::time::Instant::now();
            let result = query(&state, &request.sql).await?;
            let timing = format!("query;dur={:.3}", started.elapsed().as_secs_f64() * 1000.0);
            let bytes = tickflow_query::render_arrow(&result)?;
            return Ok((
                [
                    ("content-type", ARROW_STREAM),
                    ("server-timing", timing.as_str()),
                ],
                bytes,
            )
                .into_response());
        }
        None if accept.contains("text/csv") => Format::Csv,
        None if accept.contains("text/plain") => Format::Table,
        None => Format::Json,
    };
    let started = std::time::Instant::now();
    let result = query(&state, &request.sql).await?;
    // Planning and running, without rendering: what `tickflow sql --timing` reports.
    let timing = format!("query;dur={:.3}", started.elapsed().as_secs_f64() * 1000.0);
    let text = tickflow_query::render(&result, format)?;
    let response = match format {
        Format::Json => {
            let rows: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| json!([]));
            let columns: Vec<&str> = result
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            Json(json!({ "columns": columns, "rows": rows, "row_count": result.num_rows() }))
                .into_response()
        }
        Format::Csv => ([("content-type", "text/csv; charset=utf-8")], text).into_response(),
        Format::Table => ([("content-type", "text/plain; charset=utf-8")], text).into_response(),
    };
    Ok(([("server-timing", timing)], response).into_response())
}

/// The media type of an Arrow IPC stream.
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// Runs one read-only statement over the pipeline's tables.
pub(crate) async fn query(
    state: &AppState,
    sql: &str,
) -> Result<tickflow_query::QueryResult, ApiError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let inputs = state.pipeline.query_inputs()?;
        let generation = inputs.lake_generation;
        let result = state.query.run(snapshot(inputs), sql).await;
        // Compaction deleted files while the query ran: a file it listed may have been
        // skipped or failed to open, so the query runs again on new inputs. Rounds are a
        // minute apart, so a second attempt nearly always stands.
        if state.pipeline.lake_generation() != generation && attempts < 3 {
            continue;
        }
        return Ok(result?);
    }
}

fn snapshot(inputs: tickflow_pipeline::QueryInputs) -> Snapshot {
    Snapshot {
        files: inputs.files,
        live: inputs.live,
    }
}
