//! A log short of disk space refuses appends before writing anything, and stays usable.

use tickflow_log::{Error, Log};

use crate::{fast_config, read_all};

#[test]
fn a_log_short_of_space_refuses_appends_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(fast_config(dir.path())).unwrap();
        log.append(b"before").unwrap();
    }
    let mut config = fast_config(dir.path());
    // More than any disk holds: every append is short of the reserve.
    config.min_free_bytes = u64::MAX / 2;
    {
        let log = Log::open(config).unwrap();
        let err = log.append_batch(&[b"refused".as_slice()]).unwrap_err();
        match &err {
            Error::DiskFull {
                dir: d,
                free,
                reserve,
            } => {
                assert_eq!(d, dir.path());
                assert!(free < reserve);
            }
            other => panic!("expected DiskFull, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("is nearly full") && text.contains("appends resume once space is freed"),
            "{text}"
        );
        assert_eq!(log.next_offset(), 1, "nothing was written");
        // The log is not failed: an empty batch, or reading, still works.
        assert_eq!(read_all(&log).len(), 1);
    }
    // With space (no reserve), the same log takes appends again, after the first record.
    let log = Log::open(fast_config(dir.path())).unwrap();
    assert_eq!(log.append(b"after").unwrap(), 1);
    let all = read_all(&log);
    assert_eq!(
        all.iter().map(|(_, r)| r.as_slice()).collect::<Vec<_>>(),
        vec![b"before".as_slice(), b"after".as_slice()]
    );
}
