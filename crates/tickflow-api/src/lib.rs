//! The HTTP API: ingest, SQL, status, health, Prometheus metrics and the dashboard, all
//! routed in [`routes`]. Status codes for every error live in [`error`].
//!
//! It owns no pipeline logic: handlers call [`tickflow_pipeline::Pipeline`] and
//! [`tickflow_query`], and translate their answers to HTTP.

pub mod error;
mod exposition;
mod handlers;
mod pgwire;
pub mod routes;

use std::future::Future;
use std::sync::Arc;

use tickflow_pipeline::Pipeline;

pub use pgwire::serve_pgwire;
pub use routes::router;

/// State shared by every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    /// One engine for every query, so file metadata is read once per file, not per query.
    pub query: tickflow_query::QueryEngine,
    exporter: exposition::Exporter,
}

impl AppState {
    /// The state for `pipeline`'s handlers.
    pub fn new(pipeline: Arc<Pipeline>, query: tickflow_query::QueryEngine) -> Self {
        Self {
            pipeline,
            query,
            exporter: exposition::Exporter::new(),
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests.
///
/// # Errors
/// The listener fails, or the query engine cannot be set up.
pub async fn serve(
    pipeline: Arc<Pipeline>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max_body = pipeline.plan().http.max_body_bytes;
    let query = tickflow_query::QueryEngine::new().map_err(std::io::Error::other)?;
    let state = AppState::new(pipeline, query);
    state.exporter.install_global();
    let app = router(state, max_body);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
