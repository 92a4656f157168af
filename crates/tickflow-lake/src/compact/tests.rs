use std::fs::File;
use std::sync::Arc;

use arrow::array::{Array, AsArray, TimestampNanosecondArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tickflow_model::{Price, Qty, Symbol, Trade, UnixNanos};

use super::*;
use crate::Rows;

const DAY: i64 = 86_400 * 1_000_000_000;
const DAY0: i64 = 20_000;

fn trade(sym: &str, day: i64, n: i64) -> Trade {
    Trade {
        symbol: Symbol::parse(sym).unwrap(),
        ts_event: UnixNanos((DAY0 + day) * DAY + n),
        ts_recv: UnixNanos(0),
        price: Price::parse("10.5").unwrap(),
        size: Qty::parse("1").unwrap(),
        trade_id: None,
        exchange: None,
        source: Arc::from("test"),
        feed: Arc::from("test"),
        seq: Some(n as u64),
    }
}

/// Flushes 1..=flushes, each with trades of AAPL on days 0 and 1 and of MSFT on day 1, in
/// descending time inside a flush so sorting shows.
fn lake_with_flushes(dir: &Path, flushes: u64) -> Lake {
    let lake = Lake::open(dir).unwrap();
    for seq in 1..=flushes {
        let mut rows = Rows::default();
        for n in (0..3).rev() {
            let n = seq as i64 * 10 + n;
            rows.trades.push(trade("AAPL", 0, n));
            rows.trades.push(trade("AAPL", 1, n));
            rows.trades.push(trade("MSFT", 1, n));
        }
        lake.write(&rows, seq).unwrap();
    }
    lake
}

fn read(paths: &[PathBuf]) -> Vec<i64> {
    let mut ts = Vec::new();
    for path in paths {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = batch.column_by_name("ts_event").unwrap();
            let col = col
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .unwrap();
            ts.extend((0..col.len()).map(|i| col.value(i)));
        }
    }
    ts
}

fn on_disk(lake: &Lake) -> usize {
    lake.stored(lake.root())
        .unwrap()
        .iter()
        .filter(|(p, _)| seq_range_of(p).is_some())
        .count()
}

/// Flush ranges of the trades files on day `d`, in listing order.
fn ranges_on(lake: &Lake, d: i64) -> Vec<(u64, u64)> {
    lake.files(Table::Trades, u64::MAX)
        .unwrap()
        .into_iter()
        .filter(|p| folder_date(p) == Some(day(d)))
        .map(|p| seq_range_of(&p).unwrap())
        .collect()
}

fn day(d: i64) -> Date {
    UnixNanos((DAY0 + d) * DAY).date()
}

#[test]
fn names_carry_the_sequences_they_hold() {
    assert_eq!(
        seq_range_of(Path::new("a/part-000000000007-00003.parquet")),
        Some((7, 7))
    );
    assert_eq!(
        seq_range_of(Path::new("part-000000000009-c000000000002.parquet")),
        Some((2, 9))
    );
    assert_eq!(
        seq_range_of(Path::new(".part-000000000009-c2.parquet.tmp")),
        None
    );
    assert_eq!(seq_range_of(Path::new("part-x-1.parquet")), None);
    assert_eq!(
        crate::flush_seq_of(Path::new("part-000000000009-c000000000002.parquet")),
        Some(9)
    );
}

#[test]
fn closed_days_become_one_sorted_file_per_folder_with_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_flushes(dir.path(), 5);
    let before = lake.files(Table::Trades, u64::MAX).unwrap();
    assert_eq!(before.len(), 15);
    let mut rows_before = read(&before);

    let report = lake.compact(5, day(2), CompactPolicy::default()).unwrap();
    assert_eq!(
        report,
        CompactReport {
            inputs: 15,
            outputs: 3,
            rows: 45
        }
    );
    let after = lake.files(Table::Trades, 5).unwrap();
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(
        after.iter().all(|p| seq_range_of(p) == Some((1, 5))),
        "{after:?}"
    );
    assert_eq!(on_disk(&lake), 3, "the inputs are deleted");
    let rows_after = read(&after);
    for path in &after {
        let ts = read(std::slice::from_ref(path));
        assert!(ts.is_sorted(), "{path:?} is sorted by time: {ts:?}");
    }
    let mut sorted_after = rows_after.clone();
    rows_before.sort_unstable();
    sorted_after.sort_unstable();
    assert_eq!(rows_before, sorted_after, "same rows, none lost or doubled");

    // Nothing left to do, and later flushes merge with the merged file once the day closes.
    assert_eq!(
        lake.compact(5, day(2), CompactPolicy::default())
            .unwrap()
            .outputs,
        0
    );
    let mut rows = Rows::default();
    rows.trades.push(trade("AAPL", 0, 1_000));
    lake.write(&rows, 6).unwrap();
    let report = lake.compact(6, day(2), CompactPolicy::default()).unwrap();
    assert_eq!((report.inputs, report.outputs), (2, 1));
    let files = lake.files(Table::Trades, 6).unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(read(&files).len(), 46);
}

