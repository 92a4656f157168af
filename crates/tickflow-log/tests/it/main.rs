//! Integration tests for tickflow-log: one binary, one module per concern.

mod consumers;
mod corruption;
mod crash;
mod disk_full;
mod group_commit;
mod props;
mod recovery;
mod retention;

use std::path::{Path, PathBuf};

use tickflow_log::{Log, LogConfig};

/// A config for tests that exercise logic, not power-loss durability: fsync off for speed.
/// (A process crash does not lose written data, so the crash test keeps fsync on only to
/// exercise the real path.)
fn fast_config(dir: &Path) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.fsync = false;
    config
}

/// Every record from `start_offset()` to `next_offset()`, read in batches.
fn read_all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let mut all = Vec::new();
    let mut batch = Vec::new();
    let mut offset = log.start_offset();
    while offset < log.next_offset() {
        log.read(offset, 1000, &mut batch).expect("read");
        assert!(
            !batch.is_empty(),
            "read at {offset} returned nothing before the end"
        );
        offset = batch.last().map_or(offset, |r| r.0 + 1);
        all.append(&mut batch);
    }
    all
}

/// Segment files in `dir`, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// A distinct, recognisable payload for record `i` (length varies with `i`).
fn payload(i: u64) -> Vec<u8> {
    let len = (i * 7 % 23) as usize + 1;
    (0..len)
        .map(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8))
        .collect()
}

/// Small deterministic PRNG so that failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}
