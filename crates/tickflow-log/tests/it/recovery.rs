//! Torn-tail recovery: damage at the end of the active segment is truncated on open, exactly
//! the damaged record(s) disappear, and appending continues at the right offsets.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use tickflow_log::Log;

use crate::{XorShift, fast_config, payload, read_all, segment_files};

const KEPT: u64 = 5;
const LAST_LEN: usize = 40;

/// Writes records 0..KEPT one batch each, then one LAST_LEN-byte record; returns the byte
/// range of that last record in the (single) segment file.
fn build(dir: &Path) -> (u64, u64) {
    let log = Log::open(fast_config(dir)).expect("open");
    for i in 0..KEPT {
        log.append(&payload(i)).expect("append");
    }
    log.append(&[0xAB; LAST_LEN]).expect("append last");
    drop(log);
    let len = fs::metadata(&segment_files(dir)[0]).expect("stat").len();
    (len - 8 - LAST_LEN as u64, len)
}

/// Reopens and checks that exactly records 0..KEPT survive, the file was truncated after
/// them, and that appends continue at offset KEPT.
fn assert_recovered(dir: &Path, last_start: u64, what: &str) {
    let log = Log::open(fast_config(dir)).expect("reopen");
    assert_eq!(log.next_offset(), KEPT, "{what}");
    let expected: Vec<(u64, Vec<u8>)> = (0..KEPT).map(|i| (i, payload(i))).collect();
    assert_eq!(read_all(&log), expected, "{what}");
    let file = &segment_files(dir)[0];
    assert_eq!(
        fs::metadata(file).expect("stat").len(),
        last_start,
        "{what}: truncated"
    );
    assert_eq!(log.append(b"after").expect("append"), KEPT, "{what}");
    drop(log);
    let log = Log::open(fast_config(dir)).expect("reopen again");
    let all = read_all(&log);
    assert_eq!(all.len() as u64, KEPT + 1, "{what}");
    assert_eq!(all[KEPT as usize], (KEPT, b"after".to_vec()), "{what}");
}

#[test]
fn truncation_anywhere_in_the_last_record_drops_only_it() {
    let (last_start, len) = {
        let dir = tempfile::tempdir().expect("tempdir");
        build(dir.path())
    };
    for cut in last_start..len {
        let dir = tempfile::tempdir().expect("tempdir");
        build(dir.path());
        let file = OpenOptions::new()
            .write(true)
            .open(&segment_files(dir.path())[0])
            .expect("open");
        file.set_len(cut).expect("truncate");
        drop(file);
        assert_recovered(dir.path(), last_start, &format!("cut at {cut}"));
    }
}

#[test]
fn any_flipped_byte_in_the_last_record_drops_only_it() {
    let (last_start, len) = {
        let dir = tempfile::tempdir().expect("tempdir");
        build(dir.path())
    };
    for at in last_start..len {
        let dir = tempfile::tempdir().expect("tempdir");
        build(dir.path());
        let path = &segment_files(dir.path())[0];
        let mut bytes = fs::read(path).expect("read");
        bytes[at as usize] ^= 0x5A;
        fs::write(path, &bytes).expect("write");
        assert_recovered(dir.path(), last_start, &format!("flip at {at}"));
    }
}

#[test]
fn garbage_after_the_last_record_is_dropped() {
    let mut rng = XorShift::new(42);
    for garbage_len in [1usize, 7, 8, 9, 48, 5000] {
        for zeros in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (_, len) = build(dir.path());
            let path = &segment_files(dir.path())[0];
            let garbage: Vec<u8> = (0..garbage_len)
                .map(|_| if zeros { 0 } else { rng.next() as u8 })
                .collect();
            let mut file = OpenOptions::new().append(true).open(path).expect("open");
            file.write_all(&garbage).expect("write garbage");
            drop(file);
            let log = Log::open(fast_config(dir.path())).expect("reopen");
            assert_eq!(log.next_offset(), KEPT + 1, "{garbage_len} garbage bytes");
            assert_eq!(read_all(&log)[KEPT as usize].1, vec![0xAB; LAST_LEN]);
            assert_eq!(fs::metadata(path).expect("stat").len(), len);
            assert_eq!(log.append(b"x").expect("append"), KEPT + 1);
        }
    }
}

#[test]
fn torn_batch_keeps_the_records_before_the_tear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(fast_config(dir.path())).expect("open");
    log.append_batch(&[b"a".as_slice(), b"b"]).expect("append");
    let range = log
        .append_batch(&[[1u8; 10], [2u8; 10], [3u8; 10]])
        .expect("append batch");
    assert_eq!(range, 2..5);
    drop(log);
    // Cut in the middle of the batch's second record: its first record survives.
    let path = &segment_files(dir.path())[0];
    let cut = 2 * 9 + 18 + 12;
    let file = OpenOptions::new().write(true).open(path).expect("open");
    file.set_len(cut).expect("truncate");
    drop(file);
    let log = Log::open(fast_config(dir.path())).expect("reopen");
    assert_eq!(log.next_offset(), 3);
    assert_eq!(read_all(&log)[2], (2, vec![1u8; 10]));
    assert_eq!(log.append_batch(&[b"z"]).expect("append"), 3..4);
}

#[test]
fn only_the_active_segment_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = fast_config(dir.path());
    config.segment_bytes = 100;
    let log = Log::open(config.clone()).expect("open");
    for i in 0..40 {
        log.append(&payload(i)).expect("append");
    }
    drop(log);
    let files = segment_files(dir.path());
    assert!(files.len() > 3, "{} segments", files.len());
    let active = files.last().expect("active");
    let len = fs::metadata(active).expect("stat").len();
    let file = OpenOptions::new().write(true).open(active).expect("open");
    file.set_len(len - 1).expect("truncate");
    drop(file);
    let log = Log::open(config).expect("reopen");
    assert_eq!(log.next_offset(), 39);
    let expected: Vec<(u64, Vec<u8>)> = (0..39).map(|i| (i, payload(i))).collect();
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.append(&payload(39)).expect("append"), 39);
}

#[test]
fn an_empty_active_segment_after_a_roll_is_fine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = fast_config(dir.path());
    config.segment_bytes = 20;
    let log = Log::open(config.clone()).expect("open");
    log.append(&[7; 12]).expect("append");
    log.append(&[8; 12]).expect("append");
    drop(log);
    // The second segment's only record is torn away entirely.
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2);
    fs::write(&files[1], b"").expect("empty it");
    let log = Log::open(config).expect("reopen");
    assert_eq!(log.next_offset(), 1);
    assert_eq!(log.append(&[9; 12]).expect("append"), 1);
    assert_eq!(read_all(&log), vec![(0, vec![7; 12]), (1, vec![9; 12])]);
}
