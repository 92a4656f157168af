//! Damage inside closed segments (or anywhere, after open) is reported as
//! `Error::Corrupt`, never served, and never a panic; damage in the active segment with
//! whole records after it refuses the open (`Error::DamagedActive`) rather than cut them.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use tickflow_log::{Error, Log, LogConfig};

use crate::{fast_config, segment_files};

const RECORD: usize = 20; // payload bytes; 28 framed
const FRAMED: u64 = 28;

fn config(dir: &Path) -> LogConfig {
    let mut config = fast_config(dir);
    config.segment_bytes = 5 * FRAMED; // five records per segment
    config
}

fn record(i: u64) -> Vec<u8> {
    vec![i as u8; RECORD]
}

/// 22 records: four closed segments of five, and two in the active one.
fn build(dir: &Path) {
    let log = Log::open(config(dir)).expect("open");
    for i in 0..22 {
        log.append(&record(i)).expect("append");
    }
    assert_eq!(segment_files(dir).len(), 5);
}

fn expect_corrupt(result: tickflow_log::Result<()>, file: &Path, pos: u64) {
    match result {
        Err(Error::Corrupt { segment, position }) => {
            assert_eq!(segment, file);
            assert_eq!(position, pos);
        }
        other => panic!("expected Corrupt at {pos}, got {other:?}"),
    }
}

#[test]
fn flipped_byte_in_a_closed_segment_is_an_error_not_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    // Record 7 is the third record of the second segment.
    let second = &segment_files(dir.path())[1];
    let mut bytes = fs::read(second).expect("read");
    bytes[(2 * FRAMED + 8 + 3) as usize] ^= 1;
    fs::write(second, &bytes).expect("write");

    let log = Log::open(config(dir.path())).expect("open succeeds; damage is reported on read");
    let mut out = Vec::new();
    // A read running into the damage returns the good records before it...
    log.read(0, 100, &mut out).expect("read up to the damage");
    assert_eq!(
        out.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>()
    );
    // ...and reads at or after it in that segment fail.
    for offset in 7..10 {
        expect_corrupt(log.read(offset, 1, &mut out), second, 2 * FRAMED);
        assert!(out.is_empty());
    }
    // Later segments are still served, and the log still takes appends.
    log.read(10, 100, &mut out).expect("read later segments");
    assert_eq!(out.len(), 12);
    assert!(out.iter().all(|(o, b)| *b == record(*o)));
    assert_eq!(log.append(&record(22)).expect("append"), 22);
}

/// A flipped byte in the active segment with whole records after it is damage, not a tail a
/// crash tore: the log refuses to open, naming the file and byte, instead of cutting off the
/// acknowledged records behind it; nothing is truncated.
#[test]
fn flipped_byte_in_the_active_segment_before_whole_records_is_refused_not_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    // Records 20 and 21 are the active segment's; damage the first.
    let active = segment_files(dir.path()).last().cloned().expect("active");
    let mut bytes = fs::read(&active).expect("read");
    let len = bytes.len();
    bytes[8 + 5] ^= 0x40;
    fs::write(&active, &bytes).expect("write");
    match Log::open(config(dir.path())) {
        Err(e @ Error::DamagedActive { .. }) => {
            let Error::DamagedActive { segment, position } = &e else {
                unreachable!()
            };
            assert_eq!((segment, *position), (&active, 0));
            let message = e.to_string();
            assert!(message.contains("not a torn tail"), "{message}");
        }
        other => panic!("expected DamagedActive, got {other:?}"),
    }
    assert_eq!(fs::read(&active).expect("read").len(), len, "nothing cut");
    // Damage in the last record only is a torn tail: cut, and the log opens.
    bytes[8 + 5] ^= 0x40;
    bytes[(FRAMED + 8 + 5) as usize] ^= 0x40;
    fs::write(&active, &bytes).expect("write");
    let log = Log::open(config(dir.path())).expect("a torn last record is cut");
    assert_eq!(log.next_offset(), 21);
}

