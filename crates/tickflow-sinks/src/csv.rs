//! The CSV sink: one file per table and UTC day, `<dir>/<table>/<YYYY-MM-DD>.csv`, the header
//! written once, rows appended and fsynced.
//!
//! Exactly once across crashes, by an undo record: before a flush touches any file, the
//! length of every file it will append to is written to `pending.json`; after the appends are
//! durable, `position.json` records the flush. On open (and before any retry), a
//! `pending.json` for a flush past the position means a crash or failure came in between: each
//! file is cut back to its recorded length (or removed if the flush created it), so the flush
//! is written again whole. Rows are written as the lake stores them: times in RFC 3339 UTC
//! with nanoseconds, decimals exact with the fewest digits that show them.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tickflow_core::sink::{Flush, Sink, SinkError};
use tickflow_model::{Date, Rows};

use crate::{Error, Result};

/// The tables a CSV sink can keep, in the order `Rows` holds them.
pub const TABLES: [&str; 6] = ["trades", "quotes", "bars", "daily_metrics", "alerts", "dlq"];

const HEADERS: [&[&str]; 6] = [
    &[
        "symbol", "ts_event", "ts_recv", "price", "size", "trade_id", "exchange", "source", "feed",
        "seq",
    ],
    &[
        "symbol", "ts_event", "ts_recv", "bid", "bid_size", "ask", "ask_size", "source", "feed",
        "seq",
    ],
    &[
        "symbol",
        "interval",
        "start",
        "end",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "vwap",
        "trade_count",
        "final",
    ],
    &[
        "symbol",
        "date",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "volatility",
        "rolling_avg_5d",
        "daily_pct_change",
    ],
    &[
        "alert_id",
        "rule",
        "symbol",
        "ts",
        "value",
        "threshold",
        "message",
        "severity",
        "delivered_to",
    ],
    &["ts", "source", "offset", "reason", "error", "payload"],
];

/// What a CSV sink writes and where.
#[derive(Clone, Debug)]
pub struct CsvConfig {
    pub dir: PathBuf,
    /// Names from [`TABLES`]; the others are not written.
    pub tables: Vec<&'static str>,
    /// fsync files and records; off only for tests and benchmarks that accept losing the tail.
    pub fsync: bool,
}

/// A CSV sink; see the module docs.
#[derive(Debug)]
pub struct CsvSink {
    config: CsvConfig,
    position: Option<u64>,
}

/// `position.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Position {
    flush: u64,
}

/// `pending.json`: files a flush appends to, with their lengths before it (`None`: the flush
/// creates the file).
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    flush: u64,
    files: BTreeMap<String, Option<u64>>,
}

impl CsvSink {
    /// A sink over `config.dir`; nothing is touched until [`Sink::open`].
    pub fn new(config: CsvConfig) -> Self {
        Self {
            config,
            position: None,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.config.dir.join(name)
    }

    /// Reads the position and undoes a flush left half-written.
    fn recover(&mut self) -> Result<Option<u64>> {
        fs::create_dir_all(&self.config.dir).map_err(io(&self.config.dir))?;
        let position: Option<Position> = read_json(&self.path("position.json"))?;
        let position = position.map(|p| p.flush);
        let pending_path = self.path("pending.json");
        if let Some(pending) = read_json::<Pending>(&pending_path)? {
            if position.is_none_or(|p| pending.flush > p) {
                for (name, len) in &pending.files {
                    let path = self.path(name);
                    match len {
                        Some(len) => {
                            let file = OpenOptions::new()
                                .write(true)
                                .open(&path)
                                .map_err(io(&path))?;
                            file.set_len(*len).map_err(io(&path))?;
                            self.sync(&file, &path)?;
                        }
                        None => match fs::remove_file(&path) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(io(&path)(e)),
                        },
                    }
                }
                tracing::info!(sink = "csv", dir = %self.config.dir.display(), flush = pending.flush, files = pending.files.len(), "undid a half-written flush");
            }
            fs::remove_file(&pending_path).map_err(io(&pending_path))?;
            self.sync_dir(&self.config.dir)?;
        }
        self.position = position;
        Ok(position)
    }

