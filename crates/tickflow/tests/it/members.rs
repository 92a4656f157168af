//! Two `tickflow run` processes with one config on a partitioned broker log: they share the
//! partitions, and when one is killed the other takes its partitions over with their state,
//! so every acknowledged tick is stored exactly once.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::crash::{acked_seqs, every_ack_stored_once, nats_log_section};
use crate::support::{Server, api_rows, bin, config, sql};

const PARTITIONS: u64 = 4;

fn owned(server: &Server) -> Vec<u64> {
    server.status()["partitions"]["owned"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
        .unwrap_or_default()
}

/// Waits (bounded by rounds, not by the clock's reading of a slow machine) until `done`.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rows of `sql` run through `server`'s API.
fn query(server: &Server, sql: &str) -> serde_json::Value {
    api_rows(&server.url, sql)
}

fn producer(url: &str, start_seq: u64, ack_log: &std::path::Path) -> std::process::Child {
    bin()
        .args([
            "produce",
            "--count",
            "1000000",
            "--batch-size",
            "100",
            "--to",
            url,
        ])
        .args(["--start-seq", &start_seq.to_string()])
        .args(["--ack-log", ack_log.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn two_processes_share_the_log(log: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!("\n[lake]\nflush_interval_ms = 200\n\n{log}partitions = {PARTITIONS}\n"),
        ),
    )
    .unwrap();
    // The first process takes every partition; a second one takes half of them over.
    let a = Server::start(&cfg, &data);
    wait_until("the first process owns every partition", || {
        owned(&a).len() as u64 == PARTITIONS
    });
    let b = Server::start(&cfg, &data);
    wait_until("the two processes share the partitions", || {
        let (oa, ob) = (owned(&a), owned(&b));
        oa.len() == 2 && ob.len() == 2 && oa.iter().all(|p| !ob.contains(p))
    });
    assert_eq!(b.status()["partitions"]["members"], 2);

    // Both take ticks; one is killed mid-stream.
    let (acks_a, acks_b) = (dir.path().join("acks-a.txt"), dir.path().join("acks-b.txt"));
    let mut pa = producer(&a.url, 0, &acks_a);
    let mut pb = producer(&b.url, 10_000_000, &acks_b);
    wait_until("both processes acknowledge ticks", || {
        acked_seqs(&acks_a).len() >= 3000 && acked_seqs(&acks_b).len() >= 3000
    });
    // A query through either process sees every symbol, those of the other's partitions
    // included (from the files their checkpoints published).
    wait_until("each process sees the other's partitions", || {
        [&a, &b].iter().all(|server| {
            let rows = query(server, "SELECT DISTINCT symbol FROM trades");
            rows.as_array().map(Vec::len) == Some(4)
        })
    });
    b.kill();
    let _ = pb.wait();
    wait_until("the survivor takes every partition over", || {
        owned(&a).len() as u64 == PARTITIONS
    });
    let taken_over = acked_seqs(&acks_a).len();
    wait_until("the survivor acknowledges more ticks", || {
        acked_seqs(&acks_a).len() >= taken_over + 3000
    });
    let _ = pa.kill();
    let _ = pa.wait();
    wait_until("the survivor processes everything", || {
        let s = a.status();
        s["log_lag"].as_u64() == Some(0)
            && s["partitions"]["owned"].as_array().map(Vec::len) == Some(PARTITIONS as usize)
    });

    let mut acked = acked_seqs(&acks_a);
    acked.extend(acked_seqs(&acks_b));
    let stored: Vec<u64> = query(&a, "SELECT seq FROM trades")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    every_ack_stored_once(&acked, &stored);
    a.stop();

    // The lake holds each partition's files in a folder of its own, and read from the files
    // alone it holds every acknowledged tick once.
    let folders: std::collections::BTreeSet<String> = std::fs::read_dir(data.join("lake/trades"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        folders.len() >= 2 && folders.iter().all(|f| f.starts_with("partition=")),
        "{folders:?}"
    );
    let stored: Vec<u64> = sql(&data, "SELECT seq FROM trades")
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    every_ack_stored_once(&acked, &stored);
}

#[test]
fn two_processes_share_a_partitioned_nats_log_and_one_takes_over_when_the_other_is_killed() {
    let Some(url) = crate::nats::server() else {
        return;
    };
    two_processes_share_the_log(&nats_log_section(&url, "tfpart"));
}

#[cfg(feature = "kafka")]
#[test]
fn two_processes_share_a_partitioned_kafka_log_and_one_takes_over_when_the_other_is_killed() {
    let Some(brokers) = crate::kafka::broker() else {
        return;
    };
    two_processes_share_the_log(&crate::crash::kafka_log_section(&brokers, "tfpart"));
}
