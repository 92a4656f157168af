//! The sink's tables, created on first start and changed only by numbered migrations.
//!
//! Each migration runs once per schema, in its own transaction under an advisory lock, and is
//! recorded in `_tickflow_migrations`, so two processes starting at once neither race nor
//! apply one twice, and a later tickflow adds columns without touching rows. A migration is
//! never edited once released: a change is a new migration at the end of [`MIGRATIONS`].
//!
//! Prices, sizes and volumes are `NUMERIC` (exact, as the lake keeps them). Times are
//! `timestamptz`, which keeps microseconds; trades and quotes also keep the venue's
//! nanoseconds in `ts_event_ns`. `key` is the last part of a tick's natural key (the
//! trade id, else `#seq`, else its prices and sizes), so a tick is stored once however often
//! it is written.

use tokio_postgres::Client;

/// One schema change: its version, what it does, and its SQL with `{schema}` for the schema.
#[derive(Debug)]
pub struct Migration {
    pub version: i32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "trades, quotes, bars, daily_metrics, alerts, the stock_data view and sink positions",
        sql: r#"
CREATE TABLE {schema}.trades (
    symbol      text        NOT NULL,
    ts_event    timestamptz NOT NULL,
    ts_event_ns bigint      NOT NULL,
    ts_recv     timestamptz NOT NULL,
    price       numeric     NOT NULL,
    size        numeric     NOT NULL,
    trade_id    text,
    exchange    text,
    source      text        NOT NULL,
    feed        text        NOT NULL,
    seq         bigint,
    key         text        NOT NULL
);
CREATE UNIQUE INDEX trades_natural_key ON {schema}.trades (symbol, ts_event, ts_event_ns, source, key);

CREATE TABLE {schema}.quotes (
    symbol      text        NOT NULL,
    ts_event    timestamptz NOT NULL,
    ts_event_ns bigint      NOT NULL,
    ts_recv     timestamptz NOT NULL,
    bid         numeric     NOT NULL,
    bid_size    numeric     NOT NULL,
    ask         numeric     NOT NULL,
    ask_size    numeric     NOT NULL,
    source      text        NOT NULL,
    feed        text        NOT NULL,
    seq         bigint,
    key         text        NOT NULL
);
CREATE UNIQUE INDEX quotes_natural_key ON {schema}.quotes (symbol, ts_event, ts_event_ns, source, key);

CREATE TABLE {schema}.bars (
    symbol      text        NOT NULL,
    interval    text        NOT NULL,
    start       timestamptz NOT NULL,
    "end"       timestamptz NOT NULL,
    open        numeric     NOT NULL,
    high        numeric     NOT NULL,
    low         numeric     NOT NULL,
    close       numeric     NOT NULL,
    volume      numeric     NOT NULL,
    vwap        numeric,
    trade_count bigint,
    final       boolean     NOT NULL,
    source      text,
    PRIMARY KEY (symbol, interval, start)
);

CREATE TABLE {schema}.daily_metrics (
    symbol           text             NOT NULL,
    date             date             NOT NULL,
    open             numeric          NOT NULL,
    high             numeric          NOT NULL,
    low              numeric          NOT NULL,
    close            numeric          NOT NULL,
    volume           numeric          NOT NULL,
    volatility       double precision NOT NULL,
    rolling_avg_5d   numeric          NOT NULL,
    daily_pct_change double precision,
    PRIMARY KEY (symbol, date)
);

CREATE TABLE {schema}.alerts (
    alert_id     text        PRIMARY KEY,
    rule         text        NOT NULL,
    symbol       text        NOT NULL,
    ts           timestamptz NOT NULL,
    value        numeric     NOT NULL,
    threshold    text        NOT NULL,
    message      text        NOT NULL,
    severity     text        NOT NULL,
    delivered_to text        NOT NULL
);
CREATE INDEX alerts_ts ON {schema}.alerts (ts);

-- The old pipeline's table, column for column, so its queries keep working.
CREATE VIEW {schema}.stock_data AS
SELECT date, symbol, open, high, low, close, volume, volatility,
       rolling_avg_5d AS rolling_avg, daily_pct_change
FROM {schema}.daily_metrics;

CREATE TABLE {schema}._tickflow_sinks (
    sink       text        PRIMARY KEY,
    flush      bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"#,
    },
    Migration {
        version: 2,
        description: "alerts.kind: fired, reminder, resolved, coalesced or digest",
        sql: r#"
ALTER TABLE {schema}.alerts ADD COLUMN kind text NOT NULL DEFAULT 'fired';
"#,
    },
];

/// Tables that become hypertables when TimescaleDB is installed, with their time column.
const HYPERTABLES: [(&str, &str); 3] = [
    ("trades", "ts_event"),
    ("quotes", "ts_event"),
    ("bars", "start"),
];

/// Applies the migrations `schema` lacks; returns the versions applied.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<Vec<i32>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // One migrator per schema at a time, across processes.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("tickflow-migrate:{schema}")],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}._tickflow_migrations (
             version     integer     PRIMARY KEY,
             description text        NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}._tickflow_migrations"),
            &[],
        )
        .await?
        .get(0);
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(&m.sql.replace("{schema}", schema)).await?;
        tx.execute(
            &format!(
                "INSERT INTO {schema}._tickflow_migrations (version, description) VALUES ($1, $2)"
            ),
            &[&m.version, &m.description],
        )
        .await?;
        applied.push(m.version);
    }
    tx.commit().await?;
    Ok(applied)
}

/// Whether the `timescaledb` extension is installed in the database.
pub async fn has_timescale(client: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await?
        .is_some())
}

/// Turns the tick and bar tables into hypertables compressed by symbol after
/// `compress_after` (a PostgreSQL interval such as `7 days`). Safe to repeat.
pub async fn timescale(
    client: &Client,
    schema: &str,
    compress_after: &str,
) -> Result<(), tokio_postgres::Error> {
    for (table, time) in HYPERTABLES {
        let name = format!("{schema}.{table}");
        client
            .execute(
                "SELECT create_hypertable($1::text::regclass, $2::text::name, if_not_exists => TRUE, migrate_data => TRUE)",
                &[&name, &time],
            )
            .await?;
        // Once a chunk is compressed, older TimescaleDB refuses to set compression again.
        let compressed = client
            .query_opt(
                "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_schema = $1 AND hypertable_name = $2",
                &[&schema, &table],
            )
            .await?
            .is_some_and(|r| r.get::<_, bool>(0));
        if !compressed {
            client
                .batch_execute(&format!(
                    "ALTER TABLE {name} SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol')"
                ))
                .await?;
        }
        client
            .execute(
                "SELECT add_compression_policy($1::text::regclass, $2::text::interval, if_not_exists => TRUE)",
                &[&name, &compress_after],
            )
            .await?;
    }
    Ok(())
}
