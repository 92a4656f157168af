//! A checksum of every Parquet part the lake writes: crc32 of the file's first bytes, the
//! magic and every column chunk (all data and dictionary pages), recorded in the footer's
//! key-value metadata as `<length>:<crc hex>`. Bloom filters, page indexes and the footer
//! are written after the sum is taken and are not covered.
//!
//! parquet-rs checks page checksums when a file has them but does not write them, so a
//! flipped byte inside a compressed page would otherwise decode into a wrong value. Every
//! read tickflow makes of its own files (sinks catching up from the lake, compaction)
//! checks the sum first, so a damaged part is named and never copied on or merged into a
//! new file with a fresh sum. Files written before the sum existed are read as they are.

use std::io::{Read, Write};
use std::path::Path;

use parquet::file::metadata::ParquetMetaData;

use crate::error::{Error, Result};

/// The footer's key for the sum.
pub(crate) const KEY: &str = "tickflow.crc32";

/// A writer that sums what goes through it.
pub(crate) struct Summing<W> {
    pub(crate) inner: W,
    hasher: crc32fast::Hasher,
    len: u64,
}

impl<W> Summing<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
            len: 0,
        }
    }

    /// `<length>:<crc hex>` of everything written so far.
    pub(crate) fn value(&self) -> String {
        format!("{}:{:08x}", self.len, self.hasher.clone().finalize())
    }
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What checking a part found, when it was not damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Its bytes match the sum in its footer.
    Matched,
    /// Written before parts carried a sum: nothing to check it against.
    NoSum,
}

/// Checks the part at `path`, whose footer is `metadata`, against its recorded sum;
/// `read(len, hasher)` feeds the hasher the file's first `len` bytes. A mismatch is
/// recorded in [`tickflow_core::damage`].
pub(crate) fn verify(
    path: &Path,
    metadata: &ParquetMetaData,
    read: impl FnOnce(u64, &mut crc32fast::Hasher) -> std::io::Result<()>,
) -> Result<Verdict> {
    let recorded = metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == KEY))
        .and_then(|k| k.value.as_deref());
    let Some(recorded) = recorded else {
        return Ok(Verdict::NoSum);
    };
    let damaged = |reason: String| {
        tickflow_core::damage::record(path, &reason);
        Error::Damaged {
            path: path.to_path_buf(),
            reason,
        }
    };
    let (len, crc) = recorded
        .split_once(':')
        .and_then(|(len, crc)| Some((len.parse().ok()?, u32::from_str_radix(crc, 16).ok()?)))
        .ok_or_else(|| damaged(format!("unreadable checksum {recorded:?}")))?;
    let mut hasher = crc32fast::Hasher::new();
    match read(len, &mut hasher) {
        Ok(()) => {}
        // Fewer bytes than the sum covers: cut short.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(damaged(e.to_string()));
        }
        // Gone meanwhile (compaction deleted it), or a read that failed (permissions, too
        // many open files, a bad sector): an error, but not a verdict on the bytes.
        Err(e) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
    }
    if hasher.finalize() != crc {
        return Err(damaged(
            "checksum mismatch: its bytes changed after they were written".into(),
        ));
    }
    Ok(Verdict::Matched)
}

/// Checks the part in the file at `path` against the sum in its footer with plain reads,
/// so that an unreadable sector is an error rather than a fault in a memory map.
///
/// # Errors
/// [`Error::Damaged`] if the footer cannot be read or the bytes do not match their sum;
/// [`Error::Io`] if the file cannot be read (or was deleted meanwhile).
pub fn verify_file(path: &Path) -> Result<Verdict> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|e| match e {
            parquet::errors::ParquetError::External(inner) => Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(inner),
            },
            e => unreadable_footer(path, &e),
        })?;
    verify(path, &metadata, |len, hasher| read_file(path, len, hasher))
}

/// A footer that does not decode: damage, recorded.
fn unreadable_footer(path: &Path, e: &parquet::errors::ParquetError) -> Error {
    let reason = format!("unreadable footer: {e}");
    tickflow_core::damage::record(path, &reason);
    Error::Damaged {
        path: path.to_path_buf(),
        reason,
    }
}

/// Checks a whole part held in memory (`bytes`, read from `path`) against the sum in its
/// footer: a part fetched whole from object storage.
///
/// # Errors
/// [`Error::Damaged`] if the footer cannot be read or the bytes do not match their sum.
pub(crate) fn verify_bytes(path: &Path, bytes: &bytes::Bytes) -> Result<Verdict> {
    let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(bytes)
        .map_err(|e| unreadable_footer(path, &e))?;
    verify(path, &metadata, |len, hasher| {
        let part = usize::try_from(len)
            .ok()
            .and_then(|len| bytes.get(..len))
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("cut short: {} of {len} bytes", bytes.len()),
                )
            })?;
        hasher.update(part);
        Ok(())
    })
}

/// Feeds `hasher` the first `len` bytes of the file at `path`.
fn read_file(path: &Path, len: u64, hasher: &mut crc32fast::Hasher) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?.take(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("cut short: {total} of {len} bytes"),
        ));
    }
    Ok(())
}
