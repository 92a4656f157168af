//! The HTTP query API beside `POST /api/v1/sql`: bars with every column, the TradingView
//! history, results as CSV or Arrow by `Accept`, and the market-data functions answering
//! the same over HTTP and the Postgres wire.

use crate::pgwire::{pg_addr, running};
use crate::support::{http, http_with, sql, sql_count};

fn get(url: &str) -> (u16, serde_json::Value) {
    let (status, body) = http("GET", url, None);
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, value)
}

#[test]
fn bars_and_tradingview_history_answer_from_the_bars_table() {
    let dir = tempfile::tempdir().unwrap();
    let (server, data) = running(dir.path());
    // Ten minutes of SPY, a trade every 20 seconds: ten 1-minute bars.
    let ticks: String = (0..30)
        .map(|i| {
            format!(
                "{{\"type\":\"trade\",\"symbol\":\"SPY\",\"ts_event\":{},\"price\":\"60{}.25\",\"size\":\"10\",\"seq\":{i}}}\n",
                1_795_444_200_000_000_000i64 + i * 20_000_000_000,
                i % 10
            )
        })
        .collect();
    let (status, body) = http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(ticks.as_bytes()),
    );
    assert_eq!(status, 200, "{body}");
    crate::support::wait_for(&server, "SPY processed", |s| {
        s["log_lag"].as_u64() == Some(0) && s["rows_durable"]["trades"].as_u64() == Some(5030)
    });
    let expected = sql_count(
        &data,
        "SELECT count(*) FROM bars WHERE symbol = 'SPY' AND \"interval\" = '1m'",
    );
    assert_eq!(expected, 10);

    let (status, body) = get(&format!(
        "{}/api/v1/bars?symbol=SPY&interval=1m",
        server.url
    ));
    assert_eq!(status, 200, "{body}");
    let bars = body["bars"].as_array().unwrap();
    assert_eq!(bars.len() as i64, expected);
    let first = &bars[0];
    for column in [
        "start", "end", "open", "high", "low", "close", "volume", "final",
    ] {
        assert!(!first[column].is_null(), "{column} missing: {first}");
    }
    let starts: Vec<&str> = bars.iter().map(|b| b["start"].as_str().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "oldest first");
    // A window: `from` inclusive, `to` exclusive.
    let (_, window) = get(&format!(
        "{}/api/v1/bars?symbol=SPY&interval=1m&from={}&to={}",
        server.url, starts[0], starts[2]
    ));
    assert_eq!(window["bars"].as_array().unwrap().len(), 2, "{window}");

    for (query, says) in [
        ("interval=1m", "symbol is missing"),
        ("symbol=NVDA&interval=2m", "interval"),
        (
            "symbol=NVDA&from=yesterday",
            "from=\"yesterday\" is not a time",
        ),
    ] {
        let (status, body) = get(&format!("{}/api/v1/bars?{query}", server.url));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }

    let (status, history) = get(&format!(
        "{}/api/v1/history?symbol=SPY&resolution=1&from=0&to=4102444800",
        server.url
    ));
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["s"], "ok");
    let t = history["t"].as_array().unwrap();
    assert_eq!(t.len() as i64, expected);
    for key in ["o", "h", "l", "c", "v"] {
        assert_eq!(history[key].as_array().unwrap().len(), t.len(), "{key}");
        assert!(
            history[key][0].is_number(),
            "{key} must be numbers: {history}"
        );
    }
    let (_, last_two) = get(&format!(
        "{}/api/v1/history?symbol=SPY&resolution=1&from=0&to=4102444800&countback=2",
        server.url
    ));
    assert_eq!(last_two["t"].as_array().unwrap()[..], t[t.len() - 2..]);
    let (_, none) = get(&format!(
        "{}/api/v1/history?symbol=SPY&resolution=1&from=4102444800&to=4102448400",
        server.url
    ));
    assert_eq!(none["s"], "no_data");
    assert_eq!(none["nextTime"], t[t.len() - 1], "{none}");
    let (status, bad) = get(&format!(
        "{}/api/v1/history?symbol=NVDA&resolution=7&from=0&to=1",
        server.url
    ));
    assert_eq!(
        (status, &bad["s"]),
        (400, &serde_json::json!("error")),
        "{bad}"
    );
    server.stop();
}