    fn sync(&self, file: &File, path: &Path) -> Result<()> {
        if self.config.fsync {
            file.sync_all().map_err(io(path))?;
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        if self.config.fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        Ok(())
    }

    /// Replaces `name` atomically with `value` as JSON.
    fn put_json(&self, name: &str, value: &impl Serialize) -> Result<()> {
        let path = self.path(name);
        let tmp = self.path(&format!("{name}.tmp"));
        let text = serde_json::to_vec(value).map_err(|e| Error::Format(e.to_string()))?;
        let mut file = File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(&text).map_err(io(&tmp))?;
        self.sync(&file, &tmp)?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        self.sync_dir(&self.config.dir)
    }

    fn write_flush(&mut self, flush: &Flush) -> Result<()> {
        // A failed attempt may have left appends behind; undo them before writing again.
        self.recover()?;
        if self.position.is_some_and(|p| flush.seq <= p) {
            return Ok(());
        }
        let files = encode(&flush.rows, &self.config.tables)?;
        if !files.is_empty() {
            let mut pending = Pending {
                flush: flush.seq,
                files: BTreeMap::new(),
            };
            for name in files.keys() {
                let len = match fs::metadata(self.path(name)) {
                    Ok(m) => Some(m.len()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(io(&self.path(name))(e)),
                };
                pending.files.insert(name.clone(), len);
            }
            self.put_json("pending.json", &pending)?;
            for (name, rows) in &files {
                let path = self.path(name);
                let dir = path.parent().unwrap_or(&self.config.dir).to_path_buf();
                let new_dir = !dir.exists();
                fs::create_dir_all(&dir).map_err(io(&dir))?;
                let mut file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io(&path))?;
                if pending.files[name].unwrap_or(0) == 0 {
                    file.write_all(&rows.header).map_err(io(&path))?;
                }
                file.write_all(&rows.body).map_err(io(&path))?;
                self.sync(&file, &path)?;
                if pending.files[name].is_none() {
                    self.sync_dir(&dir)?;
                }
                if new_dir {
                    self.sync_dir(&self.config.dir)?;
                }
            }
        }
        self.put_json("position.json", &Position { flush: flush.seq })?;
        self.position = Some(flush.seq);
        // A stale pending.json is harmless (it is for a flush at or before the position).
        let _ = fs::remove_file(self.path("pending.json"));
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for CsvSink {
    async fn open(&mut self) -> Result<Option<u64>, SinkError> {
        Ok(self.recover()?)
    }

    async fn write(&mut self, flush: &Flush) -> Result<(), SinkError> {
        Ok(self.write_flush(flush)?)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// The bytes one flush appends to one file.
struct FileRows {
    header: Vec<u8>,
    body: Vec<u8>,
}

/// Rows of the kept tables as CSV, by file (`<table>/<date>.csv`).
fn encode(rows: &Rows, tables: &[&str]) -> Result<BTreeMap<String, FileRows>> {
    let mut files: BTreeMap<String, (usize, csv::Writer<Vec<u8>>)> = BTreeMap::new();
    let mut out = |table: usize, date: Date, record: &[String]| -> Result<()> {
        let name = format!("{}/{date}.csv", TABLES[table]);
        let (_, writer) = files
            .entry(name)
            .or_insert_with(|| (table, csv::Writer::from_writer(Vec::new())));
        writer
            .write_record(record)
            .map_err(|e| Error::Format(e.to_string()))
    };
    let keep = |t: usize| tables.contains(&TABLES[t]);
    let dec = |v: &dyn std::fmt::Display| v.to_string();
    let opt = |v: Option<String>| v.unwrap_or_default();
    if keep(0) {
        for t in &rows.trades {
            out(
                0,
                t.ts_event.date(),
                &[
                    t.symbol.to_string(),
                    t.ts_event.to_string(),
                    t.ts_recv.to_string(),
                    dec(&t.price.normalized()),
                    dec(&t.size.normalized()),
                    opt(t.trade_id.as_ref().map(|s| s.to_string())),
                    opt(t.exchange.as_ref().map(|s| s.to_string())),
                    t.source.to_string(),
                    t.feed.to_string(),
                    opt(t.seq.map(|s| s.to_string())),
                ],
            )?;
        }
    }
    if keep(1) {
        for q in &rows.quotes {
            out(
                1,
                q.ts_event.date(),
                &[
                    q.symbol.to_string(),
                    q.ts_event.to_string(),
                    q.ts_recv.to_string(),
                    dec(&q.bid.normalized()),
                    dec(&q.bid_size.normalized()),
                    dec(&q.ask.normalized()),
                    dec(&q.ask_size.normalized()),
                    q.source.to_string(),
                    q.feed.to_string(),
                    opt(q.seq.map(|s| s.to_string())),
                ],
            )?;
        }
    }
    if keep(2) {
        for b in &rows.bars {
            out(
                2,
                b.start.date(),
                &[
                    b.symbol.to_string(),
                    b.interval.to_string(),
                    b.start.to_string(),
                    b.end.to_string(),
                    dec(&b.open.normalized()),
                    dec(&b.high.normalized()),
                    dec(&b.low.normalized()),
                    dec(&b.close.normalized()),
                    dec(&b.volume.normalized()),
                    dec(&b.vwap.normalized()),
                    b.trade_count.to_string(),
                    b.is_final.to_string(),
                ],
            )?;
        }
    }
    if keep(3) {
        for m in &rows.daily_metrics {
            out(
                3,
                m.date,
                &[
                    m.symbol.to_string(),
                    m.date.to_string(),
                    dec(&m.open.normalized()),
                    dec(&m.high.normalized()),
                    dec(&m.low.normalized()),
                    dec(&m.close.normalized()),
                    dec(&m.volume.normalized()),
                    m.volatility.to_string(),
                    dec(&m.rolling_avg_5d.normalized()),
                    opt(m.daily_pct_change.map(|v| v.to_string())),
                ],
            )?;
        }
    }
    if keep(4) {
        for a in &rows.alerts {
            out(
                4,
                a.ts.date(),
                &[
                    a.alert_id.clone(),
                    a.rule.clone(),
                    a.symbol.to_string(),
                    a.ts.to_string(),
                    dec(&a.value.normalized()),
                    a.threshold.clone(),
                    a.message.clone(),
                    a.severity.to_string(),
                    a.delivered_to.clone(),
                ],
            )?;
        }
    }
    if keep(5) {
        for d in &rows.dlq {
            out(
                5,
                d.ts.date(),
                &[
                    d.ts.to_string(),
                    d.source.clone(),
                    opt(d.offset.map(|o| o.to_string())),
                    d.reason.to_string(),
                    d.error.clone(),
                    d.payload.clone(),
                ],
            )?;
        }
    }
    files
        .into_iter()
        .map(|(name, (table, writer))| {
            let mut header = csv::Writer::from_writer(Vec::new());
            header
                .write_record(HEADERS[table])
                .map_err(|e| Error::Format(e.to_string()))?;
            let header = header
                .into_inner()
                .map_err(|e| Error::Format(e.to_string()))?;
            let body = writer
                .into_inner()
                .map_err(|e| Error::Format(e.to_string()))?;
            Ok((name, FileRows { header, body }))
        })
        .collect()
}
