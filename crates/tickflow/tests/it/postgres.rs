//! `tickflow run` with the PostgreSQL sink against the real server (127.0.0.1:5432, database
//! `test`, or `DATABASE_URL`): the old `stock_data` shape filled from a vendor's daily bars
//! and simulated ticks; every row once across SIGKILL; the database cut away mid-run while
//! ingest, the lake and queries carry on, and the sink catching up when it returns.

use std::collections::HashSet;
use std::process::Stdio;

use tickflow_core::contract::Proxy;

use crate::support::{
    Server, bin, caught_up, config, lake_trade_seqs, run_ok, sink, sql, sql_count, wait_for,
};

pub(crate) fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs `query` on the test database; `None` (outside CI) without a server.
pub(crate) fn pg(query: &str) -> Option<Vec<tokio_postgres::Row>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, conn) = match tokio_postgres::connect(&url(), tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipped: no PostgreSQL at {}: {e}", url());
                return None;
            }
            Err(e) => panic!("PostgreSQL at {} is required under CI: {e}", url()),
        };
        tokio::spawn(conn);
        Some(
            client
                .query(query, &[])
                .await
                .unwrap_or_else(|e| panic!("{query}: {e}")),
        )
    })
}

pub(crate) fn pg_count(query: &str) -> i64 {
    pg(query).unwrap()[0].get(0)
}

/// A fresh schema; `None` without a server (outside CI).
pub(crate) fn fresh_schema(name: &str) -> Option<String> {
    let schema = format!("tf_it_{name}");
    pg(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))?;
    Some(schema)
}

pub(crate) fn pg_sink(schema: &str, url: &str, tables: &str) -> String {
    format!(
        "\n[[sinks]]\ntype = \"postgres\"\nid = \"pg\"\nurl = \"{url}\"\nschema = \"{schema}\"\ntables = {tables}\ntimeout_secs = 10\n"
    )
}

/// Every trade's seq in the sink's table, checking that none is there twice.
pub(crate) fn pg_trade_seqs(schema: &str) -> HashSet<u64> {
    let rows = pg(&format!("SELECT seq FROM {schema}.trades")).unwrap();
    let seqs: HashSet<u64> = rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect();
    assert_eq!(seqs.len(), rows.len(), "a trade is in PostgreSQL twice");
    seqs
}

