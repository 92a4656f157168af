//! Compaction: a partition's small flush files merged into larger ones.
//!
//! A flush writes one file per partition, so a day of one-second flushes leaves 86,400 small
//! files in today's folder, and every query pays for opening each. Compaction merges them,
//! sorted by symbol and time so row-group statistics prune well.
//!
//! A merged file is named `part-<last>-c<first>.parquet`: it holds every row of the files in
//! its folder whose flush sequences lie in `first..=last`, and supersedes them. Its rename is
//! the commit: a crash before it leaves a temporary file, a crash after it leaves superseded
//! inputs; readers skip those ([`Lake::files`]) and [`Lake::recover`] deletes both. On
//! object storage the merged file's PUT is the commit, and nothing temporary is left.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::ArrayRef;
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::record_batch::RecordBatch;
use tickflow_model::Date;

use crate::convert::cast_to;
use crate::writer::{io, parquet_bytes, write_parquet};
use crate::{Error, Lake, Result, Table};

/// When and how much to merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactPolicy {
    /// Files at least this large are left alone, and no merged file is made larger.
    pub target_bytes: u64,
    /// In a day still being written, merge only once this many flush files have gathered,
    /// so each row is rewritten about twice: into such a merge, then when the day closes.
    pub min_files: usize,
}

impl Default for CompactPolicy {
    fn default() -> Self {
        Self {
            target_bytes: 128 * 1024 * 1024,
            min_files: 32,
        }
    }
}

/// What one compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Files merged away.
    pub inputs: usize,
    /// Files written.
    pub outputs: usize,
    pub rows: usize,
}

/// The flush sequences a part file holds: `part-<s>-<n>` holds `s..=s`, a merged
/// `part-<last>-c<first>` holds `first..=last`.
pub fn seq_range_of(path: &Path) -> Option<(u64, u64)> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (last, tail) = rest.split_once('-')?;
    let last = last.parse().ok()?;
    match tail.strip_prefix('c') {
        Some(first) => Some((first.parse().ok()?, last)),
        None => Some((last, last)),
    }
}

/// A part file with the sequences it holds.
#[derive(Clone, Debug)]
pub(crate) struct Part {
    path: PathBuf,
    first: u64,
    last: u64,
    bytes: u64,
}

impl Part {
    /// Whether compaction wrote it (a flush file holds one sequence).
    fn merged(&self) -> bool {
        self.first != self.last
    }
}

/// Splits the part files of one folder into those readers use and those a merged file
/// supersedes. The ranges of files in use never overlap.
fn split_superseded(mut parts: Vec<Part>) -> (Vec<Part>, Vec<Part>) {
    // Widest range first among equal starts, so a merged file precedes what it holds.
    parts.sort_by(|a, b| a.first.cmp(&b.first).then(b.last.cmp(&a.last)));
    let (mut live, mut superseded) = (Vec::new(), Vec::new());
    let mut covered: Option<u64> = None;
    for part in parts {
        if covered.is_some_and(|c| part.last <= c) {
            superseded.push(part);
        } else {
            if covered.is_some_and(|c| part.first <= c) {
                // Only two compactors at once could do this; one holds the log's lock.
                tracing::error!(
                    file = %part.path.display(),
                    "lake file overlaps another's flushes without containing them; both are read"
                );
            }
            covered = Some(part.last);
            live.push(part);
        }
    }
    (live, superseded)
}

/// Part files by folder.
pub(crate) type Folders = BTreeMap<PathBuf, Vec<Part>>;

/// The part files among `stored` (files with their sizes), by folder.
pub(crate) fn parts_by_folder(stored: Vec<(PathBuf, u64)>) -> Folders {
    let mut folders: BTreeMap<PathBuf, Vec<Part>> = BTreeMap::new();
    for (path, bytes) in stored {
        let Some((first, last)) = seq_range_of(&path) else {
            continue;
        };
        let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
        folders.entry(folder).or_default().push(Part {
            path,
            first,
            last,
            bytes,
        });
    }
    folders
}

/// Part files under `root` that readers use (not superseded) holding flushes up to `max_seq`.
pub(crate) fn live_files(folders: &Folders, max_seq: u64) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for parts in folders.values() {
        // Files past `max_seq` go first: a merged file that holds a later flush must not hide
        // the flush files a reader at `max_seq` still needs.
        let parts = parts
            .iter()
            .filter(|p| p.last <= max_seq)
            .cloned()
            .collect();
        let (live, _) = split_superseded(parts);
        out.extend(live.into_iter().map(|p| p.path));
    }
    out.sort();
    out
}

