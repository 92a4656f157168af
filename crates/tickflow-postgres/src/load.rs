//! Loading one table's rows of a flush: binary COPY, idempotent on the natural key, and a row
//! the database refuses set aside alone.
//!
//! Ticks are copied straight into their table, the fastest path PostgreSQL has. That fails
//! as a whole if one row is refused or already stored (a flush written again after a lost
//! acknowledgement); the table's rows are then copied into a session-local staging table and
//! moved with `INSERT … ON CONFLICT`, which keeps what is stored and adds the rest. Bars and
//! daily metrics always take that path, with `DO UPDATE`: a bar is written again as it
//! grows and when it becomes final.
//!
//! A refusal that retrying cannot fix (a data exception, a constraint the user added, a
//! value too large for an index) is isolated by halving: each half is tried under a
//! savepoint, and the halves that fail are halved again, so one bad row among `n` costs
//! about `2·log2(n)` statements and every other row is stored.

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use futures_util::pin_mut;
use rust_decimal::Decimal;
use tickflow_model::{Alert, Bar, DailyMetric, Date, Event, FedBar, Quote, Trade, UnixNanos};
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// One table the sink writes: its columns in COPY order and what a conflict on its natural
/// key does.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [&'static str],
    pub types: &'static [Type],
    /// The natural key's columns, the conflict target.
    pub key: &'static str,
    /// `true`: a stored row wins (ticks, alerts); `false`: the new row replaces it (bars and
    /// daily metrics, which change until final).
    pub keep_stored: bool,
    /// Copy straight into the table first (ticks, where conflicts are rare).
    pub direct: bool,
}

pub const TRADES: Table = Table {
    name: "trades",
    columns: &[
        "symbol",
        "ts_event",
        "ts_event_ns",
        "ts_recv",
        "price",
        "size",
        "trade_id",
        "exchange",
        "source",
        "feed",
        "seq",
        "key",
    ],
    types: &[
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::INT8,
        Type::TIMESTAMPTZ,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
    ],
    key: "symbol, ts_event, ts_event_ns, source, key",
    keep_stored: true,
    direct: true,
};

pub const QUOTES: Table = Table {
    name: "quotes",
    columns: &[
        "symbol",
        "ts_event",
        "ts_event_ns",
        "ts_recv",
        "bid",
        "bid_size",
        "ask",
        "ask_size",
        "source",
        "feed",
        "seq",
        "key",
    ],
    types: &[
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::INT8,
        Type::TIMESTAMPTZ,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
    ],
    key: "symbol, ts_event, ts_event_ns, source, key",
    keep_stored: true,
    direct: true,
};

pub const BARS: Table = Table {
    name: "bars",
    columns: &[
        "symbol",
        "interval",
        "start",
        "\"end\"",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "vwap",
        "trade_count",
        "final",
        "source",
    ],
    types: &[
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::INT8,
        Type::BOOL,
        Type::TEXT,
    ],
    key: "symbol, interval, start",
    keep_stored: false,
    direct: false,
};

pub const DAILY_METRICS: Table = Table {
    name: "daily_metrics",
    columns: &[
        "symbol",
        "date",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "volatility",
        "rolling_avg_5d",
        "daily_pct_change",
    ],
    types: &[
        Type::TEXT,
        Type::DATE,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::FLOAT8,
    ],
    key: "symbol, date",
    keep_stored: false,
    direct: false,
};

pub const ALERTS: Table = Table {
    name: "alerts",
    columns: &[
        "alert_id",
        "rule",
        "symbol",
        "ts",
        "value",
        "threshold",
        "message",
        "severity",
        "delivered_to",
        "kind",
    ],
    types: &[
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::NUMERIC,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
    ],
    key: "alert_id",
    keep_stored: true,
    direct: false,
};

/// The tables a PostgreSQL sink can keep, by name.
pub const TABLES: [&Table; 5] = [&TRADES, &QUOTES, &BARS, &DAILY_METRICS, &ALERTS];

impl Table {
    /// The session-local table a refused or repeated batch is staged in.
    pub fn staging(&self) -> String {
        format!("tickflow_stage_{}", self.name)
    }

    fn insert_from_staging(&self, schema: &str) -> String {
        let columns = self.columns.join(", ");
        let action = if self.keep_stored {
            "DO NOTHING".to_string()
        } else {
            let keys: Vec<&str> = self.key.split(", ").collect();
            let set: Vec<String> = self
                .columns
                .iter()
                .filter(|c| !keys.contains(c))
                .map(|c| format!("{c} = EXCLUDED.{c}"))
                .collect();
            format!("DO UPDATE SET {}", set.join(", "))
        };
        format!(
            "INSERT INTO {schema}.{name} ({columns}) SELECT {columns} FROM {staging} ON CONFLICT ({key}) {action}",
            name = self.name,
            staging = self.staging(),
            key = self.key,
        )
    }
}

