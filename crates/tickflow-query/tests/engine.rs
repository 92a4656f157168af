//! The query engine over real lake files: results, the live rows, and the caches that let a
//! running pipeline read each file's footer once.

use std::sync::Arc;

use tickflow_lake::{Lake, Rows, Table};
use tickflow_model::{Price, Qty, Symbol, Trade, UnixNanos};
use tickflow_query::{CachedFiles, QueryEngine, Snapshot};

fn trade(sym: &str, day: i64, n: u64, price: &str) -> Trade {
    Trade {
        symbol: Symbol::parse(sym).unwrap(),
        ts_event: UnixNanos((20_000 + day) * 86_400 * 1_000_000_000 + n as i64),
        ts_recv: UnixNanos(0),
        price: Price::parse(price).unwrap(),
        size: Qty::parse("2").unwrap(),
        trade_id: None,
        exchange: None,
        source: Arc::from("test"),
        feed: Arc::from("test"),
        seq: Some(n),
    }
}

fn count(result: &tickflow_query::QueryResult) -> String {
    tickflow_query::render(result, tickflow_query::Format::Csv).unwrap()
}

#[tokio::test]
async fn reads_files_and_live_rows_and_caches_each_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path()).unwrap();
    let mut rows = Rows::default();
    for (i, sym) in ["AAPL", "MSFT", "NVDA"].into_iter().enumerate() {
        for day in 0..2 {
            rows.trades.push(trade(sym, day, i as u64, "100.5"));
        }
    }
    lake.write(&rows, 1).unwrap();
    let files = lake.files(Table::Trades, 1).unwrap();
    assert_eq!(files.len(), 6, "one file per date and symbol");

    let mut live = Rows::default();
    live.trades.push(trade("AAPL", 3, 9, "101.25"));
    let snapshot = Snapshot {
        files: vec![(Table::Trades, files)],
        live: vec![(
            Table::Trades,
            tickflow_lake::to_batch(Table::Trades, &live).unwrap(),
        )],
    };

    let engine = QueryEngine::new().unwrap();
    assert_eq!(
        engine.cached_files(),
        CachedFiles {
            statistics: 0,
            narrowed_statistics: 0,
            footers: 0
        }
    );
    let sql = "SELECT count(*) AS n, max(price) AS high FROM trades";
    let first = engine.run(snapshot.clone(), sql).await.unwrap();
    assert_eq!(count(&first), "n,high\n7,101.250000000\n");
    let cached = engine.cached_files();
    assert_eq!(
        cached,
        CachedFiles {
            statistics: 6,
            narrowed_statistics: 0,
            footers: 6
        }
    );

    // A clone shares the caches; a second query reads no footer again.
    let again = engine
        .clone()
        .run(
            snapshot.clone(),
            "SELECT symbol FROM trades WHERE price > 101 ",
        )
        .await
        .unwrap();
    assert_eq!(count(&again), "symbol\nAAPL\n");
    assert_eq!(engine.cached_files(), cached);

    // A sum scans prices as stored, with statistics of its own, from the same footers.
    let sql = "SELECT count(*) AS n, sum(price) AS total FROM trades";
    let total = engine.run(snapshot.clone(), sql).await.unwrap();
    assert_eq!(count(&total), "n,total\n7,704.250000000\n");
    assert_eq!(
        engine.cached_files(),
        CachedFiles {
            narrowed_statistics: 6,
            ..cached
        }
    );
    // Scans narrowing other columns keep statistics of their own, without evicting these:
    // asked again, no query gathers any anew.
    for _ in 0..2 {
        for sql in [
            "SELECT sum(size) AS v FROM trades",
            "SELECT sum(price * size) AS n FROM trades",
            "SELECT sum(price) AS total FROM trades",
        ] {
            engine.run(snapshot.clone(), sql).await.unwrap();
        }
    }
    assert_eq!(
        engine.cached_files(),
        CachedFiles {
            narrowed_statistics: 6 * 3,
            ..cached
        }
    );

    // Files' price statistics are known to planning, as SQL sees prices (DECIMAL128),
    // though the files store them in 64 bits.
    let flushed = Snapshot {
        live: Vec::new(),
        ..snapshot.clone()
    };
    let plan = engine
        .run(flushed, "EXPLAIN VERBOSE SELECT price FROM trades")
        .await
        .unwrap();
    let plan = count(&plan);
    let stats = &plan[plan
        .find("physical_plan_with_stats")
        .expect("a plan with statistics")..];
    let stats = &stats[..stats.find('\n').unwrap_or(stats.len())];
    assert!(
        stats.contains("Min=Exact(Decimal128(100.500000000,18,9))"),
        "{stats}"
    );
    assert!(
        stats.contains("Max=Exact(Decimal128(100.500000000,18,9))"),
        "{stats}"
    );

    // A symbol filter skips other symbols' folders; the in-memory rows still count.
    for (filter, n) in [
        ("symbol = 'MSFT'", 2),
        ("'AAPL' = symbol", 3),
        ("symbol IN ('NVDA', 'AAPL') AND symbol <> 'NVDA'", 3),
        ("symbol = 'ZZZ'", 0),
    ] {
        let sql = format!("SELECT count(*) AS n FROM trades WHERE {filter}");
        let result = engine.run(snapshot.clone(), &sql).await.unwrap();
        assert_eq!(count(&result), format!("n\n{n}\n"), "{filter}");
    }
}

