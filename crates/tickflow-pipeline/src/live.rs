//! What queries see beyond published Parquet: rows processed but not yet flushed, rows in a
//! flush that has not completed, and bars still open.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tickflow_lake::{Lake, RecordBatch, Rows, Table};
use tickflow_model::{Alert, Bar};
use tickflow_process::{Processor, ProcessorConfig};

use crate::{Result, checkpoint};

/// Flushes handed to the flusher and not yet finished, at most: with one, the processor
/// fills one buffer while the flusher writes the other.
pub(crate) const MAX_IN_FLIGHT: usize = 1;

/// Spare flush buffers kept: with one flush in flight, the one it returns.
pub(crate) const MAX_SPARE: usize = 1;

/// Shared between the processor, the flusher and queries, behind one mutex.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Processed since the last flush began.
    pub(crate) pending: Rows,
    /// Handed to the flusher, not yet published.
    pub(crate) flushing: Vec<(u64, Arc<Rows>)>,
    /// The last flush whose files readers may use.
    pub(crate) published_seq: u64,
    /// The log offset that flush ends before: everything below it is in the lake.
    pub(crate) committed_offset: u64,
    /// Bars not yet final: refreshed at every flush, and a few times a second while
    /// queries read them.
    pub(crate) open_bars: Vec<Bar>,
    /// Whether a query read `open_bars` since the processor last refreshed them. With
    /// 100,000 symbols a refresh copies half a million bars, so nobody asking means no copy.
    pub(crate) open_bars_read: bool,
    /// Flushed buffers and their receive times, emptied, for the next flushes to refill: at
    /// a million ticks a second a fresh one faults in over a hundred megabytes each time.
    /// Up to [`MAX_SPARE`].
    pub(crate) spare: Vec<(Rows, Vec<i64>)>,
    /// Flushes handed to the flusher that it has not finished (written, published and
    /// its buffer returned); at most [`MAX_IN_FLIGHT`].
    pub(crate) in_flight: usize,
    /// Final bars and alerts since the live stream last took them ([`Live::view`]).
    pub(crate) recent: Recent,
    /// When the live stream last looked: the processor keeps [`Live::recent`] only while
    /// someone watches, so an unwatched pipeline pays nothing for it.
    pub(crate) watched_at: Option<std::time::Instant>,
}

/// How long after the live stream's last look the processor still keeps final bars and
/// alerts for it.
const WATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Final bars kept for the live stream between two looks; past this many the oldest are
/// dropped and counted (the stream then tells its clients to load history again).
const RECENT_BARS: usize = 100_000;
/// Alerts kept for the live stream between two looks.
const RECENT_ALERTS: usize = 10_000;

/// What the processor kept for the live stream since it last looked.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    bars: std::collections::VecDeque<Bar>,
    alerts: std::collections::VecDeque<Alert>,
    dropped: u64,
}

/// A look at the running pipeline for `GET /api/v1/stream`: the bars still open, and the
/// final bars and alerts produced since the previous look.
#[derive(Debug, Default, Clone)]
pub struct LiveView {
    pub open_bars: Vec<Bar>,
    pub final_bars: Vec<Bar>,
    pub alerts: Vec<Alert>,
    /// Final bars and alerts produced since the previous look but not kept (more than the
    /// stream can hold between two looks): a client's chart then misses some.
    pub dropped: u64,
}

impl LiveView {
    /// Adds another partition's view.
    pub(crate) fn extend(&mut self, other: LiveView) {
        self.open_bars.extend(other.open_bars);
        self.final_bars.extend(other.final_bars);
        self.alerts.extend(other.alerts);
        self.dropped += other.dropped;
    }
}

/// Everything one query reads: Parquet files per table and in-memory batches per table.
#[derive(Debug, Default)]
pub struct QueryInputs {
    pub files: Vec<(Table, Vec<PathBuf>)>,
    pub live: Vec<(Table, RecordBatch)>,
    /// [`crate::Pipeline::lake_generation`] when the files were listed.
    pub lake_generation: u64,
}

impl Live {
    /// Whether the live stream looked recently enough that the processor keeps final bars
    /// and alerts for it.
    pub(crate) fn watched(&self) -> bool {
        self.watched_at.is_some_and(|t| t.elapsed() < WATCH_TIMEOUT)
    }

