//! File replay: trades and quotes from NDJSON, CSV or Parquet files (the lake's own included)
//! or Databento DBN files (`crate::databento`), fed back in event-time order, as fast as
//! possible or at the recorded pace × `speed`.
//!
//! A path is a file or a folder searched for `*.parquet`, `*.csv`, `*.ndjson`, `*.jsonl`,
//! `*.json`, `*.dbn` and `*.dbn.zst`. Files are read one day at a time (the day in a `date=YYYY-MM-DD` folder or a
//! `YYYY-MM-DD` file name, as the lake and the CSV sink write them), and each day's events are
//! sorted by event time, so a whole lake replays in bounded memory and builds the same bars.
//! Files that name no day are read together, after the days.
//! Trades, quotes and a feed's bars (those with a `source`) are read; bars built from trades,
//! daily metrics and alerts are derived again. A feed's bar is replayed at its end, when it
//! was complete, not at its start.
//!
//! Events keep the `source`, `feed` and sequence numbers they were recorded with (NDJSON lines
//! without a `source` get the replay's id), so their natural keys are the original ones. Their
//! receive time is the moment of replay. A line or row that cannot be read becomes a rejected
//! record: the DLQ keeps it with the file, line and reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tickflow_core::codec::{Batch, Rejected};
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_lake::{Rows, Table};
use tickflow_model::{Bar, Event, FedBar, UnixNanos};

use crate::Error;

/// Events per appended batch when replaying as fast as possible.
const BATCH: usize = 8192;
/// The most of an unreadable input kept in the DLQ: enough to see what it was.
const MAX_PAYLOAD: usize = 64 * 1024;

/// One thing read from a file: an event, or input that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Event(Event),
    Unreadable {
        /// `file:line`, or `file` when a whole file failed.
        place: String,
        error: String,
        payload: String,
    },
}

/// The files under `path`, grouped by day (see the module docs), days in order.
///
/// # Errors
/// The path does not exist or a folder cannot be listed.
pub fn plan(path: &Path) -> Result<Vec<Vec<PathBuf>>, Error> {
    let mut files = Vec::new();
    collect(path, &mut files)?;
    if files.is_empty() {
        return Err(Error::Replay(format!(
            "{}: no .parquet, .csv, .ndjson, .jsonl, .json, .dbn or .dbn.zst files",
            path.display()
        )));
    }
    let mut days: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for file in files {
        days.entry(day_of(&file)).or_default().push(file);
    }
    Ok(days.into_values().collect())
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::Replay(format!("{}: {e}", path.display())))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::Replay(format!("{}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect(&entry, out)?;
        } else if format_of(&entry).is_some() {
            out.push(entry);
        }
    }
    Ok(())
}