#[tokio::test]
async fn refuses_statements_that_write() {
    let engine = QueryEngine::new().unwrap();
    let err = engine
        .run(Snapshot::default(), "CREATE TABLE t AS SELECT 1")
        .await
        .unwrap_err();
    assert!(matches!(err, tickflow_query::Error::Sql(_)), "{err}");
}

#[tokio::test]
async fn the_engine_sums_decimals_exactly_groups_symbol_runs_and_reads_files_mapped() {
    let engine = QueryEngine::new().unwrap();
    let plan = engine
        .run(
            Snapshot::default(),
            "EXPLAIN SELECT symbol, sum(price * size), sum(size) FROM trades GROUP BY symbol",
        )
        .await
        .unwrap();
    let plan = tickflow_query::render(&plan, tickflow_query::Format::Csv).unwrap();
    assert!(
        plan.contains("exact_sum(trades.price, trades.size)"),
        "{plan}"
    );
    assert!(plan.contains("exact_sum(trades.size)"), "{plan}");
    assert!(
        plan.contains("SymbolRunsExec"),
        "grouping by symbol looks up runs: {plan}"
    );
    assert!(
        engine.local_store().starts_with("MappedFiles"),
        "{}",
        engine.local_store()
    );
}

/// The schema the Parquet scan of `sql` produces, from `EXPLAIN VERBOSE`.
async fn scan_schema(engine: &QueryEngine, snapshot: &Snapshot, sql: &str) -> String {
    let plan = engine
        .run(snapshot.clone(), &format!("EXPLAIN VERBOSE {sql}"))
        .await
        .unwrap();
    let plan = tickflow_query::render(&plan, tickflow_query::Format::Csv).unwrap();
    let start = plan
        .find("physical_plan_with_schema")
        .expect("a plan with schemas");
    let scan = plan[start..]
        .find("DataSourceExec")
        .map(|at| &plan[start + at..])
        .expect("a Parquet scan");
    let schema = &scan[scan.find("schema=[").unwrap()..];
    schema[..schema.find(']').unwrap() + 1].to_string()
}

/// `units` (of 10^-9) as DECIMAL text with `scale` digits after the point.
fn decimal(units: i128, scale: u32) -> String {
    let one = 10_i128.pow(scale);
    let sign = if units < 0 { "-" } else { "" };
    let (whole, frac) = (units.abs() / one, units.abs() % one);
    format!("{sign}{whole}.{frac:0width$}", width = scale as usize)
}

