use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use tickflow_model::{Date, UnixNanos};

use crate::store::{ObjectLake, Remote};
use crate::{Error, Result, Rows, Table, compact, convert};

/// What one flush wrote.
#[derive(Debug, Default, Clone)]
pub struct WriteReport {
    pub files: usize,
    pub bytes: u64,
    /// Rows written per table.
    pub rows: BTreeMap<&'static str, usize>,
}

/// A lake rooted at a directory or under an object-store prefix; see the crate docs for the
/// layout.
#[derive(Debug)]
pub struct Lake {
    /// A directory, or the URL of the prefix on object storage (`s3://bucket/prefix`).
    root: PathBuf,
    /// The bucket, for a lake on object storage.
    remote: Option<Remote>,
    props: WriterProperties,
    symbol_buckets: u32,
    /// The log partition this lake instance writes (`[log] partitions`): its files go under
    /// `<table>/partition=NN/`, and recovery and compaction touch only those.
    partition: Option<u32>,
    /// Listing reads under it and compaction deletes under it, so a listing never misses
    /// both a merged file and the inputs it replaced.
    listing: RwLock<()>,
    generation: AtomicU64,
    /// Counts changes to the tree (files published or deleted), each counted once it is
    /// done. A listing kept with the count it was taken at serves [`Lake::files`] until the
    /// count moves: walking thousands of folders per query cost about 10 ms.
    changes: AtomicU64,
    listings: Mutex<HashMap<Table, (u64, Arc<compact::Folders>)>>,
}

/// The folder of a log partition's files in each table.
pub fn partition_folder(partition: u32) -> String {
    format!("partition={partition:02}")
}

/// Whether `path` is in a `partition=NN` folder right under its table's folder.
fn in_partition_folder(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root)
        .ok()
        .and_then(|rel| rel.components().nth(1))
        .and_then(|c| c.as_os_str().to_str())
        .is_some_and(|name| name.starts_with("partition="))
}

/// The folder under `date=…` a group of rows goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part<'a> {
    /// `symbol=SYM`
    Symbol(&'a str),
    /// `bucket=NN`: symbols whose stable hash falls in bucket NN, sorted by symbol inside.
    Bucket(u32),
    /// No folder below the date (the DLQ).
    None,
}

type PartitionKey<'a> = (Date, Part<'a>);

/// The bucket of a symbol among `buckets`: FNV-1a, stable across runs and builds, so a
/// symbol's bucket never moves while the bucket count stays.
pub fn symbol_bucket(symbol: &str, buckets: u32) -> u32 {
    let hash = symbol.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % u64::from(buckets.max(1))) as u32
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The flush sequence in a part file's name, `part-<flush>-<n>.parquet`.
pub fn flush_seq_of(path: &Path) -> Option<u64> {
    compact::seq_range_of(path).map(|(_, last)| last)
}

/// Encodes `batch` of `table` as one Parquet file into `out` (`path` names it in errors).
fn encode<W: std::io::Write + Send>(
    out: W,
    path: &Path,
    table: Table,
    batch: &arrow::record_batch::RecordBatch,
    props: &WriterProperties,
) -> Result<W> {
    let parquet = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let out = crate::checksum::Summing::new(out);
    let mut writer =
        ArrowWriter::try_new(out, table.schema(), Some(props.clone())).map_err(parquet)?;
    writer.write(batch).map_err(parquet)?;
    // Every row group out and through the sum; the footer then records it.
    writer.flush().map_err(parquet)?;
    writer.sync().map_err(io(path))?;
    let sum = writer.inner().value();
    writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
        crate::checksum::KEY.to_string(),
        sum,
    ));
    Ok(writer.into_inner().map_err(parquet)?.inner)
}

/// Writes `batch` of `table` as one Parquet file at `path` (not yet durable) and returns its
/// size in bytes.
pub(crate) fn write_parquet(
    path: &Path,
    table: Table,
    batch: &arrow::record_batch::RecordBatch,
    props: &WriterProperties,
) -> Result<u64> {
    let file = File::create(path).map_err(io(path))?;
    let file = encode(file, path, table, batch, props)?;
    Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
}

