//! [`Log`]: opening and recovery, reads, waiting for data, consumer offsets, retention, stats.
//! The append path (group commit) is in [`crate::group_commit`].

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::dir;
use crate::error::{Error, Result};
use crate::group_commit::Writer;
use crate::offsets::{self, OffsetStore};
use crate::records::RecordSink;
use crate::retention::{self, ClosedSegment, Policy, RetentionReport};
use crate::segment::{ReadPlan, Segment};

/// How a [`Log`] is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub dir: PathBuf,
    /// Roll to a new segment when the next batch would take the active one past this size
    /// (a single larger batch still goes into one segment). Retention deletes whole segments,
    /// so this is also its granularity.
    pub segment_bytes: u64,
    /// Keep at most this many bytes of closed segments.
    pub retention_bytes: Option<u64>,
    /// Delete closed segments whose newest record (file mtime) is older than this.
    pub retention_age: Option<Duration>,
    /// fsync before acknowledging appends and commits. `false` only for tests and benchmarks
    /// that say so: acknowledged data can then be lost on power failure.
    pub fsync: bool,
    /// Refuse appends ([`crate::Error::DiskFull`]) while the log's file system would be left
    /// with less than this free; 0 never refuses. A write that meets a full disk fails the
    /// log until it is reopened (see [`crate::Error::Failed`]), so the log stops short of it
    /// and takes appends again by itself once space is freed.
    pub min_free_bytes: u64,
}

impl LogConfig {
    /// Defaults: 128 MiB segments, no retention, fsync on.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            segment_bytes: 128 << 20,
            retention_bytes: None,
            retention_age: None,
            fsync: true,
            min_free_bytes: 0,
        }
    }
}

/// Counters and sizes, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub segments: usize,
    /// Bytes of durable records in all segments, framing included.
    pub bytes: u64,
    pub start_offset: u64,
    pub next_offset: u64,
    /// `append_batch` calls (with at least one record) since open.
    pub appends: u64,
    /// Records appended since open.
    pub records_appended: u64,
    /// Data fsyncs (`fdatasync`) since open; fewer than `appends` when group commit works.
    pub fsyncs: u64,
    /// Bytes written to segments since open.
    pub bytes_written: u64,
}

/// The embedded durable log. Cheap to clone; all clones share one open log. Send + Sync.
///
/// At most one `Log` may have a directory open at a time (enforced with a lock file).
#[derive(Clone)]
pub struct Log {
    pub(crate) inner: Arc<Inner>,
}

// `Log` is shared across producer and consumer threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
};

pub(crate) struct Inner {
    pub(crate) config: LogConfig,
    pub(crate) state: Mutex<State>,
    /// Signalled whenever the durable end moves or a group commit finishes (well or not).
    pub(crate) changed: Condvar,
    offsets: OffsetStore,
    /// Holds the directory lock for as long as any clone lives.
    _lock: dir::DirLock,
}

/// Everything behind the log's one mutex. It is held only for bookkeeping, never across I/O.
pub(crate) struct State {
    /// Oldest first; the last one is the active segment. Never empty.
    pub(crate) segments: VecDeque<Segment>,
    /// Offset after the last durable record: what readers may see.
    pub(crate) durable_end: u64,
    pub(crate) writer: Writer,
    pub(crate) counters: Counters,
    hints: ReadHints,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) appends: u64,
    pub(crate) records: u64,
    pub(crate) fsyncs: u64,
    pub(crate) bytes_written: u64,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats();
        f.debug_struct("Log")
            .field("dir", &self.inner.config.dir)
            .field("start_offset", &stats.start_offset)
            .field("next_offset", &stats.next_offset)
            .field("segments", &stats.segments)
            .finish()
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something ever did, the state is still a
        // consistent snapshot because every update is completed before unlocking.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn start_offset(&self) -> u64 {
        self.segments.front().map_or(self.durable_end, |s| s.base)
    }

    fn out_of_range(&self, offset: u64) -> Error {
        Error::OffsetOutOfRange {
            offset,
            start: self.start_offset(),
            next: self.durable_end,
        }
    }

    /// Where to start reading `offset` (which is in `start..durable_end`).
    fn plan_read(&self, offset: u64) -> Result<ReadPlan> {
        let i = self.segments.partition_point(|s| s.base <= offset);
        let Some(segment) = i.checked_sub(1).and_then(|i| self.segments.get(i)) else {
            return Err(self.out_of_range(offset));
        };
        if offset >= segment.end {
            // Only a closed segment damaged at open ends before the next one begins.
            return Err(Error::Corrupt {
                segment: segment.path.clone(),
                position: segment.corrupt_at.unwrap_or(segment.size),
            });
        }
        let mut from = segment.locate(offset);
        if let Some(hint) = self.hints.find(segment.base, offset)
            && hint.0 > from.0
        {
            from = hint;
        }
        Ok(ReadPlan {
            base: segment.base,
            file: Arc::clone(&segment.file),
            path: segment.path.clone(),
            from,
            limit_pos: segment.size,
            limit_offset: segment.end,
        })
    }
}