#[tokio::test]
async fn summed_prices_and_sizes_are_read_as_stored_and_sum_exactly() {
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;

    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path()).unwrap();
    let mut rows = Rows::default();
    let mut all = Vec::new();
    for (i, sym) in ["AAPL", "MSFT"].into_iter().enumerate() {
        for n in 0..500_u64 {
            let mut t = trade(sym, (n % 2) as i64, n, &format!("{}.{:03}", 100 + n % 7, n));
            t.size = Qty::parse(&format!("{}.5", 1 + i as u64 * 3 + n % 11)).unwrap();
            all.push(t.clone());
            rows.trades.push(t);
        }
    }
    lake.write(&rows, 1).unwrap();
    let mut files = lake.files(Table::Trades, 1).unwrap();

    // A file as earlier versions wrote prices and sizes: DECIMAL128 in its Arrow schema.
    let mut old = Rows::default();
    for n in 0..50_u64 {
        let t = trade("NVDA", 0, n, &format!("190.{n:02}"));
        all.push(t.clone());
        old.trades.push(t);
    }
    let batch = tickflow_lake::to_batch(Table::Trades, &old).unwrap();
    let widen = |t: &DataType| match t {
        DataType::Decimal64(p, s) => DataType::Decimal128(*p, *s),
        t => t.clone(),
    };
    let schema = Arc::new(Schema::new(
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_data_type(widen(f.data_type())))
            .collect::<Vec<Field>>(),
    ));
    let batch = tickflow_lake::cast_to(&batch, &schema).unwrap();
    let path = dir.path().join("old.parquet");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    files.push(path);

    // And a row not yet flushed.
    let mut live = Rows::default();
    let t = trade("AAPL", 3, 9, "101.25");
    all.push(t.clone());
    live.trades.push(t);
    let snapshot = Snapshot {
        files: vec![(Table::Trades, files)],
        live: vec![(
            Table::Trades,
            tickflow_lake::to_batch(Table::Trades, &live).unwrap(),
        )],
    };
    let engine = QueryEngine::new().unwrap();

    let per_symbol = |symbol: &str| {
        let rows = all.iter().filter(|t| t.symbol.as_str() == symbol);
        let notional: i128 = rows
            .clone()
            .map(|t| i128::from(t.price.raw()) * i128::from(t.size.raw()))
            .sum();
        let volume: i128 = rows.map(|t| i128::from(t.size.raw())).sum();
        (notional, volume)
    };
    let sql = "SELECT symbol, sum(price * size) AS notional, sum(size) AS volume FROM trades GROUP BY symbol ORDER BY symbol";
    let mut expected = String::from("symbol,notional,volume\n");
    for symbol in ["AAPL", "MSFT", "NVDA"] {
        let (notional, volume) = per_symbol(symbol);
        expected += &format!(
            "{symbol},{},{}\n",
            decimal(notional, 18),
            decimal(volume, 9)
        );
    }
    assert_eq!(
        count(&engine.run(snapshot.clone(), sql).await.unwrap()),
        expected
    );
    assert_eq!(
        scan_schema(&engine, &snapshot, sql).await,
        "schema=[symbol:Utf8View, price:Decimal64(18, 9), size:Decimal64(18, 9)]",
        "summed columns are scanned as stored"
    );

    // The older file's price statistics are known to planning too.
    let plan = engine
        .run(
            snapshot.clone(),
            "EXPLAIN VERBOSE SELECT price FROM trades WHERE symbol = 'NVDA'",
        )
        .await
        .unwrap();
    let plan = count(&plan);
    let stats = &plan[plan.find("physical_plan_with_stats").unwrap()..];
    let stats = &stats[stats.find("DataSourceExec").unwrap()..];
    let stats = &stats[..stats.find('\n').unwrap_or(stats.len())];
    assert!(stats.contains("old.parquet"), "{stats}");
    assert!(
        stats.contains(
            "Min=Exact(Decimal128(190.000000000,18,9)) Max=Exact(Decimal128(190.490000000,18,9))"
        ),
        "{stats}"
    );

    // A column read for anything else keeps SQL's type; the other may still narrow.
    let sql = "SELECT symbol, sum(size) AS volume, max(price) AS high FROM trades GROUP BY symbol ORDER BY symbol";
    assert_eq!(
        scan_schema(&engine, &snapshot, sql).await,
        "schema=[symbol:Utf8View, price:Decimal128(18, 9), size:Decimal64(18, 9)]"
    );
    let result = count(&engine.run(snapshot.clone(), sql).await.unwrap());
    assert!(
        result.contains(&format!(
            "NVDA,{},190.490000000",
            decimal(per_symbol("NVDA").1, 9)
        )),
        "{result}"
    );
    for sql in [
        "SELECT sum(price * size) FROM trades WHERE price > 100",
        "SELECT sum(price * size) FILTER (WHERE size > 2) FROM trades",
        "SELECT sum(price * size), sum(price) FROM trades GROUP BY price",
    ] {
        let schema = scan_schema(&engine, &snapshot, sql).await;
        assert!(!schema.contains("Decimal64"), "{sql}: {schema}");
    }
    let (notional, _) = [per_symbol("AAPL"), per_symbol("MSFT"), per_symbol("NVDA")]
        .into_iter()
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    let total = engine
        .run(
            snapshot.clone(),
            "SELECT sum(price * size) AS n FROM trades WHERE price > 0",
        )
        .await
        .unwrap();
    assert_eq!(count(&total), format!("n\n{}\n", decimal(notional, 18)));
    let total = engine
        .run(snapshot, "SELECT sum(price * size) AS n FROM trades")
        .await
        .unwrap();
    assert_eq!(count(&total), format!("n\n{}\n", decimal(notional, 18)));
}