    /// Keeps the final bars and alerts of `rows` (a processed batch) for the live stream.
    pub(crate) fn keep_recent(&mut self, rows: &Rows) {
        let recent = &mut self.recent;
        for bar in rows.bars.iter().filter(|b| b.is_final) {
            if recent.bars.len() == RECENT_BARS {
                recent.bars.pop_front();
                recent.dropped += 1;
            }
            recent.bars.push_back(bar.clone());
        }
        for alert in &rows.alerts {
            if recent.alerts.len() == RECENT_ALERTS {
                recent.alerts.pop_front();
                recent.dropped += 1;
            }
            recent.alerts.push_back(alert.clone());
        }
    }

    /// The live stream's look: takes what was kept since the previous one, with the open
    /// bars, and asks the processor to keep refreshing them.
    pub(crate) fn view(&mut self) -> LiveView {
        // A stream that stopped looking for a while missed what was produced meanwhile: what
        // is kept from before the lapse is old news, and its clients load history again.
        let lapsed = self.watched_at.is_some() && !self.watched();
        self.watched_at = Some(std::time::Instant::now());
        self.open_bars_read = true;
        let mut recent = std::mem::take(&mut self.recent);
        if lapsed {
            recent = Recent {
                dropped: 1,
                ..Recent::default()
            };
        }
        LiveView {
            open_bars: self.open_bars.clone(),
            final_bars: recent.bars.into(),
            alerts: recent.alerts.into(),
            dropped: recent.dropped,
        }
    }

    /// Batches of every in-memory row, taken under the caller's lock so that, together with
    /// the files up to `published_seq`, each row is seen exactly once.
    pub(crate) fn batches(&self) -> Result<Vec<(Table, RecordBatch)>> {
        self.batches_of(&Table::ALL)
    }

    /// [`Live::batches`] of `tables` only.
    pub(crate) fn batches_of(&self, tables: &[Table]) -> Result<Vec<(Table, RecordBatch)>> {
        let open = if tables.contains(&Table::Bars) {
            self.open_rows()
        } else {
            Rows::default()
        };
        let parts = std::iter::once(&self.pending)
            .chain(self.flushing.iter().map(|(_, r)| r.as_ref()))
            .chain(std::iter::once(&open));
        let mut out = Vec::new();
        for rows in parts {
            if rows.is_empty() {
                continue;
            }
            for &table in tables {
                let batch = tickflow_lake::to_batch(table, rows)?;
                if batch.num_rows() > 0 {
                    out.push((table, batch));
                }
            }
        }
        Ok(out)
    }

    /// The open bars, less those already final in memory: the open-bar snapshot lags
    /// processing a little, and a bar must not show both ways.
    fn open_rows(&self) -> Rows {
        let finals: std::collections::HashSet<_> = std::iter::once(&self.pending)
            .chain(self.flushing.iter().map(|(_, r)| r.as_ref()))
            .flat_map(|r| {
                r.bars
                    .iter()
                    .map(|b| (b.symbol.clone(), b.interval, b.start))
            })
            .collect();
        let bars = self
            .open_bars
            .iter()
            .filter(|b| !finals.contains(&(b.symbol.clone(), b.interval, b.start)))
            .cloned()
            .collect();
        Rows {
            bars,
            ..Default::default()
        }
    }
}

/// Published files of every table up to `seq`.
pub(crate) fn files(lake: &Lake, seq: u64) -> Result<Vec<(Table, Vec<PathBuf>)>> {
    Table::ALL
        .into_iter()
        .map(|t| Ok((t, lake.files(t, seq)?)))
        .collect()
}

/// Files of `table` in the whole (partitioned) `lake` that each partition in `published`
/// has published: up to its flush, listed afresh (other processes write them).
pub(crate) fn partitions_files(
    lake: &Lake,
    table: Table,
    published: &std::collections::BTreeMap<u32, u64>,
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for (p, seq) in published {
        files.extend(lake.partition_files(table, *p, *seq)?);
    }
    Ok(files)
}

