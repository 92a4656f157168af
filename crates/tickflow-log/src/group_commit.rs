//! The append path: offsets are assigned and records framed under the log's lock, then one
//! caller at a time (the leader) writes everything queued so far and fsyncs it, outside the
//! lock. Callers that arrive while a leader is syncing queue their bytes and wait; the next
//! leader's single write + fdatasync covers all of them (group commit). An append returns only
//! once its records are durable, and only then do readers see them.

use std::fs::File;
use std::mem;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, MutexGuard, PoisonError};

use crate::dir;
use crate::error::{Error, Result};
use crate::log::{Inner, Log, LogConfig, State};
use crate::record::{self, MAX_RECORD_BYTES};
use crate::segment::{INDEX_INTERVAL, Segment};

/// Write-side bookkeeping: what has been assigned, and what is queued but not yet written.
#[derive(Debug)]
pub(crate) struct Writer {
    /// Offset the next appended record gets (ahead of the durable end while commits run).
    pub(crate) next_offset: u64,
    /// Segment that receives the next batch; after a roll it exists only once its first
    /// chunk is written.
    segment_base: u64,
    /// Bytes assigned to that segment so far.
    segment_size: u64,
    /// Position of its last sparse-index entry.
    last_indexed: u64,
    /// Framed records waiting for the next leader, in offset order.
    pending: Vec<Chunk>,
    /// Bytes queued or being written that the disk's free space does not show yet: the
    /// reserve check counts them, so that appends racing each other cannot together pass it.
    unwritten: u64,
    /// A leader is writing and syncing right now.
    syncing: bool,
    /// Set when a write or fsync failed; see [`Error::Failed`].
    failed: Option<String>,
    /// Buffers of finished chunks, reused to avoid reallocating on every commit.
    spare: Vec<Vec<u8>>,
}

/// Contiguous framed records for one segment.
#[derive(Debug)]
struct Chunk {
    segment_base: u64,
    /// Byte position in the segment where `bytes` go.
    position: u64,
    bytes: Vec<u8>,
    /// Offset after the last record in `bytes`.
    end: u64,
    /// Sparse-index entries for records in `bytes`.
    index: Vec<(u64, u64)>,
}

const MAX_SPARE_BUFFERS: usize = 4;
const MAX_SPARE_CAPACITY: usize = 8 << 20;

impl Writer {
    pub(crate) fn new(active: Option<&Segment>) -> Writer {
        Writer {
            next_offset: active.map_or(0, |s| s.end),
            segment_base: active.map_or(0, |s| s.base),
            segment_size: active.map_or(0, |s| s.size),
            last_indexed: active
                .and_then(|s| s.index.last())
                .map_or(0, |&(_, pos)| pos),
            pending: Vec::new(),
            unwritten: 0,
            syncing: false,
            failed: None,
            spare: Vec::new(),
        }
    }

    /// Assigns offsets to `records`, frames them and queues them. Rolls to a new segment first
    /// if the batch would take a non-empty segment past `segment_bytes`.
    fn enqueue<R: AsRef<[u8]>>(&mut self, records: &[R], segment_bytes: u64) -> Range<u64> {
        let batch_bytes: u64 = records
            .iter()
            .map(|r| record::framed_len(r.as_ref().len()))
            .sum();
        if self.segment_size > 0 && self.segment_size.saturating_add(batch_bytes) > segment_bytes {
            self.segment_base = self.next_offset;
            self.segment_size = 0;
            self.last_indexed = 0;
        }
        let start = self.next_offset;
        self.unwritten += batch_bytes;
        let reuse = self
            .pending
            .last()
            .is_some_and(|c| c.segment_base == self.segment_base);
        if !reuse {
            self.pending.push(Chunk {
                segment_base: self.segment_base,
                position: self.segment_size,
                bytes: self.spare.pop().unwrap_or_default(),
                end: start,
                index: Vec::new(),
            });
        }
        let last = self.pending.len() - 1;
        let chunk = &mut self.pending[last];
        chunk
            .bytes
            .reserve(usize::try_from(batch_bytes).unwrap_or(0));
        let mut offset = start;
        for r in records {
            let payload = r.as_ref();
            let pos = self.segment_size;
            if pos - self.last_indexed >= INDEX_INTERVAL {
                chunk.index.push((offset, pos));
                self.last_indexed = pos;
            }
            record::encode(offset, payload, &mut chunk.bytes);
            self.segment_size += record::framed_len(payload.len());
            offset += 1;
        }
        chunk.end = offset;
        self.next_offset = offset;
        start..offset
    }
}

