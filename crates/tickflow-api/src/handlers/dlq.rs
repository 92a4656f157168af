//! The DLQ over HTTP: `GET /api/v1/dlq` lists rejected input with its reason and payload,
//! and `POST /api/v1/dlq/replay` sends a corrected payload back through ingest, recording
//! that it did so the listing can say which entries were replayed.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tickflow_core::codec::Batch;
use tickflow_model::{RejectReason, UnixNanos};
use tickflow_query::Format;

use crate::AppState;
use crate::error::ApiError;
use crate::handlers::ingest::authorize as authorize_source;
use crate::handlers::sql::query;

/// Entries listed at most per request.
const MAX_ENTRIES: usize = 1000;

/// Where replays are recorded, one JSON object per line: `{"id", "at", "first_offset",
/// "last_offset"}`.
fn ledger(data_dir: &Path) -> PathBuf {
    data_dir.join("dlq").join("replayed.ndjson")
}

/// Each replayed entry's last replay, by entry id.
fn replays(data_dir: &Path) -> HashMap<String, Value> {
    let Ok(text) = std::fs::read_to_string(ledger(data_dir)) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|v| Some((v["id"].as_str()?.to_string(), v)))
        .collect()
}

/// An entry's id: its rejection time in nanoseconds, its source and its log offset (`-`
/// when it never reached the log), which together name one rejection.
fn entry_id(ts_nanos: i64, source: &str, offset: Option<u64>) -> String {
    match offset {
        Some(o) => format!("{ts_nanos}:{source}:{o}"),
        None => format!("{ts_nanos}:{source}:-"),
    }
}

/// An entry id's rejection time, source and offset (a source id may itself hold `:`).
fn parse_entry_id(id: &str) -> Option<(i64, &str, Option<u64>)> {
    let (ts, rest) = id.split_once(':')?;
    let (source, offset) = rest.rsplit_once(':')?;
    let ts = ts.parse::<i64>().ok()?;
    let offset = match offset {
        "-" => None,
        o => Some(o.parse::<u64>().ok()?),
    };
    plain(source).then_some((ts, source, offset))
}

/// A source id as stored: letters, digits and `_-.:`; anything else cannot be one.
fn plain(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// `GET /api/v1/dlq?limit=100&reason=late&source=sim`: the newest entries first, each with
/// `id`, `ts`, `source`, `offset`, `reason`, `error`, `payload`, and `replayed` (the last
/// replay, or null). 400 names a reason or limit that is not one.
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = match params.get("limit") {
        None => 100,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_ENTRIES).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit={n} is not 1 to {MAX_ENTRIES}")))?,
    };
    let mut conditions = Vec::new();
    if let Some(reason) = params.get("reason").filter(|r| !r.is_empty()) {
        let known = RejectReason::ALL
            .into_iter()
            .find(|r| r.as_str() == reason)
            .ok_or_else(|| {
                let names: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
                ApiError::bad_request(format!(
                    "reason={reason:?} is not a reason; one of {}",
                    names.join(", ")
                ))
            })?;
        conditions.push(format!("reason = '{}'", known.as_str()));
    }
    if let Some(source) = params.get("source").filter(|s| !s.is_empty()) {
        if !plain(source) {
            return Err(ApiError::bad_request(format!(
                "source={source:?} is not a source id (letters, digits and _-.:)"
            )));
        }
        conditions.push(format!("source = '{source}'"));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT CAST(ts AS BIGINT) AS ts_nanos, ts, source, \"offset\", reason, error, payload \
         FROM dlq {filter} ORDER BY ts DESC LIMIT {limit}"
    );
    let result = query(&state, &sql).await?;
    let text = tickflow_query::render(&result, Format::Json)?;
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
    let replayed = replays(&state.pipeline.plan().data_dir);
    let entries: Vec<Value> = rows
        .into_iter()
        .map(|mut row| {
            let id = entry_id(
                row["ts_nanos"].as_i64().unwrap_or_default(),
                row["source"].as_str().unwrap_or_default(),
                row["offset"].as_u64(),
            );
            if let Some(map) = row.as_object_mut() {
                map.remove("ts_nanos");
                map.insert("replayed".into(), replayed.get(&id).cloned().into());
                map.insert("id".into(), id.into());
            }
            row
        })
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    /// The entry replayed, as `GET /api/v1/dlq` named it.
    id: String,
    /// The corrected event(s), in the ingest format.
    payload: String,
}

