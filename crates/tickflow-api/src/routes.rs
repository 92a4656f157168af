//! Every path the API serves, in one table.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::handlers::{alerts, bars, dashboard, dlq, health, ingest, sql, status};
use crate::stream;
use crate::{AppState, auth};

pub const INGEST: &str = "/api/v1/ingest";
pub const INGEST_SOURCE: &str = "/api/v1/ingest/{source}";
/// What every named ingest endpoint's path starts with.
pub const INGEST_PREFIX: &str = "/api/v1/ingest/";
pub const LOGIN: &str = "/api/v1/login";
pub const LOGOUT: &str = "/api/v1/logout";
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
pub const SCRIPT: &str = "/app.js";
pub const STYLE: &str = "/style.css";

/// The router; bodies above `max_body_bytes` are refused with 413, and every route but
/// health, ingest and the dashboard's files needs `[http] token` when one is set
/// ([`auth`]).
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route(DASHBOARD, get(dashboard::index))
        .route(SCRIPT, get(dashboard::script))
        .route(STYLE, get(dashboard::style))
        .route(
            LOGIN,
            post(auth::login).layer(DefaultBodyLimit::max(auth::LOGIN_BODY_BYTES)),
        )
        .route(LOGOUT, post(auth::logout))
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
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
