//! Parquet back into rows: how a sink that fell behind catches up from the lake's flushes,
//! and how the lake's own files are replayed. The inverse of `convert`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    Date32Type, Decimal64Type, Decimal128Type, Float64Type, TimestampNanosecondType, UInt64Type,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tickflow_model::{
    Alert, AlertDelivery, AlertKind, Bar, BarInterval, DailyMetric, Date, DeliveryStatus,
    DlqRecord, MAX_PRECISION, Price, Qty, Quote, RejectReason, Severity, Symbol, Trade, UnixNanos,
    Volume,
};

use crate::{Error, Lake, Result, Rows, Table, cast_to};

// The lake keeps a value, not the precision it arrived with: `181.250000000` reads back
// as `181.25`.
fn price(raw: i64) -> Price {
    Price::from_raw(raw, MAX_PRECISION).normalized()
}

fn qty(path: &Path, raw: i64) -> Result<Qty> {
    let raw = u64::try_from(raw).map_err(|_| bad(path, format!("negative size {raw}")))?;
    Ok(Qty::from_raw(raw, MAX_PRECISION).normalized())
}

fn volume(raw: i128) -> Volume {
    Volume::from_raw(raw, MAX_PRECISION).normalized()
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Read {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Typed access to one batch's columns, in schema order.
struct Columns<'a> {
    batch: &'a RecordBatch,
    path: &'a Path,
}

impl<'a> Columns<'a> {
    fn text(&self, i: usize) -> &'a arrow::array::StringArray {
        self.batch.column(i).as_string::<i32>()
    }
    fn ts(&self, i: usize) -> &'a arrow::array::TimestampNanosecondArray {
        self.batch
            .column(i)
            .as_primitive::<TimestampNanosecondType>()
    }
    fn dec(&self, i: usize) -> &'a arrow::array::Decimal64Array {
        self.batch.column(i).as_primitive::<Decimal64Type>()
    }
    fn wide(&self, i: usize) -> &'a arrow::array::Decimal128Array {
        self.batch.column(i).as_primitive::<Decimal128Type>()
    }
    fn u64(&self, i: usize) -> &'a arrow::array::UInt64Array {
        self.batch.column(i).as_primitive::<UInt64Type>()
    }
    fn f64(&self, i: usize) -> &'a arrow::array::Float64Array {
        self.batch.column(i).as_primitive::<Float64Type>()
    }
    fn opt_text(&self, i: usize, row: usize) -> Option<&'a str> {
        let c = self.text(i);
        c.is_valid(row).then(|| c.value(row))
    }
    fn opt_u64(&self, i: usize, row: usize) -> Option<u64> {
        let c = self.u64(i);
        c.is_valid(row).then(|| c.value(row))
    }
    fn symbol(&self, i: usize, row: usize) -> Result<Symbol> {
        Symbol::parse(self.text(i).value(row)).map_err(|e| bad(self.path, e.to_string()))
    }
}

