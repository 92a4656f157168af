//! Property test: random appends (including empty payloads and empty batches), segment rolls,
//! reopens and reads always agree with a plain in-memory model.

use proptest::prelude::*;
use proptest::sample::Index;
use tickflow_log::{Error, Log, LogConfig, Records};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Vec<u8>>),
    Reopen,
    /// Read at a random offset, then keep reading from where each read stopped (the path a
    /// tailing consumer takes).
    Read {
        at: Index,
        max: usize,
        follow_ups: usize,
    },
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..48),
        1 => prop::collection::vec(any::<u8>(), 0..6000),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(payload(), 0..12).prop_map(Op::Append),
        1 => Just(Op::Reopen),
        4 => (any::<Index>(), 0..40usize, 0..4usize)
            .prop_map(|(at, max, follow_ups)| Op::Read { at, max, follow_ups }),
    ]
}

fn check_read(log: &Log, model: &[Vec<u8>], offset: u64, max: usize) -> u64 {
    let mut out = vec![(u64::MAX, vec![1, 2, 3])];
    log.read(offset, max, &mut out).expect("read in range");
    let end = (offset as usize + max).min(model.len());
    let expected: Vec<(u64, Vec<u8>)> = (offset as usize..end)
        .map(|i| (i as u64, model[i].clone()))
        .collect();
    assert_eq!(out, expected, "read({offset}, {max})");
    // The flat buffer, reused with stale records in it, reads the same.
    let mut flat = Records::default();
    log.read(offset.saturating_sub(1), 3, &mut flat)
        .expect("read in range");
    log.read(offset, max, &mut flat).expect("read in range");
    let flat: Vec<(u64, Vec<u8>)> = flat.iter().map(|(o, p)| (o, p.to_vec())).collect();
    assert_eq!(flat, expected, "read({offset}, {max}) into Records");
    end as u64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn log_behaves_like_a_vec(segment_bytes in 1u64..600, ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = LogConfig::new(dir.path());
        config.fsync = false;
        config.segment_bytes = segment_bytes;
        let mut log = Log::open(config.clone()).expect("open");
        let mut model: Vec<Vec<u8>> = Vec::new();
        for op in ops {
            match op {
                Op::Append(records) => {
                    let range = log.append_batch(&records).expect("append");
                    prop_assert_eq!(range.start, model.len() as u64);
                    prop_assert_eq!(range.end - range.start, records.len() as u64);
                    model.extend(records);
                }
                Op::Reopen => {
                    drop(log);
                    log = Log::open(config.clone()).expect("reopen");
                }
                Op::Read { at, max, follow_ups } => {
                    let mut offset = at.index(model.len() + 1) as u64;
                    offset = check_read(&log, &model, offset, max);
                    for _ in 0..follow_ups {
                        offset = check_read(&log, &model, offset, max.max(1));
                    }
                }
            }
            prop_assert_eq!(log.next_offset(), model.len() as u64);
            prop_assert_eq!(log.start_offset(), 0);
        }
        let mut out = Vec::new();
        let past = model.len() as u64 + 1;
        let out_of_range = matches!(log.read(past, 1, &mut out), Err(Error::OffsetOutOfRange { .. }));
        prop_assert!(out_of_range);
        let all: Vec<Vec<u8>> = crate::read_all(&log).into_iter().map(|(_, b)| b).collect();
        prop_assert_eq!(all, model);
    }
}
