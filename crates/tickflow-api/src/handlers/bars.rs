//! Bars over HTTP: `GET /api/v1/bars` with every column, exact, and the TradingView UDF
//! `GET /api/v1/history` that charting libraries read.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tickflow_model::{BarInterval, Symbol, UnixNanos};
use tickflow_query::Format;

use crate::AppState;
use crate::error::ApiError;
use crate::handlers::sql::query;

/// Bars returned at most per request; ask again from the last `start` for more.
const MAX_BARS: usize = 100_000;

/// A time parameter: RFC 3339, or integer seconds since the epoch.
pub(crate) fn time(name: &str, value: Option<&String>) -> Result<Option<UnixNanos>, ApiError> {
    let Some(text) = value else { return Ok(None) };
    if let Ok(secs) = text.parse::<i64>() {
        return secs
            .checked_mul(1_000_000_000)
            .map(|n| Some(UnixNanos(n)))
            .ok_or_else(|| ApiError::bad_request(format!("{name}={text} is out of range")));
    }
    UnixNanos::parse(text).map(Some).map_err(|e| {
        ApiError::bad_request(format!(
            "{name}={text:?} is not a time: use RFC 3339 (2026-11-20T14:30:00Z) or Unix seconds ({e})"
        ))
    })
}

fn symbol(params: &HashMap<String, String>) -> Result<Symbol, ApiError> {
    let raw = params
        .get("symbol")
        .ok_or_else(|| ApiError::bad_request("symbol is missing: ?symbol=NVDA"))?;
    Symbol::parse(raw).map_err(|e| ApiError::bad_request(format!("symbol={raw:?}: {e}")))
}

/// `WHERE` for one symbol's bars of one interval from `from` (inclusive) to `to`
/// (exclusive).
fn filter(
    symbol: &Symbol,
    interval: BarInterval,
    from: Option<UnixNanos>,
    to: Option<UnixNanos>,
) -> String {
    // The symbol has been parsed (letters, digits and `._/:-`, no quote), so quoting it is
    // safe; times print as digits and `-:.TZ`.
    let mut sql = format!(
        "symbol = '{}' AND \"interval\" = '{}'",
        symbol.as_str(),
        interval.as_str()
    );
    if let Some(from) = from {
        sql.push_str(&format!(" AND start >= TIMESTAMP '{from}'"));
    }
    if let Some(to) = to {
        sql.push_str(&format!(" AND start < TIMESTAMP '{to}'"));
    }
    sql
}

/// `GET /api/v1/bars?symbol=NVDA&interval=1m&from=…&to=…[&limit=N]`: the bars of one
/// symbol and interval, oldest first, every column as the `bars` table has it (decimals
/// as JSON numbers written with their exact digits; a column that is NULL is left out). `from` is inclusive, `to` exclusive; both RFC 3339 or Unix seconds.
pub(crate) async fn bars(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let symbol = symbol(&params)?;
    let interval: BarInterval = params
        .get("interval")
        .map(String::as_str)
        .unwrap_or("1m")
        .parse()
        .map_err(|e| ApiError::bad_request(format!("interval: {e}")))?;
    let from = time("from", params.get("from"))?;
    let to = time("to", params.get("to"))?;
    let limit = match params.get("limit") {
        None => MAX_BARS,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_BARS).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit={n} is not 1 to {MAX_BARS}")))?,
    };
    let sql = format!(
        "SELECT start, \"end\", open, high, low, close, volume, vwap, trade_count, \"final\", source FROM bars WHERE {} ORDER BY start LIMIT {limit}",
        filter(&symbol, interval, from, to)
    );
    let result = query(&state, &sql).await?;
    let text = tickflow_query::render(&result, Format::Json)?;
    let rows: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!([]));
    Ok(Json(json!({
        "symbol": symbol.as_str(),
        "interval": interval.as_str(),
        "bars": rows,
    }))
    .into_response())
}

