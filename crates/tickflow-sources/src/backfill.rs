//! Backfill: a vendor's history for a set of symbols over a range of exchange dates, fetched
//! in chunks and appended like any source's events, so processing, the lake and the sinks
//! treat it as they treat a live feed.
//!
//! Resumable: after each chunk is durable in the log, the last date fetched per symbol is
//! written to a progress file, and a rerun starts after it. Idempotent: a rerun over the
//! same dates (`--restart`) re-sends rows that processing drops as duplicates (a feed's bars
//! by their key, trades by theirs within the lateness window), so nothing is stored twice.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use tickflow_core::codec::Batch;
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_model::{BarInterval, Event, UnixNanos};

use crate::calendar;
use crate::history::{self, Fetch, History, Request, What};

/// What a running backfill has done, for a progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    pub chunks_total: AtomicU64,
    pub chunks_done: AtomicU64,
    /// Chunks a previous run had already fetched.
    pub chunks_skipped: AtomicU64,
    pub events: AtomicU64,
}

/// A backfill to run.
#[derive(Clone, Debug)]
pub struct Backfill {
    pub history: Arc<dyn History>,
    /// As the vendor names them.
    pub symbols: Vec<String>,
    pub what: What,
    /// Exchange dates, both included.
    pub from: Date,
    pub to: Date,
    /// Where the last date fetched per symbol is kept; `None` keeps nothing.
    pub progress_file: Option<PathBuf>,
    pub progress: Arc<Progress>,
}

/// The progress file: per symbol, the last exchange date whose rows are in the log.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    what: String,
    done: BTreeMap<String, Date>,
}

impl Backfill {
    /// Days per request: a chunk is the unit of resumption, sized so a page or two holds it.
    fn chunk_days(&self) -> i64 {
        match self.what {
            What::Bars(BarInterval::D1) => 366,
            What::Bars(BarInterval::H1) => 31,
            What::Bars(BarInterval::M5 | BarInterval::M1) => 7,
            What::Bars(BarInterval::S1) | What::Trades => 1,
        }
    }

    /// The chunks of the range: `[first, last]` date pairs.
    pub fn chunks(&self) -> Vec<(Date, Date)> {
        let mut out = Vec::new();
        let mut start = self.from;
        while start <= self.to {
            let end = start
                .checked_add(jiff::Span::new().days(self.chunk_days() - 1))
                .unwrap_or(self.to)
                .min(self.to);
            out.push((start, end));
            match end.tomorrow() {
                Ok(next) => start = next,
                Err(_) => break,
            }
        }
        out
    }

    fn load(&self) -> Saved {
        let saved = self
            .progress_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice::<Saved>(&bytes).ok());
        match saved {
            Some(s) if s.what == self.what.as_str() => s,
            _ => Saved {
                what: self.what.as_str().to_string(),
                done: BTreeMap::new(),
            },
        }
    }

    fn save(&self, saved: &Saved) -> std::io::Result<()> {
        let Some(path) = &self.progress_file else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, path)
    }
}

impl Backfill {
    /// Runs the backfill, handing each page's events to `append`, which returns once they
    /// are durable (the log's append, or a running pipeline's acknowledgement); progress is
    /// saved only after that. Stops between requests once `stopping` says so.
    ///
    /// # Errors
    /// `append`'s, the vendor's, or writing the progress file.
    pub async fn run_into(
        &self,
        stopping: impl Fn() -> bool,
        mut append: impl FnMut(&[Event]) -> Result<(), SourceError>,
    ) -> Result<(), SourceError> {
        if !self.history.serves(self.what) {
            return Err(format!("this vendor's history has no {}", self.what.as_str()).into());
        }
        let mut saved = self.load();
        let chunks = self.chunks();
        let p = &self.progress;
        p.chunks_total.store(
            (chunks.len() * self.symbols.len()) as u64,
            Ordering::Relaxed,
        );
        for symbol in &self.symbols {
            for &(first, last) in &chunks {
                let done = saved.done.get(symbol).copied();
                if done.is_some_and(|done| done >= last) {
                    p.chunks_skipped.fetch_add(1, Ordering::Relaxed);
                    p.chunks_done.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // A chunk begun by an earlier run (or a window that moved on a day) goes on
                // after the last day done.
                let first = match done {
                    Some(done) if done >= first => done.tomorrow().unwrap_or(first),
                    _ => first,
                };
                if stopping() {
                    return Ok(());
                }
                let request = Request {
                    symbol: symbol.clone(),
                    what: self.what,
                    from: calendar::day_start(first),
                    to: UnixNanos(calendar::day_start(last.tomorrow().unwrap_or(last)).0 - 1),
                };
                let fetched =
                    history::fetch(self.history.as_ref(), &request, |events| append(&events)).await;
                match fetched {
                    Ok(n) => {
                        p.events.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(Fetch::Sink(e)) => return Err(e),
                    Err(Fetch::Vendor(e)) => {
                        return Err(format!("{symbol} {first}..{last}: {e}").into());
                    }
                }
                saved.done.insert(symbol.clone(), last);
                self.save(&saved)
                    .map_err(|e| format!("writing the backfill's progress: {e}"))?;
                p.chunks_done.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Source for Backfill {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let mut batch = Batch::default();
        self.run_into(
            || ctx.is_stopping(),
            |events| {
                batch.clear();
                for e in events {
                    batch.push(e);
                }
                ctx.append(&batch).map(|_| ())
            },
        )
        .await
    }
}