/// Where recent reads stopped, so that a consumer reading on from there starts at the exact
/// byte position instead of re-scanning from the previous sparse-index entry. A few slots cover
/// a few concurrent consumers; a miss only costs a scan of up to one index interval.
#[derive(Debug, Default)]
struct ReadHints {
    /// (segment base, offset, position)
    slots: [Option<(u64, u64, u64)>; 16],
    next_victim: usize,
}

impl ReadHints {
    /// The closest hint at or before `offset` in the segment at `base`.
    fn find(&self, base: u64, offset: u64) -> Option<(u64, u64)> {
        self.slots
            .iter()
            .flatten()
            .filter(|&&(b, o, _)| b == base && o <= offset)
            .map(|&(_, o, p)| (o, p))
            .max_by_key(|&(o, _)| o)
    }

    /// Records that a read which started at `started` stopped at (`offset`, `pos`). Replaces
    /// that reader's previous hint if there is one, so one consumer uses one slot.
    fn record(&mut self, base: u64, started: u64, offset: u64, pos: u64) {
        let slot = self
            .slots
            .iter()
            .position(|s| matches!(s, Some((b, o, _)) if *b == base && *o == started))
            .unwrap_or_else(|| {
                let victim = self.next_victim;
                self.next_victim = (victim + 1) % self.slots.len();
                victim
            });
        self.slots[slot] = Some((base, offset, pos));
    }
}

