//! Local lake files read through memory maps.
//!
//! DataFusion reads local Parquet through object_store's `LocalFileSystem`, which allocates a
//! zero-filled buffer for every byte range it is asked for and copies the file into it. In a
//! profile of VWAP over 20 million trades the zeroing, the page faults on those fresh buffers
//! and the copy took about a sixth of the query. Lake files never change once published
//! (written under a temporary name and renamed; compaction writes new files and deletes old
//! ones, which leaves an open map intact), so a range here is a slice of a read-only map of
//! the file: the page cache's own pages, no copy. Everything but reading is
//! `LocalFileSystem`'s.
//!
//! Before the first map of a part, all of it is checked against the sum in its footer
//! (`tickflow_lake::verify_file`): DataFusion reads parts itself, and parquet-rs would
//! decode a flipped byte inside a page into a wrong value. A damaged part fails the query
//! with its path and is not kept, so every query that needs it fails the same way.
//!
//! Maps are kept between queries: mapping, faulting the pages in and unmapping again cost
//! about a tenth of a query's CPU. A kept map is used only while the path still names the
//! same file (device, inode and length, one `stat`), and the engine drops the maps of
//! files no longer in the lake ([`MappedFiles::keep_only`]) so deleted files free their
//! disk space. Kept pages count in the process's resident set as shared file pages, which
//! the kernel can reclaim like any page cache.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{File, Metadata};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::Path as FsPath;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    CopyOptions, Error, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use futures::stream::BoxStream;

/// What a part listed for a query but deleted before it was read fails with: compaction
/// replaced it, and the query runs again on the lake as it is now.
pub(crate) const PART_GONE: &str =
    "the lake part is gone (compaction replaced it after the query listed the lake)";

/// `file://` with reads served from memory maps.
#[derive(Debug, Default)]
pub(crate) struct MappedFiles {
    local: LocalFileSystem,
    kept: Mutex<HashMap<Path, Kept>>,
}

/// A map and the file it was made from.
#[derive(Debug)]
struct Kept {
    file: Identity,
    bytes: Bytes,
}

/// What tells one file from another that later took its name.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
}

impl From<&Metadata> for Identity {
    fn from(m: &Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
        }
    }
}

impl fmt::Display for MappedFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MappedFiles({})", self.local)
    }
}

impl MappedFiles {
    /// The whole file at `location`, mapped: the kept map if the path still names its
    /// file, else a new one, kept.
    fn map(&self, location: &Path) -> Result<Bytes> {
        let path = self.local.path_to_filesystem(location)?;
        let now = match std::fs::metadata(&path) {
            Ok(m) => Identity::from(&m),
            Err(e) => {
                self.kept().remove(location);
                return Err(io_error(&path, e));
            }
        };
        if let Some(kept) = self.kept().get(location).filter(|k| k.file == now) {
            return Ok(kept.bytes.clone());
        }
        // Checked once per file and process, with plain reads (a sector that cannot be read
        // is then an error, not a SIGBUS in a map): a kept map is a checked one.
        if path.extension().is_some_and(|e| e == "parquet")
            && let Err(e) = tickflow_lake::verify_file(&path)
        {
            // Nor is the map of the file the path named before.
            self.kept().remove(location);
            return Err(Error::Generic {
                store: "MappedFiles",
                source: e.to_string().into(),
            });
        }
        let (file, bytes) = map_file(&path)?;
        if file != now {
            return Err(Error::Generic {
                store: "MappedFiles",
                source: format!("{}: replaced while being checked", path.display()).into(),
            });
        }
        self.kept().insert(
            location.clone(),
            Kept {
                file,
                bytes: bytes.clone(),
            },
        );
        Ok(bytes)
    }

    /// Drops the kept maps of every file not in `files`. A query still holding bytes of a
    /// dropped map keeps it until it is done.
    pub(crate) fn keep_only(&self, files: &HashSet<Path>) {
        self.kept().retain(|location, _| files.contains(location));
    }

