//! The PostgreSQL / TimescaleDB sink.
//!
//! On open it connects, applies the schema's migrations ([`schema`]), turns the tick and bar
//! tables into compressed hypertables when TimescaleDB is installed (and says once that it
//! is not, otherwise), and reads its position from `_tickflow_sinks`. Each flush is one
//! transaction: the position row is locked, a flush already written is skipped, every
//! table's rows are loaded by binary COPY ([`load`]), refused rows go to the DLQ through the
//! log, and the new position is written before the commit. A crash at any point therefore
//! leaves either the whole flush and its position, or neither.
//!
//! Any error drops the connection; the pipeline retries the flush with capped backoff while
//! everything else flows, and the next attempt reconnects. The connection is encrypted, and
//! the server's certificate checked, as the url's `sslmode` asks ([`tls`]).

pub mod load;
pub mod schema;
pub mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tickflow_core::codec::{Batch, Rejected};
use tickflow_core::sink::{Flush, Sink, SinkError};
use tickflow_core::source::Append;
use tickflow_model::{RejectReason, UnixNanos};
use tokio_postgres::{Client, NoTls, Transaction};

use crate::load::{Encode, Table};

/// The tables a PostgreSQL sink can keep.
pub const TABLES: [&str; 5] = ["trades", "quotes", "bars", "daily_metrics", "alerts"];

/// Validated settings of one PostgreSQL sink.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// Where to connect (its `Debug` hides the password).
    pub connection: tokio_postgres::Config,
    /// The TLS client, when the url's `sslmode` encrypts ([`tls::client`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The schema of the tables, created if missing; a plain lower-case identifier.
    pub schema: String,
    /// Which of [`TABLES`] it keeps.
    pub tables: Vec<&'static str>,
    /// With TimescaleDB: chunks older than this are compressed (a PostgreSQL interval).
    pub compress_after: String,
    /// A flush that takes longer than this is abandoned and retried on a new connection,
    /// so a connection that hangs (a peer gone without a reset) cannot stall the sink.
    pub timeout: Duration,
}

/// Whether `name` can be a schema without quoting: lower-case letters, digits and `_`,
/// starting with a letter or `_`, at most 63 bytes.
pub fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// A PostgreSQL sink; see the crate docs.
#[derive(Debug)]
pub struct PostgresSink {
    id: String,
    config: PostgresConfig,
    /// Where refused rows go: the log, which processing drains into the DLQ.
    dlq: Arc<dyn Append>,
    client: Option<Client>,
    migrated: bool,
}

impl PostgresSink {
    pub fn new(id: &str, config: PostgresConfig, dlq: Arc<dyn Append>) -> Self {
        Self {
            id: id.to_string(),
            config,
            dlq,
            client: None,
            migrated: false,
        }
    }