/// A row of one of the tables: its values in the table's column order, and the row as the
/// DLQ keeps it (the ingest format where it has one, so it can be fixed and replayed).
pub trait Encode {
    fn values(&self) -> Vec<Value<'_>>;
    fn payload(&self) -> String;
}

/// One column value, encoded in PostgreSQL's binary format.
#[derive(Debug)]
pub enum Value<'a> {
    Text(&'a str),
    Owned(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Numeric(Decimal),
    Time(SystemTime),
    /// Days since 1970-01-01.
    Date(i32),
    Null,
}

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Text(s) => s.to_sql(ty, out),
            Value::Owned(s) => s.as_str().to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Float(v) => v.to_sql(ty, out),
            Value::Bool(v) => v.to_sql(ty, out),
            Value::Numeric(v) => v.to_sql(ty, out),
            Value::Time(v) => v.to_sql(ty, out),
            Value::Date(days) => {
                out.put_i32(days - PG_EPOCH_DAYS);
                Ok(IsNull::No)
            }
            Value::Null => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each table's encoder pairs its values with its column types.
        true
    }

    to_sql_checked!();
}

/// An exact decimal with the value's own display precision (`181.20` stays `181.20`);
/// `NULL` if it is beyond NUMERIC's 28 digits here, which the table's `NOT NULL` refuses,
/// so the row goes to the DLQ instead of being stored wrong.
pub fn numeric(raw: i128, precision: u8) -> Value<'static> {
    let precision = precision.min(9);
    let unit = 10i128.pow(u32::from(9 - precision));
    let decimal = if raw % unit == 0 {
        Decimal::try_from_i128_with_scale(raw / unit, u32::from(precision))
    } else {
        Decimal::try_from_i128_with_scale(raw, 9).map(|d| d.normalize())
    };
    decimal.map_or(Value::Null, Value::Numeric)
}

fn time(t: UnixNanos) -> Value<'static> {
    let at = if t.0 >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_nanos(t.0 as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_nanos(t.0.unsigned_abs()))
    };
    at.map_or(Value::Null, Value::Time)
}

fn date(d: Date) -> Value<'static> {
    Value::Date(d.0)
}

fn text_or_null(s: Option<&str>) -> Value<'_> {
    s.map_or(Value::Null, Value::Text)
}

fn int_or_null(v: Option<u64>) -> Value<'static> {
    match v.map(i64::try_from) {
        Some(Ok(v)) => Value::Int(v),
        _ => Value::Null,
    }
}

impl Encode for Trade {
    fn values(&self) -> Vec<Value<'_>> {
        let key = match (&self.trade_id, self.seq) {
            (Some(id), _) => format!("id:{id}"),
            (None, Some(seq)) => format!("#{seq}"),
            (None, None) => format!("={}x{}", self.price, self.size),
        };
        vec![
            Value::Text(self.symbol.as_str()),
            time(self.ts_event),
            Value::Int(self.ts_event.0),
            time(self.ts_recv),
            numeric(self.price.raw().into(), self.price.precision()),
            numeric(self.size.raw().into(), self.size.precision()),
            text_or_null(self.trade_id.as_ref().map(|t| t.as_str())),
            text_or_null(self.exchange.as_deref()),
            Value::Text(&self.source),
            Value::Text(&self.feed),
            int_or_null(self.seq),
            Value::Owned(key),
        ]
    }

    fn payload(&self) -> String {
        tickflow_core::ingest::to_json(&Event::Trade(self.clone()))
    }
}

impl Encode for Quote {
    fn values(&self) -> Vec<Value<'_>> {
        let key = match self.seq {
            Some(seq) => format!("#{seq}"),
            None => format!(
                "={}x{}/{}x{}",
                self.bid, self.bid_size, self.ask, self.ask_size
            ),
        };
        vec![
            Value::Text(self.symbol.as_str()),
            time(self.ts_event),
            Value::Int(self.ts_event.0),
            time(self.ts_recv),
            numeric(self.bid.raw().into(), self.bid.precision()),
            numeric(self.bid_size.raw().into(), self.bid_size.precision()),
            numeric(self.ask.raw().into(), self.ask.precision()),
            numeric(self.ask_size.raw().into(), self.ask_size.precision()),
            Value::Text(&self.source),
            Value::Text(&self.feed),
            int_or_null(self.seq),
            Value::Owned(key),
        ]
    }

    fn payload(&self) -> String {
        tickflow_core::ingest::to_json(&Event::Quote(self.clone()))
    }
}