/// The day a file holds; files that name none are read together, after the days, so that
/// trades and quotes kept in separate files still come in one event-time order.
fn day_of(file: &Path) -> String {
    let is_day = |s: &str| s.len() == 10 && tickflow_model::Date::parse(s).is_ok();
    for part in file.iter().rev() {
        let part = part.to_string_lossy();
        if let Some(day) = part.strip_prefix("date=").filter(|d| is_day(d)) {
            return day.to_string();
        }
    }
    match file.file_stem().map(|s| s.to_string_lossy()) {
        Some(stem) if is_day(&stem) => stem.to_string(),
        _ => "~".to_string(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Parquet,
    Csv,
    Json,
    Dbn,
}

fn format_of(path: &Path) -> Option<Format> {
    if crate::databento::is_dbn(path) {
        return Some(Format::Dbn);
    }
    match path.extension()?.to_str()? {
        "parquet" => Some(Format::Parquet),
        "csv" => Some(Format::Csv),
        "ndjson" | "jsonl" | "json" => Some(Format::Json),
        _ => None,
    }
}

/// Everything one day's files hold, events sorted by event time (stable, so equal times
/// keep their file order), unreadable input first.
///
/// # Errors
/// A file cannot be opened at all; what is inside it is never an error here but an
/// [`Item::Unreadable`].
pub fn read_day(files: &[PathBuf], default_source: &str) -> Result<Vec<Item>, Error> {
    let mut events = Vec::new();
    let mut unreadable = Vec::new();
    let now = UnixNanos::now();
    for file in files {
        match format_of(file) {
            Some(Format::Parquet) => read_parquet(file, now, &mut events, &mut unreadable),
            Some(Format::Csv) => read_csv(file, default_source, now, &mut events, &mut unreadable)?,
            Some(Format::Dbn) => {
                let source = std::sync::Arc::from(default_source);
                match crate::databento::read_file(file, &source, now) {
                    Ok(read) => events.extend(read.events),
                    // The records before the fault are not kept: the file is replayed whole
                    // or sent to the DLQ with the reason, never half.
                    Err(e) => unreadable.push(self::unreadable(
                        file.display().to_string(),
                        e,
                        String::new(),
                    )),
                }
            }
            Some(Format::Json) | None => {
                read_json(file, default_source, now, &mut events, &mut unreadable)?
            }
        }
    }
    events.sort_by_key(replay_time);
    unreadable.extend(events.into_iter().map(Item::Event));
    Ok(unreadable)
}

/// When an event happened: a feed's bar once its window had closed.
pub fn replay_time(event: &Event) -> UnixNanos {
    match event {
        Event::Bar(b) => b.bar.end,
        other => other.ts_event(),
    }
}

/// The ingest error of one line read on its own, without its "line 1: ": the file's own
/// line number goes in front instead.
fn line_error(e: &tickflow_core::Error) -> String {
    let message = e.to_string();
    match message.strip_prefix("line 1: ") {
        Some(rest) => rest.to_string(),
        None => message,
    }
}

/// When each event is due at the recorded pace × `speed`, counted from the first event.
#[derive(Debug)]
pub struct Pace {
    speed: f64,
    first_ts: Option<i64>,
    started: Instant,
}

impl Pace {
    /// A pace starting now.
    pub fn new(speed: f64) -> Self {
        Self {
            speed,
            first_ts: None,
            started: Instant::now(),
        }
    }

    /// When the event of time `ts_event` is due, if that is still ahead.
    pub fn due(&mut self, ts_event: UnixNanos) -> Option<Instant> {
        let first = *self.first_ts.get_or_insert(ts_event.0);
        let after =
            Duration::from_nanos((((ts_event.0 - first).max(0) as f64) / self.speed) as u64);
        (self.started.elapsed() < after).then(|| self.started + after)
    }
}

fn unreadable(place: String, error: impl ToString, mut payload: String) -> Item {
    if payload.len() > MAX_PAYLOAD {
        let mut end = MAX_PAYLOAD;
        while !payload.is_char_boundary(end) {
            end -= 1;
        }
        payload.truncate(end);
    }
    Item::Unreadable {
        place,
        error: error.to_string(),
        payload,
    }
}

fn read_parquet(file: &Path, now: UnixNanos, events: &mut Vec<Event>, bad: &mut Vec<Item>) {
    // The lake's layout names the table: lake/<table>/date=…/…; derived tables are skipped.
    let parts: Vec<&str> = file.iter().filter_map(|p| p.to_str()).collect();
    let lake_table = parts
        .windows(2)
        .find(|w| w[1].starts_with("date="))
        .map(|w| w[0]);
    let table = match lake_table {
        Some("trades") => Some(Table::Trades),
        Some("quotes") => Some(Table::Quotes),
        Some("bars") => Some(Table::Bars),
        Some(_) => return,
        None => None,
    };
    let mut rows = Rows::default();
    let read = match table {
        Some(table) => tickflow_lake::read_file(file, table, &mut rows),
        // Not in a lake's folders: a file of either table, told apart by its column names.
        None => tickflow_lake::read_file(file, Table::Trades, &mut rows).or_else(|as_trades| {
            rows = Rows::default();
            tickflow_lake::read_file(file, Table::Quotes, &mut rows).map_err(|_| as_trades)
        }),
    };
    if let Err(e) = read {
        bad.push(unreadable(file.display().to_string(), e, String::new()));
        return;
    }
    events.extend(rows.trades.into_iter().map(Event::Trade));
    events.extend(rows.quotes.into_iter().map(Event::Quote));
    events.extend(fed_bars(rows.bars, now));
}

/// The bars of `bars` a feed sent, as the events they came in as; built ones are left out.
fn fed_bars(bars: Vec<Bar>, now: UnixNanos) -> impl Iterator<Item = Event> {
    bars.into_iter().filter_map(move |bar| {
        let feed = bar.source.clone()?;
        Some(Event::Bar(FedBar {
            bar,
            ts_recv: now,
            feed,
        }))
    })
}

fn read_json(
    file: &Path,
    default_source: &str,
    now: UnixNanos,
    events: &mut Vec<Event>,
    bad: &mut Vec<Item>,
) -> Result<(), Error> {
    let bytes =
        std::fs::read(file).map_err(|e| Error::Replay(format!("{}: {e}", file.display())))?;
    // A stray byte that is not UTF-8 spoils its line, which the ingest rules then refuse with
    // the rest of the file read as usual.
    let text = String::from_utf8_lossy(&bytes);
    if text.trim_start().starts_with('[') {
        // A JSON array is taken whole, as HTTP ingest takes it.
        match tickflow_core::ingest::parse_body(&text, default_source, now) {
            Ok(parsed) => events.extend(parsed),
            Err(e) => bad.push(unreadable(file.display().to_string(), e, text.into_owned())),
        }
        return Ok(());
    }
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match tickflow_core::ingest::parse_body(line, default_source, now) {
            Ok(parsed) => events.extend(parsed),
            Err(e) => {
                let message = line_error(&e);
                bad.push(unreadable(
                    format!("{}:{}", file.display(), i + 1),
                    message,
                    line.to_string(),
                ));
            }
        }
    }
    Ok(())
}

/// CSV with a header naming the table's columns (as the CSV sink writes them): trades have
/// `price` and `size`, quotes `bid` and `ask`, bars `interval` and `open` (only rows with a
/// `source`, a feed's, are read). Each row is read as the ingest format reads an
/// event, so the same rules and messages apply; `ts_recv` is not read.
fn read_csv(
    file: &Path,
    default_source: &str,
    now: UnixNanos,
    events: &mut Vec<Event>,
    bad: &mut Vec<Item>,
) -> Result<(), Error> {
    let mut reader = csv::Reader::from_path(file)
        .map_err(|e| Error::Replay(format!("{}: {e}", file.display())))?;
    let header = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            bad.push(unreadable(file.display().to_string(), e, String::new()));
            return Ok(());
        }
    };
    let has = |name: &str| header.iter().any(|h| h == name);
    let kind = if has("price") && has("size") {
        "trade"
    } else if has("bid") && has("ask") {
        "quote"
    } else if has("interval") && has("open") && has("source") {
        "bar"
    } else {
        tracing::info!(file = %file.display(), "not trades or quotes; skipped");
        return Ok(());
    };
    for record in reader.records() {
        let (line, record) = match record {
            Ok(r) => (r.position().map_or(0, |p| p.line()), r),
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                bad.push(unreadable(
                    format!("{}:{line}", file.display()),
                    e,
                    String::new(),
                ));
                continue;
            }
        };
        let mut object = serde_json::Map::new();
        object.insert("type".into(), kind.into());
        let built_bar = kind == "bar"
            && header
                .iter()
                .zip(record.iter())
                .any(|(name, value)| name == "source" && value.is_empty());
        if built_bar {
            continue;
        }
        for (name, value) in header.iter().zip(record.iter()) {
            // What the table derives (a bar's end, whether it is final) is not input.
            let derived = ["ts_recv", "type", "end", "final"].contains(&name);
            if value.is_empty() || derived {
                continue;
            }
            let value = if name == "seq" || name == "trade_count" {
                value
                    .parse::<u64>()
                    .map_or_else(|_| serde_json::Value::from(value), serde_json::Value::from)
            } else {
                serde_json::Value::from(value)
            };
            object.insert(name.to_string(), value);
        }
        let json = serde_json::Value::Object(object).to_string();
        match tickflow_core::ingest::parse_body(&json, default_source, now) {
            Ok(parsed) => events.extend(parsed),
            Err(e) => {
                let message = line_error(&e);
                bad.push(unreadable(
                    format!("{}:{line}", file.display()),
                    message,
                    json,
                ));
            }
        }
    }
    Ok(())
}

