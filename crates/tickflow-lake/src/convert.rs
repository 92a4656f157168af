//! Rows to Arrow record batches, one function per table, columns in schema order.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal64Array, Decimal128Array, Float64Array,
    StringArray, TimestampNanosecondArray, UInt64Array,
};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use tickflow_model::{Alert, Bar, DailyMetric, DlqRecord, Quote, Trade};

use crate::table::{PRICE_DIGITS, VOLUME_DIGITS};
use crate::{Error, Result, Rows, Table};

fn ts(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter_values(values).with_timezone("UTC"))
}

/// Prices and sizes: 64-bit decimals, as Parquet stores them (an INT64 column), so that a
/// reader asking for them as such gets the file's values without widening each one.
/// Validation keeps every value under 10^18 units (DECIMAL(18, 9)); one that is not is an
/// error here, not a wrapped number.
fn price<T: Into<i128>>(values: impl Iterator<Item = T>) -> Result<ArrayRef> {
    let (p, s) = PRICE_DIGITS;
    let error = |source| Error::Arrow {
        table: "decimal",
        source,
    };
    let values = values
        .map(|v| {
            let v = v.into();
            i64::try_from(v).map_err(|_| {
                error(ArrowError::InvalidArgumentError(format!(
                    "{v} units of 10^-9 do not fit DECIMAL({p}, {s})"
                )))
            })
        })
        .collect::<Result<Vec<i64>>>()?;
    let array = Decimal64Array::from(values)
        .with_precision_and_scale(p, s)
        .map_err(error)?;
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
    let mut rest = values.clone();
    if let Some(first) = rest.next() {
        let mut rows = 1;
        let same = rest.all(|v| {
            rows += 1;
            std::ptr::eq(v, first) || v == first
        });
        if same {
            return Arc::new(StringArray::new_repeated(first, rows));
        }
    }
    Arc::new(StringArray::from_iter_values(values))
}

fn opt_text<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
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

pub(crate) fn trades(rows: &[&Trade]) -> Result<RecordBatch> {
    let it = || rows.iter();
    batch(
        Table::Trades,
        vec![
            text(it().map(|t| t.symbol.as_str())),
            ts(it().map(|t| t.ts_event.0)),
            ts(it().map(|t| t.ts_recv.0)),
            price(it().map(|t| t.price.raw()))?,
            price(it().map(|t| t.size.raw()))?,
            opt_text(it().map(|t| t.trade_id.as_deref())),
            opt_text(it().map(|t| t.exchange.as_deref())),
            text(it().map(|t| &*t.source)),
            text(it().map(|t| &*t.feed)),
            opt_u64(it().map(|t| t.seq)),
        ],
    )
}

pub(crate) fn quotes(rows: &[&Quote]) -> Result<RecordBatch> {
    let it = || rows.iter();
    batch(
        Table::Quotes,
        vec![
            text(it().map(|q| q.symbol.as_str())),
            ts(it().map(|q| q.ts_event.0)),
            ts(it().map(|q| q.ts_recv.0)),
            price(it().map(|q| q.bid.raw()))?,
            price(it().map(|q| q.bid_size.raw()))?,
            price(it().map(|q| q.ask.raw()))?,
            price(it().map(|q| q.ask_size.raw()))?,
            text(it().map(|q| &*q.source)),
            text(it().map(|q| &*q.feed)),
            opt_u64(it().map(|q| q.seq)),
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
            price(it().map(|b| b.vwap.raw()))?,
            Arc::new(UInt64Array::from_iter_values(it().map(|b| b.trade_count))),
            Arc::new(it().map(|b| Some(b.is_final)).collect::<BooleanArray>()),
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

/// `batch` with its columns cast to `schema`'s types (the same batch if they already are):
/// files written before prices were stored as 64-bit decimals carry DECIMAL128, and SQL
/// reads unflushed rows in its own types.
///
/// # Errors
/// A column that does not cast to its field's type.
pub fn cast_to(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| arrow::compute::cast(column, field.data_type()))
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
}
