//! `tickflow produce` writing to a file: the same seeded ticks other loaders read.

use crate::support::bin;

#[test]
fn produce_writes_the_same_seeded_ticks_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let read = |name: &str| {
        let path = dir.path().join(name);
        let out = bin()
            .args([
                "produce",
                "--count",
                "25",
                "--batch-size",
                "10",
                "--seed",
                "3",
                "--to",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines
    };
    let a = read("a.ndjson");
    assert_eq!(a.len(), 25);
    assert_eq!(a[24]["seq"], 24);
    assert_eq!(a[0]["type"], "trade");
    // Same seed, same prices and sizes; only the timestamps differ between runs.
    let strip = |v: &[serde_json::Value]| -> Vec<(String, String)> {
        v.iter()
            .map(|t| (t["price"].to_string(), t["size"].to_string()))
            .collect()
    };
    assert_eq!(strip(&a), strip(&read("b.ndjson")));
}

#[test]
fn produce_refuses_an_address_without_a_scheme() {
    let out = bin()
        .args(["produce", "--count", "1", "--to", "127.0.0.1:8750"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http://127.0.0.1:8750"), "{err}");
    assert!(!std::path::Path::new("127.0.0.1:8750").exists());
}

#[test]
fn produce_replays_a_file_to_a_pipeline_skipping_blank_lines() {
    use crate::support::{Server, config, sql};

    let dir = tempfile::tempdir().unwrap();
    let ticks = dir.path().join("ticks.ndjson");
    let wrote = bin()
        .args(["produce", "--count", "30", "--seed", "5", "--to"])
        .arg(&ticks)
        .output()
        .unwrap();
    assert!(wrote.status.success());
    // A capture may hold blank lines and lack the last newline.
    let text = std::fs::read_to_string(&ticks).unwrap();
    let text = text.replacen('\n', "\n\n  \n", 1);
    std::fs::write(&ticks, text.trim_end()).unwrap();

    let data = dir.path().join("data");
    let cfg = dir.path().join("tickflow.toml");
    std::fs::write(&cfg, config(&data, "")).unwrap();
    let server = Server::start(&cfg, &data);
    let acks = dir.path().join("acks");
    let out = bin()
        .args(["produce", "--batch-size", "7", "--connections", "2", "--to"])
        .arg(&server.url)
        .arg("--from")
        .arg(&ticks)
        .arg("--ack-log")
        .arg(&acks)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sent 30 events in 5 requests"), "{stdout}");
    let mut acked: Vec<(u64, u64)> = std::fs::read_to_string(&acks)
        .unwrap()
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    acked.sort_unstable();
    assert_eq!(acked, [(0, 6), (7, 13), (14, 20), (21, 27), (28, 29)]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.status()["processed"].as_u64() < Some(30) {
        assert!(std::time::Instant::now() < deadline, "{}", server.status());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.stop();
    let rows = sql(&data, "SELECT seq FROM trades ORDER BY seq");
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..30).collect::<Vec<_>>());

    // --count sends at most that many; a file target makes no sense with --from.
    let err = bin()
        .args(["produce", "--to", "copy.ndjson", "--from"])
        .arg(&ticks)
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&err.stderr)
            .contains("--to must be an http://, sqs://, nats:// or kafka:// address")
    );
    let missing = bin()
        .args(["produce", "--from", "/nonexistent/ticks.ndjson"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/ticks.ndjson"));
}
