//! The HTTP API: ingest, SQL, status, health, Prometheus metrics, the live stream, the DLQ
//! and the dashboard, all routed in [`routes`]. Status codes for every error live in
//! [`error`].
//!
//! It owns no pipeline logic: handlers call [`tickflow_pipeline::Pipeline`] and
//! [`tickflow_query`], and translate their answers to HTTP.

mod auth;
pub mod error;
mod exposition;
mod handlers;
mod pgwire;
pub mod routes;
mod server;
mod stream;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use tickflow_pipeline::Pipeline;

pub use auth::SharedLimiter;
pub use pgwire::serve_pgwire;
pub use routes::router;

/// State shared by every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    /// One engine for every query, so file metadata is read once per file, not per query.
    pub query: tickflow_query::QueryEngine,
    exporter: exposition::Exporter,
    /// The live stream's looker and clients (`GET /api/v1/stream`).
    hub: Arc<stream::Hub>,
    /// When each source last sent something, for `/readyz`.
    freshness: Arc<tickflow_pipeline::health::Freshness>,
    /// Failed credentials by address, shared with the Postgres-wire endpoint.
    limiter: SharedLimiter,
    /// KiB of ingest bodies that may be in flight at once (`[http] max_inflight_mb`).
    inflight: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The state for `pipeline`'s handlers.
    pub fn new(
        pipeline: Arc<Pipeline>,
        query: tickflow_query::QueryEngine,
        limiter: SharedLimiter,
    ) -> Self {
        let budget = pipeline.plan().http.max_inflight_bytes / 1024;
        Self {
            limiter,
            inflight: Arc::new(tokio::sync::Semaphore::new(budget)),
            pipeline,
            query,
            exporter: exposition::Exporter::new(),
            hub: Arc::new(stream::Hub::new()),
            freshness: Arc::new(tickflow_pipeline::health::Freshness::new(
                tickflow_model::UnixNanos::now(),
            )),
        }
    }
}

/// A query engine with the limits and switches of the pipeline's `[query]` section.
pub(crate) fn engine(pipeline: &Pipeline) -> std::io::Result<tickflow_query::QueryEngine> {
    let plan = &pipeline.plan().query;
    let disabled = tickflow_query::Rule::ALL
        .into_iter()
        .filter(|r| plan.disabled.iter().any(|d| d == r.name()))
        .collect();
    let engine = tickflow_query::QueryEngine::new()
        .map_err(std::io::Error::other)?
        .with_options(tickflow_query::QueryOptions {
            timeout: Some(plan.timeout),
            memory_bytes: Some(plan.memory_bytes),
            disabled,
        });
    engine
        .register_lake(pipeline.lake())
        .map_err(std::io::Error::other)?;
    Ok(engine)
}

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests.
/// `limiter` counts failed credentials by address (share it with [`serve_pgwire`]); `tls`
/// from [`tls::load`] when `[tls]` is set.
///
/// # Errors
/// The listener fails, or the query engine cannot be set up.
pub async fn serve(
    pipeline: Arc<Pipeline>,
    listener: tokio::net::TcpListener,
    limiter: SharedLimiter,
    tls: Option<tls::Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max_body = pipeline.plan().http.max_body_bytes;
    let limits = server::Limits {
        max_connections: pipeline.plan().http.max_connections,
        max_per_address: pipeline.plan().http.max_connections_per_address,
        header_timeout: pipeline.plan().http.header_timeout,
        refused: pipeline.metrics().connections_refused.get("http"),
        refused_per_address: pipeline
            .metrics()
            .connections_refused
            .get("http_per_address"),
        tls: tls.map(|t| t.http),
    };
    let query = engine(&pipeline)?;
    let state = AppState::new(pipeline, query, limiter);
    state.exporter.install_global();
    let hub = Arc::clone(&state.hub);
    let looker = tokio::spawn(stream::run(state.clone()));
    let sampler = tokio::spawn(handlers::health::sample_freshness(state.clone()));
    let app = router(state, max_body);
    // Live streams never end on their own: closing the hub ends them, so the graceful
    // shutdown is not held up by a dashboard left open.
    let shutdown = async move {
        shutdown.await;
        hub.close();
    };
    let served = server::serve(listener, app, limits, shutdown).await;
    looker.abort();
    sampler.abort();
    // Aborted tasks hold the pipeline until they have ended.
    let _ = looker.await;
    let _ = sampler.await;
    served
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_rule_the_config_names_is_a_rule_of_the_engine() {
        for name in tickflow_pipeline::config::QUERY_RULES {
            assert!(
                tickflow_query::Rule::ALL.iter().any(|r| r.name() == name),
                "{name}"
            );
        }
        assert_eq!(
            tickflow_query::Rule::ALL.len(),
            tickflow_pipeline::config::QUERY_RULES.len()
        );
    }
}