    /// How many maps are kept.
    #[cfg(test)]
    fn kept_count(&self) -> usize {
        self.kept().len()
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<Path, Kept>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn io_error(path: &FsPath, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        return Error::NotFound {
            path: path.display().to_string(),
            source: e.into(),
        };
    }
    Error::Generic {
        store: "MappedFiles",
        source: format!("{}: {e}", path.display()).into(),
    }
}

fn map_file(path: &FsPath) -> Result<(Identity, Bytes)> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let identity = Identity::from(&file.metadata().map_err(|e| io_error(path, e))?);
    if identity.len == 0 {
        // An empty map is an error in mmap(2); there is nothing to read anyway.
        return Ok((identity, Bytes::new()));
    }
    // SAFETY: the map is read-only and lake files are never modified in place once
    // published (see the module docs); a file deleted while mapped stays readable.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_error(path, e))?;
    Ok((identity, Bytes::from_owner(map)))
}

/// `range` of `whole`, or an error naming the file if it reaches past the end.
fn slice(whole: &Bytes, location: &Path, range: Range<u64>) -> Result<Bytes> {
    let len = whole.len() as u64;
    if range.start > range.end || range.end > len {
        return Err(Error::Generic {
            store: "MappedFiles",
            source: format!("{location}: range {range:?} is outside the file's {len} bytes").into(),
        });
    }
    // Both ends are within a length that fits usize.
    Ok(whole.slice(range.start as usize..range.end as usize))
}

#[async_trait]
impl ObjectStore for MappedFiles {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.local.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.local.put_multipart_opts(location, opts).await
    }

    /// Whole-object reads and footers (read once per file, then cached) stay plain reads.
    ///
    /// A listed part that is missing when DataFusion plans the scan is an error here, not
    /// `NotFound`: DataFusion takes a path whose `HEAD` is not found for a directory, lists
    /// it, finds nothing and reads no rows from it, so a part compaction replaced after the
    /// query listed the lake would silently count zero. The caller lists again.
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        match self.local.get_opts(location, options).await {
            Err(Error::NotFound { path, .. }) if head => Err(Error::Generic {
                store: "MappedFiles",
                source: format!("{path}: {PART_GONE}").into(),
            }),
            other => other,
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let whole = self.map(location)?;
        ranges
            .iter()
            .map(|r| slice(&whole, location, r.clone()))
            .collect()
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.local.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.local.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.local.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.local.copy_opts(from, to, options).await
    }
}

/// A lake's object store (S3) as queries read it: a listed part that is missing when
/// DataFusion plans the scan is an error, as in [`MappedFiles::get_opts`]; everything else
/// is the store's own.
#[derive(Debug)]
pub(crate) struct ListedParts(pub(crate) std::sync::Arc<dyn ObjectStore>);

impl fmt::Display for ListedParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ListedParts({})", self.0)
    }
}

#[async_trait]
impl ObjectStore for ListedParts {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        match self.0.get_opts(location, options).await {
            Err(Error::NotFound { path, .. }) if head => Err(Error::Generic {
                store: "ListedParts",
                source: format!("{path}: {PART_GONE}").into(),
            }),
            other => other,
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.0.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.0.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use datafusion::object_store::ObjectStoreExt as _;

    use super::*;

    #[tokio::test]
    async fn ranges_are_slices_of_the_file_and_bad_ranges_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.bin");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let store = MappedFiles::default();
        let location = Path::from_absolute_path(&path).unwrap();

        let got = store
            .get_ranges(&location, &[0..10, 4_000..9_000, 9_990..10_000, 5..5])
            .await
            .unwrap();
        assert_eq!(got[0].as_ref(), &data[0..10]);
        assert_eq!(got[1].as_ref(), &data[4_000..9_000]);
        assert_eq!(got[2].as_ref(), &data[9_990..]);
        assert!(got[3].is_empty());
        let past = store
            .get_ranges(&location, &[0..1, 9_000..10_001])
            .await
            .unwrap_err();
        assert!(
            past.to_string().contains("outside the file's 10000 bytes"),
            "{past}"
        );
        let missing = Path::from_absolute_path(dir.path().join("gone.bin")).unwrap();
        assert!(matches!(
            store
                .get_ranges(&missing, std::slice::from_ref(&(0..1)))
                .await,
            Err(Error::NotFound { .. })
        ));

