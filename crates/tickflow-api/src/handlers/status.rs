use axum::Json;
use axum::extract::State;
use tickflow_pipeline::Status;

use crate::AppState;

/// `GET /api/v1/status`: offsets, lag, counters and latency.
pub(crate) async fn status(State(state): State<AppState>) -> Json<Status> {
    Json(state.pipeline.status())
}

/// `GET /api/v1/jobs`: each scheduled job, its next fire time and its last run.
pub(crate) async fn jobs(
    State(state): State<AppState>,
) -> Json<Vec<tickflow_pipeline::jobs::JobStatus>> {
    Json(state.pipeline.jobs().status())
}

/// `GET /api/v1/gaps`: every gap the streaming sources detected, filled or could not fill.
pub(crate) async fn gaps(State(state): State<AppState>) -> Json<Vec<tickflow_pipeline::Gap>> {
    Json(state.pipeline.gaps())
}