/// The part files among `stored` that a merged file supersedes.
fn superseded_files(stored: Vec<(PathBuf, u64)>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (_, parts) in parts_by_folder(stored) {
        out.extend(split_superseded(parts).1.into_iter().map(|p| p.path));
    }
    out
}

/// The `date=` of a partition folder, if it has one.
pub(crate) fn folder_date(folder: &Path) -> Option<Date> {
    folder.ancestors().find_map(|dir| {
        let name = dir.file_name()?.to_str()?;
        Date::parse(name.strip_prefix("date=")?).ok()
    })
}

/// Groups of neighbouring files in one folder worth merging, in sequence order.
fn plan(live: &[Part], closed: bool, policy: CompactPolicy) -> Vec<Vec<Part>> {
    // In an open day, merged files are left for the day's close: merging them again on
    // every round would rewrite the day over and over.
    let eligible = |p: &Part| p.bytes < policy.target_bytes && (closed || !p.merged());
    let min_files = if closed { 2 } else { policy.min_files.max(2) };
    let mut groups = Vec::new();
    let mut group: Vec<Part> = Vec::new();
    let mut bytes = 0u64;
    let close = |group: &mut Vec<Part>, groups: &mut Vec<Vec<Part>>| {
        if group.len() >= min_files {
            groups.push(std::mem::take(group));
        }
        group.clear();
    };
    for part in live {
        if !eligible(part) {
            close(&mut group, &mut groups);
            bytes = 0;
            continue;
        }
        if !group.is_empty() && bytes + part.bytes > policy.target_bytes {
            close(&mut group, &mut groups);
            bytes = 0;
        }
        bytes += part.bytes;
        group.push(part.clone());
    }
    close(&mut group, &mut groups);
    groups
}

/// The columns a table's merged files are sorted by.
fn sort_key(table: Table) -> &'static [&'static str] {
    match table {
        Table::Trades | Table::Quotes => &["symbol", "ts_event"],
        Table::Bars => &["symbol", "interval", "start"],
        Table::DailyMetrics => &["symbol", "date"],
        Table::Alerts => &["symbol", "ts"],
        Table::Dlq => &["ts"],
        Table::AlertDeliveries => &["ts", "alert_id"],
    }
}

impl Lake {
    /// Merges small part files of flushes up to `committed_seq`. Days before `today` are
    /// closed: each becomes as few files as `policy.target_bytes` allows. Today's folders
    /// are merged once `policy.min_files` flush files have gathered.
    ///
    /// # Errors
    /// A file cannot be read, written or removed. A failure while merging leaves every file
    /// as it was; one while renaming or deleting leaves what readers skip and recovery
    /// removes.
    pub fn compact(
        &self,
        committed_seq: u64,
        today: Date,
        policy: CompactPolicy,
    ) -> Result<CompactReport> {
        let mut report = CompactReport::default();
        let mut written: Vec<(PathBuf, PathBuf)> = Vec::new();
        let merged = self.merge_all(committed_seq, today, policy, &mut report, &mut written);
        if let Err(e) = merged {
            for (tmp, _) in &written {
                let _ = fs::remove_file(tmp);
            }
            if self.remote().is_some() {
                // Merged files already stored supersede their inputs: delete those now
                // rather than at the next start.
                let _ = self.delete_superseded();
            }
            return Err(e);
        }
        if report.outputs == 0 {
            return Ok(report);
        }
        if !written.is_empty() {
            // Each merged file's data must be durable before its name supersedes anything.
            self.sync()?;
            let renamed = written
                .iter()
                .try_for_each(|(tmp, path)| fs::rename(tmp, path).map_err(io(path)));
            self.changed();
            renamed?;
        }
        self.delete_superseded()?;
        Ok(report)
    }

