//! Segment files: creation, recovery scans, the sparse offset index, and reading records back.
//!
//! A segment is one file of framed records (see [`crate::record`]) whose name is the offset of
//! its first record. Only the last segment is ever written; the others are closed.
//!
//! Recovery scans every segment on open to rebuild its sparse index and to check every crc.
//! That makes open cost proportional to the data kept; an on-disk index (written when a segment
//! closes) would make open fast and is the obvious next step if that matters.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dir::segment_file_name;
use crate::error::{Error, Result};
use crate::record::{self, Decoded, HEADER_LEN};
use crate::records::RecordSink;

/// One (offset, byte position) index entry is kept per this many bytes of segment, so a read
/// at any offset starts scanning at most about this far before it.
pub(crate) const INDEX_INTERVAL: u64 = 4096;

/// Read size while scanning a whole segment at open.
const SCAN_CHUNK: usize = 1 << 20;

/// Largest single pread when serving reads; a batch of 4096 records of 200 bytes is ~800 KiB.
const READ_CHUNK: usize = 256 << 10;

/// In-memory state of one segment file. `size` and `end` cover only durable, verified bytes:
/// readers never look past them.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    /// Shared with readers so they can pread without holding the log's lock; a reader that
    /// holds it keeps reading fine even if retention unlinks the file meanwhile.
    pub(crate) file: Arc<File>,
    /// Bytes of valid records.
    pub(crate) size: u64,
    /// Offset after the last valid record.
    pub(crate) end: u64,
    /// Sparse (offset, position) entries, ascending; always starts with (base, 0).
    pub(crate) index: Vec<(u64, u64)>,
    /// For a closed segment found damaged at open: the byte position of the first bad record.
    /// Offsets from `end` up to the next segment's base cannot be served.
    pub(crate) corrupt_at: Option<u64>,
}

impl Segment {
    /// Creates a new, empty segment file. `create_new` because a file already there would mean
    /// two histories for one offset.
    pub(crate) fn create(dir: &Path, base: u64) -> Result<Segment> {
        let path = dir.join(segment_file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("create segment", &path, e))?;
        Ok(Segment {
            base,
            path,
            file: Arc::new(file),
            size: 0,
            end: base,
            index: vec![(base, 0)],
            corrupt_at: None,
        })
    }

    /// Opens the active (last) segment and truncates a torn tail: the first record whose header
    /// is incomplete, whose length is absurd or whose crc fails, and everything after it. Only
    /// the last group commit can be torn by a crash, and none of it was acknowledged. A bad
    /// record followed by a whole one is damage, not a tear: [`Error::DamagedActive`].
    pub(crate) fn recover_active(path: PathBuf, base: u64, fsync: bool) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let scan = scan(&file, &path, base, None)?;
        if let Some(bad) = scan.bad_at {
            if whole_record_after(&file, &path, bad, scan.end + 1)? {
                return Err(Error::DamagedActive {
                    segment: path,
                    position: bad,
                });
            }
            file.set_len(scan.size)
                .map_err(|e| Error::io("truncate torn tail of", &path, e))?;
            if fsync {
                file.sync_all()
                    .map_err(|e| Error::io("fsync segment", &path, e))?;
            }
        }
        Ok(Segment {
            base,
            path,
            file: Arc::new(file),
            size: scan.size,
            end: scan.end,
            index: scan.index,
            corrupt_at: None,
        })
    }

    /// Opens a closed segment that must hold exactly the offsets `base..expected_end`. Damage is
    /// not truncated (those records were acknowledged): it is remembered in `corrupt_at` so that
    /// reads reaching it fail with [`Error::Corrupt`] while everything before it stays readable.
    pub(crate) fn load_closed(path: PathBuf, base: u64, expected_end: u64) -> Result<Segment> {
        let file = File::open(&path).map_err(|e| Error::io("open segment", &path, e))?;
        let scan = scan(&file, &path, base, Some(expected_end))?;
        let corrupt_at = match scan.bad_at {
            Some(pos) => Some(pos),
            // Clean end of file, but records are missing.
            None if scan.end < expected_end => Some(scan.size),
            None => None,
        };
        Ok(Segment {
            base,
            path,
            file: Arc::new(file),
            size: scan.size,
            end: scan.end,
            index: scan.index,
            corrupt_at,
        })
    }

    /// The index entry nearest at or before `offset` (which is in `base..=end`).
    pub(crate) fn locate(&self, offset: u64) -> (u64, u64) {
        let i = self.index.partition_point(|&(o, _)| o <= offset);
        self.index
            .get(i.wrapping_sub(1))
            .copied()
            .unwrap_or((self.base, 0))
    }
}

