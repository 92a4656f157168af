//! `GET /api/v1/alerts`: the alerts raised, newest first, each with its delivery log (one
//! entry per notifier that settled it: delivered or failed, and after how many attempts).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use serde_json::{Value, json};
use tickflow_model::{AlertKind, Symbol};
use tickflow_query::Format;

use crate::AppState;
use crate::error::ApiError;
use crate::handlers::bars::time;
use crate::handlers::sql::query;

/// Alerts returned at most per request.
const MAX_ALERTS: usize = 10_000;

/// A string as an SQL literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `GET /api/v1/alerts[?rule=…][&symbol=…][&kind=…][&from=…][&to=…][&limit=N]`: alerts
/// newest first (100 unless `limit` says otherwise, at most 10,000), each with
/// `deliveries`: `notifier`, `status`, `attempts` and `ts` for every channel that settled
/// it. `from` is inclusive and `to` exclusive, RFC 3339 or Unix seconds.
pub(crate) async fn alerts(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut filter = vec!["TRUE".to_string()];
    if let Some(rule) = params.get("rule") {
        filter.push(format!("rule = {}", literal(rule)));
    }
    if let Some(raw) = params.get("symbol") {
        let symbol = Symbol::parse(raw)
            .map_err(|e| ApiError::bad_request(format!("symbol={raw:?}: {e}")))?;
        filter.push(format!("symbol = {}", literal(symbol.as_str())));
    }
    if let Some(raw) = params.get("kind") {
        let kind = AlertKind::ALL
            .into_iter()
            .find(|k| k.as_str() == raw)
            .ok_or_else(|| {
                let kinds: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
                ApiError::bad_request(format!(
                    "kind={raw:?}: expected one of {}",
                    kinds.join(", ")
                ))
            })?;
        filter.push(format!("kind = '{}'", kind.as_str()));
    }
    if let Some(from) = time("from", params.get("from"))? {
        filter.push(format!("ts >= TIMESTAMP '{from}'"));
    }
    if let Some(to) = time("to", params.get("to"))? {
        filter.push(format!("ts < TIMESTAMP '{to}'"));
    }
    let limit = match params.get("limit") {
        None => 100,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_ALERTS).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit={n} is not 1 to {MAX_ALERTS}")))?,
    };
    let sql = format!(
        "SELECT alert_id, rule, symbol, ts, value, threshold, message, severity, kind, delivered_to \
         FROM alerts WHERE {} ORDER BY ts DESC, alert_id LIMIT {limit}",
        filter.join(" AND ")
    );
    let result = query(&state, &sql).await?;
    let text = tickflow_query::render(&result, Format::Json)?;
    let mut alerts: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
    let ids: Vec<String> = alerts
        .iter()
        .filter_map(|a| a["alert_id"].as_str().map(literal))
        .collect();
    let mut log: HashMap<String, Vec<Value>> = HashMap::new();
    if !ids.is_empty() {
        let sql = format!(
            "SELECT alert_id, notifier, status, attempts, error, ts FROM alert_deliveries \
             WHERE alert_id IN ({}) ORDER BY notifier, ts",
            ids.join(", ")
        );
        let result = query(&state, &sql).await?;
        let text = tickflow_query::render(&result, Format::Json)?;
        let rows: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
        for mut row in rows {
            let id = row["alert_id"].as_str().unwrap_or_default().to_string();
            if let Some(obj) = row.as_object_mut() {
                obj.remove("alert_id");
            }
            log.entry(id).or_default().push(row);
        }
    }
    for a in &mut alerts {
        let id = a["alert_id"].as_str().unwrap_or_default().to_string();
        a["deliveries"] = json!(log.remove(&id).unwrap_or_default());
    }
    Ok(Json(json!({ "alerts": alerts })))
}
