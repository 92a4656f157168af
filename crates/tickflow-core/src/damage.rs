//! Stored files found damaged in this process: Parquet parts whose checksum no longer
//! matches. A reader in this process that finds one (a query, a sink catching up,
//! compaction, replay) records it here, so that the process's `/metrics` and status show
//! it. Each process keeps its own: what `tickflow verify` finds is in its own output.
//!
//! A local file leaves the list once it is moved aside or replaced (it is gone, or its
//! length or modification time changed): restoring a part from a copy clears the alert
//! without a restart. A part on object storage stays listed until the process restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// What a file looked like when it was found damaged.
type Identity = Option<(u64, Option<SystemTime>)>;

static FOUND: Mutex<BTreeMap<PathBuf, (String, Identity)>> = Mutex::new(BTreeMap::new());

fn identity(path: &Path) -> Identity {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

/// Records `path` as damaged, for `reason`.
pub fn record(path: &Path, reason: &str) {
    FOUND
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(path.to_path_buf(), (reason.to_string(), identity(path)));
}

/// Every damaged file found so far and still in place, with its reason, by path.
pub fn found() -> Vec<(PathBuf, String)> {
    let mut found = FOUND.lock().unwrap_or_else(PoisonError::into_inner);
    // One stat per damaged file: a file moved aside or restored is forgotten.
    found.retain(|path, (_, was)| was.is_none() || identity(path) == *was);
    found
        .iter()
        .map(|(p, (r, _))| (p.clone(), r.clone()))
        .collect()
}

/// How many damaged files are still in place.
pub fn count() -> usize {
    found().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_file_is_forgotten_once_restored_or_moved_aside() {
        let dir = std::env::temp_dir().join(format!("tickflow-damage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.parquet"), dir.join("b.parquet"));
        std::fs::write(&a, b"damaged").unwrap();
        std::fs::write(&b, b"damaged").unwrap();
        record(&a, "checksum mismatch");
        record(&b, "checksum mismatch");
        let listed = |p: &Path| found().iter().any(|(f, _)| f == p);
        assert!(listed(&a) && listed(&b));
        std::fs::remove_file(&a).unwrap();
        std::fs::write(&b, b"restored from a copy").unwrap();
        assert!(!listed(&a), "moved aside");
        assert!(!listed(&b), "restored");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
