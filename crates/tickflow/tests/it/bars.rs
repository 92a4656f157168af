//! A feed's bars through ingest: stored in `bars` with their source, and daily metrics
//! computed from a vendor's daily bars, matching a hand computation.

use crate::support::{Server, config, http, sql, wait_for};

/// NVDA's daily bars as a vendor sends them (05:00 UTC starts), oldest first.
const SERIES: [(&str, [&str; 4], &str); 6] = [
    ("2026-11-16", ["100", "110", "95", "105"], "1000"),
    ("2026-11-17", ["105", "108", "100", "102"], "1100"),
    ("2026-11-18", ["102", "110", "101", "108"], "1200"),
    ("2026-11-19", ["108", "112", "107", "111"], "1300"),
    ("2026-11-20", ["111", "112", "98", "99"], "1400"),
    ("2026-11-23", ["99", "121", "99", "120"], "1500.25"),
];

fn body() -> String {
    SERIES
        .iter()
        .map(|(day, [o, h, l, c], v)| {
            format!(
                "{{\"type\":\"bar\",\"symbol\":\"NVDA\",\"interval\":\"1d\",\"start\":\"{day}T05:00:00Z\",\"open\":\"{o}\",\"high\":\"{h}\",\"low\":\"{l}\",\"close\":\"{c}\",\"volume\":\"{v}\",\"source\":\"polygon\"}}\n"
            )
        })
        .collect()
}

#[test]
fn vendor_daily_bars_give_daily_metrics_that_match_a_hand_computation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, config(&data, "\n[lake]\nflush_interval_ms = 50\n")).unwrap();
    let server = Server::start(&cfg, &data);
    let ingest = format!("{}/api/v1/ingest", server.url);
    let (code, text) = http("POST", &ingest, Some(body().as_bytes()));
    assert_eq!(code, 200, "{text}");
    // The same bars again (a backfill run twice) and one that cannot be: nothing doubles,
    // and the bad one is in the DLQ with its reason.
    let (code, text) = http("POST", &ingest, Some(body().as_bytes()));
    assert_eq!(code, 200, "{text}");
    let bad = r#"{"type":"bar","symbol":"AAPL","interval":"1d","start":"2026-11-23T05:00:00Z","open":"5","high":"4","low":"3","close":"4.5","volume":"1"}"#;
    let (code, text) = http("POST", &ingest, Some(bad.as_bytes()));
    assert_eq!(code, 200, "{text}");
    wait_for(&server, "the bars and metrics in the lake", |s| {
        s["rows_durable"]["daily_metrics"].as_u64() == Some(6)
            && s["rows_durable"]["dlq"].as_u64() == Some(1)
    });
    server.stop();

    let m = sql(
        &data,
        "SELECT date, close, volume, volatility, rolling_avg_5d, daily_pct_change FROM daily_metrics WHERE symbol = 'NVDA' ORDER BY date",
    );
    assert_eq!(m.len(), 6, "{m:?}");
    let f = |row: &serde_json::Value, key: &str| -> f64 {
        let v = &row[key];
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("{key}: {v}"))
    };
    let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert_eq!(m[0]["date"], "2026-11-16");
    assert_eq!(m[5]["date"], "2026-11-23");
    // volatility = (high − low) / close × 100
    for (row, (_, [_, h, l, c], _)) in m.iter().zip(SERIES) {
        let (h, l, c): (f64, f64, f64) =
            (h.parse().unwrap(), l.parse().unwrap(), c.parse().unwrap());
        assert!(near(f(row, "volatility"), (h - l) / c * 100.0), "{row}");
    }
    // daily % change, close to close; none on the first day
    assert!(m[0]["daily_pct_change"].is_null());
    assert!(near(
        f(&m[1], "daily_pct_change"),
        (102.0 - 105.0) / 105.0 * 100.0
    ));
    assert!(near(
        f(&m[5], "daily_pct_change"),
        (120.0 - 99.0) / 99.0 * 100.0
    ));
    // 5-day rolling average of close, exact
    assert_eq!(f(&m[1], "rolling_avg_5d"), 103.5);
    assert_eq!(f(&m[4], "rolling_avg_5d"), 105.0);
    assert_eq!(f(&m[5], "rolling_avg_5d"), 108.0);
    assert_eq!(f(&m[5], "volume"), 1500.25);

    let bars = sql(
        &data,
        "SELECT start, \"end\", close, source, vwap, trade_count, \"final\" FROM bars WHERE symbol = 'NVDA' ORDER BY start",
    );
    assert_eq!(bars.len(), 6, "each bar once: {bars:?}");
    assert!(
        bars.iter()
            .all(|b| b["source"] == "polygon" && b["final"] == true)
    );
    assert!(bars[0]["vwap"].is_null() && bars[0]["trade_count"].is_null());
    let dlq = sql(&data, "SELECT reason, payload FROM dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0]["reason"], "inconsistent_bar");
    assert!(dlq[0]["payload"].as_str().unwrap().contains("\"AAPL\""));
}
