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

/// `POST /api/v1/reload`: reads the config file again and applies its alert rules (no body;
/// SIGHUP does the same). 400 with every problem, by file, line and key, when the new config
/// is wrong, and then nothing changes.
pub(crate) async fn reload(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, crate::error::ApiError> {
    match state.pipeline.reload() {
        Ok(needs_restart) => Ok(Json(serde_json::json!({
            "reloaded": "alerts",
            "reloads": state.pipeline.status().reloads,
            "needs_restart": needs_restart,
        }))),
        Err(e) => Err(crate::error::ApiError::bad_request(format!(
            "the config was not reloaded:\n{e}"
        ))),
    }
}

/// `GET /api/v1/gaps`: every gap the streaming sources detected, filled or could not fill.
pub(crate) async fn gaps(State(state): State<AppState>) -> Json<Vec<tickflow_pipeline::Gap>> {
    Json(state.pipeline.gaps())
}
