//! Named consumer offsets: "the next offset this consumer will read", one small file per
//! consumer in `<dir>/consumers/<name>.offset`.
//!
//! A commit writes `<name>.offset.tmp`, fsyncs it, renames it over `<name>.offset` and fsyncs
//! the directory, so after a crash the file holds either the old or the new value, never a mix.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::dir::sync_dir;
use crate::error::{Error, Result};

const SUFFIX: &str = ".offset";
const TMP_SUFFIX: &str = ".offset.tmp";
const MAX_NAME_LEN: usize = 64;

/// Consumer names become file names, so only a safe, portable character set is accepted.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConsumerName {
            name: name.to_owned(),
        })
    }
}

/// The committed offsets, cached in memory and written through to disk.
#[derive(Debug)]
pub(crate) struct OffsetStore {
    dir: PathBuf,
    fsync: bool,
    committed: Mutex<BTreeMap<String, u64>>,
}

impl OffsetStore {
    /// Loads `dir` (creating it), discarding temp files left by a crash mid-commit.
    pub(crate) fn open(dir: PathBuf, fsync: bool) -> Result<OffsetStore> {
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
            if fsync && let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut committed = BTreeMap::new();
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("list directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list directory", &dir, e))?;
            let path = entry.path();
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if file_name.ends_with(TMP_SUFFIX) {
                fs::remove_file(&path).map_err(|e| Error::io("remove temp file", &path, e))?;
                continue;
            }
            let Some(name) = file_name.strip_suffix(SUFFIX) else {
                continue;
            };
            if validate_name(name).is_err() {
                continue;
            }
            committed.insert(name.to_owned(), read_offset_file(&path)?);
        }
        Ok(OffsetStore {
            dir,
            fsync,
            committed: Mutex::new(committed),
        })
    }

    /// Holding this guard serialises commits with each other and with retention, which must
    /// not see a lower offset appear between reading the minimum and deleting segments.
    pub(crate) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, u64>> {
        self.committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Durably records `next_offset` for `consumer`. The caller validated the name and holds
    /// `map` from [`OffsetStore::lock`].
    pub(crate) fn commit(
        &self,
        map: &mut BTreeMap<String, u64>,
        consumer: &str,
        next_offset: u64,
    ) -> Result<()> {
        if let Some(&committed) = map.get(consumer) {
            if next_offset < committed {
                return Err(Error::OffsetRegression {
                    consumer: consumer.to_owned(),
                    committed,
                    requested: next_offset,
                });
            }
            if next_offset == committed {
                return Ok(());
            }
        }
        let path = self.dir.join(format!("{consumer}{SUFFIX}"));
        let tmp = self.dir.join(format!("{consumer}{TMP_SUFFIX}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        file.write_all(encode(next_offset).as_bytes())
            .map_err(|e| Error::io("write", &tmp, e))?;
        if self.fsync {
            file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        }
        drop(file);
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename over", &path, e))?;
        if self.fsync {
            sync_dir(&self.dir)?;
        }
        map.insert(consumer.to_owned(), next_offset);
        Ok(())
    }
}

/// `<offset> <crc32 of the digits, hex>\n`: the checksum catches a flipped bit that would
/// still read as a number (an offset too high lets retention delete unread segments).
fn encode(offset: u64) -> String {
    let digits = offset.to_string();
    format!("{digits} {:08x}\n", crc32fast::hash(digits.as_bytes()))
}

/// Reads what [`encode`] wrote; a bare number (files written before the checksum) is taken
/// as it is.
fn decode(text: &str) -> std::result::Result<u64, &'static str> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let (digits, crc) = match text.split_once(' ') {
        Some((digits, crc)) => (digits, Some(crc)),
        None => (text, None),
    };
    let offset = digits.parse().map_err(|_| "not an offset")?;
    match crc {
        None => Ok(offset),
        Some(crc) if u32::from_str_radix(crc, 16) == Ok(crc32fast::hash(digits.as_bytes())) => {
            Ok(offset)
        }
        Some(_) => Err("checksum mismatch"),
    }
}

fn read_offset_file(path: &Path) -> Result<u64> {
    let bytes = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| "not text");
    text.and_then(decode)
        .map_err(|reason| Error::BadOffsetFile {
            path: path.to_path_buf(),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "pipeline.bars-1_x", &"x".repeat(64), "..", "A.B"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "a b", "é", &"x".repeat(65), "a\0", "../x"] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidConsumerName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn commit_persists_and_cleans_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = OffsetStore::open(dir.path().join("c"), false).expect("open");
        store.commit(&mut store.lock(), "a", 5).expect("commit");
        store
            .commit(&mut store.lock(), "a", 5)
            .expect("same value is fine");
        assert!(matches!(
            store.commit(&mut store.lock(), "a", 4),
            Err(Error::OffsetRegression {
                committed: 5,
                requested: 4,
                ..
            })
        ));
        fs::write(dir.path().join("c/b.offset.tmp"), "garbage").expect("write tmp");
        let reopened = OffsetStore::open(dir.path().join("c"), false).expect("reopen");
        assert_eq!(reopened.lock().get("a"), Some(&5));
        assert_eq!(reopened.lock().get("b"), None);
        assert!(!dir.path().join("c/b.offset.tmp").exists());
        assert_eq!(decode(&encode(1234)), Ok(1234));
        assert_eq!(decode("1234\n"), Ok(1234), "written before the checksum");
        assert_eq!(
            decode(&encode(1234).replace('4', "5")),
            Err("checksum mismatch")
        );
        assert_eq!(decode(""), Err("not an offset"));
        fs::write(dir.path().join("c/bad.offset"), "12x").expect("write bad");
        assert!(matches!(
            OffsetStore::open(dir.path().join("c"), false),
            Err(Error::BadOffsetFile { .. })
        ));
    }
}
