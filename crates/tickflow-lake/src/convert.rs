//! Rows to Arrow record batches, one function per table, columns in schema order.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal64Array, Decimal128Array, Float64Array,
    StringArray, StringBuilder, TimestampNanosecondArray, UInt64Array, UInt64Builder,
};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use tickflow_model::{Alert, AlertDelivery, Bar, DailyMetric, DlqRecord, Quote, Trade};

use crate::table::{PRICE_DIGITS, VOLUME_DIGITS};
use crate::{Error, Result, Rows, Table};

fn ts(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter_values(values).with_timezone("UTC"))
}

/// Prices and sizes: 64-bit decimals, as Parquet stores them (an INT64 column), so that a
/// reader asking for them as such gets the file's values without widening each one.
fn price<T: Into<i128>>(values: impl Iterator<Item = T>) -> Result<ArrayRef> {
    decimal64(values.map(units).collect::<Result<Vec<i64>>>()?)
}

/// Prices that may be missing (a feed's bar without a VWAP).
fn opt_price(values: impl Iterator<Item = Option<i64>>) -> Result<ArrayRef> {
    let (p, s) = PRICE_DIGITS;
    let array = values
        .collect::<Decimal64Array>()
        .with_precision_and_scale(p, s)
        .map_err(|source| Error::Arrow {
            table: "decimal",
            source,
        })?;
    Ok(Arc::new(array))
}

/// Sums of sizes, which need more than 18 digits.
fn volume(values: impl Iterator<Item = i128>) -> Result<ArrayRef> {
    let (p, s) = VOLUME_DIGITS;
    let array = Decimal128Array::from_iter_values(values)
        .with_precision_and_scale(p, s)
        .map_err(|source| Error::Arrow {
            table: "decimal",
            source,
        })?;
    Ok(Arc::new(array))
}

/// A text column. A partition's symbol, and usually its source and feed, is one value on
/// every row, often the same allocation: such a column is filled by repeating it, without
/// measuring and copying each row's text.
fn text<'a>(values: impl Iterator<Item = &'a str> + Clone) -> ArrayRef {
    let mut repeats = Repeats::new();
    let rows = values.clone().inspect(|v| repeats.see(v)).count();
    repeats.finish(rows, values)
}

fn opt_u64(values: impl Iterator<Item = Option<u64>>) -> ArrayRef {
    Arc::new(values.collect::<UInt64Array>())
}

fn batch(table: Table, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(table.schema(), columns).map_err(|source| Error::Arrow {
        table: table.name(),
        source,
    })
}

/// A price or size in units of 10^-9 as a 64-bit decimal column stores it. Validation keeps
/// every value under 10^18 units (DECIMAL(18, 9)); one that is not is an error here, not a
/// wrapped number.
fn units<T: Into<i128>>(v: T) -> Result<i64> {
    let v = v.into();
    i64::try_from(v).map_err(|_| {
        let (p, s) = PRICE_DIGITS;
        Error::Arrow {
            table: "decimal",
            source: ArrowError::InvalidArgumentError(format!(
                "{v} units of 10^-9 do not fit DECIMAL({p}, {s})"
            )),
        }
    })
}

fn decimal64(values: Vec<i64>) -> Result<ArrayRef> {
    let (p, s) = PRICE_DIGITS;
    let array = Decimal64Array::from(values)
        .with_precision_and_scale(p, s)
        .map_err(|source| Error::Arrow {
            table: "decimal",
            source,
        })?;
    Ok(Arc::new(array))
}

/// Whether a text column holds one value on every row, learnt while the rows are read
/// once for all columns: a column per pass would read every row again for each column,
/// and a flush's rows are far larger than the caches.
struct Repeats<'a> {
    first: Option<&'a str>,
    same: bool,
}

impl<'a> Repeats<'a> {
    fn new() -> Self {
        Self {
            first: None,
            same: true,
        }
    }

    #[inline]
    fn see(&mut self, v: &'a str) {
        match self.first {
            None => self.first = Some(v),
            Some(first) => {
                if self.same && !std::ptr::eq(first, v) && first != v {
                    self.same = false;
                }
            }
        }
    }

    /// The column: the one value repeated, or else every row's value read again.
    fn finish(self, rows: usize, values: impl Iterator<Item = &'a str>) -> ArrayRef {
        match self.first {
            Some(first) if self.same => Arc::new(StringArray::new_repeated(first, rows)),
            _ => Arc::new(StringArray::from_iter_values(values)),
        }
    }
}

