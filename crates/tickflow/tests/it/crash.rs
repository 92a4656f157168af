//! SIGKILL during HTTP ingest: every tick whose request got a 2xx is queryable exactly once
//! after a restart.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Server, bin, config, sql, sql_count};

fn acked_seqs(path: &std::path::Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let (a, b) = line.split_once(' ').expect("FIRST LAST");
        out.extend(a.parse::<u64>().unwrap()..=b.parse::<u64>().unwrap());
    }
    out
}

#[test]
fn sigkill_during_ingest_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, config(&data, "\n[lake]\nflush_interval_ms = 200\n")).unwrap();
    let ack_log = dir.path().join("acks.txt");
    let mut next_seq = 0u64;
    for round in 0..3 {
        let server = Server::start(&cfg, &data);
        let mut producer = bin()
            .args([
                "produce",
                "--count",
                "1000000",
                "--batch-size",
                "200",
                "--to",
                &server.url,
                "--start-seq",
                &next_seq.to_string(),
            ])
            .args(["--ack-log", ack_log.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let some requests through, then kill the server mid-stream.
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked_seqs(&ack_log).len() < 2000 * (round + 1) {
            assert!(Instant::now() < deadline, "producer made no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300 + 250 * round as u64));
        server.kill();
        let _ = producer.wait();
        next_seq += 1_000_000;
    }
    // Restart, let it process everything, stop cleanly.
    let server = Server::start(&cfg, &data);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = server.status();
        if s["log_lag"].as_u64() == Some(0) && s["flushes"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "did not catch up: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();

    let acked = acked_seqs(&ack_log);
    assert!(acked.len() >= 6000, "only {} acknowledged", acked.len());
    let rows = sql(&data, "SELECT seq FROM trades");
    let stored: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    let unique: HashSet<u64> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "a trade is stored twice");
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|s| !unique.contains(s))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but lost: {missing:?} (of {} acked)",
        acked.len()
    );
    assert_eq!(sql_count(&data, "SELECT count(*) FROM dlq"), 0);
}