impl Log {
    /// Opens (creating if needed) the log in `config.dir` and recovers it: the active
    /// segment's torn tail is truncated; closed segments are scanned and any damage in them is
    /// remembered so that reads reaching it fail with [`Error::Corrupt`].
    pub fn open(config: LogConfig) -> Result<Log> {
        let lock = dir::create_and_lock(&config.dir, config.fsync)?;
        let found = dir::list_segments(&config.dir)?;
        let mut segments = VecDeque::with_capacity(found.len().max(1));
        for (i, (base, path)) in found.iter().enumerate() {
            let segment = match found.get(i + 1) {
                Some((next_base, _)) => Segment::load_closed(path.clone(), *base, *next_base)?,
                None => Segment::recover_active(path.clone(), *base, config.fsync)?,
            };
            segments.push_back(segment);
        }
        if segments.is_empty() {
            segments.push_back(Segment::create(&config.dir, 0)?);
            if config.fsync {
                dir::sync_dir(&config.dir)?;
            }
        }
        let offsets = OffsetStore::open(config.dir.join("consumers"), config.fsync)?;
        let writer = Writer::new(segments.back());
        let durable_end = writer.next_offset;
        // A commit never passes the durable end, so an offset past it is a damaged file (a
        // bit flip that still reads as a number), and would let retention delete records
        // its consumer has not read.
        let beyond = offsets
            .lock()
            .iter()
            .find(|(_, offset)| **offset > durable_end)
            .map(|(name, _)| name.clone());
        if let Some(name) = beyond {
            return Err(Error::BadOffsetFile {
                path: config.dir.join("consumers").join(format!("{name}.offset")),
                reason: "beyond the log's end",
            });
        }
        Ok(Log {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State {
                    segments,
                    durable_end,
                    writer,
                    counters: Counters::default(),
                    hints: ReadHints::default(),
                }),
                changed: Condvar::new(),
                offsets,
                _lock: lock,
            }),
        })
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// First offset still stored (after retention).
    pub fn start_offset(&self) -> u64 {
        self.inner.lock().start_offset()
    }

    /// The offset the next append will get, which is also the durable end: only durable
    /// records are visible to readers.
    pub fn next_offset(&self) -> u64 {
        self.inner.lock().durable_end
    }

    /// Reads up to `max_records` durable records starting at `offset` into `out` (cleared
    /// first), each as (offset, bytes): a `Vec<(u64, Vec<u8>)>`, or a [`crate::Records`] that
    /// allocates nothing per record. Returns `Ok` with `out` empty if
    /// `offset == next_offset()`; [`Error::OffsetOutOfRange`] if `offset < start_offset()` or
    /// `offset > next_offset()`. Every returned record has passed its crc. If damage is met
    /// after some records were read, those are returned and the next read (starting at the
    /// damaged record) fails with [`Error::Corrupt`].
    pub fn read<S: RecordSink>(&self, offset: u64, max_records: usize, out: &mut S) -> Result<()> {
        out.clear_records();
        let mut next = offset;
        loop {
            let plan = {
                let st = self.inner.lock();
                if next < st.start_offset() || next > st.durable_end {
                    if out.record_count() == 0 {
                        return Err(st.out_of_range(next));
                    }
                    // Retention removed the rest meanwhile: return what we have (the next
                    // read reports the range error).
                    break;
                }
                if next == st.durable_end || out.record_count() >= max_records {
                    break;
                }
                st.plan_read(next)
            };
            let result = plan.and_then(|plan| {
                let (stopped, pos) = plan.read_into(next, max_records, out)?;
                Ok((plan.base, stopped, pos))
            });
            match result {
                Ok((base, stopped, pos)) => {
                    self.inner.lock().hints.record(base, next, stopped, pos);
                    next = stopped;
                }
                Err(e) if out.record_count() == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Blocks until `next_offset() > offset` or `timeout` passes; returns whether data is there.
    pub fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        // A timeout too large to add to now (e.g. Duration::MAX) means no deadline.
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.inner.lock();
        loop {
            if st.durable_end > offset {
                return true;
            }
            st = match deadline {
                None => self
                    .inner
                    .changed
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    self.inner
                        .changed
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Durably stores `next_offset` as the next offset `consumer` will read (temp file, fsync,
    /// rename, fsync directory). Committing the current value again is a no-op; committing a
    /// lower one is [`Error::OffsetRegression`]; one past `next_offset()` is
    /// [`Error::OffsetOutOfRange`] (a consumer cannot have read what is not there yet).
    pub fn commit_offset(&self, consumer: &str, next_offset: u64) -> Result<()> {
        offsets::validate_name(consumer)?;
        let mut committed = self.inner.offsets.lock();
        {
            let st = self.inner.lock();
            if next_offset > st.durable_end {
                return Err(st.out_of_range(next_offset));
            }
        }
        self.inner
            .offsets
            .commit(&mut committed, consumer, next_offset)
    }

    /// The last committed offset of `consumer`, if it ever committed (`None` for invalid names).
    pub fn committed_offset(&self, consumer: &str) -> Option<u64> {
        self.inner.offsets.lock().get(consumer).copied()
    }

    /// All consumers and their committed offsets, sorted by name.
    pub fn consumers(&self) -> Vec<(String, u64)> {
        self.inner
            .offsets
            .lock()
            .iter()
            .map(|(name, offset)| (name.clone(), *offset))
            .collect()
    }

    /// Deletes whole closed segments by `retention_bytes` / `retention_age`, oldest first, but
    /// never the active segment and never a segment holding any record at or after the lowest
    /// committed consumer offset (with no consumers, nothing holds retention back). Readers
    /// already reading a deleted segment finish their read; later reads below the new
    /// `start_offset()` get [`Error::OffsetOutOfRange`].
    pub fn enforce_retention(&self) -> Result<RetentionReport> {
        let config = &self.inner.config;
        let policy = Policy {
            max_bytes: config.retention_bytes,
            max_age: config.retention_age,
        };
        let mut report = RetentionReport::default();
        if policy.max_bytes.is_none() && policy.max_age.is_none() {
            return Ok(report);
        }
        // Held throughout so that no consumer commits a lower offset while we delete.
        let committed = self.inner.offsets.lock();
        let min_committed = committed.values().min().copied();
        let victims: Vec<(u64, PathBuf, u64)> = {
            let st = self.inner.lock();
            let closed_count = st.segments.len().saturating_sub(1);
            let closed: Vec<ClosedSegment> = st
                .segments
                .iter()
                .zip(st.segments.iter().skip(1))
                .take(closed_count)
                .map(|(segment, next)| ClosedSegment {
                    size: segment.size,
                    end: next.base,
                    modified: segment.file.metadata().and_then(|m| m.modified()).ok(),
                })
                .collect();
            let n =
                retention::segments_to_delete(&closed, policy, min_committed, SystemTime::now());
            st.segments
                .iter()
                .take(n)
                .map(|s| (s.base, s.path.clone(), s.size))
                .collect()
        };
        let mut result = Ok(());
        for (base, path, size) in victims {
            if let Err(e) = fs::remove_file(&path) {
                result = Err(Error::io("delete segment", &path, e));
                break;
            }
            let mut st = self.inner.lock();
            if st.segments.front().is_some_and(|s| s.base == base) {
                st.segments.pop_front();
            }
            report.segments_removed += 1;
            report.bytes_removed += size;
        }
        if report.segments_removed > 0 && config.fsync {
            dir::sync_dir(&config.dir)?;
        }
        drop(committed);
        result.map(|()| report)
    }

    /// Sizes and counters.
    pub fn stats(&self) -> LogStats {
        let st = self.inner.lock();
        LogStats {
            segments: st.segments.len(),
            bytes: st.segments.iter().map(|s| s.size).sum(),
            start_offset: st.start_offset(),
            next_offset: st.durable_end,
            appends: st.counters.appends,
            records_appended: st.counters.records,
            fsyncs: st.counters.fsyncs,
            bytes_written: st.counters.bytes_written,
        }
    }
}