/// Trades read once, row by row, into every column.
pub(crate) fn trades(rows: &[&Trade]) -> Result<RecordBatch> {
    let n = rows.len();
    let (mut ts_event, mut ts_recv) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut prices, mut sizes) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut trade_ids = StringBuilder::with_capacity(n, n * 8);
    let mut exchanges = StringBuilder::with_capacity(n, 0);
    let mut seqs = UInt64Builder::with_capacity(n);
    let (mut symbol, mut source, mut feed) = (Repeats::new(), Repeats::new(), Repeats::new());
    for t in rows {
        symbol.see(t.symbol.as_str());
        ts_event.push(t.ts_event.0);
        ts_recv.push(t.ts_recv.0);
        prices.push(t.price.raw());
        sizes.push(units(t.size.raw())?);
        trade_ids.append_option(t.trade_id.as_deref());
        exchanges.append_option(t.exchange.as_deref());
        source.see(&t.source);
        feed.see(&t.feed);
        seqs.append_option(t.seq);
    }
    batch(
        Table::Trades,
        vec![
            symbol.finish(n, rows.iter().map(|t| t.symbol.as_str())),
            ts(ts_event.into_iter()),
            ts(ts_recv.into_iter()),
            decimal64(prices)?,
            decimal64(sizes)?,
            Arc::new(trade_ids.finish()),
            Arc::new(exchanges.finish()),
            source.finish(n, rows.iter().map(|t| &*t.source)),
            feed.finish(n, rows.iter().map(|t| &*t.feed)),
            Arc::new(seqs.finish()),
        ],
    )
}

/// Quotes read once, row by row, into every column.
pub(crate) fn quotes(rows: &[&Quote]) -> Result<RecordBatch> {
    let n = rows.len();
    let (mut ts_event, mut ts_recv) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut bids, mut bid_sizes) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut asks, mut ask_sizes) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut seqs = UInt64Builder::with_capacity(n);
    let (mut symbol, mut source, mut feed) = (Repeats::new(), Repeats::new(), Repeats::new());
    for q in rows {
        symbol.see(q.symbol.as_str());
        ts_event.push(q.ts_event.0);
        ts_recv.push(q.ts_recv.0);
        bids.push(q.bid.raw());
        bid_sizes.push(units(q.bid_size.raw())?);
        asks.push(q.ask.raw());
        ask_sizes.push(units(q.ask_size.raw())?);
        source.see(&q.source);
        feed.see(&q.feed);
        seqs.append_option(q.seq);
    }
    batch(
        Table::Quotes,
        vec![
            symbol.finish(n, rows.iter().map(|q| q.symbol.as_str())),
            ts(ts_event.into_iter()),
            ts(ts_recv.into_iter()),
            decimal64(bids)?,
            decimal64(bid_sizes)?,
            decimal64(asks)?,
            decimal64(ask_sizes)?,
            source.finish(n, rows.iter().map(|q| &*q.source)),
            feed.finish(n, rows.iter().map(|q| &*q.feed)),
            Arc::new(seqs.finish()),
        ],
    )
}

pub(crate) fn bars(rows: &[&Bar]) -> Result<RecordBatch> {
    let it = || rows.iter();
    batch(
        Table::Bars,
        vec![
            text(it().map(|b| b.symbol.as_str())),
            text(it().map(|b| b.interval.as_str())),
            ts(it().map(|b| b.start.0)),
            ts(it().map(|b| b.end.0)),
            price(it().map(|b| b.open.raw()))?,
            price(it().map(|b| b.high.raw()))?,
            price(it().map(|b| b.low.raw()))?,
            price(it().map(|b| b.close.raw()))?,
            volume(it().map(|b| b.volume.raw()))?,
            opt_price(it().map(|b| b.vwap.map(|p| p.raw())))?,
            opt_u64(it().map(|b| b.trade_count)),
            Arc::new(it().map(|b| Some(b.is_final)).collect::<BooleanArray>()),
            Arc::new(it().map(|b| b.source.as_deref()).collect::<StringArray>()),
        ],
    )
}

pub(crate) fn daily_metrics(rows: &[&DailyMetric]) -> Result<RecordBatch> {
    let it = || rows.iter();
    batch(
        Table::DailyMetrics,
        vec![
            text(it().map(|m| m.symbol.as_str())),
            Arc::new(Date32Array::from_iter_values(it().map(|m| m.date.0))),
            price(it().map(|m| m.open.raw()))?,
            price(it().map(|m| m.high.raw()))?,
            price(it().map(|m| m.low.raw()))?,
            price(it().map(|m| m.close.raw()))?,
            volume(it().map(|m| m.volume.raw()))?,
            Arc::new(Float64Array::from_iter_values(it().map(|m| m.volatility))),
            price(it().map(|m| m.rolling_avg_5d.raw()))?,
            Arc::new(it().map(|m| m.daily_pct_change).collect::<Float64Array>()),
        ],
    )
}