/// A TradingView resolution as a bar interval.
fn resolution(text: &str) -> Option<BarInterval> {
    match text.to_ascii_uppercase().as_str() {
        "1S" => Some(BarInterval::S1),
        "1" => Some(BarInterval::M1),
        "5" => Some(BarInterval::M5),
        "60" | "1H" => Some(BarInterval::H1),
        "D" | "1D" => Some(BarInterval::D1),
        _ => None,
    }
}

/// A TradingView-style error: `{"s":"error","errmsg":…}` with a 400.
fn udf_error(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "s": "error", "errmsg": message })),
    )
        .into_response()
}

/// `GET /api/v1/history?symbol=NVDA&resolution=1&from=…&to=…[&countback=N]`, the
/// TradingView UDF: `{"s":"ok","t":[…],"o":[…],"h":[…],"l":[…],"c":[…],"v":[…]}` with
/// times in Unix seconds and prices as numbers; `{"s":"no_data"}` (with `nextTime`, the
/// start of the last bar before `from`, in seconds) when the range holds none. `from` and
/// `to` are Unix seconds, `to` exclusive; `countback` asks for the last N bars before `to`
/// and wins over `from`. Resolutions: `1S`, `1`, `5`, `60`, `1D`.
pub(crate) async fn history(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let symbol = match symbol(&params) {
        Ok(s) => s,
        Err(e) => return Ok(udf_error(e.message)),
    };
    let Some(interval) = params.get("resolution").and_then(|r| resolution(r)) else {
        return Ok(udf_error(format!(
            "resolution {:?} is not kept: use 1S, 1, 5, 60 or 1D",
            params.get("resolution").map_or("", String::as_str)
        )));
    };
    let (from, to) = match (
        time("from", params.get("from")),
        time("to", params.get("to")),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return Ok(udf_error(e.message)),
    };
    let countback = match params.get("countback").map(|n| n.parse::<usize>()) {
        None => None,
        Some(Ok(n)) if (1..=MAX_BARS).contains(&n) => Some(n),
        Some(_) => return Ok(udf_error(format!("countback must be 1 to {MAX_BARS}"))),
    };
    let columns = "CAST(to_unixtime(start) AS BIGINT) AS t, CAST(open AS DOUBLE) AS o, CAST(high AS DOUBLE) AS h, CAST(low AS DOUBLE) AS l, CAST(close AS DOUBLE) AS c, CAST(volume AS DOUBLE) AS v";
    let sql = match countback {
        Some(n) => format!(
            "SELECT * FROM (SELECT {columns} FROM bars WHERE {} ORDER BY start DESC LIMIT {n}) ORDER BY t",
            filter(&symbol, interval, None, to)
        ),
        None => format!(
            "SELECT {columns} FROM bars WHERE {} ORDER BY start LIMIT {MAX_BARS}",
            filter(&symbol, interval, from, to)
        ),
    };
    let result = query(&state, &sql).await?;
    let text = tickflow_query::render(&result, Format::Json)?;
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
    if rows.is_empty() {
        let before = format!(
            "SELECT CAST(to_unixtime(max(start)) AS BIGINT) AS t FROM bars WHERE {}",
            // With countback there is no `from`: the range ends at `to`.
            filter(
                &symbol,
                interval,
                None,
                if countback.is_some() { to } else { from }
            )
        );
        let prior = query(&state, &before).await?;
        let text = tickflow_query::render(&prior, Format::Json)?;
        let next: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
        let mut body = json!({ "s": "no_data" });
        if let Some(t) = next
            .first()
            .and_then(|r| r.get("t"))
            .filter(|t| !t.is_null())
        {
            body["nextTime"] = t.clone();
        }
        return Ok(Json(body).into_response());
    }
    let column = |name: &str| -> Vec<Value> {
        rows.iter()
            .map(|r| r.get(name).cloned().unwrap_or(Value::Null))
            .collect()
    };
    Ok(Json(json!({
        "s": "ok",
        "t": column("t"),
        "o": column("o"),
        "h": column("h"),
        "l": column("l"),
        "c": column("c"),
        "v": column("v"),
    }))
    .into_response())
}