#[test]
fn sql_answers_csv_or_arrow_by_accept_and_market_functions_agree_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (server, data) = running(dir.path());
    let url = format!("{}/api/v1/sql", server.url);
    let query = b"SELECT symbol, count(*) AS n FROM trades GROUP BY symbol ORDER BY symbol";
    let (status, csv) = http_with("POST", &url, &[("accept", "text/csv")], Some(query));
    assert_eq!(status, 200, "{csv}");
    assert!(csv.starts_with("symbol,n\n"), "{csv}");
    let (status, arrow) = http_with(
        "POST",
        &url,
        &[("accept", "application/vnd.apache.arrow.stream")],
        Some(query),
    );
    assert_eq!(status, 200);
    // An IPC stream starts with the continuation marker, then the schema naming the columns.
    assert!(
        arrow.starts_with('\u{FFFD}') && arrow.contains("symbol"),
        "{arrow:?}"
    );

    let market = "SELECT symbol, CAST(vwap(price, size) AS VARCHAR) AS vwap, CAST(first(price, ts_event) AS VARCHAR) AS open, CAST(last(price, ts_event) AS VARCHAR) AS close, count(DISTINCT time_bucket('1 minute', ts_event)) AS minutes FROM trades GROUP BY symbol ORDER BY symbol";
    let over_http = sql(&data, market);
    assert!(!over_http.is_empty());
    let (host, port) = pg_addr(&data);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let over_pg = runtime.block_on(async {
        let client = crate::support::pg_client(&host, port, "tickflow").await;
        client.query(market, &[]).await.unwrap()
    });
    assert_eq!(over_pg.len(), over_http.len());
    for (pg, http) in over_pg.iter().zip(&over_http) {
        for (i, column) in ["symbol", "vwap", "open", "close"].iter().enumerate() {
            assert_eq!(
                pg.get::<_, String>(i),
                http[*column].as_str().unwrap(),
                "{column}"
            );
        }
        assert_eq!(pg.get::<_, i64>(4), http["minutes"].as_i64().unwrap());
    }
    // The VWAP of one symbol, checked by hand from its trades.
    let trades = sql(
        &data,
        "SELECT CAST(price AS VARCHAR) AS p, CAST(size AS VARCHAR) AS s FROM trades WHERE symbol = 'NVDA'",
    );
    let (pv, v) = trades.iter().fold((0f64, 0f64), |(pv, v), r| {
        let p: f64 = r["p"].as_str().unwrap().parse().unwrap();
        let s: f64 = r["s"].as_str().unwrap().parse().unwrap();
        (pv + p * s, v + s)
    });
    let nvda = over_http.iter().find(|r| r["symbol"] == "NVDA").unwrap();
    let vwap: f64 = nvda["vwap"].as_str().unwrap().parse().unwrap();
    assert!((vwap - pv / v).abs() < 1e-6, "{vwap} vs {}", pv / v);
    server.stop();
}

#[test]
fn tickflow_sql_plans_without_a_rule_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let (server, data) = running(dir.path());
    server.stop();
    let d = data.to_str().unwrap();
    let query = "SELECT symbol, count(*) AS n, sum(price * size) AS notional FROM trades GROUP BY symbol ORDER BY symbol";
    let all = crate::support::run_ok(&["sql", "--data-dir", d, "--format", "csv", query]);
    assert!(all.lines().count() >= 3, "{all}");
    for rule in ["exact_sums", "narrow_sums", "symbol_runs"] {
        let without = crate::support::run_ok(&[
            "sql",
            "--data-dir",
            d,
            "--format",
            "csv",
            "--disable",
            rule,
            query,
        ]);
        assert_eq!(without, all, "without {rule}");
    }
    let out = crate::support::bin()
        .args(["sql", "--data-dir", d, "--disable", "fast", query])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--disable fast: expected one of exact_sums"),
        "{err}"
    );
}
