//! Every path the API serves, in one table.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::AppState;
use crate::handlers::{alerts, bars, dashboard, dlq, health, ingest, sql, status};
use crate::stream;

pub const INGEST: &str = "/api/v1/ingest";
pub const INGEST_SOURCE: &str = "/api/v1/ingest/{source}";
pub const SQL: &str = "/api/v1/sql";
pub const BARS: &str = "/api/v1/bars";
pub const HISTORY: &str = "/api/v1/history";
pub const STATUS: &str = "/api/v1/status";
pub const GAPS: &str = "/api/v1/gaps";
pub const JOBS: &str = "/api/v1/jobs";
pub const ALERTS: &str = "/api/v1/alerts";
pub const RELOAD: &str = "/api/v1/reload";
pub const STREAM: &str = "/api/v1/stream";
pub const DLQ: &str = "/api/v1/dlq";
pub const DLQ_REPLAY: &str = "/api/v1/dlq/replay";
pub const METRICS: &str = "/metrics";
pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";
pub const DASHBOARD: &str = "/";

/// The router; bodies above `max_body_bytes` are refused with 413.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route(DASHBOARD, get(dashboard::index))
        .route("/app.js", get(dashboard::script))
        .route("/style.css", get(dashboard::style))
        .route(HEALTHZ, get(health::healthz))
        .route(READYZ, get(health::readyz))
        .route(METRICS, get(health::metrics))
        .route(INGEST, post(ingest::ingest))
        .route(INGEST_SOURCE, post(ingest::ingest_source))
        .route(SQL, post(sql::sql))
        .route(BARS, get(bars::bars))
        .route(HISTORY, get(bars::history))
        .route(STATUS, get(status::status))
        .route(GAPS, get(status::gaps))
        .route(JOBS, get(status::jobs))
        .route(ALERTS, get(alerts::alerts))
        .route(RELOAD, post(status::reload))
        .route(STREAM, get(stream::stream))
        .route(DLQ, get(dlq::list))
        .route(DLQ_REPLAY, post(dlq::replay))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
