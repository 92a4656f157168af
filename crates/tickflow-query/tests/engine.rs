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
            footers: 0
        }
    );
    let sql = "SELECT count(*) AS n, sum(price) AS total FROM trades";
    let first = engine.run(snapshot.clone(), sql).await.unwrap();
    assert_eq!(count(&first), "n,total\n7,704.250000000\n");
    let cached = engine.cached_files();
    assert_eq!(
        cached,
        CachedFiles {
            statistics: 6,
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