/// A bars file from before feeds (no `source` column, VWAP and trade count never null) reads
/// beside one with a feed's bar: the old rows' source is null, and sums and filters work.
#[tokio::test]
async fn bars_from_before_feeds_read_with_a_null_source() {
    use arrow::datatypes::Schema;
    use datafusion::parquet::arrow::ArrowWriter;
    use tickflow_model::{Bar, BarInterval, Volume};

    let dir = tempfile::tempdir().unwrap();
    let bar = |day: i64, source: Option<&str>| {
        let start = UnixNanos((20_000 + day) * 86_400 * 1_000_000_000);
        let p = Price::parse("10").unwrap();
        Bar {
            symbol: Symbol::parse("NVDA").unwrap(),
            interval: BarInterval::D1,
            start,
            end: UnixNanos(start.0 + BarInterval::D1.nanos()),
            open: p,
            high: p,
            low: p,
            close: p,
            volume: Volume::parse("5").unwrap(),
            vwap: source.is_none().then_some(p),
            trade_count: source.is_none().then_some(3),
            is_final: true,
            source: source.map(Arc::from),
        }
    };
    let lake = Lake::open(dir.path()).unwrap();
    let mut rows = Rows::default();
    rows.bars.push(bar(1, Some("polygon")));
    lake.write(&rows, 1).unwrap();
    let mut files = lake.files(Table::Bars, 1).unwrap();

    let mut old = Rows::default();
    old.bars.push(bar(0, None));
    let batch = tickflow_lake::to_batch(Table::Bars, &old).unwrap();
    let fields: Vec<_> = batch
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != "source")
        .map(|f| f.as_ref().clone().with_nullable(false))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let columns = batch.columns()[..batch.num_columns() - 1].to_vec();
    let batch = arrow::record_batch::RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
    let path = dir.path().join("old-bars.parquet");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    files.push(path.clone());

    let snapshot = Snapshot {
        files: vec![(Table::Bars, files)],
        live: Vec::new(),
    };
    let engine = QueryEngine::new().unwrap();
    let result = engine
        .run(
            snapshot,
            "SELECT start, source, trade_count, sum(volume) OVER () AS total FROM bars ORDER BY start",
        )
        .await
        .unwrap();
    assert_eq!(
        count(&result),
        "start,source,trade_count,total\n\
         2024-10-04T00:00:00Z,,3,10.000000000\n\
         2024-10-05T00:00:00Z,polygon,,10.000000000\n"
    );
    // The lake's own reader (replay, sinks catching up) reads the old file the same way.
    let mut read = Rows::default();
    tickflow_lake::read_file(&path, Table::Bars, &mut read).unwrap();
    assert_eq!(read.bars, old.bars);
}

/// A lake of 3 symbols × 4 days × 500 trades, with prices that make sums carry.
fn suite_lake(dir: &std::path::Path) -> Snapshot {
    let lake = Lake::open(dir).unwrap();
    fill_suite_lake(&lake)
}

fn fill_suite_lake(lake: &Lake) -> Snapshot {
    let mut rows = Rows::default();
    for sym in ["AAPL", "MSFT", "NVDA"] {
        for day in 0..4 {
            for n in 0..500u64 {
                let price = format!("{}.{:03}", 100 + n % 37, (n * 7919) % 1000);
                rows.trades.push(trade(sym, day, n, &price));
            }
        }
    }
    lake.write(&rows, 1).unwrap();
    Snapshot {
        files: vec![(Table::Trades, lake.files(Table::Trades, 1).unwrap())],
        live: vec![],
    }
}

