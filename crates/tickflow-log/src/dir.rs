//! The log directory: its layout, the lock that keeps a second writer out, and directory fsync.
//!
//! ```text
//! <dir>/LOCK                          fcntl-locked while a Log is open
//! <dir>/00000000000000000000.log      segments, named by base offset
//! <dir>/consumers/<name>.offset       committed consumer offsets
//! ```

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};

const SEGMENT_SUFFIX: &str = ".log";
const LOCK_FILE: &str = "LOCK";

/// File name of the segment whose first record has offset `base`.
pub(crate) fn segment_file_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// Inverse of [`segment_file_name`]; `None` for anything else found in the directory.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Directories locked by this process. POSIX record locks (below) do not conflict within one
/// process, so a second `Log` on the same directory in this process is caught here.
static LOCKED_HERE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Exclusive ownership of a log directory, released on drop. Two writers on one directory
/// would interleave records and break every invariant, so a second `Log::open` fails fast.
///
/// Why `fcntl(F_SETLK)` and not `flock` (`File::lock`): a flock belongs to the open file
/// description, which a child process forked by *any* thread of this program shares until it
/// execs; a log closed and reopened meanwhile would find its own lock still held. fcntl record
/// locks belong to the process and are not inherited across fork.
#[derive(Debug)]
pub struct DirLock {
    canonical: PathBuf,
    file: Option<File>,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Close (releasing the fcntl lock) before allowing another open in this process: a
        // close by this process of *any* descriptor of the file would drop a newer lock.
        drop(self.file.take());
        LOCKED_HERE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.canonical);
    }
}

/// Creates `dir` if needed (making the new entry durable) and takes the exclusive lock on it.
pub(crate) fn create_and_lock(dir: &Path, fsync: bool) -> Result<DirLock> {
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        if fsync && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    let canonical = dir
        .canonicalize()
        .map_err(|e| Error::io("resolve directory", dir, e))?;
    let locked = || Error::Locked {
        dir: dir.to_path_buf(),
    };
    if !LOCKED_HERE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(canonical.clone())
    {
        return Err(locked());
    }
    // From here on, dropping `lock` undoes the registration.
    let mut lock = DirLock {
        canonical,
        file: None,
    };
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open lock file", &path, e))?;
    // SAFETY: an all-zero `flock` is a valid value (plain integers); the fields that matter
    // are set below.
    let mut request: libc::flock = unsafe { std::mem::zeroed() };
    request.l_type = libc::F_WRLCK as libc::c_short;
    request.l_whence = libc::SEEK_SET as libc::c_short;
    request.l_start = 0;
    request.l_len = 0; // the whole file
    // SAFETY: the descriptor is open for as long as `file` lives, and `request` is a valid
    // `flock` that outlives the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &request) };
    if rc == -1 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EACCES | libc::EAGAIN) => locked(),
            _ => Error::io("lock", &path, e),
        });
    }
    lock.file = Some(file);
    Ok(lock)
}

/// Bytes an unprivileged writer may still put on the file system holding `dir`.
pub(crate) fn free_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|e| {
        Error::io(
            "statvfs",
            dir,
            io::Error::new(io::ErrorKind::InvalidInput, e),
        )
    })?;
    // SAFETY: an all-zero `statvfs` is a valid value (plain integers), filled in by the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated path and `stat` outlives the call.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(Error::io("statvfs", dir, io::Error::last_os_error()));
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Segment files in `dir` as (base offset, path), sorted by base offset.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        let name = entry.file_name();
        if let Some(base) = name.to_str().and_then(parse_segment_file_name) {
            segments.push((base, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(base, _)| *base);
    Ok(segments)
}

/// fsyncs a directory so that file creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(0), "00000000000000000000.log");
        assert_eq!(segment_file_name(u64::MAX), "18446744073709551615.log");
        for base in [0, 1, 4096, u64::MAX] {
            assert_eq!(
                parse_segment_file_name(&segment_file_name(base)),
                Some(base)
            );
        }
        for other in [
            "LOCK",
            "0.log",
            "0000000000000000000x.log",
            "00000000000000000000.tmp",
        ] {
            assert_eq!(parse_segment_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn second_lock_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = create_and_lock(dir.path(), false).expect("first lock");
        assert!(matches!(
            create_and_lock(dir.path(), false),
            Err(Error::Locked { .. })
        ));
        let other_spelling = dir.path().join(".");
        assert!(matches!(
            create_and_lock(&other_spelling, false),
            Err(Error::Locked { .. })
        ));
        drop(first);
        create_and_lock(dir.path(), false).expect("lock after release");
    }
}
