//! The sinks of this crate against the sink contract, and the CSV sink's crash recovery.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use tickflow_core::contract::{Counts, check_sink, sample_rows};
use tickflow_core::sink::{Flush, Sink};
use tickflow_sinks::csv::{CsvConfig, CsvSink, TABLES};

fn config(dir: &Path, tables: &[&'static str]) -> CsvConfig {
    CsvConfig {
        dir: dir.to_path_buf(),
        tables: tables.to_vec(),
        fsync: true,
    }
}

/// Records per table over every day file, read back with a CSV reader (payloads hold
/// newlines and quotes), checking each file starts with its header.
fn counts(dir: &Path) -> Counts {
    let mut counts = BTreeMap::new();
    for table in TABLES {
        let Ok(days) = std::fs::read_dir(dir.join(table)) else {
            continue;
        };
        for day in days {
            let path = day.unwrap().path();
            let mut reader = csv::Reader::from_path(&path).unwrap();
            let header = reader.headers().unwrap().clone();
            assert!(
                header.get(0) == Some("symbol")
                    || header.get(0) == Some("alert_id")
                    || header.get(0) == Some("ts"),
                "{} starts with its header: {header:?}",
                path.display()
            );
            let mut n = 0u64;
            for record in reader.records() {
                record.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
            *counts.entry(table.to_string()).or_default() += n;
        }
    }
    counts
}

#[tokio::test]
async fn csv_sink_meets_the_sink_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    check_sink(
        || CsvSink::new(config(&path, &TABLES)),
        async || counts(&path),
        &TABLES,
    )
    .await;
}

#[tokio::test]
async fn csv_sink_keeps_only_its_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    check_sink(
        || CsvSink::new(config(&path, &["trades", "bars"])),
        async || counts(&path),
        &["trades", "bars"],
    )
    .await;
    assert!(!path.join("quotes").exists());
}

#[tokio::test]
async fn a_flush_cut_short_is_undone_and_written_again_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = CsvSink::new(config(dir.path(), &TABLES));
    assert_eq!(sink.open().await.unwrap(), None);
    let first = Flush {
        seq: 1,
        rows: Arc::new(sample_rows(1, 4)),
    };
    sink.write(&first).await.unwrap();
    let before = counts(dir.path());
    let trades_file = std::fs::read_dir(dir.path().join("trades"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let trades_len = std::fs::metadata(&trades_file).unwrap().len();

    // A crash in the middle of flush 2: its undo record is down, one file has half a row
    // appended, another file was created, and the position still says 1.
    let pending = serde_json::json!({
        "flush": 2,
        "files": {
            format!("trades/{}", trades_file.file_name().unwrap().to_str().unwrap()): trades_len,
            "quotes/2030-01-01.csv": null,
        }
    });
    std::fs::write(dir.path().join("pending.json"), pending.to_string()).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&trades_file)
        .unwrap()
        .write_all(b"NVDA,2026-11-24T14:30:00.0")
        .unwrap();
    std::fs::write(dir.path().join("quotes/2030-01-01.csv"), "symbol,half").unwrap();
    drop(sink);

    let mut sink = CsvSink::new(config(dir.path(), &TABLES));
    assert_eq!(
        sink.open().await.unwrap(),
        Some(1),
        "flush 2 never completed"
    );
    assert_eq!(std::fs::metadata(&trades_file).unwrap().len(), trades_len);
    assert!(!dir.path().join("quotes/2030-01-01.csv").exists());
    assert!(!dir.path().join("pending.json").exists());
    assert_eq!(counts(dir.path()), before);

    let second = sample_rows(2, 3);
    sink.write(&Flush {
        seq: 2,
        rows: Arc::new(second),
    })
    .await
    .unwrap();
    let after = counts(dir.path());
    assert_eq!(after["trades"], before["trades"] + 3);
    assert_eq!(after["dlq"], before["dlq"] + 3);
}

#[tokio::test]
async fn rows_are_written_as_the_lake_stores_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = CsvSink::new(config(dir.path(), &["trades"]));
    sink.open().await.unwrap();
    sink.write(&Flush {
        seq: 1,
        rows: Arc::new(sample_rows(1, 2)),
    })
    .await
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join("trades/2026-11-24.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("symbol,ts_event,ts_recv,price,size,trade_id,exchange,source,feed,seq")
    );
    assert_eq!(
        lines.next(),
        Some(
            "NVDA,2026-11-24T14:30:00.000000000Z,2026-11-24T14:30:00.000000005Z,181.25,100,1-0,\"V, \"\"quoted\"\"\",contract,contract:test,1000000"
        )
    );
    assert_eq!(
        lines.next(),
        Some(
            "BTC-USD,2026-11-24T14:30:00.001000000Z,2026-11-24T14:30:00.001000005Z,181.26,100,1-1,,contract,contract:test,1000001"
        )
    );
}

#[tokio::test]
async fn deliveries_keep_their_error_and_a_day_begun_without_it_keeps_its_columns() {
    let dir = tempfile::tempdir().unwrap();
    let rows = sample_rows(1, 4);
    let day = rows.alert_deliveries[0].ts.date();
    let (y, m, d) = day.ymd();
    let old = dir
        .path()
        .join(format!("alert_deliveries/{y:04}-{m:02}-{d:02}.csv"));
    // The day's file as a version without the error column started it.
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::write(
        &old,
        "alert_id,notifier,ts,status,attempts\nbefore,ops,2026-11-24T14:30:00Z,delivered,1\n",
    )
    .unwrap();
    let mut sink = CsvSink::new(config(dir.path(), &["alert_deliveries"]));
    sink.open().await.unwrap();
    sink.write(&Flush {
        seq: 1,
        rows: Arc::new(rows.clone()),
    })
    .await
    .unwrap();
    let mut reader = csv::Reader::from_path(&old).unwrap();
    let widths: Vec<usize> = reader.records().map(|r| r.unwrap().len()).collect();
    assert_eq!(widths, [5; 5], "every row in the old file's five columns");

    // A day that starts now has the column, with each delivery's error.
    std::fs::remove_file(&old).unwrap();
    sink.write(&Flush {
        seq: 2,
        rows: Arc::new(rows.clone()),
    })
    .await
    .unwrap();
    let mut reader = csv::Reader::from_path(&old).unwrap();
    assert_eq!(reader.headers().unwrap().get(5), Some("error"));
    let errors: Vec<String> = reader
        .records()
        .map(|r| r.unwrap().get(5).unwrap().to_string())
        .collect();
    let expected: Vec<String> = rows
        .alert_deliveries
        .iter()
        .map(|d| d.error.clone().unwrap_or_default())
        .collect();
    assert_eq!(errors, expected);
    assert!(expected.iter().any(|e| e.contains("\"later\"")));
}
