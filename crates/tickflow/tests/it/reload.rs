//! Alert rules change without a restart: `POST /api/v1/reload` and SIGHUP read the config
//! again; a wrong config is refused with file, line and key and changes nothing; a rule that
//! keeps its name keeps its state.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::{Server, config, http, sql, wait_for};

fn rules(extra: &str) -> String {
    format!(
        "\n[[alerts.threshold]]\nname = \"a\"\nsymbol = \"NVDA\"\ncondition = \"price > 200\"\ncooldown_secs = 0\n{extra}"
    )
}

/// One NVDA trade at `price`, `seq` apart from the others.
fn trade(price: u32, seq: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":{now},\"price\":\"{price}\",\"size\":\"1\",\"seq\":{seq}}}\n"
    )
}

#[test]
fn rules_reload_over_http_and_sighup_and_a_wrong_config_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, config(&data, &rules(""))).unwrap();
    let server = Server::start(&cfg, &data);
    let ingest = |price: u32, seq: u64| {
        let (code, body) = http(
            "POST",
            &format!("{}/api/v1/ingest", server.url),
            Some(trade(price, seq).as_bytes()),
        );
        assert_eq!(code, 200, "{body}");
    };
    let reload = || http("POST", &format!("{}/api/v1/reload", server.url), None);
    ingest(201, 1);
    wait_for(&server, "a fires", |s| s["alerts"] == 1);

    // A wrong rule: refused as `check` would, and the running rules stay.
    std::fs::write(
        &cfg,
        config(
            &data,
            &rules("\n[[alerts.threshold]]\nname = \"b\"\ncondition = \"price >> 300\"\n"),
        ),
    )
    .unwrap();
    let (code, body) = reload();
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("run.toml:") && body.contains("alerts.threshold[1].condition"),
        "{body}"
    );

    // `b` added over HTTP; `a` keeps its state and does not fire again at 301.
    std::fs::write(
        &cfg,
        config(&data, &rules("\n[[alerts.threshold]]\nname = \"b\"\nsymbol = \"NVDA\"\ncondition = \"price > 300\"\ncooldown_secs = 0\n")),
    )
    .unwrap();
    let (code, body) = reload();
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["needs_restart"], serde_json::json!([]), "{body}");
    ingest(301, 2);
    wait_for(&server, "b fires", |s| s["alerts"] == 2);

    // SIGHUP: `a` now sends a resolve, which the drop to 150 gives.
    std::fs::write(
        &cfg,
        config(&data, &rules("resolve = true\n\n[[alerts.threshold]]\nname = \"b\"\nsymbol = \"NVDA\"\ncondition = \"price > 300\"\ncooldown_secs = 0\n")),
    )
    .unwrap();
    server.hangup();
    wait_for(&server, "the SIGHUP reload", |s| s["reloads"] == 2);
    ingest(150, 3);
    wait_for(&server, "a resolves", |s| s["alerts"] == 3);
    // The alerts API: newest first, filtered, each with its (here empty) delivery log.
    let get = |query: &str| {
        let (code, body) = http("GET", &format!("{}/api/v1/alerts{query}", server.url), None);
        (
            code,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let (code, a) = get("?rule=a");
    assert_eq!(code, 200, "{a}");
    let kinds: Vec<&str> = a["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["resolved", "fired"]);
    assert_eq!(a["alerts"][0]["deliveries"], serde_json::json!([]));
    let (_, resolved) = get("?kind=resolved&limit=5");
    assert_eq!(resolved["alerts"].as_array().unwrap().len(), 1);
    let (code, bad) = get("?kind=loud");
    assert_eq!(code, 400);
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("expected one of fired"),
        "{bad}"
    );
    server.stop();
    let alerts = sql(&data, "SELECT rule, kind FROM alerts ORDER BY ts, rule");
    let got: Vec<String> = alerts
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["rule"].as_str().unwrap(),
                a["kind"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(got, ["a fired", "b fired", "a resolved"]);
}
