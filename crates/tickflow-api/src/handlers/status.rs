use axum::Json;
use axum::extract::State;
use tickflow_pipeline::Status;

use crate::AppState;

/// `GET /api/v1/status`: offsets, lag, counters and latency.
pub(crate) async fn status(State(state): State<AppState>) -> Json<Status> {
    Json(state.pipeline.status())
}
