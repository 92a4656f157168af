//! Kafka on both sides of `tickflow run`: `tickflow produce --to kafka://…` sends while the
//! pipeline is SIGKILLed and restarted; every tick ends up in the lake exactly once, and the
//! Kafka sink publishes every trade back, each `tickflow-id` at least once and none lost.
//! Needs a broker on 127.0.0.1:9092 (or `TICKFLOW_TEST_KAFKA`); `./scripts/test` starts tansu.

use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Server, bin, config, http, sql_count, wait_for};

/// tansu 0.6.0, the broker the tests run, gives a batch of several records one offset: its
/// consumers would see only the first. Each record is sent as a batch of its own.
const ONE_RECORD_A_BATCH: &str = "batch.num.messages=1";

fn broker() -> Option<String> {
    let addr = std::env::var("TICKFLOW_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    if std::net::TcpStream::connect(&addr).is_ok() {
        return Some(addr);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "a Kafka broker is required under CI at {addr}: ./scripts/test starts tansu"
    );
    eprintln!("skipped: no Kafka broker at {addr}");
    None
}

#[test]
fn ticks_sent_to_kafka_while_the_pipeline_is_killed_are_stored_once() {
    let Some(brokers) = broker() else { return };
    let unique = format!(
        "{}-{}",
        std::process::id(),
        tickflow_model::UnixNanos::now().0
    );
    let topic = format!("ticks-{unique}");
    let producer = tickflow_brokers::kafka::Producer::new(&brokers, &BTreeMap::new()).unwrap();
    let one_a_batch = ONE_RECORD_A_BATCH.replace('=', "\" = \"");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(producer.ensure_topic(&topic, 3))
        .unwrap();
    // A group of its own: tansu 0.6 never drops a member that died without leaving (it keeps
    // no session timeout), so members killed in earlier runs would hold the partitions of a
    // shared group. A restart within the test is the same static member and takes them back.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 200\n\n[[sources]]\ntype = \"kafka\"\nid = \"market\"\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup = \"tickflow-{unique}\"\nbatch = 2000\n\n[[sinks]]\ntype = \"kafka\"\nid = \"bus\"\nbrokers = \"{brokers}\"\ntopic_prefix = \"out-{unique}\"\ntables = [\"trades\"]\ncreate_partitions = 2\noptions = {{ \"{one_a_batch}\" }}\n"
            ),
        ),
    )
    .unwrap();
    let total = 20_000u64;
    let server = Server::start(&cfg, &data);
    let mut producing = bin()
        .args(["produce", "--count", &total.to_string()])
        .args(["--batch-size", "250", "--retries", "50", "--rate", "10000"])
        .args(["--to", &format!("kafka://{brokers}/{topic}")])
        .args(["--kafka-option", ONE_RECORD_A_BATCH])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_for(&server, "some ticks stored", |s| {
        s["rows_durable"]["trades"].as_i64().unwrap_or(0) > 2_000
    });
    server.kill();
    // The producer goes on sending while no pipeline reads the topic.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = producing.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the producer did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "produce to Kafka failed: {status}");
    let server = Server::start(&cfg, &data);
    wait_for(&server, "every sent tick stored", |_| {
        let (_, body) = http(
            "POST",
            &format!("{}/api/v1/sql", server.url),
            Some(br#"{"sql":"SELECT count(*) AS n FROM trades"}"#),
        );
        serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()["rows"][0]["n"]
            .as_u64()
            .is_some_and(|n| n >= total)
    });
    wait_for(&server, "the Kafka sink caught up", |s| {
        s["sinks"]
            .as_array()
            .and_then(|a| a.first())
            .is_some_and(|k| k["lag_flushes"] == 0 && k["position"].as_u64().is_some())
            && s["log_lag"] == 0
    });
    server.stop();
    assert_eq!(
        sql_count(&data, "SELECT count(*) FROM trades") as u64,
        total
    );
    assert_eq!(
        sql_count(&data, "SELECT count(DISTINCT seq) FROM trades") as u64,
        total
    );
    // Every trade published back: each row's id at least once, keyed by its symbol.
    let out = tickflow_brokers::kafka::read_all(
        &brokers,
        &format!("out-{unique}.trades"),
        Duration::from_secs(120),
    )
    .unwrap();
    let ids: HashSet<&str> = out
        .iter()
        .map(|m| {
            assert!(
                m.payload.contains(&format!("\"symbol\":\"{}\"", m.key)),
                "{m:?}"
            );
            m.headers
                .iter()
                .find(|(k, _)| k == "tickflow-id")
                .map(|(_, v)| v.as_str())
                .unwrap()
        })
        .collect();
    let rows: HashSet<&str> = ids
        .iter()
        .map(|id| id.split_once(":trades:").unwrap().1)
        .collect();
    assert_eq!(rows.len() as u64, total, "every trade published back");
}
