//! `tickflow run` with its lake on S3 (moto_server, started by `scripts/test`): written,
//! compacted, expired and queried there, with the same answers as the same run on disk.

use std::path::Path;

use tickflow_core::contract::{s3_bucket, s3_endpoint};

use crate::support::{Server, bin, config, http, run, wait_for};

const DAY: i128 = 86_400 * 1_000_000_000;

const QUERIES: [&str; 4] = [
    "SELECT count(*) AS n, count(DISTINCT trade_id) AS ids FROM trades",
    "SELECT symbol, sum(price * size) AS notional, vwap(price, size) AS vwap, min(ts_event) AS first FROM trades GROUP BY symbol ORDER BY symbol",
    "SELECT symbol, time_bucket('1 day', ts_event) AS day, first(price, ts_event) AS open, last(price, ts_event) AS close FROM trades GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT \"interval\", count(*) AS n FROM bars GROUP BY 1 ORDER BY 1",
];

fn answer(url: &str, sql: &str) -> serde_json::Value {
    let body = serde_json::json!({ "sql": sql }).to_string();
    let (code, text) = http("POST", &format!("{url}/api/v1/sql"), Some(body.as_bytes()));
    assert_eq!(code, 200, "{sql}: {text}");
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["rows"].clone()
}

fn metric(url: &str, name: &str) -> u64 {
    let (_, text) = http("GET", &format!("{url}/metrics"), None);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// A request of trades from 20 days ago, which retention removes, then trades of three
/// symbols on two closed days (three and two days ago); each request in flushes of its own.
fn ingest(server: &Server) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128;
    let first_day = (now / DAY - 3) * DAY;
    let old_day = (now / DAY - 20) * DAY;
    let mut written = 0;
    for r in 0..13 {
        let mut body = String::new();
        for i in 0..25 {
            let n = r * 25 + i;
            let symbol = ["AAPL", "MSFT", "NVDA"][n % 3];
            // First, so that the later days do not make them late.
            let ts = if r == 0 {
                old_day + n as i128 * 1_000_000_000
            } else {
                first_day + (n as i128) * (2 * DAY / 325)
            };
            let price = format!("{}.{:02}", 100 + n % 7, (n * 37) % 100);
            body.push_str(&format!(
                r#"{{"type":"trade","symbol":"{symbol}","ts_event":{ts},"price":"{price}","size":"{}","trade_id":"{n}"}}"#,
                1 + n % 4
            ));
            body.push('\n');
        }
        let (code, text) = http(
            "POST",
            &format!("{}/api/v1/ingest", server.url),
            Some(body.as_bytes()),
        );
        assert_eq!(code, 200, "{text}");
        written += 25;
        wait_for(server, "the request in the lake", |s| {
            s["rows_durable"]["trades"].as_i64() == Some(written)
        });
    }
    written
}

/// Runs the same ingest into a pipeline with `lake` settings; returns the answers once
/// compaction and retention have run, and the stopped pipeline's data directory.
fn run_pipeline(
    root: &Path,
    name: &str,
    lake: &str,
) -> (Vec<serde_json::Value>, std::path::PathBuf) {
    let data = root.join(name);
    let cfg = root.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 50\ncompact_interval_secs = 1\nretention_days = 10\n{lake}"
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let written = ingest(&server);
    assert_eq!(written, 325);
    // Retention removes the 25 trades of 20 days ago once a compaction round has run after
    // they were written; the other 300 stay, merged.
    wait_for(&server, "retention", |_| {
        answer(&server.url, QUERIES[0])[0]["n"].as_i64() == Some(300)
    });
    let merged = metric(&server.url, "tickflow_lake_compacted_files_total");
    assert!(merged >= 12, "{merged} files merged");
    let answers = QUERIES.iter().map(|q| answer(&server.url, q)).collect();
    server.stop();
    (answers, data)
}

#[test]
fn a_pipeline_on_s3_writes_compacts_and_expires_there_and_answers_as_on_disk() {
    let Some(bucket) = s3_bucket("tf-run") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("s3://{bucket}/market");
    let object = format!(
        "url = \"{url}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
        s3_endpoint()
    );
    let (on_s3, data) = run_pipeline(dir.path(), "s3", &object);
    let (on_disk, _) = run_pipeline(dir.path(), "disk", "");
    assert_eq!(on_s3, on_disk);
    assert!(
        !data.join("lake").join("trades").exists(),
        "nothing written to the local disk"
    );

    // With no pipeline running, `tickflow sql` finds the lake from the data directory, with
    // credentials from the AWS environment.
    let out = bin()
        .args([
            "sql",
            "--data-dir",
            data.to_str().unwrap(),
            "--format",
            "json",
        ])
        .arg(QUERIES[1])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let offline: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(offline, on_disk[1]);

    // The data directory's checkpoint belongs to that lake: pointing it elsewhere is refused.
    let cfg = dir.path().join("elsewhere.toml");
    std::fs::write(&cfg, config(&data, "")).unwrap();
    let out = run(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("lake is at {url}")), "{stderr}");
}
