//! Rows to Arrow record batches, one function per table, columns in schema order.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, StringArray,
    TimestampNanosecondArray, UInt64Array,
};
use arrow::record_batch::RecordBatch;
use tickflow_model::{Alert, Bar, DailyMetric, DlqRecord, Quote, Trade};

use crate::table::{PRICE, VOLUME};
use crate::{Error, Result, Rows, Table};

fn ts(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter_values(values).with_timezone("UTC"))
}

fn dec(values: impl Iterator<Item = i128>, wide: bool) -> Result<ArrayRef> {
    let (p, s) = match if wide { VOLUME } else { PRICE } {
        arrow::datatypes::DataType::Decimal128(p, s) => (p, s),
        _ => (38, 9),
    };
    let array = Decimal128Array::from_iter_values(values)
        .with_precision_and_scale(p, s)
        .map_err(|source| Error::Arrow {
            table: "decimal",
            source,
        })?;
    Ok(Arc::new(array))
}

fn text<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
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
            dec(it().map(|t| i128::from(t.price.raw())), false)?,
            dec(it().map(|t| i128::from(t.size.raw())), false)?,
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
            dec(it().map(|q| i128::from(q.bid.raw())), false)?,
            dec(it().map(|q| i128::from(q.bid_size.raw())), false)?,
            dec(it().map(|q| i128::from(q.ask.raw())), false)?,
            dec(it().map(|q| i128::from(q.ask_size.raw())), false)?,
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
            dec(it().map(|b| i128::from(b.open.raw())), false)?,
            dec(it().map(|b| i128::from(b.high.raw())), false)?,
            dec(it().map(|b| i128::from(b.low.raw())), false)?,
            dec(it().map(|b| i128::from(b.close.raw())), false)?,
            dec(it().map(|b| b.volume.raw()), true)?,
            dec(it().map(|b| i128::from(b.vwap.raw())), false)?,
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
            dec(it().map(|m| i128::from(m.open.raw())), false)?,
            dec(it().map(|m| i128::from(m.high.raw())), false)?,
            dec(it().map(|m| i128::from(m.low.raw())), false)?,
            dec(it().map(|m| i128::from(m.close.raw())), false)?,
            dec(it().map(|m| m.volume.raw()), true)?,
            Arc::new(Float64Array::from_iter_values(it().map(|m| m.volatility))),
            dec(it().map(|m| i128::from(m.rolling_avg_5d.raw())), false)?,
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
            dec(it().map(|a| i128::from(a.value.raw())), false)?,
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