/// `batch` of `table` as the bytes of one Parquet file.
pub(crate) fn parquet_bytes(
    path: &Path,
    table: Table,
    batch: &arrow::record_batch::RecordBatch,
    props: &WriterProperties,
) -> Result<bytes::Bytes> {
    Ok(encode(Vec::new(), path, table, batch, props)?.into())
}

/// Groups rows by date and symbol, keeping their order inside each group; with `buckets`
/// above 0, symbols are grouped into that many buckets instead, ordered by symbol inside a
/// bucket so row-group statistics still prune by symbol.
fn partition<'a, T>(
    rows: &'a [T],
    buckets: u32,
    key: impl Fn(&'a T) -> (Date, Option<&'a str>),
) -> BTreeMap<PartitionKey<'a>, Vec<&'a T>> {
    // Rows of one symbol share one allocation of its text, so a row usually finds its group
    // among the last few used by the text's address, without comparing strings.
    const RECENT: usize = 16;
    let mut recent: [Option<(Date, usize, usize, usize)>; RECENT] = [None; RECENT];
    let mut next_slot = 0;
    let mut index: BTreeMap<(Date, Option<&'a str>), usize> = BTreeMap::new();
    let mut groups: Vec<Vec<&'a T>> = Vec::new();
    for row in rows {
        let (date, symbol) = key(row);
        let address = symbol.map_or((0, 0), |s| (s.as_ptr() as usize, s.len()));
        let tag = (date, address.0, address.1);
        let group = match recent.iter().flatten().find(|r| (r.0, r.1, r.2) == tag) {
            Some(r) => r.3,
            None => {
                let group = *index.entry((date, symbol)).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                recent[next_slot] = Some((date, address.0, address.1, group));
                next_slot = (next_slot + 1) % RECENT;
                group
            }
        };
        groups[group].push(row);
    }
    let mut parts: BTreeMap<PartitionKey<'a>, Vec<&'a T>> = BTreeMap::new();
    for ((date, symbol), group) in index {
        let mut group = std::mem::take(&mut groups[group]);
        let part = match symbol {
            None => Part::None,
            Some(s) if buckets > 0 => Part::Bucket(symbol_bucket(s, buckets)),
            Some(s) => Part::Symbol(s),
        };
        parts.entry((date, part)).or_default().append(&mut group);
    }
    parts
}

/// Columns whose values (nearly) never repeat within a file. A dictionary there only costs:
/// the writer hashes every value into it until it overflows, and readers decode indices
/// into a dictionary as large as the column. Every other column keeps Parquet's dictionary.
const UNIQUE_COLUMNS: &[&str] = &[
    "ts_event", "ts_recv", "seq", "trade_id", "alert_id", "ts", "offset", "message", "error",
    "payload",
];

/// Columns of ticks whose values repeat within a file, so their pages are a small dictionary
/// and bit-packed indices. zstd shrinks those indices by about a tenth and costs more to
/// undo than reading the bytes (parquet also sets up a zstd context per column chunk), so
/// they are stored uncompressed: 5% larger files, scans of prices and sizes about a fifth
/// faster.
const INDEXED_COLUMNS: &[&str] = &[
    "symbol", "price", "size", "exchange", "source", "feed", "bid", "bid_size", "ask", "ask_size",
];

/// Integer columns that mostly grow from row to row: times and sequence numbers. Parquet's
/// delta encoding stores each as a few bits of difference from the one before, so the
/// 8-byte values need no general-purpose compressor.
const DELTA_COLUMNS: &[&str] = &["ts_event", "ts_recv", "seq", "ts", "offset"];

impl Lake {
    /// Opens (creating) a lake at `root`.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io(&root))?;
        Ok(Self::at(root, None))
    }

    /// Opens a lake on object storage and lists what it already holds.
    ///
    /// # Errors
    /// The URL or the settings are wrong, or the bucket cannot be listed.
    pub fn open_object(config: &ObjectLake) -> Result<Self> {
        let (root, remote) = Remote::open(config)?;
        Ok(Self::at(root, Some(remote)))
    }

    fn at(root: PathBuf, remote: Option<Remote>) -> Self {
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
            .set_max_row_group_row_count(Some(1 << 20));
        for column in UNIQUE_COLUMNS {
            props = props.set_column_dictionary_enabled(ColumnPath::from(*column), false);
        }
        for column in INDEXED_COLUMNS {
            props =
                props.set_column_compression(ColumnPath::from(*column), Compression::UNCOMPRESSED);
        }
        for column in DELTA_COLUMNS {
            props =
                props.set_column_encoding(ColumnPath::from(*column), Encoding::DELTA_BINARY_PACKED);
        }
        let props = props.build();
        Self {
            root,
            remote,
            props,
            symbol_buckets: 0,
            partition: None,
            listing: RwLock::new(()),
            generation: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            listings: Mutex::new(HashMap::new()),
        }
    }

    /// Writes symbols into `buckets` shared `bucket=NN` folders instead of one `symbol=SYM`
    /// folder each (0 keeps a folder per symbol). With thousands of symbols a folder each
    /// means one tiny file per symbol per flush. Keep the count fixed for a lake, so every
    /// date has the same layout.
    #[must_use]
    pub fn with_symbol_buckets(mut self, buckets: u32) -> Self {
        self.symbol_buckets = buckets;
        self
    }

    /// Confines this instance to one log partition's files: each process that owns a
    /// partition writes, recovers and compacts its own folder of every table, so processes
    /// sharing a lake never touch each other's files. Readers of the whole lake open it
    /// without a partition.
    #[must_use]
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// The folder of `table` this instance writes: `<root>/<table>`, or under a partition
    /// `<root>/<table>/partition=NN`.
    pub fn table_dir(&self, table: Table) -> PathBuf {
        let dir = self.root.join(table.name());
        match self.partition {
            Some(p) => dir.join(partition_folder(p)),
            None => dir,
        }
    }

    /// Every stored file under this instance's table folders.
    pub(crate) fn stored_tables(&self) -> Result<Vec<(PathBuf, u64)>> {
        let mut all = Vec::new();
        for table in Table::ALL {
            all.extend(self.stored(&self.table_dir(table))?);
        }
        Ok(all)
    }

    /// The lake directory, or the URL of its prefix on object storage. Files are named
    /// under it the same way in both.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// For a lake on object storage, the store and the URL (`s3://bucket`) its files are
    /// named under, for a query engine to read them through.
    pub fn object_store(&self) -> Option<(String, Arc<dyn object_store::ObjectStore>)> {
        self.remote.as_ref().map(Remote::store)
    }

    pub(crate) fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// Every stored file under `under` with its size, temporary files included: this
    /// instance's own, so a lake without a partition leaves the `partition=NN` folders
    /// of a partitioned log's processes alone (recovery, compaction and retention included).
    pub(crate) fn stored(&self, under: &Path) -> Result<Vec<(PathBuf, u64)>> {
        let mut files = self.stored_all(under)?;
        if self.partition.is_none() {
            files.retain(|(path, _)| !in_partition_folder(&self.root, path));
        }
        Ok(files)
    }

    /// Published part files of partition `partition`'s folder of `table` up to its flush
    /// `max_seq`, listed afresh: another process writes and compacts them, so no kept
    /// listing (on object storage, no earlier listing) can be trusted.
    ///
    /// # Errors
    /// The folder cannot be listed.
    pub fn partition_files(
        &self,
        table: Table,
        partition: u32,
        max_seq: u64,
    ) -> Result<Vec<PathBuf>> {
        let dir = self
            .root
            .join(table.name())
            .join(partition_folder(partition));
        if let Some(remote) = &self.remote {
            remote.relist(&dir)?;
        }
        let folders = compact::parts_by_folder(self.stored_all(&dir)?);
        Ok(compact::live_files(&folders, max_seq))
    }

    /// [`Lake::stored`] of every file, other partitions' included.
    fn stored_all(&self, under: &Path) -> Result<Vec<(PathBuf, u64)>> {
        if let Some(remote) = &self.remote {
            return Ok(remote.files_under(under));
        }
        let mut files = Vec::new();
        let mut failed = None;
        walk(under, &mut |path| match fs::metadata(path) {
            Ok(m) => files.push((path.to_path_buf(), m.len())),
            // Gone between the listing and the look: a deleted file is not stored.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                failed.get_or_insert_with(|| io(path)(e));
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(files),
        }
    }

    /// Deletes `files` with listings held off (see [`Lake::deleting`]); one already gone
    /// counts as deleted. On object storage the lake only stops listing them while
    /// listings are held off, and sends the deletes after: queries need not wait on them.
    pub(crate) fn delete_files(&self, files: &[PathBuf]) -> Result<()> {
        if let Some(remote) = &self.remote {
            {
                let _deleting = self.deleting();
                remote.forget(files);
            }
            return remote.delete_all(files);
        }
        let _deleting = self.deleting();
        for path in files {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(path)(e)),
            }
        }
        Ok(())
    }

    /// Makes what was written durable: one `syncfs` on disk; on object storage each PUT
    /// already was.
    pub(crate) fn sync(&self) -> Result<()> {
        match self.remote {
            Some(_) => Ok(()),
            None => sync_filesystem(&self.root),
        }
    }

    /// The record batches of one stored file.
    pub(crate) fn batches(
        &self,
        path: &Path,
    ) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder as Builder;
        let parquet = |source| Error::Parquet {
            path: path.to_path_buf(),
            source,
        };
        let size = 64 * 1024;
        // The sum is checked before a row is decoded (crate::checksum).
        match &self.remote {
            Some(remote) => {
                let data = remote.get(path)?;
                crate::checksum::verify_bytes(path, &data)?;
                let builder = Builder::try_new(data).map_err(parquet)?;
                builder.with_batch_size(size).build().map_err(parquet)
            }
            None => {
                crate::checksum::verify_file(path)?;
                let builder =
                    Builder::try_new(File::open(path).map_err(io(path))?).map_err(parquet)?;
                builder.with_batch_size(size).build().map_err(parquet)
            }
        }
    }

    /// Checks one stored part against the sum in its footer, reading all of it: what
    /// `tickflow verify` does to every part.
    ///
    /// # Errors
    /// [`Error::Damaged`] if it does not match or its footer cannot be read;
    /// [`Error::Io`] if it cannot be read at all (or was deleted meanwhile).
    pub fn verify_part(&self, path: &Path) -> Result<crate::Verdict> {
        match &self.remote {
            Some(remote) => crate::checksum::verify_bytes(path, &remote.get(path)?),
            None => crate::checksum::verify_file(path),
        }
    }

    /// How Parquet files are written (compression, row groups).
    pub(crate) fn props(&self) -> &WriterProperties {
        &self.props
    }

    fn partition_dir(&self, table: Table, (date, part): PartitionKey<'_>) -> PathBuf {
        let mut dir = self.table_dir(table).join(format!("date={date}"));
        match part {
            Part::Symbol(symbol) => dir.push(format!("symbol={symbol}")),
            Part::Bucket(bucket) => dir.push(format!("bucket={bucket:02}")),
            Part::None => {}
        }
        dir
    }

    /// Writes every row as Parquet under flush sequence `flush_seq` and makes it durable.
    ///
    /// Each file is written under a temporary name and renamed when complete, so other
    /// readers of the directory never see half a file; one `syncfs` at the end makes data
    /// and names durable together.
    ///
    /// # Errors
    /// Any I/O or encoding failure; files already written stay and are removed by
    /// [`Lake::recover`] unless the caller commits this flush.
    pub fn write(&self, rows: &Rows, flush_seq: u64) -> Result<WriteReport> {
        let written = self.write_files(rows, flush_seq);
        self.changed();
        written
    }

    fn write_files(&self, rows: &Rows, flush_seq: u64) -> Result<WriteReport> {
        let mut report = WriteReport::default();
        let mut n = 0usize;
        // On object storage the files are sent together once all are encoded.
        let mut objects = Vec::new();
        let mut write = |table: Table,
                         key: PartitionKey<'_>,
                         batch: arrow::record_batch::RecordBatch|
         -> Result<()> {
            let dir = self.partition_dir(table, key);
            let path = dir.join(format!("part-{flush_seq:012}-{n:05}.parquet"));
            if self.remote.is_some() {
                let bytes = parquet_bytes(&path, table, &batch, &self.props)?;
                report.bytes += bytes.len() as u64;
                objects.push((path, bytes));
            } else {
                fs::create_dir_all(&dir).map_err(io(&dir))?;
                let tmp = dir.join(format!(".part-{flush_seq:012}-{n:05}.parquet.tmp"));
                report.bytes += write_parquet(&tmp, table, &batch, &self.props)?;
                fs::rename(&tmp, &path).map_err(io(&path))?;
            }
            n += 1;
            report.files += 1;
            *report.rows.entry(table.name()).or_default() += batch.num_rows();
            Ok(())
        };
        let day = |ts: UnixNanos| ts.date();
        for (key, group) in partition(&rows.trades, self.symbol_buckets, |t| {
            (day(t.ts_event), Some(t.symbol.as_str()))
        }) {
            write(Table::Trades, key, convert::trades(&group)?)?;
        }
        for (key, group) in partition(&rows.quotes, self.symbol_buckets, |q| {
            (day(q.ts_event), Some(q.symbol.as_str()))
        }) {
            write(Table::Quotes, key, convert::quotes(&group)?)?;
        }
        for (key, group) in partition(&rows.bars, self.symbol_buckets, |b| {
            (day(b.start), Some(b.symbol.as_str()))
        }) {
            write(Table::Bars, key, convert::bars(&group)?)?;
        }
        for (key, group) in partition(&rows.daily_metrics, self.symbol_buckets, |m| {
            (m.date, Some(m.symbol.as_str()))
        }) {
            write(Table::DailyMetrics, key, convert::daily_metrics(&group)?)?;
        }
        for (key, group) in partition(&rows.alerts, self.symbol_buckets, |a| {
            (day(a.ts), Some(a.symbol.as_str()))
        }) {
            write(Table::Alerts, key, convert::alerts(&group)?)?;
        }
        for (key, group) in partition(&rows.dlq, self.symbol_buckets, |d| (day(d.ts), None)) {
            write(Table::Dlq, key, convert::dlq(&group)?)?;
        }
        for (key, group) in partition(&rows.alert_deliveries, self.symbol_buckets, |d| {
            (day(d.ts), None)
        }) {
            write(
                Table::AlertDeliveries,
                key,
                convert::alert_deliveries(&group)?,
            )?;
        }
        match &self.remote {
            Some(remote) => remote.put_all(objects)?,
            None if report.files > 0 => sync_filesystem(&self.root)?,
            None => {}
        }
        Ok(report)
    }

    /// Part files of `table` holding flushes up to and including `max_seq`, sorted; files a
    /// merged file supersedes are left out.
    ///
    /// # Errors
    /// The directory tree cannot be read.
    pub fn files(&self, table: Table, max_seq: u64) -> Result<Vec<PathBuf>> {
        let _listing = self.listing.read().unwrap_or_else(|e| e.into_inner());
        let folders = self.folders(table)?;
        Ok(compact::live_files(&folders, max_seq))
    }

    /// The part files of `table` by folder, walked again only if the tree changed since
    /// the kept listing was taken. A walk that overlaps a change is kept with the count
    /// from before the change, so the next call walks again.
    fn folders(&self, table: Table) -> Result<Arc<compact::Folders>> {
        let changes = self.changes.load(Ordering::SeqCst);
        let kept = |cache: &HashMap<Table, (u64, Arc<compact::Folders>)>| {
            cache
                .get(&table)
                .filter(|(at, _)| *at == changes)
                .map(|(_, f)| Arc::clone(f))
        };
        if let Some(folders) = kept(&self.listings.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(folders);
        }
        let stored = self.stored(&self.table_dir(table))?;
        let folders = Arc::new(compact::parts_by_folder(stored));
        let mut cache = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        if cache.get(&table).is_none_or(|(at, _)| *at < changes) {
            cache.insert(table, (changes, Arc::clone(&folders)));
        }
        Ok(folders)
    }

    /// Counts a finished change to the tree, so kept listings are walked again.
    pub(crate) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    /// Holds off listings while superseded files are deleted, and counts the deletion in
    /// [`Lake::generation`] and in the changes to the tree before any file goes (no
    /// listing can run until the deletions are done).
    pub(crate) fn deleting(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        let guard = self.listing.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.changed();
        guard
    }

    /// Changes before compaction deletes files. A reader that saw the same value before
    /// listing and after its query finished read every file it listed; otherwise it should
    /// list and query again.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Deletes what a crash left behind: temporary files, part files of flushes after
    /// `committed_seq` (their rows will be produced again by the replay), and files a
    /// merged file supersedes. Returns how many.
    ///
    /// # Errors
    /// The tree cannot be read or a file cannot be removed.
    pub fn recover(&self, committed_seq: u64) -> Result<usize> {
        let doomed: Vec<PathBuf> = self
            .stored_tables()?
            .into_iter()
            .map(|(path, _)| path)
            .filter(|path| {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".parquet.tmp")
                    || flush_seq_of(path).is_some_and(|s| s > committed_seq)
            })
            .collect();
        self.delete_files(&doomed)?;
        let doomed = doomed.len() + self.delete_superseded()?;
        if doomed > 0 {
            tracing::warn!(
                files = doomed,
                committed_seq,
                "removed lake files of an uncommitted flush"
            );
            self.sync()?;
        }
        Ok(doomed)
    }
}

