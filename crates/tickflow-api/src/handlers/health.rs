use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::AppState;

/// `GET /healthz`: the process is up and its threads have not failed.
pub(crate) async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.pipeline.status().failure {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(f) => (StatusCode::SERVICE_UNAVAILABLE, format!("failed: {f}\n")),
    }
}

/// `GET /readyz`: ready to accept ingest (not shutting down).
pub(crate) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.pipeline.is_stopping() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.exporter.render(state.pipeline.metrics()),
    )
}