/// Appends the rows of one batch of `table` (in the lake's schema, or one that casts to it).
///
/// # Errors
/// A column that does not cast, or a value the model refuses (a file not written by tickflow).
pub fn rows_from_batch(
    path: &Path,
    table: Table,
    batch: &RecordBatch,
    rows: &mut Rows,
) -> Result<()> {
    let batch = cast_to(batch, &table.schema()).map_err(|e| bad(path, e.to_string()))?;
    let c = Columns {
        batch: &batch,
        path,
    };
    let shared = |text: &str, last: &mut Option<Arc<str>>| -> Arc<str> {
        // Text that repeats row after row (source, feed) shares one allocation.
        match last {
            Some(s) if &**s == text => Arc::clone(s),
            _ => {
                let s: Arc<str> = Arc::from(text);
                *last = Some(Arc::clone(&s));
                s
            }
        }
    };
    let (mut source, mut feed) = (None, None);
    for row in 0..batch.num_rows() {
        match table {
            Table::Trades => rows.trades.push(Trade {
                symbol: c.symbol(0, row)?,
                ts_event: UnixNanos(c.ts(1).value(row)),
                ts_recv: UnixNanos(c.ts(2).value(row)),
                price: price(c.dec(3).value(row)),
                size: qty(path, c.dec(4).value(row))?,
                trade_id: c.opt_text(5, row).map(Into::into),
                exchange: c.opt_text(6, row).map(Arc::from),
                source: shared(c.text(7).value(row), &mut source),
                feed: shared(c.text(8).value(row), &mut feed),
                seq: c.opt_u64(9, row),
            }),
            Table::Quotes => rows.quotes.push(Quote {
                symbol: c.symbol(0, row)?,
                ts_event: UnixNanos(c.ts(1).value(row)),
                ts_recv: UnixNanos(c.ts(2).value(row)),
                bid: price(c.dec(3).value(row)),
                bid_size: qty(path, c.dec(4).value(row))?,
                ask: price(c.dec(5).value(row)),
                ask_size: qty(path, c.dec(6).value(row))?,
                source: shared(c.text(7).value(row), &mut source),
                feed: shared(c.text(8).value(row), &mut feed),
                seq: c.opt_u64(9, row),
            }),
            Table::Bars => rows.bars.push(Bar {
                symbol: c.symbol(0, row)?,
                interval: c
                    .text(1)
                    .value(row)
                    .parse::<BarInterval>()
                    .map_err(|e| bad(path, e.to_string()))?,
                start: UnixNanos(c.ts(2).value(row)),
                end: UnixNanos(c.ts(3).value(row)),
                open: price(c.dec(4).value(row)),
                high: price(c.dec(5).value(row)),
                low: price(c.dec(6).value(row)),
                close: price(c.dec(7).value(row)),
                volume: volume(c.wide(8).value(row)),
                vwap: {
                    let col = c.dec(9);
                    col.is_valid(row).then(|| price(col.value(row)))
                },
                trade_count: c.opt_u64(10, row),
                is_final: batch.column(11).as_boolean().value(row),
                source: c.opt_text(12, row).map(|s| shared(s, &mut source)),
            }),
            Table::DailyMetrics => rows.daily_metrics.push(DailyMetric {
                symbol: c.symbol(0, row)?,
                date: Date(batch.column(1).as_primitive::<Date32Type>().value(row)),
                open: price(c.dec(2).value(row)),
                high: price(c.dec(3).value(row)),
                low: price(c.dec(4).value(row)),
                close: price(c.dec(5).value(row)),
                volume: volume(c.wide(6).value(row)),
                volatility: c.f64(7).value(row),
                rolling_avg_5d: price(c.dec(8).value(row)),
                daily_pct_change: {
                    let col = c.f64(9);
                    col.is_valid(row).then(|| col.value(row))
                },
            }),
            Table::Alerts => rows.alerts.push(Alert {
                alert_id: c.text(0).value(row).to_string(),
                rule: c.text(1).value(row).to_string(),
                symbol: c.symbol(2, row)?,
                ts: UnixNanos(c.ts(3).value(row)),
                value: price(c.dec(4).value(row)),
                threshold: c.text(5).value(row).to_string(),
                message: c.text(6).value(row).to_string(),
                severity: match c.text(7).value(row) {
                    "info" => Severity::Info,
                    "warning" => Severity::Warning,
                    "critical" => Severity::Critical,
                    other => return Err(bad(path, format!("unknown severity {other:?}"))),
                },
                delivered_to: c.text(8).value(row).to_string(),
                kind: match c.opt_text(9, row) {
                    None => AlertKind::Fired,
                    Some(kind) => AlertKind::ALL
                        .into_iter()
                        .find(|k| k.as_str() == kind)
                        .ok_or_else(|| bad(path, format!("unknown alert kind {kind:?}")))?,
                },
            }),
            Table::Dlq => {
                let reason = c.text(3).value(row);
                rows.dlq.push(DlqRecord {
                    ts: UnixNanos(c.ts(0).value(row)),
                    source: c.text(1).value(row).to_string(),
                    offset: c.opt_u64(2, row),
                    reason: RejectReason::ALL
                        .into_iter()
                        .find(|r| r.as_str() == reason)
                        .ok_or_else(|| bad(path, format!("unknown DLQ reason {reason:?}")))?,
                    error: c.text(4).value(row).to_string(),
                    payload: c.text(5).value(row).to_string(),
                });
            }
            Table::AlertDeliveries => {
                let status = c.text(3).value(row);
                rows.alert_deliveries.push(AlertDelivery {
                    alert_id: c.text(0).value(row).to_string(),
                    notifier: c.text(1).value(row).to_string(),
                    ts: UnixNanos(c.ts(2).value(row)),
                    status: DeliveryStatus::ALL
                        .into_iter()
                        .find(|s| s.as_str() == status)
                        .ok_or_else(|| bad(path, format!("unknown delivery status {status:?}")))?,
                    attempts: u32::try_from(c.u64(4).value(row)).unwrap_or(u32::MAX),
                    error: c.opt_text(5, row).map(str::to_string),
                });
            }
        }
    }
    Ok(())
}

