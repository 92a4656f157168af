//! The log on NATS JetStream against a real server (127.0.0.1:4222, or
//! `TICKFLOW_TEST_NATS`): offsets name records by message and place, a reader can start
//! anywhere (inside a message too), two writers never share an offset, and a checkpoint
//! past the stream's end is refused. Under CI the server must be there.

use std::time::{Duration, Instant};

use tickflow_brokers::chunked::{offset, record_offset};
use tickflow_brokers::nats::DEFAULT_URL;
use tickflow_brokers::nats_log::{NatsLog, NatsLogConfig};

fn server() -> Option<String> {
    let url = std::env::var("TICKFLOW_TEST_NATS").unwrap_or_else(|_| DEFAULT_URL.to_string());
    if std::net::TcpStream::connect(url.trim_start_matches("nats://")).is_ok() {
        return Some(url);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "NATS JetStream is required under CI at {url}"
    );
    eprintln!("skipped: no NATS server at {url}");
    None
}

fn config(url: &str, name: &str, checkpoint: u64) -> NatsLogConfig {
    NatsLogConfig {
        url: url.to_string(),
        stream: format!("TFLOG_{name}"),
        subject: format!("tflog.{name}"),
        consumer: format!("tflog-{name}"),
        replicas: 1,
        max_age: None,
        max_bytes: None,
        checkpoint,
    }
}

fn unique(tag: &str) -> String {
    format!(
        "{tag}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Reads until `want` records from `from` on have come, waiting on the log between reads.
fn read_all(log: &NatsLog, mut from: u64, want: usize) -> Vec<(u64, Vec<u8>)> {
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

fn records(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range.map(|i| format!("record-{i}").into_bytes()).collect()
}

#[test]
fn offsets_name_records_and_a_reader_starts_anywhere() {
    let Some(url) = server() else { return };
    let name = unique("offsets");
    let log = NatsLog::open(config(&url, &name, 0)).expect("open");
    assert_eq!(log.next_offset(), offset(1, 0));
    assert_eq!(log.messages_behind(0), 0);
    let first = records(0..25);
    let refs: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
    assert_eq!(
        log.append_batch(&refs).expect("append"),
        record_offset(1, 25, 0)..offset(2, 0)
    );
    let second = records(25..40);
    let refs: Vec<&[u8]> = second.iter().map(Vec::as_slice).collect();
    assert_eq!(
        log.append_batch(&refs).expect("append"),
        record_offset(2, 15, 0)..offset(3, 0)
    );
    assert_eq!(log.next_offset(), offset(3, 0));
    assert_eq!(log.messages_behind(0), 2);
    assert_eq!(log.messages_behind(offset(2, 0)), 1);

    let all = read_all(&log, 0, 40);
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
    assert_eq!(all, want);

    // Inside the first message: it is read again from its start and cut there.
    let from_inside = read_all(&log, record_offset(1, 25, 11), 29);
    assert_eq!(from_inside, want[11..].to_vec());
    drop(log);

    // A new process finds the end; its records come after.
    let log = NatsLog::open(config(&url, &name, offset(3, 0))).expect("reopen");
    assert_eq!(log.next_offset(), offset(3, 0));
    let third = records(40..43);
    let refs: Vec<&[u8]> = third.iter().map(Vec::as_slice).collect();
    assert_eq!(
        log.append_batch(&refs).expect("append"),
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
    let Some(url) = server() else { return };
    let name = unique("writers");
    let a = NatsLog::open(config(&url, &name, 0)).expect("open a");
    let b = NatsLog::open(config(&url, &name, 0)).expect("open b");
    let batches: Vec<Vec<Vec<u8>>> = (0..20u32).map(|i| records(i * 10..i * 10 + 10)).collect();
    std::thread::scope(|scope| {
        for (k, log) in [&a, &b].into_iter().enumerate() {
            let batches = &batches;
            scope.spawn(move || {
                for batch in batches.iter().skip(k).step_by(2) {
                    let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                    let range = log.append_batch(&refs).expect("append");
                    assert_eq!(range.end - range.start, 10);
                }
            });
        }
    });
    let all = read_all(&a, 0, 200);
    let offsets: std::collections::BTreeSet<u64> = all.iter().map(|r| r.0).collect();
    assert_eq!(offsets.len(), 200, "an offset is shared");
    let mut payloads: Vec<Vec<u8>> = all.into_iter().map(|r| r.1).collect();
    payloads.sort();
    let mut want: Vec<Vec<u8>> = batches.concat();
    want.sort();
    assert_eq!(payloads, want);
}

#[test]
fn a_checkpoint_past_the_stream_is_refused() {
    let Some(url) = server() else { return };
    let name = unique("replaced");
    // The checkpoint has processed 1,000 messages; the stream holds none of them.
    let e = NatsLog::open(config(&url, &name, offset(1000, 3))).expect_err("replaced");
    assert!(e.to_string().contains("deleted or replaced"), "{e}");
    // At the end exactly is fine: nothing more was ever appended.
    let log = NatsLog::open(config(&url, &name, offset(1, 0))).expect("at the end");
    assert_eq!(log.next_offset(), offset(1, 0));
}

#[test]
fn a_stream_of_other_subjects_is_refused() {
    let Some(url) = server() else { return };
    let name = unique("other");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: format!("TFLOG_{name}"),
            subjects: vec![format!("elsewhere.{name}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let e = NatsLog::open(config(&url, &name, 0)).expect_err("not ours");
    assert!(e.to_string().contains("is not this tickflow log"), "{e}");
}
