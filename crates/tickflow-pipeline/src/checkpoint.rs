//! The processor's checkpoint: the next log offset to read, the last lake flush that
//! completed, and the processing state that goes with them, written atomically.
//!
//! Order of a flush: lake files → this checkpoint → the log's consumer offset. A crash
//! before the checkpoint leaves lake files of a flush the checkpoint does not know; recovery
//! deletes them and replays from the checkpoint's offset with the checkpoint's state, so
//! every row is produced exactly once.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use tickflow_process::State;

use crate::{Error, Result};

/// Format 4 keeps alert state by rule name, with whether each condition holds, and the open
/// coalescing bursts; format 3 recorded where each interval's bars come from (trades or a
/// feed); format 2 packed the dedupe keys (see `tickflow_process::dedupe`). Files of formats
/// 1 to 3 are still read.
const MAGIC: &[u8; 8] = b"TFCKPT04";
const MAGIC_V3: &[u8; 8] = b"TFCKPT03";
const MAGIC_V2: &[u8; 8] = b"TFCKPT02";
const MAGIC_V1: &[u8; 8] = b"TFCKPT01";

/// What a checkpoint holds.
#[derive(Debug, Default)]
pub struct Checkpoint {
    /// Next log offset to process.
    pub next_offset: u64,
    /// Last lake flush whose files are complete and published.
    pub flush_seq: u64,
    pub state: State,
}

/// The folder of the checkpoint and of the sinks' and notifiers' start records.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoint")
}

/// The positions of every sink and notifier, by id, kept for compaction: merging past one
/// would leave that follower unable to read its next flushes. Written at start and at a clean
/// stop; a stale value is lower, which only compacts less. A follower taken out of the config
/// keeps its entry (and holds compaction back) until the entry is removed by hand.
pub fn follower_floors(data_dir: &Path) -> Result<std::collections::BTreeMap<String, u64>> {
    let path = dir(data_dir).join("followers.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            err(
                &path,
                format!("damaged ({e}): expected {{\"<id>\": flush, …}}"),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(source) => Err(Error::Io {
            context: format!("reading {}", path.display()),
            source,
        }),
    }
}

/// The lowest of [`follower_floors`]: the last flush compaction may merge; `None` when no
/// follower was ever recorded.
///
/// # Errors
/// The record cannot be read.
pub fn followers_floor(data_dir: &Path) -> Result<Option<u64>> {
    Ok(follower_floors(data_dir)?.into_values().min())
}

/// Records [`follower_floors`], atomically.
pub(crate) fn write_follower_floors(
    data_dir: &Path,
    floors: &std::collections::BTreeMap<String, u64>,
) -> Result<()> {
    let path = dir(data_dir).join("followers.json");
    let io = |source| Error::Io {
        context: format!("writing {}", path.display()),
        source,
    };
    if floors.is_empty() && !path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir(data_dir)).map_err(io)?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(floors).map_err(|e| io(std::io::Error::other(e)))?;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir(data_dir))?.sync_all()
    };
    write().map_err(io)
}

/// The checkpoint file under `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("processor.ckpt")
}

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A checkpoint's header: magic, next offset, flush sequence, and room for the body's CRC
/// (bytes 24..28), filled in once the body is written.
fn header(next_offset: u64, flush_seq: u64) -> [u8; 28] {
    let mut h = [0u8; 28];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&next_offset.to_le_bytes());
    h[16..24].copy_from_slice(&flush_seq.to_le_bytes());
    h
}