#[test]
fn an_open_day_waits_for_enough_files_and_uncommitted_flushes_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_flushes(dir.path(), 4);
    let policy = CompactPolicy {
        min_files: 3,
        ..CompactPolicy::default()
    };
    // Day 1 is today: AAPL and MSFT there have 4 flush files each, but only 2 committed.
    let report = lake.compact(2, day(1), policy).unwrap();
    assert_eq!(
        report.outputs, 1,
        "only day 0 (closed) is merged: {report:?}"
    );
    assert_eq!(ranges_on(&lake, 1).len(), 8);
    let report = lake.compact(3, day(1), policy).unwrap();
    assert_eq!(
        report.outputs, 3,
        "day 0 again, and 3 committed flush files in each of today's folders"
    );
    assert_eq!(ranges_on(&lake, 1), vec![(1, 3), (4, 4), (1, 3), (4, 4)]);
    // Today's merged files are not merged again while the day is open; day 0 is.
    assert_eq!(lake.compact(4, day(1), policy).unwrap().outputs, 1);
}

#[test]
fn large_files_are_left_alone_and_bound_the_merge() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_flushes(dir.path(), 3);
    let folder = lake.files(Table::Trades, 3).unwrap()[0]
        .parent()
        .unwrap()
        .to_path_buf();
    let size = fs::metadata(lake.files(Table::Trades, 3).unwrap()[0].as_path())
        .unwrap()
        .len();
    // Two files fit under the target, three do not.
    let policy = CompactPolicy {
        target_bytes: size * 2 + 64,
        min_files: 2,
    };
    lake.compact(3, day(2), policy).unwrap();
    let mut ranges: Vec<_> = lake
        .files(Table::Trades, 3)
        .unwrap()
        .into_iter()
        .filter(|p| p.parent() == Some(folder.as_path()))
        .map(|p| seq_range_of(&p).unwrap())
        .collect();
    ranges.sort_unstable();
    assert_eq!(ranges, vec![(1, 2), (3, 3)]);
}

#[test]
fn a_crash_between_merge_and_delete_leaves_nothing_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_flushes(dir.path(), 2);
    let inputs = lake.files(Table::Trades, 2).unwrap();
    let saved: Vec<(PathBuf, Vec<u8>)> = inputs
        .iter()
        .map(|p| (p.clone(), fs::read(p).unwrap()))
        .collect();
    lake.compact(2, day(2), CompactPolicy::default()).unwrap();
    // As if the process died after the rename: the inputs are still there.
    for (path, bytes) in &saved {
        fs::write(path, bytes).unwrap();
    }
    fs::write(
        dir.path()
            .join("trades")
            .join(".part-000000000002-c000000000001.parquet.tmp"),
        b"x",
    )
    .unwrap();
    let files = lake.files(Table::Trades, 2).unwrap();
    assert_eq!(files.len(), 3, "readers skip superseded files: {files:?}");
    let first_flush = lake.files(Table::Trades, 1).unwrap();
    assert_eq!(
        first_flush.len(),
        3,
        "a reader at flush 1 gets flush 1's files, not the merged ones: {first_flush:?}"
    );
    assert!(first_flush.iter().all(|p| seq_range_of(p) == Some((1, 1))));
    assert_eq!(read(&files).len(), 18);
    assert_eq!(lake.recover(2).unwrap(), saved.len() + 1);
    assert_eq!(on_disk(&lake), 3);
}

#[test]
fn files_with_128_bit_prices_merge_into_the_current_types() {
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;

    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_flushes(dir.path(), 5);
    // One flush file rewritten as earlier versions stored prices: DECIMAL128 in Arrow.
    let old = lake.files(Table::Trades, u64::MAX).unwrap()[0].clone();
    let batch = crate::writer::first_batch(&old);
    let widen = |t: &DataType| match t {
        DataType::Decimal64(p, s) => DataType::Decimal128(*p, *s),
        t => t.clone(),
    };
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(widen(f.data_type())))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = cast_to(&batch, &schema).unwrap();
    let mut writer = ArrowWriter::try_new(File::create(&old).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let report = lake.compact(5, day(2), CompactPolicy::default()).unwrap();
    assert_eq!(report.rows, 45);
    for path in lake.files(Table::Trades, 5).unwrap() {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let price = batch.column_by_name("price").unwrap();
            assert_eq!(price.data_type(), &DataType::Decimal64(18, 9), "{path:?}");
            let price = price.as_primitive::<arrow::datatypes::Decimal64Type>();
            assert!(price.values().iter().all(|&p| p == 10_500_000_000));
        }
    }
}

#[test]
fn retention_deletes_old_days_but_keeps_what_a_lagging_sink_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_flushes(dir.path(), 3);
    let day0 = dir.path().join(format!("trades/date={}", day(0)));
    // Flush 3 is not yet written by every sink: its day-0 file stays.
    assert_eq!(lake.expire(&[Table::Trades], day(1), 2).unwrap(), 2);
    assert_eq!(ranges_on(&lake, 0), [(3, 3)]);
    assert_eq!(ranges_on(&lake, 1).len(), 6, "day 1 is not old enough");
    assert_eq!(lake.expire(&[Table::Trades], day(1), 3).unwrap(), 1);
    assert!(ranges_on(&lake, 0).is_empty());
    assert!(!day0.exists(), "the emptied day's folder goes too");
    assert_eq!(lake.expire(&[Table::Trades], day(1), 3).unwrap(), 0);
}
