//! Concurrent appends: disjoint contiguous offsets, everything readable, shared fsyncs. Also
//! the smaller append-side contracts (empty batches, size limit, waiting, one writer).

use std::collections::HashMap;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use tickflow_log::{Error, Log, LogConfig, MAX_RECORD_BYTES};

use crate::{fast_config, read_all};

const THREADS: u64 = 8;
const BATCHES: u64 = 150;
const BATCH: u64 = 10;

fn record(thread: u64, batch: u64, i: u64) -> Vec<u8> {
    format!("t{thread}-b{batch}-r{i}").into_bytes()
}

#[test]
fn concurrent_appenders_get_disjoint_ranges_and_share_fsyncs() {
    // On the target directory's real disk (not tmpfs) so that fsync takes real time.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut config = LogConfig::new(dir.path());
    config.segment_bytes = 64 << 10; // rolls happen under concurrency too
    let log = Log::open(config).expect("open");
    let barrier = Barrier::new(THREADS as usize);
    let ranges: Vec<(u64, u64, std::ops::Range<u64>)> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = log.clone();
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let mut out = Vec::new();
                    (0..BATCHES)
                        .map(|b| {
                            let records: Vec<Vec<u8>> =
                                (0..BATCH).map(|i| record(t, b, i)).collect();
                            let range = log.append_batch(&records).expect("append");
                            // Acknowledged means durable, and durable means visible.
                            assert!(log.next_offset() >= range.end, "acked before durable");
                            log.read(range.end - 1, 1, &mut out)
                                .expect("read own record");
                            assert_eq!(out, vec![(range.end - 1, record(t, b, BATCH - 1))]);
                            (t, b, range)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("appender thread"))
            .collect()
    });

    // Disjoint and together exactly 0..total.
    let total = THREADS * BATCHES * BATCH;
    let mut sorted: Vec<_> = ranges.iter().map(|(_, _, r)| r.clone()).collect();
    sorted.sort_by_key(|r| r.start);
    let mut expected_start = 0;
    for r in &sorted {
        assert_eq!(r.start, expected_start, "ranges must tile the offsets");
        assert_eq!(r.end - r.start, BATCH);
        expected_start = r.end;
    }
    assert_eq!(expected_start, total);

    // Every record is where its append said it is.
    let by_offset: HashMap<u64, Vec<u8>> = read_all(&log).into_iter().collect();
    assert_eq!(by_offset.len() as u64, total);
    for (t, b, r) in &ranges {
        for (i, offset) in r.clone().enumerate() {
            assert_eq!(by_offset[&offset], record(*t, *b, i as u64));
        }
    }

    let stats = log.stats();
    assert_eq!(stats.appends, THREADS * BATCHES);
    assert_eq!(stats.records_appended, total);
    assert_eq!(stats.next_offset, total);
    assert!(stats.segments > 1);
    assert!(
        stats.fsyncs < stats.appends,
        "group commit should share fsyncs: {stats:?}"
    );
    eprintln!(
        "group commit: {} appends, {} fsyncs",
        stats.appends, stats.fsyncs
    );

    drop(log);
    let log = Log::open(fast_config(dir.path())).expect("reopen");
    assert_eq!(log.next_offset(), total);
    assert_eq!(read_all(&log).len() as u64, total);
}

#[test]
fn empty_batches_and_empty_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(fast_config(dir.path())).expect("open");
    let none: [&[u8]; 0] = [];
    assert_eq!(log.append_batch(&none).expect("empty batch"), 0..0);
    assert_eq!(log.append(b"").expect("empty record"), 0);
    assert_eq!(
        log.append_batch(&[b"".as_slice(), b"x", b""])
            .expect("batch"),
        1..4
    );
    assert_eq!(log.append_batch(&none).expect("empty batch"), 4..4);
    assert_eq!(log.stats().appends, 2);
    assert_eq!(
        read_all(&log),
        vec![(0, vec![]), (1, vec![]), (2, b"x".to_vec()), (3, vec![])]
    );
}

#[test]
fn oversized_records_are_rejected_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(fast_config(dir.path())).expect("open");
    let big = vec![0u8; MAX_RECORD_BYTES + 1];
    let result = log.append_batch(&[b"ok".to_vec(), big]);
    assert!(matches!(
        result,
        Err(Error::RecordTooLarge { len, max }) if len == MAX_RECORD_BYTES + 1 && max == MAX_RECORD_BYTES
    ));
    assert_eq!(
        log.next_offset(),
        0,
        "nothing of a rejected batch is appended"
    );
    let max = vec![1u8; MAX_RECORD_BYTES];
    assert_eq!(log.append(&max).expect("max size is fine"), 0);
    let mut out = Vec::new();
    log.read(0, 1, &mut out).expect("read");
    assert_eq!(out[0].1.len(), MAX_RECORD_BYTES);
}

#[test]
fn wait_for_wakes_on_append_and_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(fast_config(dir.path())).expect("open");
    let start = Instant::now();
    assert!(!log.wait_for(0, Duration::from_millis(30)));
    assert!(start.elapsed() >= Duration::from_millis(30));
    thread::scope(|s| {
        let waiter = s.spawn(|| log.wait_for(0, Duration::from_secs(10)));
        let forever = s.spawn(|| log.wait_for(0, Duration::MAX));
        thread::sleep(Duration::from_millis(20));
        log.append(b"x").expect("append");
        assert!(waiter.join().expect("waiter"));
        assert!(forever.join().expect("waiter without deadline"));
    });
    assert!(log.wait_for(0, Duration::ZERO));
    assert!(!log.wait_for(1, Duration::ZERO));
}

#[test]
fn one_open_log_per_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(fast_config(dir.path())).expect("open");
    let clone = log.clone();
    assert!(matches!(
        Log::open(fast_config(dir.path())),
        Err(Error::Locked { .. })
    ));
    drop(log);
    assert!(
        matches!(
            Log::open(fast_config(dir.path())),
            Err(Error::Locked { .. })
        ),
        "a clone keeps the log open"
    );
    drop(clone);
    Log::open(fast_config(dir.path())).expect("open after all clones dropped");
}

#[test]
fn reads_out_of_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(fast_config(dir.path())).expect("open");
    log.append_batch(&[b"a", b"b"]).expect("append");
    let mut out = vec![(9, b"stale".to_vec())];
    log.read(2, 10, &mut out).expect("read at the end");
    assert!(out.is_empty(), "out is cleared first");
    assert!(matches!(
        log.read(3, 10, &mut out),
        Err(Error::OffsetOutOfRange {
            offset: 3,
            start: 0,
            next: 2
        })
    ));
    log.read(1, 0, &mut out).expect("max_records 0");
    assert!(out.is_empty());
}
