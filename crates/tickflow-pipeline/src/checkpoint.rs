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

const MAGIC: &[u8; 8] = b"TFCKPT01";

/// What a checkpoint holds.
#[derive(Debug, Default)]
pub struct Checkpoint {
    /// Next log offset to process.
    pub next_offset: u64,
    /// Last lake flush whose files are complete and published.
    pub flush_seq: u64,
    pub state: State,
}

/// The checkpoint file under `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoint").join("processor.ckpt")
}

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
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
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&next_offset.to_le_bytes());
    out.extend_from_slice(&flush_seq.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc of the body, filled in below
    let header = out.len();
    let mut out =
        postcard::to_extend(state, out).map_err(|e| err(Path::new("<memory>"), e.to_string()))?;
    let crc = crc32fast::hash(&out[header..]);
    out[header - 4..header].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Writes encoded checkpoint bytes durably: temp file, fsync, rename, fsync the directory.
pub fn write(data_dir: &Path, bytes: &[u8]) -> Result<()> {
    let path = path(data_dir);
    let dir = path.parent().unwrap_or(data_dir);
    let io = |e: std::io::Error| err(&path, e.to_string());
    fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
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
    if bytes.len() < 28 || &bytes[..8] != MAGIC {
        return Err(err(&path, "not a tickflow checkpoint (bad header)"));
    }
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
    let crc = u32::from_le_bytes(bytes[24..28].try_into().unwrap_or([0; 4]));
    let body = &bytes[28..];
    if crc32fast::hash(body) != crc {
        return Err(err(&path, "checksum mismatch: the file is damaged"));
    }
    let state: State =
        postcard::from_bytes(body).map_err(|e| err(&path, format!("cannot decode state: {e}")))?;
    Ok(Some(Checkpoint {
        next_offset: u64_at(8),
        flush_seq: u64_at(16),
        state,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