const SUITE: [&str; 4] = [
    "SELECT symbol, sum(price * size) AS notional, sum(size) AS volume, count(*) AS n FROM trades GROUP BY symbol ORDER BY symbol",
    "SELECT symbol, sum(price * size) / sum(size) AS vwap FROM trades GROUP BY symbol ORDER BY symbol",
    "SELECT symbol, max(price) AS high, min(price) AS low FROM trades WHERE symbol IN ('AAPL', 'NVDA') GROUP BY symbol ORDER BY symbol",
    "SELECT symbol, time_bucket('1 day', ts_event) AS day, first(price, ts_event) AS open, last(price, ts_event) AS close, vwap(price, size) AS vwap FROM trades GROUP BY 1, 2 ORDER BY 1, 2",
];

/// A lake on S3 (moto_server) answers as the same lake on disk, read where it is.
#[tokio::test]
async fn a_lake_on_s3_answers_as_the_same_lake_on_disk() {
    let Some(bucket) = tickflow_core::contract::s3_bucket("tf-query") else {
        return;
    };
    let remote = Lake::open_object(&tickflow_lake::ObjectLake {
        url: format!("s3://{bucket}/lake"),
        endpoint: Some(tickflow_core::contract::s3_endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        timeout: None,
    })
    .unwrap();
    let on_s3 = fill_suite_lake(&remote);
    assert!(
        on_s3.files[0].1[0].starts_with(format!("s3://{bucket}/lake/trades/")),
        "{:?}",
        on_s3.files[0].1[0]
    );
    let dir = tempfile::tempdir().unwrap();
    let on_disk = suite_lake(dir.path());
    let engine = QueryEngine::new().unwrap();
    let unregistered = engine.run(on_s3.clone(), SUITE[0]).await;
    assert!(unregistered.is_err(), "no store for the bucket yet");
    engine.register_lake(&remote).unwrap();
    for sql in SUITE {
        let expected = count(&engine.run(on_disk.clone(), sql).await.unwrap());
        assert!(expected.lines().count() > 1, "{sql}: {expected}");
        assert_eq!(
            count(&engine.run(on_s3.clone(), sql).await.unwrap()),
            expected,
            "{sql}"
        );
    }
    // A part gone from the bucket after the listing fails the query, never counts as empty.
    let mut listed = on_s3.clone();
    let gone = format!("s3://{bucket}/lake/trades/date=2024-10-01/symbol=AAPL/part-gone.parquet");
    listed.files[0].1.push(std::path::PathBuf::from(gone));
    let err = engine
        .run(listed, "SELECT count(*) FROM trades")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("the lake part is gone"), "{err}");
}

/// The benchmark suite's shapes: each rule switched off gives the same answers.
#[tokio::test]
async fn every_rule_can_be_switched_off_and_answers_stay_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = suite_lake(dir.path());
    let all_on = QueryEngine::new().unwrap();
    for rule in tickflow_query::Rule::ALL {
        let off = QueryEngine::new()
            .unwrap()
            .with_options(tickflow_query::QueryOptions {
                disabled: [rule].into_iter().collect(),
                ..Default::default()
            });
        for sql in SUITE {
            let on = count(&all_on.run(snapshot.clone(), sql).await.unwrap());
            let without = count(&off.run(snapshot.clone(), sql).await.unwrap());
            assert!(on.lines().count() > 1, "{sql}: {on}");
            assert_eq!(on, without, "{} off changes {sql}", rule.name());
        }
    }
}

#[tokio::test]
async fn a_query_past_its_time_or_memory_limit_is_stopped_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = suite_lake(dir.path());
    let slow = QueryEngine::new()
        .unwrap()
        .with_options(tickflow_query::QueryOptions {
            timeout: Some(std::time::Duration::from_nanos(1)),
            ..Default::default()
        });
    let err = slow
        .run(snapshot.clone(), "SELECT count(*) FROM trades")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, tickflow_query::Error::Limit(m) if m.contains("query.timeout_secs")),
        "{err}"
    );
    let small = QueryEngine::new()
        .unwrap()
        .with_options(tickflow_query::QueryOptions {
            memory_bytes: Some(64 * 1024),
            ..Default::default()
        });
    // Grouping by every trade needs a hash table far over 64 KiB.
    let err = small
        .run(
            snapshot,
            "SELECT ts_event, seq, count(*) FROM trades GROUP BY ts_event, seq, symbol",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, tickflow_query::Error::Limit(m) if m.contains("query.memory_mb")),
        "{err}"
    );
}

