//! The lake on S3 (moto_server, started by `scripts/test`) against the same lake on disk:
//! the same files, the same rows, the same recovery, compaction and retention. Outside CI a
//! test without moto says so and passes; under CI (`CI=true`) it fails.

use std::path::{Path, PathBuf};

use object_store::ObjectStoreExt;

use tickflow_core::contract::{s3_bucket, s3_endpoint, sample_rows};
use tickflow_lake::{CompactPolicy, Lake, ObjectLake, Rows, Table};
use tickflow_model::UnixNanos;

fn object_lake(bucket: &str) -> ObjectLake {
    ObjectLake {
        url: format!("s3://{bucket}/lake/"),
        endpoint: Some(s3_endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        timeout: None,
    }
}

/// Every live file of every table, named below the lake's root.
fn listing(lake: &Lake) -> Vec<String> {
    let mut out = Vec::new();
    for table in Table::ALL {
        for path in lake.files(table, u64::MAX).unwrap() {
            out.push(below(lake.root(), &path));
        }
    }
    out
}

fn below(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or_else(|_| panic!("{} is not under {}", path.display(), root.display()))
        .to_string_lossy()
        .into_owned()
}

/// The rows of flushes after `after`, in an order that does not depend on file order.
fn rows_after(lake: &Lake, after: u64, max: u64) -> (u64, Vec<String>) {
    let (end, rows) = lake.read_flushes(after, max).unwrap();
    (end, canonical(&rows))
}

/// Every row of flushes up to `max`, read run by run as a sink catching up reads them.
fn all_rows(lake: &Lake, max: u64) -> Vec<String> {
    let (mut at, mut all) = (0, Vec::new());
    while at < max {
        let (end, rows) = rows_after(lake, at, max);
        all.extend(rows);
        at = end;
    }
    all.sort();
    all
}

fn canonical(rows: &Rows) -> Vec<String> {
    let mut out: Vec<String> = rows
        .trades
        .iter()
        .map(|r| format!("{r:?}"))
        .chain(rows.quotes.iter().map(|r| format!("{r:?}")))
        .chain(rows.bars.iter().map(|r| format!("{r:?}")))
        .chain(rows.daily_metrics.iter().map(|r| format!("{r:?}")))
        .chain(rows.alerts.iter().map(|r| format!("{r:?}")))
        .chain(rows.dlq.iter().map(|r| format!("{r:?}")))
        .chain(rows.alert_deliveries.iter().map(|r| format!("{r:?}")))
        .collect();
    out.sort();
    out
}

/// Flush `seq` holds rows of day `(seq + 1) / 2`: two flushes a day share each folder.
fn flush(seq: u64) -> Rows {
    sample_rows(seq.div_ceil(2), 4 + seq)
}

#[test]
fn the_lake_on_s3_matches_the_same_lake_on_disk() {
    let Some(bucket) = s3_bucket("tf-lake") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let local = Lake::open(dir.path()).unwrap();
    let s3 = Lake::open_object(&object_lake(&bucket)).unwrap();
    assert_eq!(s3.root(), Path::new(&format!("s3://{bucket}/lake")));
    assert!(listing(&s3).is_empty(), "a new bucket holds nothing");
    for seq in 1..=6 {
        let (a, b) = (local.write(&flush(seq), seq), s3.write(&flush(seq), seq));
        assert_eq!(a.unwrap().rows, b.unwrap().rows, "flush {seq}");
    }
    let files = listing(&local);
    assert!(files.len() > 20, "{files:?}");
    assert_eq!(listing(&s3), files);
    for after in 0..6 {
        assert_eq!(
            rows_after(&s3, after, 6),
            rows_after(&local, after, 6),
            "flushes after {after}"
        );
    }

    // A flush the checkpoint never counted: a lake opened anew lists it from the bucket,
    // and recovery deletes it.
    s3.write(&flush(7), 7).unwrap();
    drop(s3);
    let s3 = Lake::open_object(&object_lake(&bucket)).unwrap();
    assert!(listing(&s3).len() > files.len());
    assert!(s3.recover(6).unwrap() > 0);
    assert_eq!(listing(&s3), files);

    // Compaction merges the same files the same way, and the inputs leave the bucket.
    let policy = CompactPolicy {
        min_files: 2,
        ..CompactPolicy::default()
    };
    let today = UnixNanos::now().date();
    let merged = local.compact(6, today, policy).unwrap();
    assert!(merged.outputs > 0 && merged.inputs > merged.outputs);
    assert_eq!(s3.compact(6, today, policy).unwrap(), merged);
    let compacted = listing(&local);
    assert!(compacted.len() < files.len(), "{compacted:?}");
    assert_eq!(listing(&s3), compacted);
    let reopened = Lake::open_object(&object_lake(&bucket)).unwrap();
    assert_eq!(listing(&reopened), compacted, "the bucket as listed anew");
    assert_eq!(all_rows(&reopened, 6), all_rows(&local, 6));

    // Retention: the ticks of the first day go; its bars and the later days stay.
    let first_day = flush(1).trades[0].ts_event.date();
    let ticks = [Table::Trades, Table::Quotes];
    let expired = local
        .expire(&ticks, tickflow_model::Date(first_day.0 + 1), 6)
        .unwrap();
    assert_eq!(
        reopened
            .expire(&ticks, tickflow_model::Date(first_day.0 + 1), 6)
            .unwrap(),
        expired
    );
    assert!(expired >= 2, "{expired}");
    let kept = listing(&local);
    let day = format!("date={first_day}");
    assert!(
        !kept
            .iter()
            .any(|f| f.contains(&day) && f.starts_with("trades"))
    );
    assert!(
        kept.iter()
            .any(|f| f.contains(&day) && f.starts_with("bars"))
    );
    assert_eq!(listing(&reopened), kept);
    assert_eq!(
        listing(&Lake::open_object(&object_lake(&bucket)).unwrap()),
        kept
    );
}

#[test]
fn a_compaction_stopped_before_deleting_its_inputs_doubles_nothing() {
    let Some(bucket) = s3_bucket("tf-compact") else {
        return;
    };
    let lake = Lake::open_object(&object_lake(&bucket)).unwrap();
    for seq in 1..=3 {
        lake.write(&sample_rows(1, 10 + seq), seq).unwrap();
    }
    let before = all_rows(&lake, 3);
    let input: PathBuf = lake.files(Table::Trades, 3).unwrap()[0].clone();
    let (url, store) = lake.object_store().unwrap();
    let key = object_store::path::Path::from(
        input
            .to_str()
            .unwrap()
            .strip_prefix(&format!("{url}/"))
            .unwrap(),
    );
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bytes = io.block_on(async { store.get(&key).await.unwrap().bytes().await.unwrap() });
    let policy = CompactPolicy {
        min_files: 2,
        ..CompactPolicy::default()
    };
    let report = lake.compact(3, UnixNanos::now().date(), policy).unwrap();
    assert!(report.inputs >= 3, "{report:?}");

    // As if the process died after the merged file's PUT and before the deletes.
    io.block_on(store.put(&key, bytes.into())).unwrap();
    let reopened = Lake::open_object(&object_lake(&bucket)).unwrap();
    let files = reopened.files(Table::Trades, 3).unwrap();
    assert!(!files.contains(&input), "a superseded input is not read");
    assert_eq!(all_rows(&reopened, 3), before, "each row once");
    assert_eq!(reopened.recover(3).unwrap(), 1, "recovery deletes it");
    let after = Lake::open_object(&object_lake(&bucket)).unwrap();
    assert_eq!(listing(&after), listing(&reopened));
    let listed = io.block_on(async {
        use futures::TryStreamExt;
        store.list(None).try_collect::<Vec<_>>().await.unwrap()
    });
    assert!(
        !listed.iter().any(|m| m.location == key),
        "gone from the bucket"
    );
}