impl Encode for Bar {
    fn values(&self) -> Vec<Value<'_>> {
        vec![
            Value::Text(self.symbol.as_str()),
            Value::Text(self.interval.as_str()),
            time(self.start),
            time(self.end),
            numeric(self.open.raw().into(), self.open.precision()),
            numeric(self.high.raw().into(), self.high.precision()),
            numeric(self.low.raw().into(), self.low.precision()),
            numeric(self.close.raw().into(), self.close.precision()),
            numeric(self.volume.raw(), self.volume.precision()),
            self.vwap
                .map_or(Value::Null, |v| numeric(v.raw().into(), v.precision())),
            int_or_null(self.trade_count),
            Value::Bool(self.is_final),
            text_or_null(self.source.as_deref()),
        ]
    }

    fn payload(&self) -> String {
        tickflow_core::ingest::to_json(&Event::Bar(FedBar {
            bar: self.clone(),
            ts_recv: UnixNanos(0),
            feed: self.source.clone().unwrap_or_default(),
        }))
    }
}

impl Encode for DailyMetric {
    fn values(&self) -> Vec<Value<'_>> {
        vec![
            Value::Text(self.symbol.as_str()),
            date(self.date),
            numeric(self.open.raw().into(), self.open.precision()),
            numeric(self.high.raw().into(), self.high.precision()),
            numeric(self.low.raw().into(), self.low.precision()),
            numeric(self.close.raw().into(), self.close.precision()),
            numeric(self.volume.raw(), self.volume.precision()),
            Value::Float(self.volatility),
            numeric(
                self.rolling_avg_5d.raw().into(),
                self.rolling_avg_5d.precision(),
            ),
            self.daily_pct_change.map_or(Value::Null, Value::Float),
        ]
    }

    fn payload(&self) -> String {
        serde_json::json!({
            "table": "daily_metrics",
            "symbol": self.symbol.as_str(),
            "date": self.date.to_string(),
            "open": self.open.to_string(),
            "high": self.high.to_string(),
            "low": self.low.to_string(),
            "close": self.close.to_string(),
            "volume": self.volume.to_string(),
            "volatility": self.volatility,
            "rolling_avg_5d": self.rolling_avg_5d.to_string(),
            "daily_pct_change": self.daily_pct_change,
        })
        .to_string()
    }
}

impl Encode for Alert {
    fn values(&self) -> Vec<Value<'_>> {
        vec![
            Value::Text(&self.alert_id),
            Value::Text(&self.rule),
            Value::Text(self.symbol.as_str()),
            time(self.ts),
            numeric(self.value.raw().into(), self.value.precision()),
            Value::Text(&self.threshold),
            Value::Text(&self.message),
            Value::Text(self.severity.as_str()),
            Value::Text(&self.delivered_to),
            Value::Text(self.kind.as_str()),
        ]
    }

    fn payload(&self) -> String {
        serde_json::json!({
            "table": "alerts",
            "alert_id": self.alert_id,
            "rule": self.rule,
            "symbol": self.symbol.as_str(),
            "ts": self.ts.0,
            "value": self.value.to_string(),
            "threshold": self.threshold,
            "message": self.message,
            "severity": self.severity.as_str(),
            "delivered_to": self.delivered_to,
            "kind": self.kind.as_str(),
        })
        .to_string()
    }
}

/// A row the database refused for a reason retrying cannot fix.
#[derive(Debug)]
pub struct Refused {
    /// Its index among the rows handed to [`load`].
    pub index: usize,
    pub error: String,
}

/// Whether PostgreSQL refused a row's values rather than failed: a data exception (class
/// 22), an integrity constraint (class 23) or a value over a limit (54000). Writing the same
/// row again would fail the same way.
fn refuses_row(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        let code = c.code();
        code.starts_with("22") || code.starts_with("23") || *c == SqlState::PROGRAM_LIMIT_EXCEEDED
    })
}

/// The database's words for an error, with its detail where it gives one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}): {detail}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        // tokio-postgres's own text leaves the cause out ("error performing TLS
        // handshake"): the chain says why.
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                let why = c.to_string();
                if !text.contains(&why) {
                    text = format!("{text}: {why}");
                }
                cause = c.source();
            }
            text
        }
    }
}