/// Whether the record after the bad one at `bad` (whose length field still reads) is whole,
/// with offset `next`. A crash tears only the end of a file, so a whole record there means
/// the bad one was damaged in place. (Damage to the length field itself hides the record
/// after it and reads as a tear.)
fn whole_record_after(file: &File, path: &Path, bad: u64, next: u64) -> Result<bool> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat segment", path, e))?
        .len();
    let mut header = [0u8; HEADER_LEN];
    if bad + HEADER_LEN as u64 > len {
        return Ok(false);
    }
    file.read_exact_at(&mut header, bad)
        .map_err(|e| Error::io("read segment", path, e))?;
    let bad_len = u64::from(u32::from_le_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    if bad_len > record::MAX_RECORD_BYTES as u64 {
        return Ok(false);
    }
    let at = bad + HEADER_LEN as u64 + bad_len;
    if at + HEADER_LEN as u64 > len {
        return Ok(false);
    }
    file.read_exact_at(&mut header, at)
        .map_err(|e| Error::io("read segment", path, e))?;
    let next_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if next_len > record::MAX_RECORD_BYTES || at + record::framed_len(next_len) > len {
        return Ok(false);
    }
    let mut framed = vec![0u8; HEADER_LEN + next_len];
    file.read_exact_at(&mut framed, at)
        .map_err(|e| Error::io("read segment", path, e))?;
    Ok(matches!(
        record::decode(&framed, next, true),
        Decoded::Record { .. }
    ))
}

/// Result of scanning a segment from the start.
struct Scan {
    size: u64,
    end: u64,
    index: Vec<(u64, u64)>,
    /// Position of the first record that failed its checks, if the scan stopped on one.
    bad_at: Option<u64>,
}

/// Reads records from position 0 until end of file, the first bad record, or `stop_at` (an
/// offset; bytes after it are ignored), verifying every crc and building the sparse index.
fn scan(file: &File, path: &Path, base: u64, stop_at: Option<u64>) -> Result<Scan> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat segment", path, e))?
        .len();
    let mut reader = RecordReader::new(file, path, 0, len, SCAN_CHUNK);
    let mut offset = base;
    let mut index = vec![(base, 0)];
    let mut last_indexed = 0;
    let mut bad_at = None;
    while stop_at != Some(offset) {
        let pos = reader.position();
        match reader.peek(offset, true)? {
            Next::Record { len } => {
                if pos - last_indexed >= INDEX_INTERVAL {
                    index.push((offset, pos));
                    last_indexed = pos;
                }
                reader.advance(len);
                offset += 1;
            }
            Next::End => break,
            Next::Damaged => {
                bad_at = Some(pos);
                break;
            }
        }
    }
    Ok(Scan {
        size: reader.position(),
        end: offset,
        index,
        bad_at,
    })
}

/// Where a read starts and how far it may go, copied out of the log's state so that the
/// preads happen without holding its lock.
#[derive(Debug)]
pub(crate) struct ReadPlan {
    pub(crate) base: u64,
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    /// Offset and byte position of the record the scan starts at (at or before the wanted one).
    pub(crate) from: (u64, u64),
    /// Durable size and end offset of the segment at the time of planning.
    pub(crate) limit_pos: u64,
    pub(crate) limit_offset: u64,
}

impl ReadPlan {
    /// Appends records from `want` on to `out` until `out` holds `max` records or the segment's
    /// durable end. Records before `want` are skipped without computing their crc; every
    /// returned record's crc is checked. Returns the offset and position where it stopped.
    pub(crate) fn read_into(
        &self,
        want: u64,
        max: usize,
        out: &mut impl RecordSink,
    ) -> Result<(u64, u64)> {
        let (mut offset, pos) = self.from;
        let mut reader = RecordReader::new(&self.file, &self.path, pos, self.limit_pos, READ_CHUNK);
        while offset < self.limit_offset && out.record_count() < max {
            let wanted = offset >= want;
            match reader.peek(offset, wanted)? {
                Next::Record { len } => {
                    if wanted {
                        out.push_record(offset, reader.payload(len));
                    }
                    reader.advance(len);
                    offset += 1;
                }
                // The durable size and end offset were recorded together, so running out of
                // bytes or failing a check before `limit_offset` means the file is damaged.
                Next::End | Next::Damaged => {
                    return Err(Error::Corrupt {
                        segment: self.path.clone(),
                        position: reader.position(),
                    });
                }
            }
        }
        Ok((offset, reader.position()))
    }
}

/// What [`RecordReader::peek`] found.
enum Next {
    Record {
        len: usize,
    },
    /// Exactly at the limit: no more records.
    End,
    /// Incomplete record before the limit, absurd length, or crc mismatch.
    Damaged,
}

/// Buffered, pread-based reader of consecutive records in one file, up to a byte limit.
struct RecordReader<'a> {
    file: &'a File,
    path: &'a Path,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
    /// Index in `buf` of the current record.
    start: usize,
    /// Bytes of `buf` holding file data.
    filled: usize,
    limit: u64,
    chunk: usize,
}

