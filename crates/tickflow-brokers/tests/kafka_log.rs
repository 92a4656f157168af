//! The log on Kafka against a real broker (127.0.0.1:9092, or `TICKFLOW_TEST_KAFKA`;
//! `./scripts/test` starts tansu): offsets name records by message and place, a reader can
//! start anywhere (inside a message too), two writers never share an offset, and a topic
//! that cannot be the log is refused. Under CI the broker must be there.
#![cfg(feature = "kafka")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tickflow_brokers::chunked::{offset, record_offset};
use tickflow_brokers::kafka_log::{KafkaLog, KafkaLogConfig};

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

/// tansu 0.6.0 gives a batch of several records one offset; each chunk goes as a batch of
/// its own.
fn config(brokers: &str, topic: &str, checkpoint: u64) -> KafkaLogConfig {
    KafkaLogConfig {
        brokers: brokers.to_string(),
        topic: topic.to_string(),
        partitions: 1,
        partition: 0,
        group: format!("{topic}-processor"),
        options: BTreeMap::from([("batch.num.messages".to_string(), "1".to_string())]),
        replicas: 1,
        checkpoint,
    }
}

fn records(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range.map(|i| format!("record-{i}").into_bytes()).collect()
}

fn append(log: &KafkaLog, records: &[Vec<u8>]) -> std::ops::Range<u64> {
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    log.append_batch(&refs).expect("append")
}

/// Reads until `want` records from `from` on have come, waiting on the log between reads.
fn read_all(log: &KafkaLog, mut from: u64, want: usize) -> Vec<(u64, Vec<u8>)> {
    let mut got = Vec::new();
    let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} read",
            got.len()
        );
        log.read(from, 7, &mut batch).expect("read");
        if batch.is_empty() {
            log.wait_for(from, Duration::from_millis(50));
            continue;
        }
        from = batch.last().unwrap().0 + 1;
        got.append(&mut batch);
    }
    got
}

#[test]
fn offsets_name_records_and_a_reader_starts_anywhere() {
    let Some(brokers) = broker() else { return };
    let topic = unique("tflog");
    let log = KafkaLog::open(config(&brokers, &topic, 0)).expect("open");
    assert_eq!(log.next_offset(), offset(1, 0));
    // Kafka offset 0 is message 1.
    assert_eq!(
        append(&log, &records(0..25)),
        record_offset(1, 25, 0)..offset(2, 0)
    );
    assert_eq!(
        append(&log, &records(25..40)),
        record_offset(2, 15, 0)..offset(3, 0)
    );
    assert_eq!(log.messages_behind(0), 2);

    let want: Vec<(u64, Vec<u8>)> = (0..40u64)
        .map(|i| {
            let at = if i < 25 {
                record_offset(1, 25, i)
            } else {
                record_offset(2, 15, i - 25)
            };
            (at, format!("record-{i}").into_bytes())
        })
        .collect();
    assert_eq!(read_all(&log, 0, 40), want);
    log.commit_offset(offset(3, 0));
    drop(log);

    // A new process finds the end, reads from inside the first message, and appends after.
    let log = KafkaLog::open(config(&brokers, &topic, record_offset(1, 25, 11))).expect("reopen");
    assert_eq!(log.next_offset(), offset(3, 0));
    assert_eq!(
        read_all(&log, record_offset(1, 25, 11), 29),
        want[11..].to_vec()
    );
    assert_eq!(
        append(&log, &records(40..43)),
        record_offset(3, 3, 0)..offset(4, 0)
    );
    let tail = read_all(&log, offset(3, 0), 3);
    assert_eq!(
        tail.iter().map(|r| r.0).collect::<Vec<_>>(),
        [
            record_offset(3, 3, 0),
            record_offset(3, 3, 1),
            record_offset(3, 3, 2)
        ]
    );
}

#[test]
fn two_writers_append_at_once_and_every_record_has_its_own_offset() {
    let Some(brokers) = broker() else { return };
    let topic = unique("tflog-writers");
    let a = KafkaLog::open(config(&brokers, &topic, 0)).expect("open a");
    let b = KafkaLog::open(config(&brokers, &topic, 0)).expect("open b");
    let batches: Vec<Vec<Vec<u8>>> = (0..10u32).map(|i| records(i * 10..i * 10 + 10)).collect();
    std::thread::scope(|scope| {
        for (k, log) in [&a, &b].into_iter().enumerate() {
            let batches = &batches;
            scope.spawn(move || {
                for batch in batches.iter().skip(k).step_by(2) {
                    let range = append(log, batch);
                    assert_eq!(range.end - range.start, 10);
                }
            });
        }
    });
    let all = read_all(&a, 0, 100);
    let offsets: std::collections::BTreeSet<u64> = all.iter().map(|r| r.0).collect();
    assert_eq!(offsets.len(), 100, "an offset is shared");
    let mut payloads: Vec<Vec<u8>> = all.into_iter().map(|r| r.1).collect();
    payloads.sort();
    let mut want: Vec<Vec<u8>> = batches.concat();
    want.sort();
    assert_eq!(payloads, want);
}

#[test]
fn a_topic_that_cannot_be_the_log_is_refused() {
    let Some(brokers) = broker() else { return };
    let topic = unique("tflog-wide");
    let producer = tickflow_brokers::kafka::Producer::new(&brokers, &BTreeMap::new()).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(producer.ensure_topic(&topic, 3))
        .unwrap();
    let e = KafkaLog::open(config(&brokers, &topic, 0)).expect_err("three partitions");
    assert!(
        e.to_string()
            .contains("has 3 partitions and [log] partitions says 1"),
        "{e}"
    );
    // A checkpoint past the end of a topic: deleted or replaced.
    let fresh = unique("tflog-fresh");
    let e = KafkaLog::open(config(&brokers, &fresh, offset(50, 2))).expect_err("replaced");
    assert!(e.to_string().contains("deleted or replaced"), "{e}");
}

/// A partitioned log: each partition's log appends to and reads its own partition only,
/// with offsets of its own.
#[test]
fn each_partition_of_a_partitioned_log_holds_its_own_records() {
    let Some(brokers) = broker() else { return };
    let topic = unique("tflog-parts");
    let part = |p: i32| {
        KafkaLog::open(KafkaLogConfig {
            partitions: 3,
            partition: p,
            ..config(&brokers, &topic, 0)
        })
        .expect("open a partition")
    };
    let (zero, two) = (part(0), part(2));
    let first = append(&zero, &records(0..3));
    let other = append(&two, &records(10..15));
    // Partition 2's first message is its own first, not after partition 0's.
    assert_eq!(other.start, record_offset(1, 5, 0));
    assert_eq!(first.start, record_offset(1, 3, 0));
    let got: Vec<Vec<u8>> = read_all(&two, 0, 5).into_iter().map(|r| r.1).collect();
    assert_eq!(got, records(10..15));
    let got: Vec<Vec<u8>> = read_all(&zero, 0, 3).into_iter().map(|r| r.1).collect();
    assert_eq!(got, records(0..3));
    // Nothing went to partition 1.
    assert_eq!(part(1).next_offset(), offset(1, 0));
}