/// Writes `rows` into `table` inside `tx`; returns the rows refused, each alone.
pub async fn load<R: Encode>(
    tx: &Transaction<'_>,
    schema: &str,
    table: &Table,
    rows: &[R],
) -> Result<Vec<Refused>, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    if table.direct {
        tx.batch_execute("SAVEPOINT tickflow_direct").await?;
        let target = format!("{schema}.{}", table.name);
        match copy(tx, &target, table, rows).await {
            Ok(()) => {
                tx.batch_execute("RELEASE SAVEPOINT tickflow_direct")
                    .await?;
                return Ok(Vec::new());
            }
            Err(e) if refuses_row(&e) => {
                tx.batch_execute(
                    "ROLLBACK TO SAVEPOINT tickflow_direct; RELEASE SAVEPOINT tickflow_direct",
                )
                .await?;
            }
            Err(e) => return Err(e),
        }
    }
    let mut refused = Vec::new();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    ranges.push(0..rows.len());
    let whole = rows.len();
    while let Some(range) = ranges.pop() {
        tx.batch_execute("SAVEPOINT tickflow_part").await?;
        match staged(tx, schema, table, &rows[range.clone()]).await {
            Ok(()) => tx.batch_execute("RELEASE SAVEPOINT tickflow_part").await?,
            Err(e) if refuses_row(&e) => {
                tx.batch_execute(
                    "ROLLBACK TO SAVEPOINT tickflow_part; RELEASE SAVEPOINT tickflow_part",
                )
                .await?;
                if range.len() == 1 {
                    refused.push(Refused {
                        index: range.start,
                        error: describe(&e),
                    });
                } else {
                    let (first, second) = halves(range);
                    ranges.push(second);
                    ranges.push(first);
                }
            }
            Err(e) => return Err(e),
        }
    }
    if !refused.is_empty() {
        tracing::warn!(
            table = table.name,
            refused = refused.len(),
            of = whole,
            "PostgreSQL refused rows; they go to the DLQ"
        );
    }
    Ok(refused)
}

fn halves(range: Range<usize>) -> (Range<usize>, Range<usize>) {
    let mid = range.start + range.len() / 2;
    (range.start..mid, mid..range.end)
}

/// Copies `rows` into the staging table and moves them into the table on the natural key.
async fn staged<R: Encode>(
    tx: &Transaction<'_>,
    schema: &str,
    table: &Table,
    rows: &[R],
) -> Result<(), tokio_postgres::Error> {
    copy(tx, &table.staging(), table, rows).await?;
    tx.batch_execute(&table.insert_from_staging(schema)).await?;
    tx.batch_execute(&format!("TRUNCATE {}", table.staging()))
        .await
}

async fn copy<R: Encode>(
    tx: &Transaction<'_>,
    target: &str,
    table: &Table,
    rows: &[R],
) -> Result<(), tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!(
            "COPY {target} ({}) FROM STDIN BINARY",
            table.columns.join(", ")
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, table.types);
    pin_mut!(writer);
    for row in rows {
        let values = row.values();
        let refs: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&refs).await?;
    }
    writer.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_keep_their_display_precision_and_exact_digits() {
        let shown = |v: Value<'_>| match v {
            Value::Numeric(d) => d.to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(shown(numeric(181_200_000_000, 2)), "181.20");
        assert_eq!(shown(numeric(-5_000_000_000, 0)), "-5");
        // More digits than the precision says: every digit is kept.
        assert_eq!(shown(numeric(181_123_456_789, 2)), "181.123456789");
        assert_eq!(shown(numeric(1, 9)), "0.000000001");
        assert!(matches!(numeric(i128::MAX, 0), Value::Null));
    }

    #[test]
    fn upserts_replace_every_column_but_the_key() {
        let sql = BARS.insert_from_staging("tf");
        assert!(sql.contains("ON CONFLICT (symbol, interval, start) DO UPDATE SET"));
        assert!(sql.contains("final = EXCLUDED.final"));
        assert!(!sql.contains("symbol = EXCLUDED"));
        assert!(TRADES.insert_from_staging("tf").ends_with("DO NOTHING"));
    }

    #[test]
    fn every_table_has_a_type_per_column() {
        for t in TABLES {
            assert_eq!(t.columns.len(), t.types.len(), "{}", t.name);
        }
    }

    #[test]
    fn halving_covers_the_range_once() {
        let (a, b) = halves(3..10);
        assert_eq!((a, b), (3..6, 6..10));
    }
}