pub(crate) fn alerts(rows: &[&Alert]) -> Result<RecordBatch> {
    let it = || rows.iter();
    batch(
        Table::Alerts,
        vec![
            text(it().map(|a| a.alert_id.as_str())),
            text(it().map(|a| a.rule.as_str())),
            text(it().map(|a| a.symbol.as_str())),
            ts(it().map(|a| a.ts.0)),
            price(it().map(|a| a.value.raw()))?,
            text(it().map(|a| a.threshold.as_str())),
            text(it().map(|a| a.message.as_str())),
            text(it().map(|a| a.severity.as_str())),
            text(it().map(|a| a.delivered_to.as_str())),
            text(it().map(|a| a.kind.as_str())),
        ],
    )
}

pub(crate) fn dlq(rows: &[&DlqRecord]) -> Result<RecordBatch> {
    let it = || rows.iter();
    batch(
        Table::Dlq,
        vec![
            ts(it().map(|d| d.ts.0)),
            text(it().map(|d| d.source.as_str())),
            opt_u64(it().map(|d| d.offset)),
            text(it().map(|d| d.reason.as_str())),
            text(it().map(|d| d.error.as_str())),
            text(it().map(|d| d.payload.as_str())),
        ],
    )
}

pub(crate) fn alert_deliveries(rows: &[&AlertDelivery]) -> Result<RecordBatch> {
    let it = || rows.iter();
    batch(
        Table::AlertDeliveries,
        vec![
            text(it().map(|d| d.alert_id.as_str())),
            text(it().map(|d| d.notifier.as_str())),
            ts(it().map(|d| d.ts.0)),
            text(it().map(|d| d.status.as_str())),
            Arc::new(UInt64Array::from_iter_values(
                it().map(|d| u64::from(d.attempts)),
            )),
            Arc::new(StringArray::from_iter(it().map(|d| d.error.as_deref()))),
        ],
    )
}