    /// The open connection, or a new one with the schema migrated and the staging tables
    /// made.
    async fn client(&mut self) -> Result<&mut Client, SinkError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let mut client = self.connect().await?;
            let schema = &self.config.schema;
            if !self.migrated {
                let applied = schema::migrate(&mut client, schema)
                    .await
                    .map_err(|e| context("migrating the schema", &e))?;
                if !applied.is_empty() {
                    tracing::info!(sink = %self.id, schema = %schema, versions = ?applied, "schema migrated");
                }
                if schema::has_timescale(&client)
                    .await
                    .map_err(|e| context("looking for TimescaleDB", &e))?
                {
                    schema::timescale(&client, schema, &self.config.compress_after)
                        .await
                        .map_err(|e| context("making hypertables", &e))?;
                    tracing::info!(sink = %self.id, compress_after = %self.config.compress_after, "TimescaleDB: trades, quotes and bars are hypertables, compressed by symbol");
                } else {
                    tracing::info!(sink = %self.id, "TimescaleDB is not installed: plain tables, indexed on their natural keys");
                }
                self.migrated = true;
            }
            // A lock held by an abandoned connection of ours (a flush that timed out) is
            // waited for, within bounds.
            let mut staging = String::from(
                "SET lock_timeout = '30s'; SET idle_in_transaction_session_timeout = '120s';",
            );
            for table in load::TABLES {
                staging.push_str(&format!(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {schema}.{}) ON COMMIT DELETE ROWS;",
                    table.staging(),
                    table.name
                ));
            }
            client
                .batch_execute(&staging)
                .await
                .map_err(|e| context("making the staging tables", &e))?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| "not connected".into())
    }

    async fn connect(&self) -> Result<Client, SinkError> {
        let id = self.id.clone();
        let connection = &self.config.connection;
        let client = match &self.config.tls {
            None => {
                let (client, connection) = connection
                    .connect(NoTls)
                    .await
                    .map_err(|e| context("connecting", &e))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(sink = %id, error = %e, "PostgreSQL connection closed");
                    }
                });
                client
            }
            Some(tls) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                let (client, connection) = connection
                    .connect(tls)
                    .await
                    .map_err(|e| context("connecting over TLS", &e))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(sink = %id, error = %e, "PostgreSQL connection closed");
                    }
                });
                client
            }
        };
        Ok(client)
    }

    async fn position(&mut self) -> Result<Option<u64>, SinkError> {
        let sql = format!(
            "SELECT flush FROM {}._tickflow_sinks WHERE sink = $1",
            self.config.schema
        );
        let id = self.id.clone();
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&id])
            .await
            .map_err(|e| context("reading the position", &e))?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    async fn write_flush(&mut self, flush: &Flush) -> Result<(), SinkError> {
        let schema = self.config.schema.clone();
        let id = self.id.clone();
        let keep: Vec<&'static str> = self.config.tables.clone();
        let dlq = Arc::clone(&self.dlq);
        let client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| context("beginning", &e))?;
        // Held until the commit: a second writer with this sink's id (another process, or a
        // commit of a timed-out connection still landing) waits here, then sees the flush
        // written. The row lock alone would not hold before the sink's first flush.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("tickflow-sink:{schema}:{id}")],
        )
        .await
        .map_err(|e| context("locking the position", &e))?;
        let written = tx
            .query_opt(
                &format!("SELECT flush FROM {schema}._tickflow_sinks WHERE sink = $1 FOR UPDATE"),
                &[&id],
            )
            .await
            .map_err(|e| context("locking the position", &e))?
            .map(|r| r.get::<_, i64>(0) as u64);
        if written.is_some_and(|w| w >= flush.seq) {
            return Ok(());
        }
        let rows = &flush.rows;
        let mut refused = Vec::new();
        let keeps = |t: &str| keep.contains(&t);
        if keeps("trades") {
            write_table(&tx, &schema, &load::TRADES, &rows.trades, &mut refused).await?;
        }
        if keeps("quotes") {
            write_table(&tx, &schema, &load::QUOTES, &rows.quotes, &mut refused).await?;
        }
        if keeps("bars") {
            // At PostgreSQL's precision: two starts in one microsecond are one key there.
            let bars = last_per_key(&rows.bars, |b| {
                (b.symbol.clone(), b.interval, b.start.0.div_euclid(1000))
            });
            write_table(&tx, &schema, &load::BARS, &bars, &mut refused).await?;
        }
        if keeps("daily_metrics") {
            let daily = last_per_key(&rows.daily_metrics, |d| (d.symbol.clone(), d.date));
            write_table(&tx, &schema, &load::DAILY_METRICS, &daily, &mut refused).await?;
        }
        if keeps("alerts") {
            write_table(&tx, &schema, &load::ALERTS, &rows.alerts, &mut refused).await?;
        }
        if !refused.is_empty() {
            // Durable in the log before the commit: a crash in between writes them to the
            // DLQ again on the retry, never loses them.
            let now = UnixNanos::now();
            let mut batch = Batch::default();
            for (table, error, payload) in &refused {
                let error = format!("PostgreSQL refused a row of {table}: {error}");
                batch.push_rejected(&Rejected {
                    reason: RejectReason::SinkRefused,
                    ts_recv: now,
                    source: &id,
                    error: &error,
                    payload,
                });
            }
            dlq.append(&id, &batch)
                .map_err(|e| format!("sending {} refused row(s) to the DLQ: {e}", refused.len()))?;
        }
        tx.execute(
            &format!(
                "INSERT INTO {schema}._tickflow_sinks (sink, flush) VALUES ($1, $2)
                 ON CONFLICT (sink) DO UPDATE SET flush = EXCLUDED.flush, updated_at = now()
                 WHERE {schema}._tickflow_sinks.flush < EXCLUDED.flush"
            ),
            &[&id, &(flush.seq as i64)],
        )
        .await
        .map_err(|e| context("recording the position", &e))?;
        tx.commit().await.map_err(|e| context("committing", &e))?;
        Ok(())
    }
}

/// Loads one table's rows, adding those refused as `(table, error, payload)`.
async fn write_table<R: Encode>(
    tx: &Transaction<'_>,
    schema: &str,
    table: &Table,
    rows: &[R],
    refused: &mut Vec<(&'static str, String, String)>,
) -> Result<(), SinkError> {
    let out = load::load(tx, schema, table, rows)
        .await
        .map_err(|e| context(&format!("writing {}", table.name), &e))?;
    refused.extend(
        out.into_iter()
            .map(|r| (table.name, r.error, rows[r.index].payload())),
    );
    Ok(())
}

/// The last row of each key, in first-seen order: `INSERT … ON CONFLICT DO UPDATE` may not
/// touch a row twice in one statement, and a bar can be in a flush twice (open, then final).
fn last_per_key<R: Clone, K: std::hash::Hash + Eq>(rows: &[R], key: impl Fn(&R) -> K) -> Vec<R> {
    let mut index: HashMap<K, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<R> = Vec::with_capacity(rows.len());
    for row in rows {
        match index.entry(key(row)) {
            std::collections::hash_map::Entry::Occupied(e) => out[*e.get()] = row.clone(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(row.clone());
            }
        }
    }
    out
}

fn context(what: &str, e: &tokio_postgres::Error) -> SinkError {
    format!("PostgreSQL, {what}: {}", load::describe(e)).into()
}

#[async_trait::async_trait]
impl Sink for PostgresSink {
    async fn open(&mut self) -> Result<Option<u64>, SinkError> {
        let result = self.position().await;
        if result.is_err() {
            self.client = None;
        }
        result
    }

    async fn write(&mut self, flush: &Flush) -> Result<(), SinkError> {
        let result = match tokio::time::timeout(self.config.timeout, self.write_flush(flush)).await
        {
            Ok(r) => r,
            Err(_) => Err(format!(
                "PostgreSQL: flush {} took longer than {:?}; reconnecting",
                flush.seq, self.config.timeout
            )
            .into()),
        };
        if result.is_err() {
            // Whatever failed, the next attempt starts on a fresh connection.
            self.client = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_plain_identifiers() {
        assert!(valid_schema("tickflow"));
        assert!(valid_schema("_t1"));
        assert!(!valid_schema("1t"));
        assert!(!valid_schema("Tick"));
        assert!(!valid_schema("a; drop table x"));
        assert!(!valid_schema(""));
    }

    #[test]
    fn last_row_per_key_wins_in_first_seen_order() {
        let rows = [("a", 1), ("b", 2), ("a", 3)];
        assert_eq!(last_per_key(&rows, |r| r.0), vec![("a", 3), ("b", 2)]);
    }
}