        // DataFusion would take a missing part for an empty directory: it is an error.
        let head = store.head(&missing).await.unwrap_err();
        assert!(
            matches!(head, Error::Generic { .. }) && head.to_string().contains(PART_GONE),
            "{head}"
        );
        assert_eq!(store.head(&location).await.unwrap().size, data.len() as u64);

        // A file deleted while its bytes are held stays readable.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(got[1].as_ref(), &data[4_000..9_000]);

        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let empty = Path::from_absolute_path(&empty).unwrap();
        let nothing = store.get_ranges(&empty, &[0..0, 0..0]).await.unwrap();
        assert!(nothing[0].is_empty());
    }

    #[tokio::test]
    async fn maps_are_kept_while_the_path_names_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.bin");
        std::fs::write(&path, b"first version").unwrap();
        let store = MappedFiles::default();
        let location = Path::from_absolute_path(&path).unwrap();
        let first5 = std::slice::from_ref(&(0..5));
        let got = store.get_ranges(&location, first5).await.unwrap();
        assert_eq!(got[0].as_ref(), b"first");
        assert_eq!(store.kept_count(), 1);
        let again = store.get_ranges(&location, first5).await.unwrap();
        assert_eq!(
            again[0].as_ptr(),
            got[0].as_ptr(),
            "the kept map is read again"
        );

        // A new file under the same name (written aside and renamed, as the lake does) is
        // mapped afresh, not served from the old map.
        let aside = dir.path().join("part.tmp");
        std::fs::write(&aside, b"again, longer").unwrap();
        std::fs::rename(&aside, &path).unwrap();
        let got = store.get_ranges(&location, first5).await.unwrap();
        assert_eq!(got[0].as_ref(), b"again");

        // A deleted file is not served from its map, and the map is dropped.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            store.get_ranges(&location, first5).await,
            Err(Error::NotFound { .. })
        ));
        assert_eq!(store.kept_count(), 0);

        std::fs::write(&path, b"third").unwrap();
        store.get_ranges(&location, first5).await.unwrap();
        assert_eq!(store.kept_count(), 1);
        store.keep_only(&HashSet::new());
        assert_eq!(
            store.kept_count(),
            0,
            "files no longer in the lake are let go"
        );
    }

    #[tokio::test]
    async fn a_part_is_checked_against_its_sum_when_first_mapped_and_a_damaged_one_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let lake = tickflow_lake::Lake::open(dir.path()).unwrap();
        lake.write(&tickflow_core::contract::sample_rows(1, 20), 1)
            .unwrap();
        let part = lake.files(tickflow_lake::Table::Trades, 1).unwrap()[0].clone();
        let store = MappedFiles::default();
        let location = Path::from_absolute_path(&part).unwrap();
        let whole = std::slice::from_ref(&(0..8));
        assert_eq!(
            store.get_ranges(&location, whole).await.unwrap()[0].as_ref()[..4],
            *b"PAR1"
        );
        assert_eq!(store.kept_count(), 1);

        // The same name, another file: one byte of its first page inverted.
        let mut bytes = std::fs::read(&part).unwrap();
        bytes[8] ^= 0xff;
        let tmp = part.with_extension("tmp");
        std::fs::write(&tmp, &bytes).unwrap();
        std::fs::rename(&tmp, &part).unwrap();
        let e = store
            .get_ranges(&location, whole)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&part.display().to_string()) && e.contains("checksum mismatch"),
            "{e}"
        );
        assert_eq!(store.kept_count(), 0, "a damaged part is not kept");
    }
}
