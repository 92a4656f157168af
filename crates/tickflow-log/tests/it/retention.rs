//! Retention: oldest closed segments only, never the active one, never past the lowest
//! committed consumer offset; reads below the new start are out of range.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::{Duration, SystemTime};

use tickflow_log::{Error, Log, LogConfig, RetentionReport};

use crate::{fast_config, read_all, segment_files};

const FRAMED: u64 = 28;

fn config(dir: &Path) -> LogConfig {
    let mut config = fast_config(dir);
    config.segment_bytes = 5 * FRAMED;
    config
}

fn record(i: u64) -> Vec<u8> {
    vec![i as u8; 20]
}

/// 22 records: closed segments [0,5) [5,10) [10,15) [15,20) and the active [20,22).
fn build(config: LogConfig) -> Log {
    let log = Log::open(config).expect("open");
    for i in 0..22 {
        log.append(&record(i)).expect("append");
    }
    assert_eq!(log.stats().segments, 5);
    log
}

fn set_mtime(path: &Path, time: SystemTime) {
    let file: File = OpenOptions::new().write(true).open(path).expect("open");
    file.set_modified(time).expect("set mtime");
}

#[test]
fn by_bytes_deletes_oldest_closed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path());
    config.retention_bytes = Some(300);
    let log = build(config.clone());
    let files = segment_files(dir.path());
    let report = log.enforce_retention().expect("retention");
    assert_eq!(
        report,
        RetentionReport {
            segments_removed: 2,
            bytes_removed: 10 * FRAMED
        }
    );
    assert_eq!(segment_files(dir.path()), files[2..].to_vec());
    assert_eq!(log.start_offset(), 10);
    let mut out = Vec::new();
    assert!(matches!(
        log.read(9, 10, &mut out),
        Err(Error::OffsetOutOfRange {
            offset: 9,
            start: 10,
            next: 22
        })
    ));
    assert!(matches!(
        log.read(0, 10, &mut out),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        log.enforce_retention().expect("again"),
        RetentionReport::default()
    );
    drop(log);

    let log = Log::open(config).expect("reopen");
    assert_eq!(log.start_offset(), 10);
    let expected: Vec<(u64, Vec<u8>)> = (10..22).map(|i| (i, record(i))).collect();
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.append(&record(22)).expect("append"), 22);
}

#[test]
fn never_deletes_the_active_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path());
    config.retention_bytes = Some(0);
    let log = build(config);
    let report = log.enforce_retention().expect("retention");
    assert_eq!(report.segments_removed, 4);
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(log.start_offset(), 20);
    assert_eq!(log.next_offset(), 22);
    assert_eq!(read_all(&log), vec![(20, record(20)), (21, record(21))]);
    // An empty log's only segment stays too.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = self::config(dir.path());
    config.retention_bytes = Some(0);
    let log = Log::open(config).expect("open");
    assert_eq!(
        log.enforce_retention().expect("retention").segments_removed,
        0
    );
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn never_deletes_past_the_lowest_committed_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path());
    config.retention_bytes = Some(0);
    let log = build(config);
    log.commit_offset("fast", 22).expect("commit");
    log.commit_offset("slow", 7).expect("commit");
    // Segment [5,10) holds offsets >= 7, which "slow" has not consumed.
    assert_eq!(
        log.enforce_retention().expect("retention").segments_removed,
        1
    );
    assert_eq!(log.start_offset(), 5);
    log.commit_offset("slow", 15).expect("commit");
    assert_eq!(
        log.enforce_retention().expect("retention").segments_removed,
        2
    );
    assert_eq!(log.start_offset(), 15);
    let mut out = Vec::new();
    log.read(15, 100, &mut out)
        .expect("unconsumed records are still there");
    assert_eq!(out.len(), 7);
}

#[test]
fn by_age_uses_mtime_and_spares_the_active_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path());
    config.retention_age = Some(Duration::from_secs(3600));
    let log = build(config);
    let files = segment_files(dir.path());
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    // Only the two oldest segments are old.
    set_mtime(&files[0], two_hours_ago);
    set_mtime(&files[1], two_hours_ago);
    assert_eq!(
        log.enforce_retention().expect("retention").segments_removed,
        2
    );
    assert_eq!(log.start_offset(), 10);
    assert_eq!(segment_files(dir.path()), files[2..].to_vec());
    // Everything old now, the active segment included: it still stays.
    for file in &files[2..] {
        set_mtime(file, two_hours_ago);
    }
    assert_eq!(
        log.enforce_retention().expect("retention").segments_removed,
        2
    );
    assert_eq!(segment_files(dir.path()), vec![files[4].clone()]);
    assert_eq!(log.start_offset(), 20);
}

#[test]
fn no_policy_deletes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = build(config(dir.path()));
    for file in segment_files(dir.path()) {
        set_mtime(&file, SystemTime::UNIX_EPOCH + Duration::from_secs(1));
    }
    assert_eq!(
        log.enforce_retention().expect("retention"),
        RetentionReport::default()
    );
    assert_eq!(log.start_offset(), 0);
}
