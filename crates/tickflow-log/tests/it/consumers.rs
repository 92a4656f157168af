//! Named consumer offsets: durable across reopen, validated names, monotonic.

use tickflow_log::{Error, Log};

use crate::fast_config;

fn log_with_records(dir: &std::path::Path, n: usize) -> Log {
    let log = Log::open(fast_config(dir)).expect("open");
    let records: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8]).collect();
    log.append_batch(&records).expect("append");
    log
}

#[test]
fn committed_offsets_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with_records(dir.path(), 10);
    assert_eq!(log.committed_offset("bars"), None);
    log.commit_offset("bars", 3).expect("commit");
    log.commit_offset("bars", 7).expect("commit");
    log.commit_offset("lake-sink_1.v2", 10).expect("commit");
    assert_eq!(log.committed_offset("bars"), Some(7));
    drop(log);
    assert!(dir.path().join("consumers/bars.offset").is_file());

    // With fsync on, too: the commit path is the same, plus the syncs.
    let mut config = fast_config(dir.path());
    config.fsync = true;
    let log = Log::open(config).expect("reopen");
    assert_eq!(log.committed_offset("bars"), Some(7));
    assert_eq!(log.committed_offset("lake-sink_1.v2"), Some(10));
    assert_eq!(
        log.consumers(),
        vec![("bars".to_owned(), 7), ("lake-sink_1.v2".to_owned(), 10)]
    );
    log.commit_offset("bars", 8).expect("commit after reopen");
    drop(log);
    let log = Log::open(fast_config(dir.path())).expect("reopen");
    assert_eq!(log.committed_offset("bars"), Some(8));
}

#[test]
fn invalid_names_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with_records(dir.path(), 1);
    let too_long = "x".repeat(65);
    for name in [
        "",
        "a/b",
        "../up",
        "a b",
        "naïve",
        too_long.as_str(),
        "tab\t",
    ] {
        assert!(
            matches!(
                log.commit_offset(name, 0),
                Err(Error::InvalidConsumerName { .. })
            ),
            "{name:?}"
        );
        assert_eq!(log.committed_offset(name), None);
    }
    log.commit_offset(&"x".repeat(64), 1)
        .expect("64 characters is fine");
    assert_eq!(log.consumers().len(), 1);
}

#[test]
fn regressing_or_future_commits_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_with_records(dir.path(), 10);
    log.commit_offset("c", 5).expect("commit");
    log.commit_offset("c", 5)
        .expect("re-committing the same offset is fine");
    match log.commit_offset("c", 4) {
        Err(Error::OffsetRegression {
            consumer,
            committed,
            requested,
        }) => assert_eq!((consumer.as_str(), committed, requested), ("c", 5, 4)),
        other => panic!("expected OffsetRegression, got {other:?}"),
    }
    assert!(matches!(
        log.commit_offset("c", 11),
        Err(Error::OffsetOutOfRange { offset: 11, .. })
    ));
    log.commit_offset("c", 10)
        .expect("up to next_offset is fine");
    drop(log);
    let log = Log::open(fast_config(dir.path())).expect("reopen");
    assert!(matches!(
        log.commit_offset("c", 9),
        Err(Error::OffsetRegression { committed: 10, .. })
    ));
}
