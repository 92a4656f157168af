//! tickflow-log is the embedded, durable, append-only log at the heart of tickflow: producers
//! append opaque byte records and get their offsets back only once the bytes are on disk
//! (fsync, shared between concurrent appenders by group commit); consumers read by offset and
//! durably commit named offsets; retention deletes old segments by size and age without ever
//! dropping a record a consumer has not committed past; recovery on open truncates a torn tail
//! and never serves a corrupt record.
//!
//! It is not a broker: one process owns a log directory (enforced with a lock file), there is
//! no networking, no replication and no async runtime — plain `std` I/O, callable from any
//! thread. Records are opaque bytes; encoding events is `tickflow-core`'s job.
//!
//! The main type is [`Log`], opened with a [`LogConfig`].
//!
//! ```
//! # fn main() -> tickflow_log::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! use tickflow_log::{Log, LogConfig};
//!
//! let log = Log::open(LogConfig::new(dir.path()))?;
//! let offsets = log.append_batch(&[b"tick-1".as_slice(), b"tick-2"])?;
//! let mut out = Vec::new();
//! log.read(offsets.start, 100, &mut out)?;
//! assert_eq!(out[1], (1, b"tick-2".to_vec()));
//! log.commit_offset("bars", offsets.end)?;
//! # Ok(())
//! # }
//! ```

mod dir;
mod error;
mod group_commit;
mod log;
mod offsets;
mod record;
mod records;
mod retention;
mod segment;

pub use dir::DirLock;
pub use error::{Error, Result};
pub use log::{Log, LogConfig, LogStats};
pub use record::MAX_RECORD_BYTES;
pub use records::{RecordSink, Records};
pub use retention::RetentionReport;

/// Takes the exclusive lock a [`Log`] holds on its directory, without opening the log: a
/// tool that must not run beside a pipeline (offline compaction) holds it while it works.
///
/// # Errors
/// [`Error::Locked`] while a log is open on `dir`, in this process or another.
pub fn lock_dir(dir: &std::path::Path) -> Result<DirLock> {
    dir::create_and_lock(dir, false)
}