/// Whether the request may write into `source` as ingest would: an HTTP source's own
/// token when it has one; for any other source (a feed, the simulator), the open `http`
/// endpoint's rule, since that endpoint accepts events naming any source.
fn authorize(
    state: &AppState,
    ip: std::net::IpAddr,
    source: &str,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let plan = state.pipeline.plan();
    // With an API token, the router has checked it: an administrator replays for any source.
    if plan.http.token.is_some() {
        return Ok(());
    }
    if let Some(http) = plan.http_source(source) {
        return authorize_source(state, ip, http, headers, source);
    }
    match plan.http_source("http") {
        Some(open) => authorize_source(state, ip, open, headers, "http"),
        None => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "events of source {source:?} can only be replayed where the open ingest endpoint `http` is configured; send the corrected event to an HTTP source's /api/v1/ingest/<id> instead"
            ),
            line: None,
            retry_after: None,
        }),
    }
}

/// `POST /api/v1/dlq/replay` with `{"id": "<entry id>", "payload": "<corrected events>"}`:
/// ingests the payload under the entry's source and answers as ingest does, once it is
/// durable. It takes what ingest into that source takes (the source's bearer token, if it
/// has one; 401 without) and events of that source only. 404 when no such entry is in the
/// DLQ; 400 for an entry that holds an alert or a sink's row rather than input, and for a
/// payload that still does not parse (with the parser's message). A payload that parses but
/// is still wrong (a negative price) is rejected to the DLQ again with its reason, as any
/// ingest would be.
pub(crate) async fn replay(
    State(state): State<AppState>,
    crate::auth::ConnectInfoOr(ip): crate::auth::ConnectInfoOr,
    headers: HeaderMap,
    body: Result<Json<ReplayRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError {
        status: e.status(),
        message: format!(
            "expected {{\"id\": \"<entry id>\", \"payload\": \"<corrected event>\"}}: {}",
            e.body_text()
        ),
        line: None,
        retry_after: None,
    })?;
    let Some((ts, source, offset)) = parse_entry_id(&request.id) else {
        return Err(ApiError::bad_request(format!(
            "id {:?} is not a DLQ entry's id (GET /api/v1/dlq lists them)",
            request.id
        )));
    };
    let offset_filter = offset.map_or("\"offset\" IS NULL".to_string(), |o| {
        format!("\"offset\" = {o}")
    });
    let sql = format!(
        "SELECT reason FROM dlq WHERE source = '{source}' AND CAST(ts AS BIGINT) = {ts} AND {offset_filter} LIMIT 1"
    );
    let found = query(&state, &sql).await?;
    let text = tickflow_query::render(&found, Format::Json)?;
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
    let Some(reason) = rows.first().and_then(|r| r["reason"].as_str()) else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no DLQ entry has the id {:?}", request.id),
            line: None,
            retry_after: None,
        });
    };
    if reason == RejectReason::DeliveryFailed.as_str()
        || reason == RejectReason::SinkRefused.as_str()
    {
        return Err(ApiError::bad_request(format!(
            "a {reason} entry holds an alert or a row a sink refused, not input: it cannot be replayed through ingest"
        )));
    }
    authorize(&state, ip, source, &headers)?;
    let mut batch = Batch::default();
    tickflow_core::ingest::parse_body_for(
        &request.payload,
        tickflow_core::ingest::SourceRule::Only(source),
        UnixNanos::now(),
        &mut batch,
    )?;
    if batch.is_empty() {
        return Err(ApiError::bad_request(
            "the payload holds no event: send the corrected event as JSON",
        ));
    }
    let n = batch.len();
    let offsets = crate::handlers::ingest::append(&state, source, batch).await?;
    let record = json!({
        "id": request.id,
        "at": UnixNanos::now().to_string(),
        "first_offset": offsets.start,
        "last_offset": offsets.end.saturating_sub(1),
    });
    let path = ledger(&state.pipeline.plan().data_dir);
    // One write per line, so replays at the same moment never interleave.
    let line = format!("{record}\n");
    let recorded = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
        })
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = recorded {
        // The events are in the log already; only the note that they were replayed is lost.
        tracing::warn!(path = %path.display(), error = %e, "could not record a DLQ replay");
    }
    Ok(Json(json!({
        "accepted": n,
        "first_offset": offsets.start,
        "last_offset": offsets.end.saturating_sub(1),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_id_names_its_source_and_offset() {
        assert_eq!(entry_id(5, "http", Some(7)), "5:http:7");
        assert_eq!(entry_id(5, "sim", None), "5:sim:-");
        assert_eq!(
            parse_entry_id(&entry_id(5, "a:b", Some(7))),
            Some((5, "a:b", Some(7)))
        );
        assert_eq!(
            parse_entry_id(&entry_id(5, "sim", None)),
            Some((5, "sim", None))
        );
        assert_eq!(parse_entry_id("5:x' OR 1:7"), None);
        assert_eq!(parse_entry_id("5:sim:7 OR 1=1"), None);
        assert_eq!(parse_entry_id("nonsense"), None);
    }

    #[test]
    fn only_plain_source_ids_reach_sql() {
        assert!(plain("alpaca-iex_1.x"));
        assert!(!plain("x' OR '1'='1"));
        assert!(!plain(""));
    }
}