/// Replays a file or folder as a source; see the module docs.
#[derive(Clone, Debug)]
pub struct ReplaySource {
    pub path: PathBuf,
    /// `None`: as fast as the log takes it; `Some(x)`: the recorded pace × x.
    pub speed: Option<f64>,
}

impl ReplaySource {
    fn run_blocking(&self, ctx: &SourceContext) -> Result<(), SourceError> {
        let days = plan(&self.path)?;
        let mut batch = Batch::with_capacity(BATCH);
        let started = Instant::now();
        let mut pace = self.speed.map(Pace::new);
        let (mut events, mut rejected) = (0u64, 0u64);
        for files in days {
            for item in read_day(&files, ctx.id())? {
                if ctx.is_stopping() {
                    return Ok(());
                }
                let now = UnixNanos::now();
                match item {
                    Item::Event(mut event) => {
                        if let Some(due) = pace.as_mut().and_then(|p| p.due(replay_time(&event))) {
                            flush(ctx, &mut batch)?;
                            pause_until(ctx, due);
                        }
                        set_recv(&mut event, now);
                        batch.push(&event);
                        events += 1;
                    }
                    Item::Unreadable {
                        place,
                        error,
                        payload,
                    } => {
                        let error = format!("{place}: {error}");
                        batch.push_rejected(&Rejected {
                            reason: tickflow_model::RejectReason::Malformed,
                            ts_recv: now,
                            source: ctx.id(),
                            error: &error,
                            payload: &payload,
                        });
                        rejected += 1;
                    }
                }
                if batch.len() >= BATCH {
                    flush(ctx, &mut batch)?;
                }
            }
            flush(ctx, &mut batch)?;
        }
        tracing::info!(source = ctx.id(), path = %self.path.display(), events, rejected, secs = started.elapsed().as_secs_f64(), "replay finished");
        Ok(())
    }
}

