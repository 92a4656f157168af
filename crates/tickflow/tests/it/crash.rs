//! SIGKILL during HTTP ingest: every tick whose request got a 2xx is queryable exactly once
//! after a restart, with the lake on disk or on S3, and with the log embedded, on NATS
//! JetStream or on Kafka.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Server, api_rows, bin, config, sql, sql_count};

pub(crate) fn acked_seqs(path: &std::path::Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    // A last line still being written (no newline yet) is not an acknowledgement yet.
    for line in text
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
    {
        let (a, b) = line.split_once(' ').expect("FIRST LAST");
        out.extend(a.parse::<u64>().unwrap()..=b.parse::<u64>().unwrap());
    }
    out
}

/// Kills `tickflow run` three times while a producer streams ticks into it, restarts it to
/// catch up, and checks every acknowledged tick is stored once (asked of the pipeline, then
/// stopped cleanly). `lake` goes into the `[lake]` section; `more` after it.
fn killed_three_times(dir: &std::path::Path, lake: &str, more: &str) -> std::path::PathBuf {
    let data = dir.join("data");
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!("\n[lake]\nflush_interval_ms = 200\n{lake}\n{more}"),
        ),
    )
    .unwrap();
    let ack_log = dir.join("acks.txt");
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
        // Caught up: nothing left in the log, and what was processed is in the lake (flushed
        // now, or before the last kill when the log ended at the checkpoint).
        let flushed =
            s["flushes"].as_u64().unwrap_or(0) > 0 || s["processed_offset"] == s["log_next_offset"];
        if s["log_lag"].as_u64() == Some(0) && flushed {
            break;
        }
        assert!(Instant::now() < deadline, "did not catch up: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let query = |sql: &str| api_rows(&server.url, sql);
    let rows = query("SELECT seq FROM trades");
    let stored: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(query("SELECT count(*) AS n FROM dlq")[0]["n"], 0);
    server.stop();
    every_ack_stored_once(&acked_seqs(&ack_log), &stored);
    data
}

pub(crate) fn every_ack_stored_once(acked: &[u64], stored: &[u64]) {
    assert!(acked.len() >= 6000, "only {} acknowledged", acked.len());
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
}

#[test]
fn sigkill_during_ingest_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = killed_three_times(dir.path(), "", "");
    // Read again by a process of its own, from the files alone.
    let rows = sql(&data, "SELECT seq FROM trades");
    let stored: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    every_ack_stored_once(&acked_seqs(&dir.path().join("acks.txt")), &stored);
    assert_eq!(sql_count(&data, "SELECT count(*) FROM dlq"), 0);
}

#[test]
fn sigkill_with_the_lake_on_s3_loses_and_doubles_nothing() {
    let Some(bucket) = tickflow_core::contract::s3_bucket("tf-crash") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    killed_three_times(
        dir.path(),
        &format!(
            "url = \"s3://{bucket}/lake\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
            tickflow_core::contract::s3_endpoint()
        ),
        "",
    );
}

/// [`killed_three_times`] with `[log]` on a broker: nothing of the log is left on the
/// machine, and the lake read by a process of its own holds every acknowledged tick once.
fn killed_three_times_on_a_broker_log(log: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = killed_three_times(dir.path(), "", log);
    // The log's directory holds only its lock.
    let log_files: Vec<_> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "LOCK")
        .collect();
    assert!(log_files.is_empty(), "local log files: {log_files:?}");
    let rows = sql(&data, "SELECT seq FROM trades");
    let stored: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    every_ack_stored_once(&acked_seqs(&dir.path().join("acks.txt")), &stored);
}

pub(crate) fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        tickflow_model::UnixNanos::now().0
    )
}

#[test]
fn sigkill_with_the_log_on_nats_loses_and_doubles_nothing() {
    let Some(url) = crate::nats::server() else {
        return;
    };
    killed_three_times_on_a_broker_log(&nats_log_section(&url, "tflog"));
}

/// A `[log]` section on NATS with a stream, subject and consumer of its own.
pub(crate) fn nats_log_section(url: &str, prefix: &str) -> String {
    let unique = unique();
    let stream = prefix.to_uppercase();
    format!(
        "[log]\nkind = \"nats\"\nurl = \"{url}\"\nstream = \"{stream}_{unique}\"\nsubject = \"{prefix}.{unique}\"\nconsumer = \"{prefix}-{unique}\"\n"
    )
}

#[cfg(feature = "kafka")]
/// A `[log]` section on Kafka with a topic and group of its own. tansu 0.6.0 gives a batch
/// of several records one offset: each chunk goes alone.
pub(crate) fn kafka_log_section(brokers: &str, prefix: &str) -> String {
    let unique = unique();
    format!(
        "[log]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{prefix}-{unique}\"\ngroup = \"{prefix}-{unique}\"\noptions = {{ \"batch.num.messages\" = \"1\" }}\n"
    )
}

#[cfg(feature = "kafka")]
#[test]
fn sigkill_with_the_log_on_kafka_loses_and_doubles_nothing() {
    let Some(brokers) = crate::kafka::broker() else {
        return;
    };
    killed_three_times_on_a_broker_log(&kafka_log_section(&brokers, "tflog"));
}