/// Query inputs for a data directory with no pipeline running: the files of `lake` (the
/// data directory's, [`crate::open_lake`]) the checkpoint published, plus the bars it holds
/// open.
///
/// # Errors
/// A damaged checkpoint or an unreadable lake.
pub fn offline_inputs(data_dir: &Path, lake: &Lake) -> Result<QueryInputs> {
    if data_dir.join("partitions").is_dir() {
        return offline_partitions(data_dir, lake);
    }
    let Some(ckpt) = checkpoint::read(data_dir)? else {
        return Ok(QueryInputs::default());
    };
    let processor = Processor::with_state(ProcessorConfig::default(), ckpt.state);
    let live = Live {
        open_bars: processor.open_bars(),
        published_seq: ckpt.flush_seq,
        ..Default::default()
    };
    Ok(QueryInputs {
        files: files(lake, ckpt.flush_seq)?,
        live: live.batches()?,
        lake_generation: 0,
    })
}

/// [`offline_inputs`] of a partitioned log's data directory: each partition's published
/// files and open bars.
fn offline_partitions(data_dir: &Path, lake: &Lake) -> Result<QueryInputs> {
    let mut published = std::collections::BTreeMap::new();
    let mut live = Live::default();
    for entry in std::fs::read_dir(data_dir.join("partitions"))
        .map_err(|source| crate::Error::Io {
            context: format!("listing {}", data_dir.join("partitions").display()),
            source,
        })?
        .flatten()
    {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ckpt) = checkpoint::read(&entry.path())? {
            published.insert(p, ckpt.flush_seq);
            let processor = Processor::with_state(ProcessorConfig::default(), ckpt.state);
            live.open_bars.extend(processor.open_bars());
        }
    }
    let files = Table::ALL
        .into_iter()
        .map(|t| Ok((t, partitions_files(lake, t, &published)?)))
        .collect::<Result<_>>()?;
    Ok(QueryInputs {
        files,
        live: live.batches()?,
        lake_generation: 0,
    })
}

#[cfg(test)]
mod tests {
    use tickflow_model::{Bar, BarInterval, Price, Symbol, UnixNanos, Volume};

    use super::*;

    fn bar(is_final: bool) -> Bar {
        let p = Price::parse("1").unwrap();
        Bar {
            symbol: Symbol::parse("A").unwrap(),
            interval: BarInterval::S1,
            start: UnixNanos(0),
            end: UnixNanos(1_000_000_000),
            open: p,
            high: p,
            low: p,
            close: p,
            volume: Volume::default(),
            vwap: Some(p),
            trade_count: Some(1),
            is_final,
            source: None,
        }
    }

    #[test]
    fn the_live_stream_gets_final_bars_once_and_only_while_it_watches() {
        let rows = Rows {
            bars: vec![bar(true), bar(false)],
            ..Default::default()
        };
        let mut live = Live::default();
        assert!(!live.watched(), "nobody has looked yet");
        let first = live.view();
        assert!(first.final_bars.is_empty());
        assert!(live.watched());
        live.keep_recent(&rows);
        let second = live.view();
        assert_eq!(second.final_bars, vec![bar(true)], "only the final bar");
        assert!(
            live.view().final_bars.is_empty(),
            "each bar is handed over once"
        );
        live.watched_at = Some(std::time::Instant::now() - WATCH_TIMEOUT);
        assert!(!live.watched(), "a stream that stopped looking is not fed");
        live.keep_recent(&rows);
        let after_lapse = live.view();
        assert!(
            after_lapse.final_bars.is_empty(),
            "old news is not handed over"
        );
        assert_eq!(after_lapse.dropped, 1, "its clients are told to reload");
    }

    #[test]
    fn the_live_stream_counts_what_it_could_not_keep() {
        let mut live = Live::default();
        let rows = Rows {
            bars: vec![bar(true); RECENT_BARS + 3],
            ..Default::default()
        };
        live.keep_recent(&rows);
        let view = live.view();
        assert_eq!(view.final_bars.len(), RECENT_BARS);
        assert_eq!(view.dropped, 3);
    }

    #[test]
    fn a_bar_final_in_memory_is_not_also_shown_open() {
        let mut other = bar(false);
        other.start = UnixNanos(1_000_000_000);
        let live = Live {
            pending: Rows {
                bars: vec![bar(true)],
                ..Default::default()
            },
            open_bars: vec![bar(false), other],
            ..Default::default()
        };
        let rows: usize = live
            .batches()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t == Table::Bars)
            .map(|(_, b)| b.num_rows())
            .sum();
        assert_eq!(
            rows, 2,
            "the final bar and the other open bar, not the stale open copy"
        );
    }
}
