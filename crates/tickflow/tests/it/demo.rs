//! The main job a new user runs: `tickflow demo`, then SQL over what it produced.

use crate::support::{run_ok, sql, sql_count};

#[test]
fn demo_produces_every_table_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    // Ten days of history keep the debug-build test short; the release demo pushes ninety.
    let out = run_ok(&[
        "demo",
        "--duration",
        "8",
        "--data-dir",
        d,
        "--pg-port",
        "0",
        "--port",
        "0",
        "--history-days",
        "10",
        "--rate",
        "5000",
    ]);
    assert!(
        out.contains("tickflow is running: dashboard http://127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("stopped (duration reached)"), "{out}");

    assert!(sql_count(&data, "SELECT count(*) FROM trades") > 10_000);
    assert!(sql_count(&data, "SELECT count(*) FROM quotes") > 10_000);
    let intervals: Vec<String> = sql(
        &data,
        "SELECT DISTINCT \"interval\" AS i FROM bars WHERE \"final\" ORDER BY i",
    )
    .iter()
    .map(|r| r["i"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(intervals, ["1d", "1h", "1m", "1s", "5m"]);
    assert!(sql_count(&data, "SELECT count(*) FROM daily_metrics") >= 9 * 12);
    assert!(sql_count(&data, "SELECT count(*) FROM alerts") > 0);
    let reasons: Vec<String> = sql(&data, "SELECT DISTINCT reason FROM dlq ORDER BY reason")
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    for r in [
        "absurd_timestamp",
        "crossed_quote",
        "late",
        "non_positive_price",
    ] {
        assert!(reasons.iter().any(|x| x == r), "no {r} in {reasons:?}");
    }
    for (table, key) in [
        ("trades", "source, symbol, ts_event, seq"),
        ("quotes", "source, symbol, ts_event, seq"),
        ("bars", "symbol, \"interval\", start"),
        ("daily_metrics", "symbol, date"),
        ("alerts", "alert_id"),
    ] {
        let dups = sql(
            &data,
            &format!(
                "SELECT {key}, count(*) AS n FROM {table} GROUP BY {key} HAVING count(*) > 1 LIMIT 3"
            ),
        );
        assert!(
            dups.is_empty(),
            "duplicate natural keys in {table}: {dups:?}"
        );
    }
    // The formulas, checked in SQL against the bars they came from.
    let bad = sql(
        &data,
        "SELECT m.symbol, m.date FROM daily_metrics m WHERE abs(m.volatility - CAST((m.high - m.low) / m.close * 100 AS DOUBLE)) > 1e-6 LIMIT 3",
    );
    assert!(bad.is_empty(), "volatility formula broken: {bad:?}");
    // A second run on the same directory resumes: no history again, no duplicates.
    let before = sql_count(&data, "SELECT count(*) FROM daily_metrics");
    run_ok(&[
        "demo",
        "--duration",
        "3",
        "--data-dir",
        d,
        "--pg-port",
        "0",
        "--port",
        "0",
        "--history-days",
        "10",
        "--rate",
        "5000",
    ]);
    assert_eq!(
        sql_count(&data, "SELECT count(*) FROM daily_metrics"),
        before
    );
    let dups = sql(
        &data,
        "SELECT source, symbol, ts_event, seq FROM trades GROUP BY source, symbol, ts_event, seq HAVING count(*) > 1 LIMIT 3",
    );
    assert!(dups.is_empty(), "{dups:?}");
}