impl<'a> RecordReader<'a> {
    fn new(file: &'a File, path: &'a Path, pos: u64, limit: u64, chunk: usize) -> Self {
        RecordReader {
            file,
            path,
            buf: Vec::new(),
            buf_pos: pos,
            start: 0,
            filled: 0,
            limit,
            chunk,
        }
    }

    fn position(&self) -> u64 {
        self.buf_pos + self.start as u64
    }

    /// Decodes the record at the current position, which should have offset `offset`.
    fn peek(&mut self, offset: u64, verify: bool) -> Result<Next> {
        loop {
            match record::decode(&self.buf[self.start..self.filled], offset, verify) {
                Decoded::Record { len } => return Ok(Next::Record { len }),
                Decoded::BadLength | Decoded::BadCrc => return Ok(Next::Damaged),
                Decoded::Incomplete { total } => {
                    let available = self.filled - self.start;
                    if available == 0 && self.position() >= self.limit {
                        return Ok(Next::End);
                    }
                    if self.position() + total as u64 > self.limit || !self.fill(total)? {
                        return Ok(Next::Damaged);
                    }
                }
            }
        }
    }

    fn payload(&self, len: usize) -> &[u8] {
        let at = self.start + HEADER_LEN;
        &self.buf[at..at + len]
    }

    fn advance(&mut self, len: usize) {
        self.start += HEADER_LEN + len;
    }

    /// Makes at least `need` bytes from the current position available in `buf`, reading as
    /// much as fits (up to the limit) in each pread. Returns false if the file ends first.
    fn fill(&mut self, need: usize) -> Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.buf_pos += self.start as u64;
            self.filled -= self.start;
            self.start = 0;
        }
        let remaining =
            usize::try_from(self.limit.saturating_sub(self.buf_pos)).unwrap_or(usize::MAX);
        let want = need.max(self.chunk).min(remaining).max(need);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let end = self.buf.len().min(remaining);
        while self.filled < need {
            let at = self.buf_pos + self.filled as u64;
            match self.file.read_at(&mut self.buf[self.filled..end], at) {
                Ok(0) => return Ok(false),
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read segment", self.path, e)),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write_records(dir: &Path, base: u64, payloads: &[&[u8]]) -> PathBuf {
        let path = dir.join(segment_file_name(base));
        let mut bytes = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            record::encode(base + i as u64, p, &mut bytes);
        }
        let mut f = File::create(&path).expect("create");
        f.write_all(&bytes).expect("write");
        path
    }

    #[test]
    fn active_scan_truncates_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_records(dir.path(), 10, &[b"one", b"two", b"three"]);
        let full = std::fs::metadata(&path).expect("stat").len();
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(full - 2).expect("truncate");
        drop(f);
        let seg = Segment::recover_active(path.clone(), 10, false).expect("recover");
        assert_eq!(seg.end, 12);
        assert_eq!(seg.size, 2 * 8 + 3 + 3);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), seg.size);
    }

    #[test]
    fn closed_scan_reports_missing_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_records(dir.path(), 0, &[b"a", b"b"]);
        let seg = Segment::load_closed(path.clone(), 0, 3).expect("load");
        assert_eq!(seg.end, 2);
        assert_eq!(seg.corrupt_at, Some(18));
        let seg = Segment::load_closed(path, 0, 2).expect("load");
        assert_eq!(seg.corrupt_at, None);
    }

    #[test]
    fn sparse_index_and_reads_from_every_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let payloads: Vec<Vec<u8>> = (0..2000u32)
            .map(|i| vec![i as u8; (i % 50) as usize])
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let path = write_records(dir.path(), 100, &refs);
        let seg = Segment::recover_active(path, 100, false).expect("recover");
        assert!(
            seg.index.len() > 10,
            "index has {} entries",
            seg.index.len()
        );
        assert!(
            seg.index
                .windows(2)
                .all(|w| w[1].1 - w[0].1 >= INDEX_INTERVAL)
        );
        let mut out = Vec::new();
        for want in (100..2100).step_by(37) {
            let plan = ReadPlan {
                base: seg.base,
                file: Arc::clone(&seg.file),
                path: seg.path.clone(),
                from: seg.locate(want),
                limit_pos: seg.size,
                limit_offset: seg.end,
            };
            out.clear();
            let (next, _) = plan.read_into(want, 5, &mut out).expect("read");
            assert_eq!(next, (want + 5).min(2100));
            for (offset, bytes) in &out {
                assert_eq!(bytes, &payloads[(offset - 100) as usize]);
            }
            assert_eq!(out.first().map(|r| r.0), Some(want));
        }
    }
}
