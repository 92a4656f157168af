//! Compaction in a running pipeline: small files are merged while queries run, and no row is
//! lost or doubled; `tickflow compact` refuses a lake a pipeline is running on.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{Server, config, config_with_csv_sink, http, run, sql_count, wait_for};

const DAY: i128 = 86_400 * 1_000_000_000;

/// Folders of `table` with their part-file counts.
fn files_per_folder(lake: &Path, table: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let Ok(days) = std::fs::read_dir(lake.join(table)) else {
        return out;
    };
    for day in days.flatten() {
        for folder in std::fs::read_dir(day.path()).unwrap().flatten() {
            let n = std::fs::read_dir(folder.path())
                .unwrap()
                .flatten()
                .filter(|f| f.file_name().to_string_lossy().ends_with(".parquet"))
                .count();
            out.push(n);
        }
    }
    out
}

fn count_over_http(url: &str) -> i64 {
    let (code, body) = http(
        "POST",
        &format!("{url}/api/v1/sql"),
        Some(br#"{"sql":"SELECT count(*) AS n FROM trades"}"#),
    );
    assert_eq!(code, 200, "a query failed while compaction ran: {body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["rows"][0]["n"]
        .as_i64()
        .unwrap()
}

#[test]
fn running_pipeline_merges_small_files_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    // Flushes every 50 ms, so each request below lands in files of its own.
    std::fs::write(
        &cfg,
        config(
            &data,
            "\n[lake]\nflush_interval_ms = 50\ncompact_interval_secs = 1\n",
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let url = server.url.clone();

    // Trades of three symbols on two closed days (three and two days ago), 25 per request.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128;
    let first_day = (now / DAY - 3) * DAY;
    let requests = 24;
    for r in 0..requests {
        let mut body = String::new();
        for i in 0..25 {
            let n = r * 25 + i;
            let symbol = ["AAPL", "MSFT", "NVDA"][n % 3];
            let ts = first_day + (n as i128) * (2 * DAY / (requests as i128 * 25));
            body.push_str(&format!(
                r#"{{"type":"trade","symbol":"{symbol}","ts_event":{ts},"price":"10.5","size":"1","trade_id":"{n}"}}"#
            ));
            body.push('\n');
        }
        let (code, text) = http(
            "POST",
            &format!("{url}/api/v1/ingest"),
            Some(body.as_bytes()),
        );
        assert_eq!(code, 200, "{text}");
        // Each request in flushes of its own: small files for compaction to merge.
        let written = (r as i64 + 1) * 25;
        wait_for(&server, "the request in the lake", |s| {
            s["rows_durable"]["trades"].as_i64() == Some(written)
        });
    }
    let total = (requests * 25) as i64;
    let lake = data.join("lake");
    // Queries answer the same, and never fail, while the files are merged under them.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert_eq!(count_over_http(&url), total);
        let now = files_per_folder(&lake, "trades");
        if !now.is_empty() && now.iter().all(|&n| n == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "not compacted in time: {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, metrics) = http("GET", &format!("{url}/metrics"), None);
    let merged: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tickflow_lake_compacted_files_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Six folders (two days × three symbols), each merged from at least two files.
    assert_eq!(files_per_folder(&lake, "trades").len(), 6);
    assert!(merged >= 12, "{merged} files merged");

    // While it runs, offline compaction is refused.
    let out = run(&["compact", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a pipeline is running"),
        "{out:?}"
    );
    server.stop();

    assert_eq!(sql_count(&data, "SELECT count(*) FROM trades"), total);
    assert_eq!(
        sql_count(&data, "SELECT count(DISTINCT trade_id) FROM trades"),
        total
    );
    // A mistyped directory is refused, and nothing is created there.
    let typo = dir.path().join("no-such-dir");
    let out = run(&["compact", "--data-dir", typo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no checkpoint"),
        "{out:?}"
    );
    assert!(!typo.exists());
    let out = run(&["compact", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("merged 0 files into 0"),
        "{out:?}"
    );
}

#[test]
fn compaction_leaves_what_a_lagging_sink_still_needs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("csv");
    // A file where the sink's directory should be: the sink never opens while it is there.
    std::fs::write(&csv, "in the way").unwrap();
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config_with_csv_sink(
            &data,
            &csv,
            "\n[lake]\nflush_interval_ms = 50\ncompact_interval_secs = 1\n",
            "tables = [\"trades\"]\n",
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    // Trades three days ago, a request per flush: a closed day of small files.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128;
    let day = (now / DAY - 3) * DAY;
    for r in 0..8 {
        let body: String = (0..10)
            .map(|i| {
                let n = r * 10 + i;
                format!(
                    "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":{},\"price\":\"10\",\"size\":\"1\",\"seq\":{n}}}\n",
                    day + n as i128 * 1_000_000_000
                )
            })
            .collect();
        let (code, text) = http(
            "POST",
            &format!("{}/api/v1/ingest", server.url),
            Some(body.as_bytes()),
        );
        assert_eq!(code, 200, "{text}");
        let written = (r as u64 + 1) * 10;
        wait_for(&server, "the request in the lake", |s| {
            s["rows_durable"]["trades"].as_u64() == Some(written)
        });
    }
    // Every request in files of its own, then two whole compaction rounds after that: each
    // would have merged these files, were the sink not still before them.
    let lake = data.join("lake");
    let before = files_per_folder(&lake, "trades");
    assert!(before.iter().all(|&n| n >= 8), "{before:?}");
    let rounds = server.status()["compactions"].as_u64().unwrap();
    wait_for(&server, "two more compaction rounds", |s| {
        s["compactions"].as_u64().unwrap() >= rounds + 2
    });
    assert_eq!(count_over_http(&server.url), 80);
    assert_eq!(
        files_per_folder(&lake, "trades"),
        before,
        "nothing merged past the sink"
    );
    server.stop();

    let out = run(&["compact", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("merged 0 files") && said.contains("left as they are"),
        "{said}"
    );
    assert_eq!(files_per_folder(&lake, "trades"), before);

    // The sink can open now: it catches up from the lake, flush by flush.
    std::fs::remove_file(&csv).unwrap();
    let server = Server::start(&cfg, &data);
    wait_for(&server, "the sink catches up", |s| {
        s["sinks"][0]["lag_flushes"].as_u64() == Some(0) && s["sinks"][0]["state"] == "ok"
    });
    server.stop();
    let text = std::fs::read_dir(csv.join("trades"))
        .unwrap()
        .flatten()
        .map(|f| std::fs::read_to_string(f.path()).unwrap())
        .collect::<String>();
    assert_eq!(text.lines().count(), 81, "a header and every trade once");
    // Now every flush is written: compaction may merge them.
    let out = run(&["compact", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(files_per_folder(&lake, "trades").iter().all(|&n| n == 1));
}
