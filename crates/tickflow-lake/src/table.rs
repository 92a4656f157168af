use std::fmt;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The tables every interface names the same way (DESIGN.md, "Tables").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Trades,
    Quotes,
    Bars,
    DailyMetrics,
    Alerts,
    Dlq,
    /// Each notifier's settled delivery of each alert.
    AlertDeliveries,
}

/// Exact prices and sizes: DECIMAL(18, 9), an i64 in Parquet and in Arrow. Files carry it
/// as a 64-bit decimal so that a reader can take the stored values as they are; SQL shows
/// it as DECIMAL128 (the query engine widens where it must).
pub(crate) const PRICE_DIGITS: (u8, i8) = (18, 9);
pub(crate) const PRICE: DataType = DataType::Decimal64(PRICE_DIGITS.0, PRICE_DIGITS.1);
/// Sums of sizes: DECIMAL(38, 9).
pub(crate) const VOLUME_DIGITS: (u8, i8) = (38, 9);
pub(crate) const VOLUME: DataType = DataType::Decimal128(VOLUME_DIGITS.0, VOLUME_DIGITS.1);

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn schema(fields: Vec<(&str, DataType, bool)>) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .into_iter()
            .map(|(n, t, null)| Field::new(n, t, null))
            .collect::<Vec<_>>(),
    ))
}

static SCHEMAS: LazyLock<[SchemaRef; 7]> = LazyLock::new(|| {
    use DataType::{Boolean, Date32, Float64, UInt64, Utf8};
    [
        schema(vec![
            ("symbol", Utf8, false),
            ("ts_event", ts(), false),
            ("ts_recv", ts(), false),
            ("price", PRICE, false),
            ("size", PRICE, false),
            ("trade_id", Utf8, true),
            ("exchange", Utf8, true),
            ("source", Utf8, false),
            ("feed", Utf8, false),
            ("seq", UInt64, true),
        ]),
        schema(vec![
            ("symbol", Utf8, false),
            ("ts_event", ts(), false),
            ("ts_recv", ts(), false),
            ("bid", PRICE, false),
            ("bid_size", PRICE, false),
            ("ask", PRICE, false),
            ("ask_size", PRICE, false),
            ("source", Utf8, false),
            ("feed", Utf8, false),
            ("seq", UInt64, true),
        ]),
        schema(vec![
            ("symbol", Utf8, false),
            ("interval", Utf8, false),
            ("start", ts(), false),
            ("end", ts(), false),
            ("open", PRICE, false),
            ("high", PRICE, false),
            ("low", PRICE, false),
            ("close", PRICE, false),
            ("volume", VOLUME, false),
            ("vwap", PRICE, true),
            ("trade_count", UInt64, true),
            ("final", Boolean, false),
            // A feed's bars name their source; bars built from trades, and every bar of a
            // lake from before feeds, read as null.
            ("source", Utf8, true),
        ]),
        schema(vec![
            ("symbol", Utf8, false),
            ("date", Date32, false),
            ("open", PRICE, false),
            ("high", PRICE, false),
            ("low", PRICE, false),
            ("close", PRICE, false),
            ("volume", VOLUME, false),
            ("volatility", Float64, false),
            ("rolling_avg_5d", PRICE, false),
            ("daily_pct_change", Float64, true),
        ]),
        schema(vec![
            ("alert_id", Utf8, false),
            ("rule", Utf8, false),
            ("symbol", Utf8, false),
            ("ts", ts(), false),
            ("value", PRICE, false),
            ("threshold", Utf8, false),
            ("message", Utf8, false),
            ("severity", Utf8, false),
            ("delivered_to", Utf8, false),
            // Added after the first release: null in older files, read as `fired`.
            ("kind", Utf8, true),
        ]),
        schema(vec![
            ("ts", ts(), false),
            ("source", Utf8, false),
            ("offset", UInt64, true),
            ("reason", Utf8, false),
            ("error", Utf8, false),
            ("payload", Utf8, false),
        ]),
        schema(vec![
            ("alert_id", Utf8, false),
            ("notifier", Utf8, false),
            ("ts", ts(), false),
            ("status", Utf8, false),
            ("attempts", UInt64, false),
            // Added after the first release: null in older files.
            ("error", Utf8, true),
        ]),
    ]
});

impl Table {
    /// Every table.
    pub const ALL: [Table; 7] = [
        Self::Trades,
        Self::Quotes,
        Self::Bars,
        Self::DailyMetrics,
        Self::Alerts,
        Self::Dlq,
        Self::AlertDeliveries,
    ];

    /// The SQL name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Trades => "trades",
            Self::Quotes => "quotes",
            Self::Bars => "bars",
            Self::DailyMetrics => "daily_metrics",
            Self::Alerts => "alerts",
            Self::Dlq => "dlq",
            Self::AlertDeliveries => "alert_deliveries",
        }
    }

    /// The Arrow schema, which is also the Parquet schema: prices and sizes are 64-bit
    /// decimals here (SQL shows them as DECIMAL128).
    pub fn schema(self) -> SchemaRef {
        Arc::clone(&SCHEMAS[self as usize])
    }

    /// Whether files are split by symbol as well as by date (the DLQ and deliveries have
    /// no symbol).
    pub const fn by_symbol(self) -> bool {
        !matches!(self, Self::Dlq | Self::AlertDeliveries)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