#[test]
fn stock_data_is_filled_from_vendor_daily_bars_and_simulated_ticks() {
    let Some(schema) = fresh_schema("stock_data") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    // Polygon's daily bars for SPY, as its REST source appends them, beside simulated ticks.
    let vendor = dir.path().join("vendor.ndjson");
    let days: String = (16..=20)
        .map(|d| format!("{{\"type\":\"bar\",\"symbol\":\"SPY\",\"interval\":\"1d\",\"start\":\"2026-11-{d}T05:00:00Z\",\"open\":\"600\",\"high\":\"61{d}\",\"low\":\"590\",\"close\":\"60{d}.5\",\"volume\":\"1000\",\"source\":\"polygon\"}}\n"))
        .collect();
    std::fs::write(&vendor, days).unwrap();
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 200\n\n[[sources]]\ntype = \"simulator\"\nrate = 2000\nhistory_days = 7\nhistory_step_secs = 300\nsymbols = [\"NVDA\", \"BTC-USD\"]\n\n[[sources]]\ntype = \"replay\"\nid = \"vendor\"\npath = \"{}\"\n{}",
                vendor.display(),
                pg_sink(&schema, &url(), "[\"trades\", \"bars\", \"daily_metrics\"]"),
            ),
        ),
    )
    .unwrap();
    let out = bin()
        .args(["run", "--config", cfg.to_str().unwrap(), "--duration", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The old pipeline's query, as its users wrote it, gives the lake's daily metrics.
    let old = pg(&format!(
        "SELECT symbol, date::text, close::text, rolling_avg::text, daily_pct_change FROM {schema}.stock_data ORDER BY symbol, date"
    ))
    .unwrap();
    let lake = sql(
        &data,
        "SELECT symbol, CAST(date AS VARCHAR) AS date, CAST(close AS VARCHAR) AS close FROM daily_metrics ORDER BY symbol, date",
    );
    assert!(lake.len() >= 5 + 2 * 7, "only {} daily metrics", lake.len());
    assert_eq!(old.len(), lake.len(), "a stock_data row per daily metric");
    for (pg_row, lake_row) in old.iter().zip(&lake) {
        assert_eq!(
            pg_row.get::<_, String>(0),
            lake_row["symbol"].as_str().unwrap()
        );
        assert_eq!(
            pg_row.get::<_, String>(1),
            lake_row["date"].as_str().unwrap()
        );
    }
    let spy = old
        .iter()
        .find(|r| r.get::<_, String>(0) == "SPY" && r.get::<_, String>(1) == "2026-11-20")
        .expect("SPY's last vendor day");
    assert_eq!(
        spy.get::<_, String>(2),
        "6020.5",
        "the vendor's close, exactly"
    );
    assert!(
        spy.get::<_, Option<f64>>(4).is_some(),
        "a change from the day before"
    );
    assert_eq!(
        pg_trade_seqs(&schema).len() as i64,
        sql_count(&data, "SELECT count(*) FROM trades"),
        "every trade the lake holds"
    );
    assert_eq!(
        pg_count(&format!("SELECT count(*) FROM {schema}.bars WHERE final")),
        sql_count(&data, "SELECT count(*) FROM bars WHERE \"final\""),
        "every final bar"
    );
}

#[test]
fn the_postgres_sink_keeps_every_row_once_across_sigkill() {
    let Some(schema) = fresh_schema("sigkill") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\n{}",
                pg_sink(&schema, &url(), "[\"trades\"]")
            ),
        ),
    )
    .unwrap();
    let mut next_seq = 0u64;
    for round in 0..3u64 {
        // Counted before the process starts: its catch-up of what the last round left
        // unwritten may already reach the threshold below, and counts as this round's.
        // The first round has no tables yet.
        let created = pg(&format!(
            "SELECT to_regclass('{schema}.trades') IS NOT NULL"
        ))
        .unwrap()[0]
            .get::<_, bool>(0);
        let before = if created {
            pg_count(&format!("SELECT count(*) FROM {schema}.trades")) as u64
        } else {
            0
        };
        let server = Server::start(&cfg, &data);
        let mut producer = bin()
            .args(["produce", "--count", "1000000", "--batch-size", "200"])
            .args(["--to", &server.url, "--start-seq", &next_seq.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed while the sink writes: after it has written something this round.
        wait_for(&server, "the sink writes", |s| {
            sink(s)["rows_written"].as_u64().unwrap_or(0) >= 2000 + round * 500
        });
        std::thread::sleep(std::time::Duration::from_millis(50 * round));
        server.kill();
        let _ = producer.wait();
        assert!(pg_count(&format!("SELECT count(*) FROM {schema}.trades")) as u64 > before);
        next_seq += 1_000_000;
    }
    let server = Server::start(&cfg, &data);
    wait_for(&server, "the sink catches up", caught_up);
    server.stop();

    let lake = lake_trade_seqs(&data).into_iter().collect::<HashSet<u64>>();
    assert!(lake.len() >= 6000, "only {} trades stored", lake.len());
    assert_eq!(
        pg_trade_seqs(&schema),
        lake,
        "PostgreSQL holds exactly the lake's trades"
    );
}

#[test]
fn the_database_cut_away_stalls_nothing_and_the_sink_catches_up() {
    let Some(schema) = fresh_schema("cut") else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:5432");
    let through = format!("postgres://postgres@127.0.0.1:{}/test", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\nsink_buffer_rows = 1000\n\n[[alerts.threshold]]\nname = \"nvda-above-1\"\nsymbol = \"NVDA\"\ncondition = \"price > 1\"\n{}",
                pg_sink(&schema, &through, "[\"trades\", \"alerts\"]")
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let produce = |count: &str, start: &str| {
        let out = run_ok(&[
            "produce",
            "--count",
            count,
            "--batch-size",
            "500",
            "--start-seq",
            start,
            "--to",
            &server.url,
        ]);
        assert!(out.contains(&format!("{count} acknowledged")), "{out}");
    };
    produce("10000", "0");
    wait_for(&server, "the sink writes the first rows", caught_up);

    proxy.cut();
    produce("20000", "10000");
    // Ingest, processing, alerts, the lake and queries carry on while the database is away.
    wait_for(&server, "the lake takes every trade", |s| {
        s["log_lag"].as_u64() == Some(0) && s["rows_durable"]["trades"].as_u64() == Some(30000)
    });
    assert_eq!(sql_count(&data, "SELECT count(*) FROM trades"), 30000);
    assert!(sql_count(&data, "SELECT count(*) FROM alerts") >= 1);
    wait_for(&server, "the sink reports its failures", |s| {
        sink(s)["state"] == "retrying" && sink(s)["errors"].as_u64().unwrap_or(0) >= 1
    });
    let s = server.status();
    assert!(
        sink(&s)["last_error"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL"),
        "{s:#}"
    );
    assert!(sink(&s)["lag_flushes"].as_u64().unwrap() > 0, "{s:#}");

    proxy.restore();
    wait_for(&server, "the sink catches up", |s| {
        caught_up(s) && s["sinks"][0]["state"] == "ok"
    });
    server.stop();
    assert_eq!(
        pg_trade_seqs(&schema),
        lake_trade_seqs(&data).into_iter().collect::<HashSet<u64>>()
    );
    assert_eq!(
        pg_count(&format!("SELECT count(*) FROM {schema}.alerts")),
        sql_count(&data, "SELECT count(*) FROM alerts")
    );
}
