//! Damaged files in the data directory: a query that meets one names it, and never
//! answers with rows read from it (docs/reliability.md).

use crate::support::{Server, bin, config, http};

#[test]
fn a_truncated_parquet_part_is_named_and_never_read_as_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, config(&data, "\n[lake]\nflush_interval_ms = 50\n")).unwrap();
    let server = Server::start(&cfg, &data);
    for i in 1..=3 {
        let tick = format!(
            "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":{},\"price\":\"18{i}\",\"size\":\"1\",\"trade_id\":\"{i}\"}}",
            tickflow_model::UnixNanos::now().0
        );
        let (code, body) = http(
            "POST",
            &format!("{}/api/v1/ingest", server.url),
            Some(tick.as_bytes()),
        );
        assert_eq!(code, 200, "{body}");
    }
    server.stop();
    let mut parts: Vec<_> = walk(&data.join("lake").join("trades"));
    parts.sort();
    let damaged = parts.first().expect("a Parquet part").clone();
    let len = std::fs::metadata(&damaged).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let out = bin()
        .args(["sql", "--data-dir", data.to_str().unwrap()])
        .arg("SELECT count(*) AS n FROM trades")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "rows from a damaged file: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(&damaged.display().to_string()) && stderr.contains("is damaged"),
        "{stderr}"
    );
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}
