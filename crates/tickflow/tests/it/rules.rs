//! Rules written in SQL, their indicator windows warmed up from the lake across a restart,
//! and the stale-feed detector, on the real binary.

use crate::support::{Server, config, http, sql, wait_for};

/// 2026-11-23T14:30:00Z.
const T0: u64 = 1_795_444_200;
const SEC: u64 = 1_000_000_000;

/// NVDA trades, `(second after T0, size)`, as NDJSON.
fn trades(at: &[(u64, u32)]) -> String {
    at.iter()
        .map(|(t, size)| {
            format!(
                "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":{},\"price\":\"100\",\"size\":\"{size}\",\"seq\":{t}}}\n",
                (T0 + t) * SEC
            )
        })
        .collect()
}

fn ingest(server: &Server, body: &str) {
    let (code, answer) = http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(body.as_bytes()),
    );
    assert_eq!(code, 200, "{answer}");
}

#[test]
fn an_indicator_window_is_warm_after_a_restart_so_the_first_surge_fires() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let rule = "\n[[alerts.rule]]\nname = \"surge\"\non = \"bars\"\ninterval = \"1s\"\nwhen = \"volume > 2 * sma(volume, 3, 1)\"\ncooldown_secs = 0\n";
    std::fs::write(&cfg, config(&data, rule)).unwrap();

    // First run: four quiet 1s bars, closed by a trade ten seconds on, stored at the stop.
    let server = Server::start(&cfg, &data);
    ingest(
        &server,
        &trades(&[(0, 10), (1, 10), (2, 10), (3, 10), (10, 10)]),
    );
    wait_for(&server, "the trades processed", |s| s["processed"] == 5);
    server.stop();
    let bars = sql(
        &data,
        "SELECT count(*) AS n FROM bars WHERE \"interval\" = '1s' AND \"final\"",
    );
    assert_eq!(bars[0]["n"], 4, "{bars:?}");

    // Second run: the bar at 11 s has ten times the volume of the three bars before it. Those
    // are bars 2, 3 and 10: two of them from the first run, so only a window filled from the
    // lake at start can see the surge.
    let server = Server::start(&cfg, &data);
    ingest(&server, &trades(&[(11, 100), (20, 10)]));
    wait_for(&server, "the trades processed", |s| s["processed"] == 2);
    server.stop();
    let alerts = sql(&data, "SELECT rule, kind, message FROM alerts ORDER BY ts");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule"], "surge");
    assert_eq!(alerts[0]["kind"], "fired");
    assert_eq!(
        alerts[0]["message"],
        "NVDA 1s bar: volume > 2 * sma(volume, 3, 1) (volume=100, sma(volume, 3, 1)=10)"
    );
}

#[test]
fn a_silent_feed_fires_once_and_resolves_when_its_events_return() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let rule = "\n[[alerts.stale_feed]]\nname = \"quiet\"\nsource = \"http\"\nafter_secs = 1\nseverity = \"critical\"\n";
    std::fs::write(&cfg, config(&data, rule)).unwrap();
    let server = Server::start(&cfg, &data);
    // Nothing was sent: silent from the start.
    wait_for(&server, "the silence alerted", |s| s["alerts"] == 1);
    ingest(&server, &trades(&[(0, 10)]));
    wait_for(&server, "the return resolved", |s| {
        s["alerts"].as_u64() >= Some(2)
    });
    server.stop();
    let alerts = sql(
        &data,
        "SELECT rule, symbol, kind, severity, message FROM alerts ORDER BY ts LIMIT 2",
    );
    assert_eq!(alerts[0]["kind"], "fired", "{alerts:?}");
    assert_eq!(alerts[0]["severity"], "critical");
    assert_eq!(alerts[0]["symbol"], "HTTP");
    assert!(
        alerts[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("source http: no events for "),
        "{alerts:?}"
    );
    assert_eq!(alerts[1]["kind"], "resolved", "{alerts:?}");
    assert!(
        alerts[1]["message"]
            .as_str()
            .unwrap()
            .starts_with("source http: events again after "),
        "{alerts:?}"
    );
}