impl Log {
    /// Appends all records as one write and returns their offsets once they are durable.
    /// Concurrent callers share fsyncs (group commit): while one fsync runs, others queue
    /// their bytes, and the next fsync covers all of them. An empty batch returns an empty
    /// range at the durable end.
    ///
    /// On a write or fsync error the log stops accepting appends ([`Error::Failed`]) until
    /// it is reopened; records already acknowledged stay readable.
    pub fn append_batch<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Range<u64>> {
        if let Some(r) = records.iter().find(|r| r.as_ref().len() > MAX_RECORD_BYTES) {
            return Err(Error::RecordTooLarge {
                len: r.as_ref().len(),
                max: MAX_RECORD_BYTES,
            });
        }
        let inner = &*self.inner;
        let mut st = inner.lock();
        if records.is_empty() {
            return Ok(st.durable_end..st.durable_end);
        }
        let reserve = inner.config.min_free_bytes;
        if reserve > 0 {
            // Under the lock, with what other appends have queued: checked one by one, two
            // appends could each fit and together not.
            let incoming: u64 = records
                .iter()
                .map(|r| (r.as_ref().len() + crate::record::HEADER_LEN) as u64)
                .sum();
            let free = crate::dir::free_bytes(&inner.config.dir)?;
            let needed = reserve
                .saturating_add(st.writer.unwritten)
                .saturating_add(incoming);
            if free < needed {
                return Err(Error::DiskFull {
                    dir: inner.config.dir.clone(),
                    free,
                    reserve,
                });
            }
        }
        if let Some(reason) = &st.writer.failed {
            return Err(Error::Failed {
                reason: reason.clone(),
            });
        }
        let range = st.writer.enqueue(records, inner.config.segment_bytes);
        st.counters.appends += 1;
        st.counters.records += records.len() as u64;
        loop {
            if st.durable_end >= range.end {
                return Ok(range);
            }
            if let Some(reason) = &st.writer.failed {
                return Err(Error::Failed {
                    reason: reason.clone(),
                });
            }
            if st.writer.syncing {
                st = inner
                    .changed
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
            } else {
                let (guard, result) = lead(inner, st);
                st = guard;
                result?;
            }
        }
    }

    /// Appends one record; see [`Log::append_batch`].
    pub fn append(&self, record: &[u8]) -> Result<u64> {
        Ok(self.append_batch(&[record])?.start)
    }
}

/// Takes everything queued, writes and syncs it without holding the lock, then publishes the
/// new durable end and wakes waiters.
fn lead<'a>(
    inner: &'a Inner,
    mut st: MutexGuard<'a, State>,
) -> (MutexGuard<'a, State>, Result<()>) {
    let chunks = mem::take(&mut st.writer.pending);
    let taken: u64 = chunks.iter().map(|c| c.bytes.len() as u64).sum();
    st.writer.syncing = true;
    let active = st.segments.back().map(|s| Target {
        base: s.base,
        file: Arc::clone(&s.file),
        path: s.path.clone(),
    });
    drop(st);

    let mut guard = SyncingGuard { inner, armed: true };
    let outcome = write_and_sync(&inner.config, active, &chunks);
    let mut st = inner.lock();
    guard.armed = false;
    st.writer.syncing = false;
    st.writer.unwritten = st.writer.unwritten.saturating_sub(taken);
    let result = match outcome {
        Ok(done) => {
            publish(&mut st, chunks, done);
            Ok(())
        }
        Err(e) => {
            st.writer.failed = Some(e.to_string());
            st.writer.pending.clear();
            st.writer.unwritten = 0;
            Err(e)
        }
    };
    inner.changed.notify_all();
    (st, result)
}

/// The segment file a leader is writing to.
struct Target {
    base: u64,
    file: Arc<File>,
    path: PathBuf,
}

struct Written {
    created: Vec<Segment>,
    fsyncs: u64,
}