/// Serializes a checkpoint (done on the processor thread, which owns the state).
/// `size_hint` is the length of the previous checkpoint: the state is serialized straight
/// into a buffer that size, so a state of many megabytes is not copied while it grows.
pub fn encode(
    next_offset: u64,
    flush_seq: u64,
    state: &State,
    size_hint: usize,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(size_hint + size_hint / 8 + 64);
    out.extend_from_slice(&header(next_offset, flush_seq));
    let header = out.len();
    let mut out =
        postcard::to_extend(state, out).map_err(|e| err(Path::new("<memory>"), e.to_string()))?;
    let crc = crc32fast::hash(&out[header..]);
    out[header - 4..header].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// A checkpoint written to a file of its own beside the checkpoint, not yet durable nor in
/// its place: [`Staged::commit`] makes it the checkpoint once the flush's lake files are.
/// Staging writes the state straight to the file on the processor thread, which owns the
/// state: with large dedupe windows an encoded checkpoint is tens of megabytes, which would
/// otherwise sit in memory beside two full row buffers until the flusher wrote it.
#[derive(Debug)]
pub struct Staged {
    file: File,
    tmp: PathBuf,
    /// Renamed into place: nothing is left to delete.
    committed: bool,
}

/// Writes through to `out`, summing what it took, and keeps the first error: postcard
/// reports any failed write as a full buffer, which would hide a full disk.
struct Summing<W> {
    out: W,
    crc: crc32fast::Hasher,
    error: Option<std::io::Error>,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.out.write(buf) {
            Ok(n) => {
                self.crc.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                let kept = std::io::Error::new(e.kind(), e.to_string());
                self.error.get_or_insert(kept);
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Writes a checkpoint of `state` at `next_offset` and `flush_seq` to a staged file: the
/// same bytes [`encode`] makes.
///
/// # Errors
/// The file cannot be written, or the state cannot be encoded.
pub fn stage(data_dir: &Path, next_offset: u64, flush_seq: u64, state: &State) -> Result<Staged> {
    use std::io::{Seek, SeekFrom};
    let dir = dir(data_dir);
    let tmp = dir.join(format!("processor.ckpt.{flush_seq}.staged"));
    let io = |e: std::io::Error| err(&tmp, e.to_string());
    fs::create_dir_all(&dir).map_err(io)?;
    // From here a failure deletes the file again (`Drop`).
    let mut staged = Staged {
        file: File::create(&tmp).map_err(io)?,
        tmp: tmp.clone(),
        committed: false,
    };
    staged
        .file
        .write_all(&header(next_offset, flush_seq))
        .map_err(io)?;
    let mut body = std::io::BufWriter::with_capacity(
        1 << 20,
        Summing {
            out: &staged.file,
            crc: crc32fast::Hasher::new(),
            error: None,
        },
    );
    let encoded = postcard::to_io(state, &mut body).map(|_| ());
    let flushed = body.flush();
    let summing = body.into_parts().0;
    if let Some(e) = summing.error {
        return Err(io(e));
    }
    encoded.map_err(|e| err(&tmp, e.to_string()))?;
    flushed.map_err(io)?;
    let crc = summing.crc.finalize();
    staged.file.seek(SeekFrom::Start(24)).map_err(io)?;
    staged.file.write_all(&crc.to_le_bytes()).map_err(io)?;
    Ok(staged)
}

impl Staged {
    /// Makes the staged checkpoint the checkpoint, durably: fsync, rename over the old one,
    /// fsync the directory. A crash before leaves the old one, after the new one.
    ///
    /// # Errors
    /// The file cannot be synced or renamed.
    pub fn commit(mut self, data_dir: &Path) -> Result<()> {
        let path = path(data_dir);
        self.file
            .sync_all()
            .map_err(|e| err(&self.tmp, e.to_string()))?;
        fs::rename(&self.tmp, &path).map_err(|e| {
            err(
                &path,
                format!("renaming {} into place: {e}", self.tmp.display()),
            )
        })?;
        self.committed = true;
        let dir = path.parent().unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err(dir, format!("syncing the folder: {e}")))
    }
}

impl Drop for Staged {
    /// A staged checkpoint never committed (its flush failed) is tens of megabytes of
    /// nothing: the flush is replayed from the log.
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Deletes checkpoints staged by a process that stopped before committing them: a flush
/// whose checkpoint was never committed is replayed from the log.
///
/// # Errors
/// The folder cannot be read, or a file there deleted.
pub fn discard_staged(data_dir: &Path) -> Result<()> {
    let dir = dir(data_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(&dir, e.to_string())),
    };
    for entry in entries {
        let path = entry.map_err(|e| err(&dir, e.to_string()))?.path();
        if path.extension().is_some_and(|x| x == "staged") {
            fs::remove_file(&path).map_err(|e| err(&path, e.to_string()))?;
        }
    }
    Ok(())
}

/// Writes encoded checkpoint bytes durably: temp file, fsync, rename, fsync the directory.
pub fn write(data_dir: &Path, bytes: &[u8]) -> Result<()> {
    let path = path(data_dir);
    write_durably(&path, bytes).map_err(|e| err(&path, e.to_string()))
}

/// Replaces the file at `path` with `bytes` so that a crash leaves the old file or the new
/// one, never a part: temp file, fsync, rename, fsync the directory.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir).and_then(|d| d.sync_all())
}

/// The last published flush of a checkpoint, read from its header alone (another
/// process's partition, whose state is not needed); `None` when there is none yet.
///
/// # Errors
/// A file that is not a checkpoint.
pub fn published_flush(data_dir: &Path) -> Result<Option<u64>> {
    let path = path(data_dir);
    let mut header = [0u8; 24];
    match File::open(&path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(&path, e.to_string())),
    }
    if ![MAGIC, MAGIC_V3, MAGIC_V2, MAGIC_V1]
        .iter()
        .any(|m| header[..8] == m[..])
    {
        return Err(err(&path, "not a tickflow checkpoint (bad header)"));
    }
    Ok(Some(u64::from_le_bytes(
        header[16..24].try_into().unwrap_or([0; 8]),
    )))
}

/// Reads the checkpoint; `None` when there is none yet.
///
/// # Errors
/// A checkpoint that exists but is damaged: starting over silently would double every row.
pub fn read(data_dir: &Path) -> Result<Option<Checkpoint>> {
    let path = path(data_dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(&path, e.to_string())),
    };
    if bytes.len() < 28
        || ![MAGIC, MAGIC_V3, MAGIC_V2, MAGIC_V1]
            .iter()
            .any(|m| bytes[..8] == m[..])
    {
        return Err(err(&path, "not a tickflow checkpoint (bad header)"));
    }
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
    let crc = u32::from_le_bytes(bytes[24..28].try_into().unwrap_or([0; 4]));
    let body = &bytes[28..];
    if crc32fast::hash(body) != crc {
        return Err(err(&path, "checksum mismatch: the file is damaged"));
    }
    let old = &mut postcard::Deserializer::from_bytes(body);
    let state = match &bytes[..8] {
        m if m == MAGIC_V1 => State::deserialize_v1(old),
        m if m == MAGIC_V2 => State::deserialize_v2(old),
        m if m == MAGIC_V3 => State::deserialize_v3(old),
        _ => postcard::from_bytes(body),
    }
    .map_err(|e| err(&path, format!("cannot decode state: {e}")))?;
    Ok(Some(Checkpoint {
        next_offset: u64_at(8),
        flush_seq: u64_at(16),
        state,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tickflow_model::{Event, Price, Qty, Symbol, Trade, UnixNanos};
    use tickflow_process::{Output, Processor, ProcessorConfig};

    use super::*;

    /// Trades behind the checked-in checkpoints in `testdata/`: in order, one at the same
    /// time as another, and one behind the newest, for two symbols.
    fn fixture_events() -> Vec<Event> {
        const T0: i64 = 1_795_305_600_000_000_000;
        let mut events = Vec::new();
        for (sym, ids) in [("NVDA", 0..40u64), ("AAPL", 100..110)] {
            for id in ids {
                let ts = match id % 10 {
                    3 => T0 + (id as i64 - 1) * 1_000_000,
                    7 => T0 + (id as i64 - 5) * 1_000_000,
                    _ => T0 + id as i64 * 1_000_000,
                };
                events.push(Event::Trade(Trade {
                    symbol: Symbol::parse(sym).unwrap(),
                    ts_event: UnixNanos(ts),
                    ts_recv: UnixNanos(ts),
                    price: Price::parse("181.25").unwrap(),
                    size: Qty::parse("3").unwrap(),
                    trade_id: Some(id.to_string().as_str().into()),
                    exchange: None,
                    source: Arc::from("test"),
                    feed: Arc::from("test"),
                    seq: Some(id),
                }));
            }
        }
        events
    }

    /// Runs the fixture's trades again on a processor restored from `checkpoint`: every one
    /// must be caught as a duplicate, and a new trade must not be.
    fn assert_restores_fixture(checkpoint: Checkpoint) {
        assert_eq!((checkpoint.next_offset, checkpoint.flush_seq), (42, 7));
        assert_eq!(checkpoint.state.symbol_count(), 2);
        let mut p = Processor::with_state(ProcessorConfig::default(), checkpoint.state);
        let mut out = Output::default();
        let events = fixture_events();
        let n = events.len() as u64;
        for e in events {
            p.process(None, e, UnixNanos(0), &mut out);
        }
        assert_eq!(out.duplicates, n);
        assert!(out.rows.trades.is_empty() && out.rows.dlq.is_empty());
        let Some(Event::Trade(mut fresh)) = fixture_events().pop() else {
            unreachable!()
        };
        fresh.trade_id = Some("new".into());
        p.process(None, Event::Trade(fresh), UnixNanos(0), &mut out);
        assert_eq!(out.rows.trades.len(), 1);
    }

    #[test]
    fn format_1_checkpoints_still_load() {
        // Written by the format-1 code from the state of processing fixture_events().
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, include_bytes!("../testdata/checkpoint-v1.ckpt")).unwrap();
        assert_restores_fixture(read(dir.path()).unwrap().unwrap());
    }

    #[test]
    fn format_2_checkpoints_still_load() {
        // Written by the format-2 code from the state of processing fixture_events(): open
        // bars in the layout from before bars could come from a feed.
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, include_bytes!("../testdata/checkpoint-v2.ckpt")).unwrap();
        let checkpoint = read(dir.path()).unwrap().unwrap();
        let open = Processor::with_state(ProcessorConfig::default(), checkpoint.state).open_bars();
        assert_eq!(open.len(), 10, "two symbols, five intervals");
        assert!(
            open.iter()
                .all(|b| b.vwap.is_some() && b.trade_count.is_some() && b.source.is_none())
        );
        assert_restores_fixture(read(dir.path()).unwrap().unwrap());
    }

    #[test]
    fn format_3_checkpoints_still_load() {
        // Written by the format-3 code after NVDA traded above a threshold rule's level (alert
        // state by rule position); the processor's own legacy test checks what it restores.
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, include_bytes!("../testdata/checkpoint-v3.ckpt")).unwrap();
        let checkpoint = read(dir.path()).unwrap().unwrap();
        assert_eq!((checkpoint.next_offset, checkpoint.flush_seq), (42, 7));
        assert_eq!(checkpoint.state.symbol_count(), 1);
    }

    #[test]
    fn format_4_round_trips_the_processing_state() {
        let mut processor = Processor::new(ProcessorConfig::default());
        let mut out = Output::default();
        for e in fixture_events() {
            processor.process(None, e, UnixNanos(0), &mut out);
        }
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode(42, 7, processor.state(), 0).unwrap();
        assert_eq!(&bytes[..8], MAGIC);
        write(dir.path(), &bytes).unwrap();
        assert_restores_fixture(read(dir.path()).unwrap().unwrap());
    }

    #[test]
    fn a_staged_checkpoint_is_the_encoded_one_and_counts_only_once_committed() {
        let mut processor = Processor::new(ProcessorConfig::default());
        let mut out = Output::default();
        for e in fixture_events() {
            processor.process(None, e, UnixNanos(0), &mut out);
        }
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &encode(1, 1, &State::default(), 0).unwrap()).unwrap();
        let staged = stage(dir.path(), 42, 7, processor.state()).unwrap();
        let on_disk = fs::read(&staged.tmp).unwrap();
        assert_eq!(
            on_disk,
            encode(42, 7, processor.state(), 0).unwrap(),
            "the same bytes, sum included"
        );
        // Staged is not committed: a restart reads the old checkpoint and drops the staged.
        assert_eq!(read(dir.path()).unwrap().unwrap().flush_seq, 1);
        staged.commit(dir.path()).unwrap();
        assert_restores_fixture(read(dir.path()).unwrap().unwrap());
        // A flush that failed drops its staged checkpoint, and the file goes with it.
        let failed = stage(dir.path(), 50, 8, processor.state()).unwrap();
        let failed_file = failed.tmp.clone();
        drop(failed);
        assert!(!failed_file.exists());
        // A crash leaves one; the next start deletes it.
        let left = stage(dir.path(), 50, 8, processor.state()).unwrap();
        let leftover = left.tmp.clone();
        std::mem::forget(left);
        assert!(leftover.exists());
        discard_staged(dir.path()).unwrap();
        assert!(!leftover.exists());
        assert_eq!(read(dir.path()).unwrap().unwrap().flush_seq, 7);
        assert!(path(dir.path()).exists());
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        write(dir.path(), &encode(42, 7, &State::default(), 0).unwrap()).unwrap();
        let c = read(dir.path()).unwrap().unwrap();
        assert_eq!((c.next_offset, c.flush_seq), (42, 7));
        let p = path(dir.path());
        let mut bytes = fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        bytes.push(0);
        fs::write(&p, &bytes).unwrap();
        assert!(
            read(dir.path())
                .unwrap_err()
                .to_string()
                .contains("damaged")
        );
    }
}
