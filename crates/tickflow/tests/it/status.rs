//! `tickflow status` against a running pipeline: every component and job in one look, the
//! raw JSON on request, and a clear failure once the pipeline has stopped.

use crate::support::{Server, bin, config, http, run, wait_for};

#[test]
fn status_shows_the_log_each_sink_and_each_job_and_fails_once_the_pipeline_stops() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            "\n[lake]\nflush_interval_ms = 100\n\n[[sinks]]\ntype = \"csv\"\nid = \"backup\"\n\n[[jobs]]\nname = \"merge\"\nkind = \"compaction\"\ncron = \"* * * * * *\"\n",
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let ticks: String = (0..3)
        .map(|i| {
            format!(
                "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":\"2026-12-04T15:00:0{i}Z\",\"price\":\"180\",\"size\":\"1\",\"trade_id\":\"{i}\"}}\n"
            )
        })
        .collect();
    let (code, _) = http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(ticks.as_bytes()),
    );
    assert_eq!(code, 200);
    wait_for(&server, "the sink's rows and a job run", |s| {
        s["sinks"][0]["rows_written"].as_u64() >= Some(3)
            && s["jobs"][0]["runs"].as_u64() >= Some(1)
    });
    let data_arg = data.to_str().unwrap();
    let out = run(&["status", "--data-dir", data_arg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        &format!("tickflow at {}", server.url),
        "log        3 records, processed to 3, lag 0",
        "SINK",
        "backup",
        "JOB",
        "merge  compaction  * * * * * *",
        "ok at 20",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let json = run(&["status", "--url", &server.url, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["log_next_offset"], 3);
    server.stop();

    let gone = bin()
        .args(["status", "--data-dir", data_arg])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(1));
    let why = String::from_utf8_lossy(&gone.stderr);
    assert!(why.contains("no pipeline is running on"), "{why}");
}