fn set_recv(event: &mut Event, now: UnixNanos) {
    match event {
        Event::Trade(t) => t.ts_recv = now,
        Event::Quote(q) => q.ts_recv = now,
        Event::Bar(b) => b.ts_recv = now,
    }
}

fn flush(ctx: &SourceContext, batch: &mut Batch) -> Result<(), SourceError> {
    if !batch.is_empty() {
        match ctx.append(batch) {
            Ok(_) => {}
            // Refused because the pipeline is stopping: the replay stops, it did not fail.
            Err(_) if ctx.is_stopping() => {}
            Err(e) => return Err(e),
        }
        batch.clear();
    }
    Ok(())
}

/// Sleeps in short steps until `due`, so a stop request is honoured quickly.
fn pause_until(ctx: &SourceContext, due: Instant) {
    while Instant::now() < due && !ctx.is_stopping() {
        std::thread::sleep(
            due.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
        );
    }
}

#[async_trait::async_trait]
impl Source for ReplaySource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        // File reads and paced sleeps: the pipeline runs each source on a thread of its own.
        self.run_blocking(&ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_spaces_events_by_their_recorded_times_over_the_speed() {
        // Slow enough that no stall of the test machine can make the second event due.
        let mut pace = Pace::new(0.01);
        assert_eq!(
            pace.due(UnixNanos(5_000_000_000)),
            None,
            "the first is due at once"
        );
        let due = pace
            .due(UnixNanos(25_000_000_000))
            .expect("20 s later, at 0.01x: 2,000 s");
        assert_eq!(due.duration_since(pace.started), Duration::from_secs(2000));
        assert_eq!(
            pace.due(UnixNanos(1)),
            None,
            "an earlier time is not waited for"
        );
    }

    #[test]
    fn files_are_grouped_by_their_day_and_undated_ones_together() {
        assert_eq!(
            day_of(Path::new(
                "lake/trades/date=2026-11-24/symbol=A/part-1-0.parquet"
            )),
            "2026-11-24"
        );
        assert_eq!(
            day_of(Path::new("backup/trades/2026-11-25.csv")),
            "2026-11-25"
        );
        assert_eq!(day_of(Path::new("x/trades.csv")), "~");
        assert_eq!(day_of(Path::new("x/quotes.ndjson")), "~");
    }
}