pub(crate) fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if entry.file_type().map_err(io(&path))?.is_dir() {
            walk(&path, f)?;
        } else {
            f(&path);
        }
    }
    Ok(())
}

/// Makes every write and rename under `path` durable with one `syncfs`, far cheaper than an
/// fsync per file and per directory when a flush writes hundreds of partitions.
pub(crate) fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(io(path))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is valid for the lifetime of `dir`.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io(path)(std::io::Error::last_os_error()));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        dir.sync_all().map_err(io(path))
    }
}

/// The first record batch of a Parquet file, for tests.
#[cfg(test)]
pub(crate) fn first_batch(path: &Path) -> arrow::record_batch::RecordBatch {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        File::open(path).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap()
    .next()
    .unwrap()
    .unwrap()
}

#[cfg(test)]
mod tests {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use tickflow_model::{Price, Qty, Symbol, Trade};

    use super::*;

    fn trade(sym: &str, day: i64, n: u64) -> Trade {
        Trade {
            symbol: Symbol::parse(sym).unwrap(),
            ts_event: UnixNanos((20_000 + day) * 86_400 * 1_000_000_000 + n as i64),
            ts_recv: UnixNanos(0),
            price: Price::parse("181.25").unwrap(),
            size: Qty::parse("0.5").unwrap(),
            trade_id: None,
            exchange: Some(Arc::from("V")),
            source: Arc::from("test"),
            feed: Arc::from("test"),
            seq: Some(n),
        }
    }

