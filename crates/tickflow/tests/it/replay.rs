//! `tickflow replay`: a lake's own Parquet, replayed into a fresh data directory, gives the
//! same trades, bars (a feed's among them) and daily metrics as the original.

use crate::support::{bin, config, run_ok, sql};

#[test]
fn replaying_a_lake_gives_the_same_trades_bars_and_daily_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    let fresh = dir.path().join("fresh");
    let cfg = dir.path().join("run.toml");
    // A vendor's daily bars for a symbol the simulator does not trade, beside its ticks.
    let vendor = dir.path().join("vendor.ndjson");
    let days: String = (16..=20)
        .map(|d| format!("{{\"type\":\"bar\",\"symbol\":\"SPY\",\"interval\":\"1d\",\"start\":\"2026-11-{d}T05:00:00Z\",\"open\":\"600\",\"high\":\"61{d}\",\"low\":\"590\",\"close\":\"60{d}\",\"volume\":\"1000\",\"source\":\"polygon\"}}\n"))
        .collect();
    std::fs::write(&vendor, days).unwrap();
    std::fs::write(
        &cfg,
        config(
            &original,
            &format!(
                "\n[lake]\nflush_interval_ms = 200\n\n[[sources]]\ntype = \"simulator\"\nrate = 2000\nhistory_days = 7\nhistory_step_secs = 300\nsymbols = [\"NVDA\", \"BTC-USD\", \"AAPL\"]\n\n[[sources]]\ntype = \"replay\"\nid = \"vendor\"\npath = \"{}\"\n",
                vendor.display()
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

    let out = run_ok(&[
        "replay",
        original.join("lake").to_str().unwrap(),
        "--data-dir",
        fresh.to_str().unwrap(),
    ]);
    assert!(out.contains("0 unreadable"), "{out}");

    for (what, query, at_least) in [
        (
            "trades",
            "SELECT symbol, ts_event, price, size, trade_id, exchange, source, feed, seq FROM trades ORDER BY symbol, ts_event, seq",
            5000,
        ),
        (
            "quotes",
            "SELECT symbol, ts_event, bid, bid_size, ask, ask_size, source, feed, seq FROM quotes ORDER BY symbol, ts_event, seq",
            5000,
        ),
        (
            "final bars",
            "SELECT symbol, \"interval\", start, \"end\", open, high, low, close, volume, vwap, trade_count, source FROM bars WHERE \"final\" ORDER BY symbol, \"interval\", start",
            3000,
        ),
        (
            "daily metrics",
            "SELECT * FROM daily_metrics ORDER BY symbol, date",
            18,
        ),
    ] {
        let before = sql(&original, query);
        let after = sql(&fresh, query);
        assert!(
            before.len() >= at_least,
            "{what}: the original holds only {}",
            before.len()
        );
        assert_eq!(before.len(), after.len(), "{what}: row counts differ");
        if let Some(i) = (0..before.len()).find(|&i| before[i] != after[i]) {
            panic!("{what}: row {i} differs:\n{}\n{}", before[i], after[i]);
        }
    }
    for data in [&original, &fresh] {
        let fed = sql(
            data,
            "SELECT close, source FROM bars WHERE symbol = 'SPY' ORDER BY start",
        );
        assert_eq!(fed.len(), 5, "{fed:?}");
        assert!(fed.iter().all(|b| b["source"] == "polygon"));
        let metrics = sql(data, "SELECT date FROM daily_metrics WHERE symbol = 'SPY'");
        assert_eq!(metrics.len(), 5);
    }
    // The replayed events were received anew, under their recorded source.
    let sources = sql(&fresh, "SELECT DISTINCT source FROM trades");
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0]["source"], "simulator");
}

#[test]
fn unreadable_lines_go_to_the_dlq_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("ticks.ndjson");
    std::fs::write(
        &file,
        "{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":\"2026-11-24T14:30:00Z\",\"price\":\"181.25\",\"size\":\"10\"}\n\
         {\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":\"2026-11-24T14:30:01Z\",\"price\":\"181.5\"\n",
    )
    .unwrap();
    let out = bin()
        .args([
            "replay",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "unreadable input is a failure of the command"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 events appended, 1 unreadable"),
        "{stdout}"
    );
    let dlq = sql(&data, "SELECT source, reason, error, payload FROM dlq");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["source"], "replay");
    assert_eq!(dlq[0]["reason"], "malformed");
    assert!(
        dlq[0]["error"]
            .as_str()
            .unwrap()
            .contains("ticks.ndjson:2:"),
        "{dlq:?}"
    );
    assert!(dlq[0]["payload"].as_str().unwrap().contains("181.5"));
    let trades = sql(&data, "SELECT price FROM trades");
    assert_eq!(trades.len(), 1);
}