    /// Writes every merge the policy calls for as a temporary file, listed in `written`
    /// with its final name; on object storage, stores each under its final name.
    fn merge_all(
        &self,
        committed_seq: u64,
        today: Date,
        policy: CompactPolicy,
        report: &mut CompactReport,
        written: &mut Vec<(PathBuf, PathBuf)>,
    ) -> Result<()> {
        for table in Table::ALL {
            let stored = self.stored(&self.table_dir(table))?;
            for (folder, parts) in parts_by_folder(stored) {
                let parts = parts
                    .into_iter()
                    .filter(|p| p.last <= committed_seq)
                    .collect();
                let (live, _) = split_superseded(parts);
                let closed = folder_date(&folder).is_some_and(|d| d < today);
                for group in plan(&live, closed, policy) {
                    let (first, last) = (group[0].first, group[group.len() - 1].last);
                    let name = format!("part-{last:012}-c{first:012}.parquet");
                    let sorted = self.merge(table, &group)?;
                    let path = folder.join(&name);
                    match self.remote() {
                        Some(remote) => {
                            let bytes = parquet_bytes(&path, table, &sorted, self.props())?;
                            remote.put_all(vec![(path, bytes)])?;
                            self.changed();
                        }
                        None => {
                            let tmp = folder.join(format!(".{name}.tmp"));
                            written.push((tmp.clone(), path));
                            write_parquet(&tmp, table, &sorted, self.props())?;
                        }
                    }
                    report.rows += sorted.num_rows();
                    report.inputs += group.len();
                    report.outputs += 1;
                }
            }
        }
        Ok(())
    }

    /// The rows of `group` (neighbours in one folder), sorted.
    fn merge(&self, table: Table, group: &[Part]) -> Result<RecordBatch> {
        let schema = table.schema();
        let mut batches = Vec::new();
        for part in group {
            for batch in self.batches(&part.path)? {
                let batch =
                    batch
                        .and_then(|b| cast_to(&b, &schema))
                        .map_err(|source| Error::Arrow {
                            table: table.name(),
                            source,
                        })?;
                batches.push(batch);
            }
        }
        let arrow = |source| Error::Arrow {
            table: table.name(),
            source,
        };
        let all = concat_batches(&schema, &batches).map_err(arrow)?;
        drop(batches);
        sort(table, &all).map_err(arrow)
    }

    /// Deletes part files a merged file supersedes. Returns how many.
    ///
    /// # Errors
    /// The tree cannot be read or a file cannot be removed.
    pub(crate) fn delete_superseded(&self) -> Result<usize> {
        let doomed = superseded_files(self.stored_tables()?);
        if doomed.is_empty() {
            return Ok(0);
        }
        // Every merged file must be durable before an input it replaces is deleted.
        self.sync()?;
        self.delete_files(&doomed)?;
        Ok(doomed.len())
    }
}

impl Lake {
    /// Retention: deletes the files of `tables` in days before `before`, except those
    /// holding a flush after `max_seq` (what a sink still catching up will read). Returns
    /// how many went.
    ///
    /// # Errors
    /// The tree cannot be read or a file cannot be removed; what was deleted stays deleted.
    pub fn expire(&self, tables: &[Table], before: Date, max_seq: u64) -> Result<usize> {
        let mut doomed = Vec::new();
        for table in tables {
            let stored = self.stored(&self.table_dir(*table))?;
            for (folder, parts) in parts_by_folder(stored) {
                if folder_date(&folder).is_some_and(|d| d < before) {
                    doomed.extend(
                        parts
                            .into_iter()
                            .filter(|p| p.last <= max_seq)
                            .map(|p| p.path),
                    );
                }
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        self.delete_files(&doomed)?;
        if self.remote().is_none() {
            // Folders left empty go too (a folder still holding files stays).
            let folders: std::collections::BTreeSet<&Path> =
                doomed.iter().filter_map(|p| p.parent()).collect();
            for folder in folders {
                let _ = fs::remove_dir(folder);
                if let Some(date) = folder.parent().filter(|d| folder_date(d).is_some()) {
                    let _ = fs::remove_dir(date);
                }
            }
            self.sync()?;
        }
        tracing::info!(files = doomed.len(), before = %before, "lake retention");
        Ok(doomed.len())
    }
}

fn sort(
    table: Table,
    batch: &RecordBatch,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let columns: Vec<SortColumn> = sort_key(table)
        .iter()
        .filter_map(|name| batch.column_by_name(name))
        .map(|values: &ArrayRef| SortColumn {
            values: std::sync::Arc::clone(values),
            options: None,
        })
        .collect();
    let indices = lexsort_to_indices(&columns, None)?;
    take_record_batch(batch, &indices)
}

#[cfg(test)]
mod tests;
