//! The crate's one error type. Every variant carries enough context (a path, an offset, a
//! consumer name) to act on without a backtrace.

use std::io;
use std::path::{Path, PathBuf};

/// Errors returned by [`crate::Log`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed; `op` says which and `path` on what.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Bytes on disk in a closed segment failed their length or crc check (or records are
    /// missing). The record at `position` and everything after it in that segment is not served.
    #[error("corrupt record in segment {} at byte {position}", segment.display())]
    Corrupt { segment: PathBuf, position: u64 },

    /// A record in the active segment failed its check, yet the record after it is whole: not
    /// a tail torn by a crash (which ends the file) but damage with acknowledged records
    /// behind it. The log does not open rather than cut them off.
    #[error(
        "damaged record in the active segment {} at byte {position}, with whole records after it: not a torn tail, so the log does not cut them off; restore the file from a copy, or move it aside to start without its records",
        segment.display()
    )]
    DamagedActive { segment: PathBuf, position: u64 },

    /// A read asked for an offset that retention has already removed or that is past the
    /// durable end of the log.
    #[error("offset {offset} out of range: log holds [{start}, {next})")]
    OffsetOutOfRange { offset: u64, start: u64, next: u64 },

    /// A record is larger than [`crate::MAX_RECORD_BYTES`].
    #[error("record of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },

    /// Consumer names must match `[A-Za-z0-9_.-]{1,64}` because they become file names.
    #[error("invalid consumer name {name:?}: use 1 to 64 of [A-Za-z0-9_.-]")]
    InvalidConsumerName { name: String },

    /// Committed offsets only move forward; going back would re-deliver silently.
    #[error(
        "consumer {consumer:?} already committed {committed}; refusing to go back to {requested}"
    )]
    OffsetRegression {
        consumer: String,
        committed: u64,
        requested: u64,
    },

    /// A consumer offset file could not be parsed or failed its checksum.
    #[error("damaged consumer offset file {}: {reason}", path.display())]
    BadOffsetFile { path: PathBuf, reason: &'static str },

    /// Another `Log` (in this or another process) has the directory open.
    #[error("log directory {} is locked by another open Log", dir.display())]
    Locked { dir: PathBuf },

    /// An earlier write or fsync failed. After a failed fsync the kernel may have dropped the
    /// dirty pages, so retrying could ack bytes that never reach disk; the log refuses further
    /// appends until it is reopened, which re-runs recovery.
    #[error("log is failed after an earlier write error ({reason}); reopen it to recover")]
    Failed { reason: String },

    /// The append would leave less than [`crate::LogConfig::min_free_bytes`] free on the
    /// log's file system. Nothing was written; appends resume once space is freed.
    #[error(
        "the disk holding {} is nearly full: {} MiB free, {} MiB kept in reserve; appends resume once space is freed",
        dir.display(), free >> 20, reserve >> 20
    )]
    DiskFull {
        dir: PathBuf,
        free: u64,
        reserve: u64,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