    #[test]
    fn partition_groups_by_date_and_symbol_text_in_row_order() {
        // Day one cycles through 20 symbols, more than the recent-group cache holds; day two
        // through 5. A third of the rows carry their own copy of the symbol's text.
        let sym_of = |n: u64| if n < 100 { n % 20 } else { n % 5 };
        let shared: Vec<Symbol> = (0..20)
            .map(|i| Symbol::parse(&format!("S{i:02}")).unwrap())
            .collect();
        let mut rows = Vec::new();
        for n in 0..200u64 {
            let mut t = trade(&format!("S{:02}", sym_of(n)), (n / 100) as i64, n);
            if n % 3 != 0 {
                t.symbol = shared[sym_of(n) as usize].clone();
            }
            rows.push(t);
        }
        fn key(t: &Trade) -> (Date, Option<&str>) {
            (t.ts_event.date(), Some(t.symbol.as_str()))
        }
        let parts = partition(&rows, 0, key);
        assert_eq!(parts.len(), 25);
        for ((date, part), group) in &parts {
            let Part::Symbol(sym) = part else {
                panic!("{part:?}")
            };
            let seqs: Vec<u64> = group.iter().map(|t| t.seq.unwrap()).collect();
            let expected: Vec<u64> = (0..200)
                .filter(|&n| key(&rows[n as usize]) == (*date, Some(*sym)))
                .collect();
            assert_eq!(seqs, expected, "{date} {sym}");
        }
        let buckets = partition(&rows, 4, key);
        for group in buckets.values() {
            let syms: Vec<&str> = group.iter().map(|t| t.symbol.as_str()).collect();
            assert!(
                syms.is_sorted(),
                "symbols in a bucket stay sorted: {syms:?}"
            );
        }
        assert_eq!(buckets.values().map(Vec::len).sum::<usize>(), 200);
    }

