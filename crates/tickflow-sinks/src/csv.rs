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
use tickflow_model::{Date, Price, Rows};

use crate::{Error, Result};

/// The tables a CSV sink can keep, in the order `Rows` holds them.
pub const TABLES: [&str; 7] = [
    "trades",
    "quotes",
    "bars",
    "daily_metrics",
    "alerts",
    "dlq",
    "alert_deliveries",
];

const HEADERS: [&[&str]; 7] = [
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
        "source",
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
        "kind",
    ],
    &["ts", "source", "offset", "reason", "error", "payload"],
    &["alert_id", "notifier", "ts", "status", "attempts", "error"],
];

/// Columns a file may have been started with before a column was added: rows appended to
/// such a file keep its columns, so it stays readable to the end of its day.
const OLDER_HEADERS: [(&str, &[&str]); 1] = [(
    "alert_deliveries",
    &["alert_id", "notifier", "ts", "status", "attempts"],
)];

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
                    file.write_all(&rows.body).map_err(io(&path))?;
                } else {
                    let body = fit_to_header(&path, name, &rows.body)?;
                    file.write_all(&body).map_err(io(&path))?;
                }
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

/// `body` as rows of the file at `path`: as encoded, unless the file began with an older
/// header of its table, whose columns come first in the current one; then cut to those.
fn fit_to_header<'a>(
    path: &Path,
    name: &str,
    body: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>> {
    let table = name.split('/').next().unwrap_or_default();
    let Some((_, older)) = OLDER_HEADERS.iter().find(|(t, _)| *t == table) else {
        return Ok(body.into());
    };
    let mut first = String::new();
    let file = File::open(path).map_err(io(path))?;
    std::io::BufRead::read_line(&mut std::io::BufReader::new(file), &mut first)
        .map_err(io(path))?;
    if first.trim_end() != older.join(",") {
        return Ok(body.into());
    }
    let format = |e: csv::Error| Error::Format(e.to_string());
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(body);
    let mut writer = csv::Writer::from_writer(Vec::new());
    for record in reader.records() {
        let record = record.map_err(format)?;
        writer
            .write_record(record.iter().take(older.len()))
            .map_err(format)?;
    }
    Ok(writer
        .into_inner()
        .map_err(|e| Error::Format(e.to_string()))?
        .into())
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

/// One CSV buffer per (table, day), filled field by field: no string per field or row, and
/// no file name built per row.
struct Encoder {
    files: BTreeMap<(usize, Date), csv::Writer<Vec<u8>>>,
    /// Scratch text for a formatted field.
    field: String,
}

impl Encoder {
    fn writer(&mut self, table: usize, date: Date) -> &mut csv::Writer<Vec<u8>> {
        self.files
            .entry((table, date))
            .or_insert_with(|| csv::Writer::from_writer(Vec::new()))
    }
}

/// Writes one record's fields: text as it is, other values through `Display`, `None` as an
/// empty field.
macro_rules! record {
    ($enc:expr, $table:expr, $date:expr, [$($kind:ident $value:expr),* $(,)?]) => {{
        let enc: &mut Encoder = $enc;
        let mut field = std::mem::take(&mut enc.field);
        let w = enc.writer($table, $date);
        let mut done: csv::Result<()> = Ok(());
        $(
            if done.is_ok() {
                done = record!(@field w, field, $kind $value);
            }
        )*
        if done.is_ok() {
            done = w.write_record(None::<&[u8]>);
        }
        enc.field = field;
        done.map_err(|e| Error::Format(e.to_string()))
    }};
    (@field $w:ident, $buf:ident, text $value:expr) => {
        $w.write_field($value)
    };
    (@field $w:ident, $buf:ident, show $value:expr) => {{
        use std::fmt::Write as _;
        $buf.clear();
        let _ = write!($buf, "{}", $value);
        $w.write_field(&$buf)
    }};
    (@field $w:ident, $buf:ident, maybe $value:expr) => {{
        use std::fmt::Write as _;
        $buf.clear();
        if let Some(v) = $value {
            let _ = write!($buf, "{}", v);
        }
        $w.write_field(&$buf)
    }};
}

/// Rows of the kept tables as CSV, by file (`<table>/<date>.csv`).
fn encode(rows: &Rows, tables: &[&str]) -> Result<BTreeMap<String, FileRows>> {
    let mut enc = Encoder {
        files: BTreeMap::new(),
        field: String::with_capacity(64),
    };
    let keep = |t: usize| tables.contains(&TABLES[t]);
    if keep(0) {
        for t in &rows.trades {
            record!(&mut enc, 0, t.ts_event.date(), [
                text t.symbol.as_str(),
                show t.ts_event,
                show t.ts_recv,
                show t.price.normalized(),
                show t.size.normalized(),
                maybe t.trade_id.as_deref(),
                maybe t.exchange.as_deref(),
                text &*t.source,
                text &*t.feed,
                maybe t.seq,
            ])?;
        }
    }
    if keep(1) {
        for q in &rows.quotes {
            record!(&mut enc, 1, q.ts_event.date(), [
                text q.symbol.as_str(),
                show q.ts_event,
                show q.ts_recv,
                show q.bid.normalized(),
                show q.bid_size.normalized(),
                show q.ask.normalized(),
                show q.ask_size.normalized(),
                text &*q.source,
                text &*q.feed,
                maybe q.seq,
            ])?;
        }
    }
    if keep(2) {
        for b in &rows.bars {
            record!(&mut enc, 2, b.start.date(), [
                text b.symbol.as_str(),
                text b.interval.as_str(),
                show b.start,
                show b.end,
                show b.open.normalized(),
                show b.high.normalized(),
                show b.low.normalized(),
                show b.close.normalized(),
                show b.volume.normalized(),
                maybe b.vwap.map(Price::normalized),
                maybe b.trade_count,
                show b.is_final,
                maybe b.source.as_deref(),
            ])?;
        }
    }
    if keep(3) {
        for m in &rows.daily_metrics {
            record!(&mut enc, 3, m.date, [
                text m.symbol.as_str(),
                show m.date,
                show m.open.normalized(),
                show m.high.normalized(),
                show m.low.normalized(),
                show m.close.normalized(),
                show m.volume.normalized(),
                show m.volatility,
                show m.rolling_avg_5d.normalized(),
                maybe m.daily_pct_change,
            ])?;
        }
    }
    if keep(4) {
        for a in &rows.alerts {
            record!(&mut enc, 4, a.ts.date(), [
                text a.alert_id.as_str(),
                text a.rule.as_str(),
                text a.symbol.as_str(),
                show a.ts,
                show a.value.normalized(),
                text a.threshold.as_str(),
                text a.message.as_str(),
                text a.severity.as_str(),
                text a.delivered_to.as_str(),
                text a.kind.as_str(),
            ])?;
        }
    }
    if keep(5) {
        for d in &rows.dlq {
            record!(&mut enc, 5, d.ts.date(), [
                show d.ts,
                text d.source.as_str(),
                maybe d.offset,
                text d.reason.as_str(),
                text d.error.as_str(),
                text d.payload.as_str(),
            ])?;
        }
    }
    if keep(6) {
        for d in &rows.alert_deliveries {
            record!(&mut enc, 6, d.ts.date(), [
                text d.alert_id.as_str(),
                text d.notifier.as_str(),
                show d.ts,
                text d.status.as_str(),
                show d.attempts,
                maybe d.error.as_deref(),
            ])?;
        }
    }
    enc.files
        .into_iter()
        .map(|((table, date), writer)| {
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
            Ok((
                format!("{}/{date}.csv", TABLES[table]),
                FileRows { header, body },
            ))
        })
        .collect()
}
