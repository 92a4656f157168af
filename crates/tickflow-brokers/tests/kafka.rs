//! The Kafka source and sink against a real broker: 127.0.0.1:9092, or the address in
//! `TICKFLOW_TEST_KAFKA` (`./scripts/test` starts tansu there). Under CI the broker must be
//! there; elsewhere the test says it skipped.
#![cfg(feature = "kafka")]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use tickflow_brokers::kafka::{KafkaSource, Producer, Record, client_config};
use tickflow_core::contract::{Appended, check_source};
use tickflow_core::mapping::{Fields, Format};
use tickflow_model::Event;

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

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// tansu 0.6.0, the broker the tests run, gives a batch of several records one offset: its
/// consumers would see only the first. Each record is sent as a batch of its own.
fn one_record_a_batch() -> BTreeMap<String, String> {
    BTreeMap::from([("batch.num.messages".to_string(), "1".to_string())])
}

fn send(brokers: &str, topic: &str, messages: &[(&str, String)]) {
    let producer = Producer::new(brokers, &one_record_a_batch()).unwrap();
    block_on(async {
        producer.ensure_topic(topic, 2).await.unwrap();
        producer
            .send_all(messages.iter().map(|(key, payload)| Record {
                topic,
                key,
                payload: payload.as_bytes(),
                headers: Vec::new(),
            }))
            .await
            .unwrap();
    });
}

/// Runs the source a batch at a time, each run a new member of the group resuming at the
/// committed offsets, until `records` events and rejects have come.
fn take(source: &KafkaSource, records: usize) -> Appended {
    let mut all = Appended::default();
    while all.events.len() + all.rejected.len() < records {
        let got = check_source(Box::new(source.clone()), 1);
        all.events.extend(got.events);
        all.rejected.extend(got.rejected);
        all.batches += got.batches;
    }
    all
}

fn trade(i: usize) -> String {
    format!(
        "{{\"type\":\"trade\",\"symbol\":\"K{}\",\"ts_event\":\"2026-12-04T15:00:{:02}Z\",\"price\":\"180.{i}\",\"size\":\"10\",\"trade_id\":\"{i}\"}}",
        i % 3,
        i % 60
    )
}

fn trade_ids(events: &[Event]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Trade(t) => t.trade_id.as_deref().map(str::to_string),
            _ => None,
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_consumer_group_appends_every_message_once_commits_after_the_log_and_moves_poison_to_the_dlq() {
    let Some(brokers) = broker() else { return };
    let topic = unique("ticks");
    let mut messages: Vec<(&str, String)> = (0..20).map(|i| ("K", trade(i))).collect();
    messages.insert(7, ("K", "{\"type\":\"trade\",\"symbol\":".to_string()));
    send(&brokers, &topic, &messages);
    let source = KafkaSource {
        brokers: brokers.clone(),
        topics: vec![topic.clone()],
        group: unique("group"),
        format: Format::Tickflow,
        batch: 8,
        options: BTreeMap::new(),
    };
    let got = take(&source, 21);
    let mut want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    want.sort();
    assert_eq!(trade_ids(&got.events), want, "each message once");
    assert_eq!(got.rejected.len(), 1, "{:?}", got.rejected);
    let (error, payload) = &got.rejected[0];
    assert!(error.starts_with(&format!("{topic} partition ")), "{error}");
    assert_eq!(payload, &messages[7].1);

    // The group resumes after what it committed: only messages sent since come.
    send(&brokers, &topic, &[("K", trade(30)), ("K", trade(31))]);
    let got = take(&source, 2);
    assert_eq!(trade_ids(&got.events), ["30", "31"]);
}

#[test]
fn the_old_market_ticks_messages_are_read_through_their_mapping() {
    let Some(brokers) = broker() else { return };
    let topic = unique("market_ticks");
    let old = |price: &str| {
        format!(
            "{{\"timestamp\": \"2026-12-04T15:30:00.123456+00:00\", \"symbol\": \"AAPL\", \"price\": {price}, \"direction\": \"UP\", \"precentage\": 0.0123}}"
        )
    };
    send(
        &brokers,
        &topic,
        &[("AAPL", old("189.52")), ("AAPL", old("189.530000001"))],
    );
    let source = KafkaSource {
        brokers,
        topics: vec![topic],
        group: unique("group"),
        format: Format::Fields(Fields::market_ticks()),
        batch: 100,
        options: BTreeMap::new(),
    };
    let got = take(&source, 2);
    let prices: Vec<String> = got
        .events
        .iter()
        .map(|e| match e {
            Event::Trade(t) => format!("{} x {}", t.price, t.size),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(prices, ["189.52 x 1", "189.530000001 x 1"]);
}

/// Messages per table under `prefix`, from the topics' watermarks.
fn published(brokers: &str, prefix: &str, tables: &[&str]) -> tickflow_core::contract::Counts {
    let consumer: BaseConsumer = client_config(brokers, &BTreeMap::new())
        .set("group.id", unique("probe"))
        .create()
        .unwrap();
    let mut counts = tickflow_core::contract::Counts::new();
    for table in tables {
        let topic = format!("{prefix}.{table}");
        let Ok(metadata) = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)) else {
            continue;
        };
        for t in metadata.topics() {
            for p in t.partitions() {
                if let Ok((low, high)) =
                    consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                {
                    *counts.entry((*table).to_string()).or_default() += (high - low) as u64;
                }
            }
        }
    }
    counts
}

#[test]
fn the_kafka_sink_keeps_the_sink_contract_with_rows_keyed_by_symbol() {
    use tickflow_brokers::kafka_sink::{KafkaSink, KafkaSinkConfig, TABLES};
    let Some(brokers) = broker() else { return };
    let prefix = unique("out");
    let dir = std::env::temp_dir().join(unique("tickflow-kafka-sink"));
    let config = KafkaSinkConfig {
        brokers: brokers.clone(),
        topic_prefix: prefix.clone(),
        tables: TABLES.iter().map(|t| (*t).to_string()).collect(),
        create_partitions: Some(1),
        options: one_record_a_batch(),
        dir: dir.clone(),
    };
    block_on(tickflow_core::contract::check_sink(
        || KafkaSink::new("out", config.clone()),
        async || published(&brokers, &prefix, &TABLES),
        &TABLES,
    ));
    // Keys are symbols, bodies the rows as JSON, headers the table and the row's id.
    let consumer: BaseConsumer = client_config(&brokers, &BTreeMap::new())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&format!("{prefix}.trades")]).unwrap();
    let message = (0..600)
        .find_map(|_| consumer.poll(Duration::from_millis(100)))
        .expect("a message within a minute")
        .unwrap();
    let key = std::str::from_utf8(message.key().unwrap())
        .unwrap()
        .to_string();
    let body = std::str::from_utf8(message.payload().unwrap())
        .unwrap()
        .to_string();
    assert!(
        body.contains(&format!("\"symbol\":\"{key}\"")),
        "{key}: {body}"
    );
    let headers = message.headers().unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).to_string())
    };
    assert_eq!(header("tickflow-table").as_deref(), Some("trades"));
    let id = header("tickflow-id").unwrap();
    assert!(id.starts_with(&format!("out:1:trades:{key}:")), "{id}");
    let _ = std::fs::remove_dir_all(dir);
}
