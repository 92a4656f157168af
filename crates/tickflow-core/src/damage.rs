//! Stored files found damaged in this process: Parquet parts whose checksum no longer
//! matches. Any reader that finds one (a query, a sink catching up, compaction, replay,
//! `tickflow verify`) records it here, so `/metrics` and the status show it wherever it
//! was found. Kept per process and never forgotten: a damaged part stays damaged until
//! someone moves it aside or restores it, and a restart looks again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

static FOUND: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());

/// Records `path` as damaged, for `reason`.
pub fn record(path: &Path, reason: &str) {
    FOUND
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(path.to_path_buf(), reason.to_string());
}

/// Every damaged file found so far, with its reason, by path.
pub fn found() -> Vec<(PathBuf, String)> {
    FOUND
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(p, r)| (p.clone(), r.clone()))
        .collect()
}

/// How many damaged files were found.
pub fn count() -> usize {
    FOUND.lock().unwrap_or_else(PoisonError::into_inner).len()
}