/// `batch` with `schema`'s columns, matched by name and cast to its types (the same batch if
/// they already are): files written before prices were stored as 64-bit decimals carry
/// DECIMAL128, files from before a column was added lack it (it reads as null), and SQL
/// reads unflushed rows in its own types.
///
/// # Errors
/// A column that does not cast to its field's type, or a missing one that may not be null.
pub fn cast_to(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => arrow::compute::cast(column, field.data_type()),
            // A column added since the file was written: null in every row, when it may be.
            None if field.is_nullable() => Ok(arrow::array::new_null_array(
                field.data_type(),
                batch.num_rows(),
            )),
            None => Err(ArrowError::SchemaError(format!(
                "no column {:?}",
                field.name()
            ))),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// All of one table's rows as a single batch (for the unflushed part of queries).
///
/// # Errors
/// Only if a value does not fit its column type, which validation prevents.
pub fn to_batch(table: Table, rows: &Rows) -> Result<RecordBatch> {
    fn refs<T>(v: &[T]) -> Vec<&T> {
        v.iter().collect()
    }
    match table {
        Table::Trades => trades(&refs(&rows.trades)),
        Table::Quotes => quotes(&refs(&rows.quotes)),
        Table::Bars => bars(&refs(&rows.bars)),
        Table::DailyMetrics => daily_metrics(&refs(&rows.daily_metrics)),
        Table::Alerts => alerts(&refs(&rows.alerts)),
        Table::Dlq => dlq(&refs(&rows.dlq)),
        Table::AlertDeliveries => alert_deliveries(&refs(&rows.alert_deliveries)),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use tickflow_model::{Price, Qty, Symbol, UnixNanos};

    use super::*;

    fn trade(symbol: &str, source: &str) -> Trade {
        Trade {
            symbol: Symbol::parse(symbol).unwrap(),
            ts_event: UnixNanos(1),
            ts_recv: UnixNanos(2),
            price: Price::parse("1.5").unwrap(),
            size: Qty::parse("3").unwrap(),
            trade_id: None,
            exchange: None,
            source: Arc::from(source),
            feed: Arc::from("iex"),
            seq: None,
        }
    }

    #[test]
    fn text_columns_hold_each_rows_value_repeated_or_not() {
        // Equal text in separate allocations, and a last row that differs.
        let rows = [
            trade("NVDA", "alpaca"),
            trade("NVDA", "alpaca"),
            trade("NVDA", "polygon"),
        ];
        let refs: Vec<&Trade> = rows.iter().collect();
        let batch = trades(&refs).unwrap();
        let column = |name: &str| -> Vec<String> {
            let c = batch.column_by_name(name).unwrap().as_string::<i32>();
            assert_eq!(c.null_count(), 0);
            c.iter().map(|v| v.unwrap().to_string()).collect()
        };
        assert_eq!(column("symbol"), ["NVDA", "NVDA", "NVDA"]);
        assert_eq!(column("source"), ["alpaca", "alpaca", "polygon"]);
        assert_eq!(column("feed"), ["iex", "iex", "iex"]);
        assert_eq!(trades(&refs[..1]).unwrap().num_rows(), 1);
        assert_eq!(trades(&[]).unwrap().num_rows(), 0);
    }

    #[test]
    fn trades_fill_every_column_from_their_row() {
        let mut rows = [trade("NVDA", "alpaca"), trade("AAPL", "alpaca")];
        rows[0].trade_id = Some("t-1".into());
        rows[0].exchange = Some(Arc::from("V"));
        rows[0].seq = Some(7);
        rows[1].ts_event = UnixNanos(10);
        rows[1].ts_recv = UnixNanos(11);
        rows[1].price = Price::parse("-2.25").unwrap();
        rows[1].size = Qty::parse("0.000000001").unwrap();
        rows[1].feed = Arc::from("sip");
        let refs: Vec<&Trade> = rows.iter().collect();
        let batch = trades(&refs).unwrap();
        let text = |name: &str| -> Vec<Option<String>> {
            let c = batch.column_by_name(name).unwrap().as_string::<i32>();
            c.iter().map(|v| v.map(str::to_string)).collect()
        };
        let some =
            |v: &[&str]| -> Vec<Option<String>> { v.iter().map(|s| Some(s.to_string())).collect() };
        assert_eq!(text("symbol"), some(&["NVDA", "AAPL"]));
        assert_eq!(text("trade_id"), [Some("t-1".to_string()), None]);
        assert_eq!(text("exchange"), [Some("V".to_string()), None]);
        assert_eq!(text("source"), some(&["alpaca", "alpaca"]));
        assert_eq!(text("feed"), some(&["iex", "sip"]));
        let ts = |name: &str| -> Vec<i64> {
            let c = batch.column_by_name(name).unwrap();
            c.as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                .values()
                .to_vec()
        };
        assert_eq!(ts("ts_event"), [1, 10]);
        assert_eq!(ts("ts_recv"), [2, 11]);
        let units = |name: &str| -> Vec<i64> {
            let c = batch.column_by_name(name).unwrap();
            c.as_primitive::<arrow::datatypes::Decimal64Type>()
                .values()
                .to_vec()
        };
        assert_eq!(units("price"), [1_500_000_000, -2_250_000_000]);
        assert_eq!(units("size"), [3_000_000_000, 1]);
        let seq = batch.column_by_name("seq").unwrap();
        let seq = seq.as_primitive::<arrow::datatypes::UInt64Type>();
        assert_eq!(seq.iter().collect::<Vec<_>>(), [Some(7), None]);
    }

    #[test]
    fn quotes_fill_every_column_from_their_row() {
        let quote = |symbol: &str, bid: &str, ask: &str, seq| Quote {
            symbol: Symbol::parse(symbol).unwrap(),
            ts_event: UnixNanos(5),
            ts_recv: UnixNanos(6),
            bid: Price::parse(bid).unwrap(),
            bid_size: Qty::parse("2").unwrap(),
            ask: Price::parse(ask).unwrap(),
            ask_size: Qty::parse("4").unwrap(),
            source: Arc::from("http"),
            feed: Arc::from("http"),
            seq,
        };
        let rows = [
            quote("NVDA", "1.25", "1.5", Some(1)),
            quote("MSFT", "3", "3.5", None),
        ];
        let refs: Vec<&Quote> = rows.iter().collect();
        let batch = quotes(&refs).unwrap();
        let units = |name: &str| -> Vec<i64> {
            let c = batch.column_by_name(name).unwrap();
            c.as_primitive::<arrow::datatypes::Decimal64Type>()
                .values()
                .to_vec()
        };
        assert_eq!(units("bid"), [1_250_000_000, 3_000_000_000]);
        assert_eq!(units("ask"), [1_500_000_000, 3_500_000_000]);
        assert_eq!(units("bid_size"), [2_000_000_000; 2]);
        assert_eq!(units("ask_size"), [4_000_000_000; 2]);
        let symbols = batch.column_by_name("symbol").unwrap().as_string::<i32>();
        assert_eq!(
            symbols.iter().collect::<Vec<_>>(),
            [Some("NVDA"), Some("MSFT")]
        );
        let seq = batch.column_by_name("seq").unwrap();
        let seq = seq.as_primitive::<arrow::datatypes::UInt64Type>();
        assert_eq!(seq.iter().collect::<Vec<_>>(), [Some(1), None]);
    }

    #[test]
    fn a_size_beyond_the_column_is_an_error_not_a_wrapped_number() {
        let mut row = trade("NVDA", "alpaca");
        row.size = Qty::from_raw(u64::MAX, 0);
        let error = trades(&[&row]).unwrap_err().to_string();
        assert!(error.contains("do not fit DECIMAL(18, 9)"), "{error}");
    }
}
