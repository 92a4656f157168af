use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use serde_json::json;
use tickflow_model::UnixNanos;

use crate::AppState;

/// `GET /healthz`: the process is up and its threads have not failed; JSON either way.
pub(crate) async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.pipeline.failure() {
        None => (StatusCode::OK, Json(json!({ "alive": true }))),
        Some(f) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "alive": false, "failure": f })),
        ),
    }
}

/// `GET /readyz`: 200 when every check of [`tickflow_pipeline::health`] passes, else 503;
/// the JSON lists each check with what it saw, so an unready answer names the source or
/// sink at fault.
pub(crate) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let status = state.pipeline.status();
    let now = UnixNanos::now();
    state.freshness.observe(&status.ingested, now);
    let readiness = tickflow_pipeline::health::readiness(
        &state.pipeline.plan().health,
        &status,
        &state.freshness,
        state.pipeline.is_stopping(),
        now,
    );
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(readiness))
}

/// Samples every source's event count once a second, so `/readyz` knows how long each has
/// been silent however rarely it is asked.
pub(crate) async fn sample_freshness(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let counts = state.pipeline.metrics().ingested.snapshot();
        state
            .freshness
            .observe(counts.iter().map(|(id, n)| (id, n)), UnixNanos::now());
    }
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.exporter.gauge(
        "tickflow_stream_clients",
        "Clients connected to the live stream (GET /api/v1/stream).",
        state.hub.clients() as f64,
    );
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.exporter.render(state.pipeline.metrics()),
    )
}