/// A long-lived session's tables: the suite lake's files, nothing in memory.
#[derive(Debug)]
struct Files(Snapshot);

impl tickflow_query::Tables for Files {
    fn snapshot(
        &self,
        table: Table,
    ) -> Result<(Vec<std::path::PathBuf>, Vec<tickflow_lake::RecordBatch>), String> {
        let files = self.0.files.iter().filter(|(t, _)| *t == table);
        Ok((files.flat_map(|(_, f)| f.clone()).collect(), Vec::new()))
    }
}

/// The Postgres-wire endpoint's session streams rows itself, so its time limit travels in
/// each plan: past it, the query fails with the limit's message, and within it answers.
#[tokio::test]
async fn a_live_session_stops_a_query_past_its_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let tables = Arc::new(Files(suite_lake(dir.path())));
    let sql = "SELECT symbol, count(*) AS n FROM trades GROUP BY symbol ORDER BY symbol";
    let session = |timeout| {
        let engine = QueryEngine::new()
            .unwrap()
            .with_options(tickflow_query::QueryOptions {
                timeout: Some(timeout),
                ..Default::default()
            });
        let tables = Arc::clone(&tables) as Arc<dyn tickflow_query::Tables>;
        async move { engine.live_session(tables).await.unwrap() }
    };
    let patient = session(std::time::Duration::from_secs(600)).await;
    let rows = patient.sql(sql).await.unwrap().collect().await.unwrap();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    let hasty = session(std::time::Duration::from_nanos(1)).await;
    let err = hasty
        .sql(sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the query ran longer than") && err.contains("query.timeout_secs"),
        "{err}"
    );
}

/// A session's tables whose first snapshot lists a part compaction has since deleted, as a
/// snapshot taken just before the deletion does; later snapshots list the lake as it is.
#[derive(Debug)]
struct CompactedMeanwhile {
    files: Vec<std::path::PathBuf>,
    gone: std::path::PathBuf,
    snapshots: std::sync::atomic::AtomicU32,
}

impl tickflow_query::Tables for CompactedMeanwhile {
    fn snapshot(
        &self,
        _table: Table,
    ) -> Result<(Vec<std::path::PathBuf>, Vec<tickflow_lake::RecordBatch>), String> {
        let mut files = self.files.clone();
        if self
            .snapshots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            files.push(self.gone.clone());
        }
        Ok((files, Vec::new()))
    }
}

/// DataFusion reads a listed part that is missing as an empty directory. A part deleted
/// between a query's listing and its plan must never count as zero rows: a one-shot query
/// fails (and the API runs it again), a session's scan lists the lake again.
#[tokio::test]
async fn a_part_deleted_after_the_listing_is_never_read_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = suite_lake(dir.path());
    let files = snapshot.files[0].1.clone();
    let gone = dir
        .path()
        .join("trades/date=2024-10-01/symbol=AAPL/part-gone.parquet");
    let engine = QueryEngine::new().unwrap();
    let sql = "SELECT count(*) AS n FROM trades";

    let mut listed = files.clone();
    listed.push(gone.clone());
    let err = engine
        .run(
            Snapshot {
                files: vec![(Table::Trades, listed)],
                live: vec![],
            },
            sql,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("the lake part is gone"), "{err}");

    let tables = Arc::new(CompactedMeanwhile {
        files,
        gone,
        snapshots: Default::default(),
    });
    let session = engine
        .live_session(Arc::clone(&tables) as Arc<dyn tickflow_query::Tables>)
        .await
        .unwrap();
    let rows = session.sql(sql).await.unwrap().collect().await.unwrap();
    let n = rows[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(
        n,
        3 * 4 * 500,
        "every trade, none lost to the vanished part"
    );
    assert_eq!(
        tables.snapshots.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "listed again once"
    );
}