    #[test]
    fn symbols_share_bucket_folders_sorted_by_symbol() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap().with_symbol_buckets(8);
        let symbols: Vec<String> = (0..1_000).map(|i| format!("S{i:05}")).collect();
        // Newest symbol first, so the sort inside a bucket is the writer's doing.
        let rows = Rows {
            trades: symbols
                .iter()
                .rev()
                .enumerate()
                .map(|(n, s)| trade(s, 0, n as u64))
                .collect(),
            ..Default::default()
        };
        let report = lake.write(&rows, 1).unwrap();
        assert_eq!(report.rows["trades"], symbols.len());
        assert_eq!(report.files, 8);
        let mut seen = 0;
        for f in &lake.files(Table::Trades, 1).unwrap() {
            let folder = f.parent().unwrap().file_name().unwrap().to_string_lossy();
            let bucket: u32 = folder.strip_prefix("bucket=").unwrap().parse().unwrap();
            let batch = first_batch(f);
            let col = batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            let in_file: Vec<&str> = col.iter().map(Option::unwrap).collect();
            assert!(in_file.is_sorted(), "{folder}: {in_file:?}");
            assert!(in_file.iter().all(|s| symbol_bucket(s, 8) == bucket));
            seen += in_file.len();
        }
        assert_eq!(seen, symbols.len());
    }

    #[test]
    fn dictionaries_only_where_values_repeat_and_those_stay_uncompressed() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let rows = Rows {
            trades: (0..1_000).map(|n| trade("NVDA", 0, n)).collect(),
            ..Default::default()
        };
        lake.write(&rows, 1).unwrap();
        let file = File::open(&lake.files(Table::Trades, 1).unwrap()[0]).unwrap();
        let meta = Arc::clone(
            ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .metadata(),
        );
        let group = meta.row_group(0);
        let column = |name: &str| {
            group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap()
        };
        for name in ["symbol", "price", "size", "source"] {
            assert!(
                column(name).dictionary_page_offset().is_some(),
                "{name} should keep its dictionary"
            );
            assert_eq!(
                column(name).compression(),
                Compression::UNCOMPRESSED,
                "{name}"
            );
        }
        for name in ["ts_event", "ts_recv", "seq"] {
            assert!(
                column(name).dictionary_page_offset().is_none(),
                "{name} should have no dictionary"
            );
            assert!(
                column(name)
                    .encodings()
                    .any(|e| e == Encoding::DELTA_BINARY_PACKED),
                "{name} should be delta-encoded"
            );
            assert!(
                matches!(column(name).compression(), Compression::ZSTD(_)),
                "{name} should be compressed"
            );
        }
        assert!(
            column("trade_id")
                .encodings()
                .all(|e| e != Encoding::DELTA_BINARY_PACKED)
        );
        // And the values read back as written.
        let batch = first_batch(&lake.files(Table::Trades, 1).unwrap()[0]);
        let expected = convert::trades(&rows.trades.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(batch.columns(), expected.columns());
    }

    #[test]
    fn listings_are_kept_until_the_lake_changes_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let rows = |sym: &str| Rows {
            trades: vec![trade(sym, 0, 1)],
            ..Default::default()
        };
        lake.write(&rows("NVDA"), 1).unwrap();
        let first = lake.files(Table::Trades, u64::MAX).unwrap();
        assert_eq!(first.len(), 1);
        // A file the lake did not write is not seen until the lake itself changes the
        // tree: the listing is kept, not walked per call.
        let folder = first[0].parent().unwrap();
        fs::copy(&first[0], folder.join("part-000000000002-00000.parquet")).unwrap();
        assert_eq!(lake.files(Table::Trades, u64::MAX).unwrap(), first);
        lake.write(&rows("AAPL"), 3).unwrap();
        assert_eq!(lake.files(Table::Trades, u64::MAX).unwrap().len(), 3);
        // Deleting counts as a change too.
        assert_eq!(lake.recover(1).unwrap(), 2);
        assert_eq!(lake.files(Table::Trades, u64::MAX).unwrap(), first);
    }

    /// Two processes, each owning a log partition, share one lake: each writes, recovers
    /// and lists only its own folder, and a reader of the whole lake sees both.
    #[test]
    fn partitions_share_a_lake_without_touching_each_others_files() {
        let dir = tempfile::tempdir().unwrap();
        let p0 = Lake::open(dir.path()).unwrap().with_partition(0);
        let p1 = Lake::open(dir.path()).unwrap().with_partition(1);
        let rows = |sym: &str, n: u64| Rows {
            trades: vec![trade(sym, 0, n)],
            ..Default::default()
        };
        // The same flush numbers in both: names never collide.
        for seq in 1..=2 {
            p0.write(&rows("NVDA", seq), seq).unwrap();
            p1.write(&rows("AAPL", seq), seq).unwrap();
        }
        // Partition 0 committed only flush 1; its recovery leaves partition 1's flush 2.
        assert_eq!(p0.recover(1).unwrap(), 1);
        let names = |lake: &Lake| -> Vec<String> {
            lake.files(Table::Trades, u64::MAX)
                .unwrap()
                .iter()
                .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            names(&p0),
            ["trades/partition=00/date=2024-10-04/symbol=NVDA/part-000000000001-00000.parquet"]
        );
        assert_eq!(names(&p1).len(), 2);
        // A lake without a partition leaves the partitions' folders alone: its recovery
        // deletes none of their files, and it lists them only by partition, afresh.
        let whole = Lake::open(dir.path()).unwrap();
        assert_eq!(whole.recover(0).unwrap(), 0);
        assert!(names(&whole).is_empty());
        assert_eq!(whole.partition_files(Table::Trades, 1, 2).unwrap().len(), 2);
        assert_eq!(whole.partition_files(Table::Trades, 1, 1).unwrap().len(), 1);
        p1.write(&rows("AAPL", 3), 3).unwrap();
        assert_eq!(whole.partition_files(Table::Trades, 1, 3).unwrap().len(), 3);
        // Each partition's sinks read its own flushes back.
        let (last, read) = p1.read_flushes(1, 2).unwrap();
        let seqs: Vec<_> = read.trades.iter().map(|t| t.seq).collect();
        assert_eq!((last, seqs), (2, vec![Some(2)]));
    }

    #[test]
    fn writes_hive_partitions_and_recovers_uncommitted_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let rows = Rows {
            trades: vec![
                trade("NVDA", 0, 1),
                trade("NVDA", 0, 2),
                trade("BTC-USD", 1, 3),
            ],
            ..Default::default()
        };
        let report = lake.write(&rows, 1).unwrap();
        assert_eq!(report.files, 2);
        assert_eq!(report.rows["trades"], 3);
        let files = lake.files(Table::Trades, 1).unwrap();
        let rel: Vec<_> = files
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            rel,
            [
                "trades/date=2024-10-04/symbol=NVDA/part-000000000001-00000.parquet",
                "trades/date=2024-10-05/symbol=BTC-USD/part-000000000001-00001.parquet"
            ]
        );

        let builder =
            ParquetRecordBatchReaderBuilder::try_new(File::open(&files[0]).unwrap()).unwrap();
        // Any Parquet reader sees an INT64 DECIMAL(18, 9); an Arrow reader gets the values
        // as 64-bit decimals, as they are stored.
        let price = builder.parquet_schema().column(3);
        assert_eq!(price.physical_type(), parquet::basic::Type::INT64);
        assert!(matches!(
            price.logical_type_ref(),
            Some(parquet::basic::LogicalType::Decimal(_))
        ));
        assert_eq!((price.type_precision(), price.type_scale()), (18, 9));
        let batches: Vec<_> = builder.build().unwrap().map(|b| b.unwrap()).collect();
        assert_eq!(batches[0].num_rows(), 2);
        assert_eq!(
            batches[0].schema().field(3).data_type(),
            &arrow::datatypes::DataType::Decimal64(18, 9)
        );

        lake.write(&rows, 2).unwrap();
        assert_eq!(
            lake.files(Table::Trades, 1).unwrap().len(),
            2,
            "readers ignore an unpublished flush"
        );
        assert_eq!(lake.files(Table::Trades, 2).unwrap().len(), 4);
        fs::write(
            dir.path()
                .join("trades/.part-000000000003-00000.parquet.tmp"),
            b"half",
        )
        .unwrap();
        assert_eq!(lake.recover(1).unwrap(), 3);
        assert_eq!(lake.files(Table::Trades, u64::MAX).unwrap(), files);
    }
}
