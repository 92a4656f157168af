//! The HTTP surface: ingest errors name the problem, SQL sees unflushed rows, metrics count.

use crate::support::{Server, config, http};

#[test]
fn http_api_answers_and_refuses_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    // A long flush interval: rows stay unflushed, and queries must still see them.
    std::fs::write(
        &cfg,
        config(
            &data,
            "max_body_mb = 1\n\n[lake]\nflush_interval_ms = 600000\nflush_rows = 100000000\n",
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let url = &server.url;

    let (code, body) = http("GET", &format!("{url}/healthz"), None);
    assert_eq!((code, body.as_str()), (200, "{\"alive\":true}"));

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let good = format!(
        r#"{{"type":"trade","symbol":"NVDA","ts_event":{now},"price":"181.25","size":"100","trade_id":"1"}}"#
    );
    let good = good.as_str();
    let ndjson = format!(
        "{good}\n{}\n",
        good.replace("\"1\"}", "\"2\"}").replace("181.25", "181.50")
    );
    let (code, body) = http(
        "POST",
        &format!("{url}/api/v1/ingest"),
        Some(ndjson.as_bytes()),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"accepted\":2"), "{body}");

    let bad = format!("{good}\n{}\n", good.replace("\"price\"", "\"prcie\""));
    let (code, body) = http(
        "POST",
        &format!("{url}/api/v1/ingest"),
        Some(bad.as_bytes()),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("line 2") && body.contains("prcie") && body.contains("\"line\":2"),
        "{body}"
    );

    let (code, body) = http(
        "POST",
        &format!("{url}/api/v1/ingest"),
        Some(b"{\"type\":\"trade\",\"symbol\":\"\xff\"}"),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not UTF-8"), "{body}");

    let big = vec![b' '; 2 * 1024 * 1024];
    let (code, body) = http("POST", &format!("{url}/api/v1/ingest"), Some(&big));
    assert_eq!(code, 413, "{body}");

    // Unflushed rows are visible at once; decimals are exact.
    let mut rows = serde_json::Value::Null;
    for _ in 0..100 {
        let (code, body) = http(
            "POST",
            &format!("{url}/api/v1/sql"),
            Some(br#"{"sql":"SELECT count(*) AS n, sum(price) AS total FROM trades"}"#),
        );
        assert_eq!(code, 200, "{body}");
        rows = serde_json::from_str::<serde_json::Value>(&body).unwrap()["rows"].clone();
        if rows[0]["n"] == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(rows[0]["n"], 2, "{rows}");
    assert!(rows[0]["total"].to_string().contains("362.75"), "{rows}");

    let (code, body) = http(
        "POST",
        &format!("{url}/api/v1/sql"),
        Some(br#"{"sql":"SELECT nope FROM trades"}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("nope"), "{body}");
    let (code, _) = http(
        "POST",
        &format!("{url}/api/v1/sql"),
        Some(br#"{"sql":"DROP TABLE trades"}"#),
    );
    assert_eq!(code, 400);

    let (code, body) = http("GET", &format!("{url}/metrics"), None);
    assert_eq!(code, 200);
    assert!(
        body.contains("tickflow_ingested_total{source=\"http\"} 2"),
        "{body}"
    );
    assert!(
        body.contains("tickflow_rejected_total{reason=\"late\"} 0"),
        "{body}"
    );

    let (code, body) = http("GET", &format!("{url}/api/v1/status"), None);
    assert_eq!(code, 200);
    assert!(body.contains("\"log_next_offset\":2"), "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["sources"][0]["id"], "http", "{status:#}");
    assert_eq!(status["sources"][0]["state"], "running", "{status:#}");
    let (code, body) = http("GET", &format!("{url}/"), None);
    assert_eq!(code, 200);
    assert!(body.contains("<title>tickflow</title>"));
    assert!(
        body.contains("id=\"flow\"") && body.contains("id=\"dlq-list\""),
        "the page has the pipeline view and the DLQ"
    );
    let (code, script) = http("GET", &format!("{url}/app.js"), None);
    assert_eq!(code, 200);
    assert!(
        script.contains("s.notifiers"),
        "the script fills them from the status"
    );
    server.stop();
}

#[test]
fn http_sources_have_ids_and_tokens() {
    use crate::support::{http_with, run_ok};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let token = "0123456789abcdef-vendor-token";
    std::fs::write(
        &cfg,
        crate::support::config(
            &data,
            &format!("\n[[sources]]\ntype = \"http\"\nid = \"vendor\"\ntoken = \"{token}\"\n"),
        ),
    )
    .unwrap();
    let shown = run_ok(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(
        shown.contains("source vendor: HTTP ingest, bearer token required"),
        "{shown}"
    );
    assert!(!shown.contains(token), "{shown}");
    let server = crate::support::Server::start(&cfg, &data);
    let url = format!("{}/api/v1/ingest/vendor", server.url);
    let body = b"{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":\"2026-11-24T14:30:00Z\",\"price\":\"181.25\",\"size\":\"10\"}\n";
    let bearer = format!("Bearer {token}");
    for (headers, code) in [
        (vec![], 401),
        (
            vec![("authorization", "Bearer wrong-token-of-some-length")],
            401,
        ),
        (vec![("authorization", bearer.as_str())], 200),
    ] {
        let (got, text) = http_with("POST", &url, &headers, Some(body));
        assert_eq!(got, code, "{headers:?}: {text}");
        if code == 401 {
            assert!(text.contains("Authorization: Bearer"), "{text}");
        }
    }
    // A line naming another source is refused at a named endpoint: no producer can pass its
    // events off as another's.
    let spoof = b"{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":1,\"price\":\"1\",\"size\":\"1\",\"source\":\"other\"}\n";
    let (got, text) = http_with(
        "POST",
        &url,
        &[("authorization", bearer.as_str())],
        Some(spoof),
    );
    assert_eq!(got, 400, "{text}");
    assert!(text.contains("not this endpoint's"), "{text}");
    // The producer sends to a named source with its token, taken from the environment.
    let out = crate::support::bin()
        .env("TICKFLOW_TOKEN", token)
        .args([
            "produce",
            "--count",
            "50",
            "--batch-size",
            "25",
            "--to",
            &server.url,
        ])
        .args(["--source", "vendor"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("50 acknowledged"),
        "{said}"
    );
    let out = crate::support::bin()
        .args([
            "produce",
            "--count",
            "5",
            "--to",
            &server.url,
            "--source",
            "vendor",
        ])
        .env_remove("TICKFLOW_TOKEN")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "without the token nothing is acknowledged"
    );
    // Only the configured sources exist: naming one turns the open default off.
    let (got, text) = http("POST", &format!("{}/api/v1/ingest", server.url), Some(body));
    assert_eq!(got, 404, "{text}");
    assert!(
        text.contains("no HTTP ingest source is called \\\"http\\\""),
        "{text}"
    );
    let s = server.status();
    let vendor = s["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "vendor")
        .cloned()
        .unwrap_or_default();
    assert_eq!(vendor["events"], 51, "{s:#}");
    assert_eq!(vendor["state"], "running", "{s:#}");
    server.stop();
    let rows = crate::support::sql(&data, "SELECT DISTINCT source FROM trades");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["source"], "vendor");
    assert_eq!(
        crate::support::sql_count(&data, "SELECT count(*) FROM trades"),
        51
    );
}

/// Bodies built to hurt a parser: JSON nested a hundred thousand deep, at the top or inside
/// an event, and a million lines. Each gets an answer that says what is wrong (or what was
/// taken), nothing panics, and the pipeline takes the next good body.
#[test]
fn hostile_bodies_are_refused_clearly_and_ingest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, config(&data, "")).unwrap();
    let server = Server::start(&cfg, &data);
    let ingest = format!("{}/api/v1/ingest", server.url);
    let deep = 100_000;

    let nested = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
    let (code, body) = http("POST", &ingest, Some(nested.as_bytes()));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("line 1: element 0"), "{body}");

    let inside = format!(
        r#"{{"type":"trade","symbol":"NVDA","ts_event":1,"price":"1","size":"1","x":{}{}}}"#,
        "{\"a\":".repeat(deep),
        "}".repeat(deep)
    );
    let (code, body) = http("POST", &ingest, Some(inside.as_bytes()));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("line 1"), "{body}");

    // A million empty lines: nothing to take, said so.
    let blank = "\n".repeat(1_000_000);
    let (code, body) = http("POST", &ingest, Some(blank.as_bytes()));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no events in the body"), "{body}");

    // A hundred thousand trades in one body, each taken.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let many: String = (0..100_000u64)
        .map(|i| {
            format!(
                "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":{},\"price\":\"1\",\"size\":\"1\",\"trade_id\":\"{i}\"}}\n",
                now - 1_000_000_000 + u128::from(i)
            )
        })
        .collect();
    let (code, body) = http("POST", &ingest, Some(many.as_bytes()));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"accepted\":100000"), "{body}");
    crate::support::wait_for(&server, "every trade of the big body stored", |s| {
        s["log_lag"].as_u64() == Some(0) && s["rows_durable"]["trades"].as_u64() == Some(100_000)
    });
    server.stop();
}