fn write_and_sync(config: &LogConfig, active: Option<Target>, chunks: &[Chunk]) -> Result<Written> {
    let mut target = active;
    let mut created = Vec::new();
    let mut dirty = false;
    let mut fsyncs = 0;
    for chunk in chunks {
        if target.as_ref().map(|t| t.base) != Some(chunk.segment_base) {
            // Make the old segment durable before the new one exists: recovery treats every
            // segment but the last as closed and complete, so a closed segment must never
            // have a torn tail.
            if let Some(t) = target.as_ref().filter(|_| dirty && config.fsync) {
                sync_data(t)?;
                fsyncs += 1;
            }
            let segment = Segment::create(&config.dir, chunk.segment_base)?;
            target = Some(Target {
                base: segment.base,
                file: Arc::clone(&segment.file),
                path: segment.path.clone(),
            });
            created.push(segment);
            dirty = false;
        }
        if let Some(t) = &target {
            t.file
                .write_all_at(&chunk.bytes, chunk.position)
                .map_err(|e| Error::io("write segment", &t.path, e))?;
            dirty = true;
        }
    }
    if config.fsync {
        if let Some(t) = target.as_ref().filter(|_| dirty) {
            sync_data(t)?;
            fsyncs += 1;
        }
        if !created.is_empty() {
            dir::sync_dir(&config.dir)?;
        }
    }
    Ok(Written { created, fsyncs })
}

fn sync_data(target: &Target) -> Result<()> {
    target
        .file
        .sync_data()
        .map_err(|e| Error::io("fsync segment", &target.path, e))
}

/// Makes written chunks visible: new segments, sizes, end offsets, index entries.
fn publish(st: &mut State, chunks: Vec<Chunk>, done: Written) {
    st.segments.extend(done.created);
    st.counters.fsyncs += done.fsyncs;
    for chunk in chunks {
        if let Some(segment) = st
            .segments
            .iter_mut()
            .rev()
            .find(|s| s.base == chunk.segment_base)
        {
            segment.size = chunk.position + chunk.bytes.len() as u64;
            segment.end = chunk.end;
            segment.index.extend_from_slice(&chunk.index);
        }
        st.durable_end = chunk.end;
        st.counters.bytes_written += chunk.bytes.len() as u64;
        let mut bytes = chunk.bytes;
        if bytes.capacity() <= MAX_SPARE_CAPACITY && st.writer.spare.len() < MAX_SPARE_BUFFERS {
            bytes.clear();
            st.writer.spare.push(bytes);
        }
    }
}

/// If a leader unwinds mid-commit, fail the log and wake everyone instead of leaving
/// `syncing` set forever.
struct SyncingGuard<'a> {
    inner: &'a Inner,
    armed: bool,
}

impl Drop for SyncingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.inner.lock();
            st.writer.syncing = false;
            st.writer.failed = Some("a commit panicked".to_owned());
            st.writer.pending.clear();
            st.writer.unwritten = 0;
            self.inner.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_rolls_before_overflowing_a_segment() {
        let mut w = Writer::new(None);
        // Each record is 8 + 2 bytes; segment_bytes 25 fits two.
        assert_eq!(w.enqueue(&[b"ab", b"cd"], 25), 0..2);
        assert_eq!(w.enqueue(&[b"ef"], 25), 2..3);
        assert_eq!(w.pending.len(), 2);
        assert_eq!(w.pending[1].segment_base, 2);
        assert_eq!(w.pending[1].position, 0);
        // A batch larger than a segment still goes into one segment, alone.
        assert_eq!(w.enqueue(&[b"gh", b"ij", b"kl"], 25), 3..6);
        assert_eq!(w.pending[2].segment_base, 3);
        assert_eq!(w.pending[2].bytes.len(), 30);
        assert_eq!(w.pending[2].end, 6);
    }

    #[test]
    fn queued_batches_for_one_segment_share_a_chunk() {
        let mut w = Writer::new(None);
        w.enqueue(&[b"a"], 1 << 20);
        w.enqueue(&[b"b", b"c"], 1 << 20);
        assert_eq!(w.pending.len(), 1);
        assert_eq!(w.pending[0].end, 3);
        assert_eq!(w.pending[0].bytes.len(), 27);
    }
}
