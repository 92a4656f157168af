//! The Postgres-wire endpoint of a running pipeline (`[pgwire]`, default 127.0.0.1:8751):
//! its session reads each table from the pipeline when a query scans it.

use std::sync::Arc;

use tickflow_pipeline::Pipeline;
use tickflow_query::{RecordBatch, Table};
use tokio::sync::watch;

/// How long a client has from connecting to signed in, as PostgreSQL's
/// `authentication_timeout`.
const PGWIRE_STARTUP: std::time::Duration = std::time::Duration::from_secs(60);

/// A pipeline's tables as the Postgres-wire session reads them. Weak: the session's catalog
/// refers to itself (`pg_catalog` lists the catalog it is in), so it is never dropped, and
/// it must not keep the pipeline from shutting down.
#[derive(Debug)]
struct PipelineTables(std::sync::Weak<Pipeline>);

impl tickflow_query::Tables for PipelineTables {
    fn snapshot(
        &self,
        table: Table,
    ) -> Result<(Vec<std::path::PathBuf>, Vec<RecordBatch>), String> {
        let pipeline = self.0.upgrade().ok_or("the pipeline is stopping")?;
        pipeline.table_inputs(table).map_err(|e| e.to_string())
    }
}

/// Serves SQL over the Postgres wire protocol on `listener` until `stop` turns true;
/// clients give `[pgwire] password` when one is set, and their failures count in `limiter`
/// as the HTTP API's do. With `tls`, clients must use TLS.
///
/// # Errors
/// The query engine or the session cannot be set up.
pub async fn serve_pgwire(
    pipeline: Arc<Pipeline>,
    listener: tokio::net::TcpListener,
    limiter: crate::SharedLimiter,
    tls: Option<crate::tls::Tls>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let engine = crate::engine(&pipeline)?;
    let metrics = pipeline.metrics();
    let login =
        pipeline
            .plan()
            .pgwire_password
            .as_ref()
            .map(|password| tickflow_query::pgwire::Login {
                password: password.0.clone(),
                scram: pipeline.plan().pgwire_auth == tickflow_pipeline::PgwireAuth::ScramSha256,
                limiter,
                failures: metrics.auth_failures.get("pgwire"),
                limited: metrics.auth_failures.get("limited"),
            });
    let session = engine
        .live_session(Arc::new(PipelineTables(Arc::downgrade(&pipeline))))
        .await
        .map_err(std::io::Error::other)?;
    let access = tickflow_query::pgwire::Access {
        login,
        max_connections: pipeline.plan().pgwire_max_connections,
        max_per_address: pipeline.plan().pgwire_max_connections_per_address,
        refused: metrics.connections_refused.get("pgwire"),
        refused_per_address: metrics.connections_refused.get("pgwire_per_address"),
        tls: tls.map(|t| t.pgwire),
        limits: tickflow_query::pgwire::Limits {
            startup: PGWIRE_STARTUP,
            idle: pipeline.plan().pgwire_idle_timeout,
            max_message: pipeline.plan().pgwire_max_message,
            closed_startup: metrics.connections_closed.get("pgwire_startup"),
            closed_idle: metrics.connections_closed.get("pgwire_idle"),
            closed_oversized: metrics.connections_closed.get("pgwire_oversized"),
        },
    };
    tickflow_query::pgwire::serve(listener, Arc::new(session), access, stop).await;
    Ok(())
}