#[test]
fn missing_records_at_the_end_of_a_closed_segment_are_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let first = &segment_files(dir.path())[0];
    let file = OpenOptions::new().write(true).open(first).expect("open");
    file.set_len(3 * FRAMED + 5).expect("truncate");
    drop(file);

    let log = Log::open(config(dir.path())).expect("open");
    let mut out = Vec::new();
    log.read(0, 100, &mut out).expect("read");
    assert_eq!(out.len(), 3);
    expect_corrupt(log.read(3, 100, &mut out), first, 3 * FRAMED);
    expect_corrupt(log.read(4, 100, &mut out), first, 3 * FRAMED);
    log.read(5, 100, &mut out).expect("next segment");
    assert_eq!(out.first().map(|r| r.0), Some(5));
}

#[test]
fn absurd_length_in_a_closed_segment_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let first = &segment_files(dir.path())[0];
    let file = OpenOptions::new().write(true).open(first).expect("open");
    file.write_all_at(&u32::MAX.to_le_bytes(), FRAMED)
        .expect("write");
    drop(file);
    let log = Log::open(config(dir.path())).expect("open");
    let mut out = Vec::new();
    expect_corrupt(log.read(1, 100, &mut out), first, FRAMED);
}

#[test]
fn damage_after_open_is_caught_by_the_read_crc() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let log = Log::open(config(dir.path())).expect("open");
    let active = segment_files(dir.path()).pop().expect("active");
    // Bit rot in the active segment while the log is open.
    let file = OpenOptions::new().write(true).open(&active).expect("open");
    file.write_all_at(&[0xFF], FRAMED + 10).expect("write");
    drop(file);
    let mut out = Vec::new();
    log.read(20, 10, &mut out)
        .expect("record before the damage");
    assert_eq!(out, vec![(20, record(20))]);
    expect_corrupt(log.read(21, 10, &mut out), &active, FRAMED);
    // Every record the log does return is intact.
    let mut offset = 0;
    while offset < 21 {
        log.read(offset, 3, &mut out).expect("read");
        for (o, b) in &out {
            assert_eq!(*b, record(*o));
        }
        offset += out.len() as u64;
    }
}

#[test]
fn garbage_segment_files_do_not_panic_open() {
    // Whatever the bytes, open either succeeds (serving only checked records) or errors.
    for seed in 1..20u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        build(dir.path());
        let mut rng = crate::XorShift::new(seed);
        for file in segment_files(dir.path()) {
            let mut bytes = fs::read(&file).expect("read");
            for _ in 0..3 {
                if !bytes.is_empty() {
                    let at = rng.range(0, bytes.len() as u64) as usize;
                    bytes[at] = rng.next() as u8;
                }
            }
            fs::write(&file, &bytes).expect("write");
        }
        if let Ok(log) = Log::open(config(dir.path())) {
            let mut out = Vec::new();
            for offset in log.start_offset()..log.next_offset() {
                if log.read(offset, 1, &mut out).is_ok() {
                    for (o, b) in &out {
                        assert_eq!(*b, record(*o), "seed {seed}");
                    }
                }
            }
            // One big read: whatever it returns must be intact.
            if log.read(log.start_offset(), usize::MAX, &mut out).is_ok() {
                for (o, b) in &out {
                    assert_eq!(*b, record(*o), "seed {seed}");
                }
            }
        }
    }
}

#[test]
fn a_committed_offset_past_the_logs_end_is_refused_with_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let log = Log::open(config(dir.path())).expect("open");
    log.commit_offset("reader", 7).expect("commit");
    drop(log);
    // One digit more, as a flipped separator would read: past the 22 records there are.
    let file = dir.path().join("consumers").join("reader.offset");
    fs::write(&file, "70\n").expect("write");
    match Log::open(config(dir.path())) {
        Err(Error::BadOffsetFile { path, reason }) => {
            assert_eq!(path, file);
            assert_eq!(reason, "beyond the log's end");
        }
        other => panic!("opened: {:?}", other.map(|_| ())),
    }
}