/// Every row of one of `table`'s Parquet files, appended to `rows`. A part of a tickflow
/// lake is checked against its sum first; a file from elsewhere has none and is read as
/// it is.
///
/// # Errors
/// The file cannot be read, is damaged, or does not hold `table`'s columns.
pub fn read_file(path: &Path, table: Table, rows: &mut Rows) -> Result<()> {
    let parquet = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    crate::checksum::verify_file(path)?;
    let file = File::open(path).map_err(crate::writer::io(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet)?;
    let reader = builder
        .with_batch_size(64 * 1024)
        .build()
        .map_err(parquet)?;
    for batch in reader {
        let batch = batch.map_err(|e| bad(path, e.to_string()))?;
        rows_from_batch(path, table, &batch, rows)?;
    }
    Ok(())
}

impl Lake {
    /// The rows of `table` in the files of flushes up to `max_seq`, a day at a time from the
    /// newest day stored back to `oldest` days before it, each day's handed to `take` until
    /// it says it has enough: recent history, for warming up indicators without reading the
    /// whole lake. Days are counted back from the newest stored, so history replayed from
    /// another year counts the same.
    ///
    /// # Errors
    /// The tree or a file cannot be read.
    pub fn read_back(
        &self,
        table: Table,
        max_seq: u64,
        oldest: i32,
        mut take: impl FnMut(Rows) -> bool,
    ) -> Result<()> {
        let mut by_day: BTreeMap<i32, Vec<PathBuf>> = BTreeMap::new();
        for path in self.files(table, max_seq)? {
            if let Some(day) = crate::compact::folder_date(&path) {
                by_day.entry(day.0).or_default().push(path);
            }
        }
        let Some(newest) = by_day.keys().next_back().copied() else {
            return Ok(());
        };
        let since = newest.saturating_sub(oldest);
        for (_, paths) in by_day.range(since..).rev() {
            let mut rows = Rows::default();
            for path in paths {
                for batch in self.batches(path)? {
                    let batch = batch.map_err(|e| bad(path, e.to_string()))?;
                    rows_from_batch(path, table, &batch, &mut rows)?;
                }
            }
            if take(rows) {
                break;
            }
        }
        Ok(())
    }

    /// The rows of the flushes after `after`, with the last flush they hold: the runs
    /// `after + 1 ..= last` that no file spans past (one flush, or several that compaction
    /// joined), as many in a row as fit in [`READ_ROWS`] rows or [`READ_RUNS`] runs. A sink
    /// far behind thus catches up many small (or empty) flushes per listing instead of one.
    /// Files of flushes after `max_seq` (not yet committed) are not read.
    ///
    /// # Errors
    /// [`Error::Compacted`] when a merged file holds flushes on both sides of `after`, so the
    /// rows past `after` cannot be told apart; or a file cannot be read.
    pub fn read_flushes(&self, after: u64, max_seq: u64) -> Result<(u64, Rows)> {
        if after >= max_seq {
            return Ok((after, Rows::default()));
        }
        let mut files = Vec::new();
        for table in Table::ALL {
            for path in self.files(table, max_seq)? {
                if let Some((first, last)) = crate::seq_range_of(&path)
                    && last > after
                {
                    if first <= after {
                        return Err(Error::Compacted {
                            path,
                            position: after,
                        });
                    }
                    files.push((table, first, last, path));
                }
            }
        }
        files.sort_by_key(|(_, first, _, _)| *first);
        let mut rows = Rows::default();
        let mut end = after;
        let mut next_file = 0;
        for _ in 0..READ_RUNS {
            if end >= max_seq || rows.len() >= READ_ROWS {
                break;
            }
            // A run ends where no file that starts inside it ends later.
            let start = end + 1;
            let mut run_end = start;
            loop {
                let widest = files[next_file..]
                    .iter()
                    .take_while(|(_, first, _, _)| *first <= run_end)
                    .map(|(_, _, last, _)| *last)
                    .max()
                    .unwrap_or(run_end);
                if widest <= run_end {
                    break;
                }
                run_end = widest;
            }
            while let Some((table, first, _, path)) = files.get(next_file) {
                if *first > run_end {
                    break;
                }
                for batch in self.batches(path)? {
                    let batch = batch.map_err(|e| bad(path, e.to_string()))?;
                    rows_from_batch(path, *table, &batch, &mut rows)?;
                }
                next_file += 1;
            }
            end = run_end;
        }
        Ok((end, rows))
    }
}

/// Rows [`Lake::read_flushes`] gathers before it stops at a run's end: enough that a sink
/// behind on many small flushes catches up quickly, few enough to keep memory small.
pub(crate) const READ_ROWS: usize = 200_000;
/// Runs (flushes) [`Lake::read_flushes`] reads at most in one call.
pub(crate) const READ_RUNS: usize = 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_is_the_fewest_exact_digits() {
        assert_eq!(price(181_250_000_000).to_string(), "181.25");
        assert_eq!(price(100_000_000_000).to_string(), "100");
        assert_eq!(price(1).to_string(), "0.000000001");
        assert_eq!(price(0).to_string(), "0");
        assert_eq!(price(-5_000_000).to_string(), "-0.005");
    }

    fn sorted(mut rows: Rows) -> Rows {
        rows.trades.sort_by_key(|t| t.seq);
        rows.quotes.sort_by_key(|q| (q.ts_event, q.symbol.clone()));
        rows.bars.sort_by_key(|b| (b.symbol.clone(), b.start));
        rows.daily_metrics
            .sort_by_key(|m| (m.symbol.clone(), m.date));
        rows.alerts.sort_by(|a, b| a.alert_id.cmp(&b.alert_id));
        rows.dlq.sort_by_key(|d| (d.ts, d.offset));
        rows.alert_deliveries
            .sort_by(|a, b| (&a.alert_id, &a.notifier).cmp(&(&b.alert_id, &b.notifier)));
        rows
    }

    fn same(a: &Rows, b: &Rows) {
        assert_eq!(a.trades, b.trades);
        assert_eq!(a.quotes, b.quotes);
        assert_eq!(a.bars, b.bars);
        assert_eq!(a.daily_metrics, b.daily_metrics);
        assert_eq!(a.alerts, b.alerts);
        assert_eq!(a.dlq, b.dlq);
        assert_eq!(a.alert_deliveries, b.alert_deliveries);
    }

    /// Every file under `dir`.
    fn parts(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(parts(&path));
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn a_byte_flipped_in_a_part_is_named_and_never_read_or_merged() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        lake.write(&tickflow_core::contract::sample_rows(1, 20), 1)
            .unwrap();
        lake.write(&tickflow_core::contract::sample_rows(1, 9), 2)
            .unwrap();
        assert!(lake.read_flushes(0, 2).is_ok());
        let mut files = parts(dir.path());
        files.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
        // The largest part; one byte inside its pages (past the 4-byte magic, well before the
        // footer) inverted.
        let damaged = files.last().unwrap().clone();
        assert_eq!(lake.verify_part(&damaged).unwrap(), crate::Verdict::Matched);
        let mut bytes = std::fs::read(&damaged).unwrap();
        bytes[8] ^= 0xff;
        std::fs::write(&damaged, &bytes).unwrap();
        // Every way in names it: the scrub, a query's first map of it, replay.
        let named = |e: Error| {
            let e = e.to_string();
            assert!(
                e.contains(&damaged.display().to_string()) && e.contains("checksum mismatch"),
                "{e}"
            );
        };
        named(lake.verify_part(&damaged).unwrap_err());
        named(
            crate::checksum::verify_bytes(&damaged, &bytes::Bytes::from(bytes.clone()))
                .unwrap_err(),
        );
        let table = Table::ALL
            .into_iter()
            .find(|t| damaged.starts_with(lake.table_dir(*t)))
            .unwrap();
        named(read_file(&damaged, table, &mut Rows::default()).unwrap_err());
        assert!(
            tickflow_core::damage::found()
                .iter()
                .any(|(path, reason)| *path == damaged && reason.contains("checksum")),
            "not recorded for /metrics"
        );
        // Cut short: the sum covers more bytes than the file has.
        let mut cut = bytes.clone();
        cut.drain(100..200);
        let e = crate::checksum::verify_bytes(&damaged, &bytes::Bytes::from(cut))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is damaged"), "{e}");
        let e = lake.read_flushes(0, 2).unwrap_err().to_string();
        assert!(
            e.contains(&damaged.display().to_string()) && e.contains("checksum mismatch"),
            "{e}"
        );
        let e = lake
            .compact(
                2,
                UnixNanos::now().date(),
                crate::CompactPolicy {
                    min_files: 2,
                    ..Default::default()
                },
            )
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is damaged"),
            "compaction merged a damaged part: {e}"
        );
    }

    #[test]
    fn a_flush_reads_back_as_written_and_merged_runs_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let first = tickflow_core::contract::sample_rows(1, 20);
        // Same days and symbols: the two flushes share folders, which compaction merges.
        let second = tickflow_core::contract::sample_rows(1, 9);
        lake.write(&first, 1).unwrap();
        lake.write(&second, 2).unwrap();
        let (end, rows) = lake.read_flushes(0, 1).unwrap();
        assert_eq!(end, 1);
        same(&sorted(rows), &sorted(first.clone()));
        let (end, rows) = lake.read_flushes(1, 2).unwrap();
        assert_eq!(end, 2);
        same(&sorted(rows), &sorted(second.clone()));
        // A reader behind gets every committed flush in one read while they are small.
        let (end, rows) = lake.read_flushes(0, 2).unwrap();
        assert_eq!(end, 2);
        assert_eq!(rows.len(), first.len() + second.len());
        assert_eq!(rows_len(&lake, 2, 2), (2, 0), "nothing past the last flush");
        assert_eq!(
            rows_len(&lake, 1, 1),
            (1, 0),
            "a flush not yet committed is not read"
        );
        // Precision is the value's own: 181.25 reads back with two digits.
        let (_, rows) = lake.read_flushes(0, 2).unwrap();
        assert!(rows.trades.iter().any(|t| t.price.to_string() == "181.25"));

        // Once compaction merged flushes 1 and 2 in a folder, a reader at 0 gets both as one
        // run, and a reader at 1 cannot be served.
        let today = UnixNanos::now().date();
        let report = lake
            .compact(
                2,
                today,
                crate::CompactPolicy {
                    min_files: 2,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(report.outputs > 0, "{report:?}");
        let (end, rows) = lake.read_flushes(0, 2).unwrap();
        assert_eq!(end, 2);
        assert_eq!(rows.len(), first.len() + second.len());
        assert!(matches!(
            lake.read_flushes(1, 2),
            Err(Error::Compacted { position: 1, .. })
        ));
    }

    fn rows_len(lake: &Lake, after: u64, max: u64) -> (u64, usize) {
        let (end, rows) = lake.read_flushes(after, max).unwrap();
        (end, rows.len())
    }
}
