//! Gap repair: what a streaming source missed while it was disconnected or stopped, fetched
//! over the vendor's REST history and appended before the stream goes on, so the log holds
//! each event once and in time order.
//!
//! A source keeps the latest event time it passed on per symbol and kind ([`Marks`]), saved
//! in its state directory at most once a second and when it stops. When its subscription is
//! confirmed again (a reconnect, or a start with saved marks), each mark opens a gap from the
//! mark to that moment; events the stream sends meanwhile wait (`crate::ws`). The fetched
//! window includes its mark, so the events at the edge come again and processing drops them
//! as duplicates. Every gap is recorded in the source's ledger (`gaps.jsonl`): `detected`,
//! then `filled` with the events fetched, or `unfillable` with the reason (the vendor has no
//! history of that kind, or refused).
//!
//! A history that fails for a while (its retries outlasted: a server error, a dropped
//! connection) holds the stream: the connection is dropped and the next one repairs from
//! where this one stopped, for up to the source's `repair_hold`. Repaired events after the
//! stream went on would be late for processing (a final bar never changes), so holding is
//! the only way to keep them; past the hold the gap is recorded unfillable and the stream
//! goes on, since live data matters more than a complete past.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tickflow_core::codec::Batch;
use tickflow_core::source::{SourceContext, SourceError};
use tickflow_model::{BarInterval, Event, UnixNanos};

use crate::history::{self, Fetch, History, Request, What};

/// Where a source keeps what it needs across restarts: `<data_dir>/sources/<id>`.
pub fn state_dir(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("sources").join(id)
}

/// The latest event time passed on, per symbol and kind (`trades`, `1m`, …).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Marks {
    latest: BTreeMap<String, BTreeMap<String, UnixNanos>>,
    #[serde(skip)]
    saved_at: Option<Instant>,
    #[serde(skip)]
    dirty: bool,
    /// Since when the stream has been held for a history that fails (`Repair::hold`).
    #[serde(skip)]
    held_since: Option<Instant>,
}

impl Marks {
    /// Notes an event passed on; quotes are not repaired (no vendor here serves them).
    pub fn saw(&mut self, event: &Event) {
        let kind = match event {
            Event::Trade(_) => "trades",
            Event::Bar(b) => b.bar.interval.as_str(),
            Event::Quote(_) => return,
        };
        let ts = event.ts_event();
        let entry = self
            .latest
            .entry(event.symbol().as_str().to_string())
            .or_default()
            .entry(kind.to_string())
            .or_insert(ts);
        if ts >= *entry {
            *entry = ts;
            self.dirty = true;
        }
    }

    fn file(dir: &Path) -> PathBuf {
        dir.join("marks.json")
    }

    /// The marks a source saved, or none.
    pub fn load(dir: Option<&Path>) -> Self {
        dir.and_then(|d| std::fs::read(Self::file(d)).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Saves the marks if they changed and a second has passed (or `now_anyway`).
    pub fn save(&mut self, dir: Option<&Path>, now_anyway: bool) {
        let Some(dir) = dir else { return };
        let due = now_anyway || self.saved_at.is_none_or(|t| t.elapsed().as_secs() >= 1);
        if !(self.dirty && due) {
            return;
        }
        let tmp = dir.join("marks.json.tmp");
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default()))
            .and_then(|()| std::fs::rename(&tmp, Self::file(dir)));
        match written {
            Ok(()) => {
                self.dirty = false;
                self.saved_at = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot save the source's last event times; a restart repairs from an older one")
            }
        }
    }

    /// The latest time passed on for `symbol`'s `kind`.
    fn latest(&self, symbol: &str, kind: &str) -> Option<UnixNanos> {
        self.latest.get(symbol)?.get(kind).copied()
    }

    /// Every (symbol, kind, latest time).
    fn all(&self) -> Vec<(String, String, UnixNanos)> {
        self.latest
            .iter()
            .flat_map(|(symbol, kinds)| {
                kinds
                    .iter()
                    .map(move |(kind, ts)| (symbol.clone(), kind.clone(), *ts))
            })
            .collect()
    }
}

/// One gap's record in the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub source: String,
    pub symbol: String,
    /// `trades` or a bar interval.
    pub kind: String,
    #[serde(with = "rfc3339")]
    pub from: UnixNanos,
    #[serde(with = "rfc3339")]
    pub to: UnixNanos,
    /// `detected`, `filled` or `unfillable`.
    pub state: String,
    /// Events fetched (when filled).
    pub events: u64,
    pub detail: Option<String>,
    #[serde(with = "rfc3339")]
    pub recorded_at: UnixNanos,
}

/// Times in the ledger and the API as RFC 3339, readable as they are.
mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use tickflow_model::UnixNanos;

    pub(super) fn serialize<S: Serializer>(ts: &UnixNanos, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(ts)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UnixNanos, D::Error> {
        let text = String::deserialize(d)?;
        UnixNanos::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Gap {
    fn id(&self) -> (String, String, String, UnixNanos) {
        (
            self.source.clone(),
            self.symbol.clone(),
            self.kind.clone(),
            self.from,
        )
    }
}

fn ledger_file(dir: &Path) -> PathBuf {
    dir.join("gaps.jsonl")
}

fn record(dir: Option<&Path>, gap: &Gap) {
    metrics::counter!("tickflow_gaps_total", "source" => gap.source.clone(), "state" => gap.state.clone())
        .increment(1);
    let Some(dir) = dir else { return };
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ledger_file(dir))?;
        let mut line = serde_json::to_vec(gap).map_err(std::io::Error::other)?;
        line.push(b'\n');
        f.write_all(&line)
    });
    if let Err(e) = written {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the gap ledger");
    }
}

/// Every gap of every source under `data_dir`, each in its latest state, oldest first.
pub fn read_all(data_dir: &Path) -> Vec<Gap> {
    let mut latest: BTreeMap<(String, String, String, UnixNanos), Gap> = BTreeMap::new();
    let Ok(dirs) = std::fs::read_dir(data_dir.join("sources")) else {
        return Vec::new();
    };
    for dir in dirs.flatten() {
        let Ok(text) = std::fs::read_to_string(ledger_file(&dir.path())) else {
            continue;
        };
        // A line cut short by a crash is skipped.
        for gap in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Gap>(l).ok())
        {
            latest.insert(gap.id(), gap);
        }
    }
    let mut gaps: Vec<Gap> = latest.into_values().collect();
    gaps.sort_by_key(|g| (g.from, g.symbol.clone()));
    gaps
}

/// The longest gap repaired on reconnecting: a weekend and a day. A longer one (a source
/// stopped for a week) is recorded as unfillable, for `tickflow backfill`: fetching it would
/// hold the stream for as long as the vendor's rate limit takes.
pub const MAX_REPAIR: std::time::Duration = std::time::Duration::from_secs(3 * 86_400);

/// How long a stream is held, by default, for a history that fails: long enough for a
/// vendor's REST to come back from a restart, short enough that alerts are not minutes late.
pub const DEFAULT_HOLD: std::time::Duration = std::time::Duration::from_secs(300);

/// A source's gap repair: its vendor history and how long the stream may wait for it.
#[derive(Clone, Debug)]
pub struct Repair {
    pub history: Arc<dyn History>,
    /// How long the stream is held for a history that fails; zero records such a gap
    /// unfillable at once.
    pub hold: std::time::Duration,
}

/// What a repair came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Repaired {
    /// Every gap was filled or recorded unfillable: the stream goes on.
    Done,
    /// The history failed within the hold, with this error: the connection is dropped, and
    /// the next one repairs from where this one stopped.
    Held(String),
    /// The source was stopped during the repair: nothing streamed since may be passed on, or
    /// its marks would pass over the gap not yet fetched.
    Stopped,
}

impl Repair {
    /// The repair of a source whose `repair_gaps` is `enabled`, holding the stream up to
    /// `hold`, from the history `history` makes; `None` when it is off.
    ///
    /// # Errors
    /// The history client could not be set up.
    pub fn when<H: History + 'static>(
        enabled: bool,
        hold: std::time::Duration,
        history: impl FnOnce() -> Result<H, String>,
    ) -> Result<Option<Repair>, String> {
        if !enabled {
            return Ok(None);
        }
        Ok(Some(Repair {
            history: Arc::new(history()?),
            hold,
        }))
    }

    /// Fills every gap from the marks to `until` (when the subscription was confirmed).
    ///
    /// # Errors
    /// The log's only: a vendor that cannot fill a gap leaves it recorded as unfillable, or
    /// holds the stream ([`Repaired::Held`]).
    pub async fn fill(
        &self,
        ctx: &SourceContext,
        marks: &mut Marks,
        until: UnixNanos,
    ) -> Result<Repaired, SourceError> {
        let dir = ctx.state_dir().map(Path::to_path_buf);
        let mut batch = Batch::default();
        for (symbol, kind, from) in marks.all() {
            if from >= until {
                continue;
            }
            let what = if kind == "trades" {
                What::Trades
            } else {
                match kind.parse::<BarInterval>() {
                    Ok(i) => What::Bars(i),
                    Err(_) => continue,
                }
            };
            let mut gap = Gap {
                source: ctx.id().to_string(),
                symbol: symbol.clone(),
                kind: kind.clone(),
                from,
                to: until,
                state: "detected".into(),
                events: 0,
                detail: None,
                recorded_at: UnixNanos::now(),
            };
            record(dir.as_deref(), &gap);
            let too_long = until.0 - from.0 > MAX_REPAIR.as_nanos() as i64;
            if too_long || !self.history.serves(what) {
                gap.state = "unfillable".into();
                gap.detail = Some(if too_long {
                    format!(
                        "longer than {} days: fetch it with tickflow backfill",
                        MAX_REPAIR.as_secs() / 86_400
                    )
                } else {
                    format!("the vendor's history has no {kind}")
                });
                gap.recorded_at = UnixNanos::now();
                record(dir.as_deref(), &gap);
                continue;
            }
            let request = Request {
                symbol: symbol.clone(),
                what,
                from,
                to: until,
            };
            let mut appended = 0u64;
            let fetched = tokio::select! {
                () = ctx.stopped() => return Ok(Repaired::Stopped),
                fetched = history::fetch(self.history.as_ref(), &request, |events| {
                    batch.clear();
                    for e in &events {
                        batch.push(e);
                    }
                    ctx.append(&batch)?;
                    // Marked page by page, once in the log: nothing of a long gap is held
                    // here, and a repair cut short resumes after what it appended.
                    for e in &events {
                        marks.saw(e);
                    }
                    appended += events.len() as u64;
                    Ok::<(), SourceError>(())
                }) => fetched,
            };
            match fetched {
                Ok(n) => {
                    gap.state = "filled".into();
                    gap.events = n;
                }
                Err(Fetch::Sink(e)) => return Err(e),
                Err(Fetch::Vendor(e)) if e.is_transient() && !self.held_too_long(marks) => {
                    // What was appended is filled up to the mark; the next connection's gap
                    // starts there (the same gap again when nothing was).
                    if appended > 0 {
                        gap.state = "filled".into();
                        gap.events = appended;
                        gap.to = marks.latest(&symbol, &kind).unwrap_or(from);
                    }
                    gap.detail = Some(format!(
                        "the history failed; holding the stream and trying again: {e}"
                    ));
                    gap.recorded_at = UnixNanos::now();
                    tracing::warn!(source = ctx.id(), symbol, kind, error = %e, "gap repair failed; holding the stream");
                    record(dir.as_deref(), &gap);
                    marks.save(dir.as_deref(), true);
                    let error: String = e.to_string().chars().take(300).collect();
                    return Ok(Repaired::Held(format!("{symbol} {kind}: {error}")));
                }
                Err(Fetch::Vendor(e)) => {
                    gap.state = "unfillable".into();
                    gap.events = appended;
                    gap.detail = Some(match marks.held_since {
                        Some(since) if e.is_transient() && !self.hold.is_zero() => format!(
                            "{e} (the stream was held {}s for it)",
                            since.elapsed().as_secs()
                        ),
                        _ => e.to_string(),
                    });
                }
            }
            gap.recorded_at = UnixNanos::now();
            tracing::info!(
                source = ctx.id(),
                symbol,
                kind,
                state = gap.state,
                events = gap.events,
                "gap"
            );
            record(dir.as_deref(), &gap);
        }
        marks.held_since = None;
        marks.save(dir.as_deref(), true);
        Ok(Repaired::Done)
    }

    /// Whether the stream has waited its hold for the history; starts the hold when not held.
    fn held_too_long(&self, marks: &mut Marks) -> bool {
        marks.held_since.get_or_insert_with(Instant::now).elapsed() >= self.hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickflow_model::{Price, Qty, Symbol, Trade};

    fn trade(symbol: &str, ts: i64) -> Event {
        Event::Trade(Trade {
            symbol: Symbol::parse(symbol).unwrap(),
            ts_event: UnixNanos(ts),
            ts_recv: UnixNanos(ts),
            price: Price::parse("1").unwrap(),
            size: Qty::parse("1").unwrap(),
            trade_id: None,
            exchange: None,
            source: Arc::from("s"),
            feed: Arc::from("s:f"),
            seq: None,
        })
    }

    #[test]
    fn marks_keep_the_latest_time_per_symbol_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut marks = Marks::default();
        marks.saw(&trade("AAPL", 20));
        marks.saw(&trade("AAPL", 10));
        marks.saw(&trade("BTC-USD", 5));
        marks.save(Some(dir.path()), true);
        let again = Marks::load(Some(dir.path()));
        assert_eq!(
            again.all(),
            [
                ("AAPL".to_string(), "trades".to_string(), UnixNanos(20)),
                ("BTC-USD".to_string(), "trades".to_string(), UnixNanos(5)),
            ]
        );
    }

    #[test]
    fn the_ledger_keeps_each_gaps_latest_state_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_dir(dir.path(), "alpaca");
        let mut gap = Gap {
            source: "alpaca".into(),
            symbol: "AAPL".into(),
            kind: "trades".into(),
            from: UnixNanos(1),
            to: UnixNanos(2),
            state: "detected".into(),
            events: 0,
            detail: None,
            recorded_at: UnixNanos(3),
        };
        record(Some(&state), &gap);
        gap.state = "filled".into();
        gap.events = 4;
        record(Some(&state), &gap);
        std::fs::OpenOptions::new()
            .append(true)
            .open(ledger_file(&state))
            .and_then(|mut f| f.write_all(b"{\"source\":\"alp"))
            .unwrap();
        let gaps = read_all(dir.path());
        assert_eq!(gaps, [gap]);
    }

    /// A vendor that must not be asked.
    #[derive(Debug)]
    struct NotAsked(crate::rest::Rest);

    impl History for NotAsked {
        fn serves(&self, _: What) -> bool {
            true
        }
        fn first_url(&self, _: &Request) -> String {
            panic!("a gap this long is not fetched")
        }
        fn read_page(
            &self,
            _: &str,
            _: &Request,
            _: UnixNanos,
        ) -> Result<crate::rest::Page, String> {
            panic!("a gap this long is not fetched")
        }
        fn rest(&self) -> &crate::rest::Rest {
            &self.0
        }
    }

    /// A vendor whose history cannot be reached.
    #[derive(Debug)]
    struct Unreachable(crate::rest::Rest);

    impl History for Unreachable {
        fn serves(&self, _: What) -> bool {
            true
        }
        fn first_url(&self, _: &Request) -> String {
            // Nothing listens on port 1: the connection is refused.
            "http://127.0.0.1:1/v2/stocks/trades".into()
        }
        fn read_page(
            &self,
            _: &str,
            _: &Request,
            _: UnixNanos,
        ) -> Result<crate::rest::Page, String> {
            unreachable!("no page is read")
        }
        fn rest(&self) -> &crate::rest::Rest {
            &self.0
        }
    }

    #[derive(Debug)]
    struct NoLog;

    impl tickflow_core::source::Append for NoLog {
        fn append(&self, _: &str, _: &Batch) -> Result<std::ops::Range<u64>, SourceError> {
            Err("nothing is appended".into())
        }
    }

    #[test]
    fn a_gap_longer_than_the_limit_is_left_for_backfill() {
        let dir = tempfile::tempdir().unwrap();
        let (_stop, ctx) = context(dir.path());
        let rest = crate::rest::Rest::new(
            "alpaca",
            &[],
            Arc::new(crate::rest::Limiter::new(1)),
            crate::rest::Retry::default(),
        )
        .unwrap();
        let repair = Repair {
            history: Arc::new(NotAsked(rest)),
            hold: DEFAULT_HOLD,
        };
        let mut marks = Marks::default();
        marks.saw(&trade("AAPL", 0));
        let until = UnixNanos(MAX_REPAIR.as_nanos() as i64 + 1);
        let outcome = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(repair.fill(&ctx, &mut marks, until))
            .unwrap();
        assert_eq!(outcome, Repaired::Done);
        let gaps = read_all(dir.path());
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].state, "unfillable");
        assert!(
            gaps[0]
                .detail
                .as_deref()
                .unwrap()
                .contains("tickflow backfill")
        );
    }

    fn context(dir: &Path) -> (tokio::sync::watch::Sender<bool>, SourceContext) {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let ctx = SourceContext::new(
            "alpaca",
            Arc::new(NoLog),
            Arc::new(tickflow_core::metrics::Metrics::default()),
            stop_rx,
        )
        .with_state_dir(dir.join("sources/alpaca"));
        (stop, ctx)
    }

    #[test]
    fn a_failing_history_holds_the_stream_until_the_hold_is_spent() {
        let dir = tempfile::tempdir().unwrap();
        let (_stop, ctx) = context(dir.path());
        let rest = crate::rest::Rest::new(
            "alpaca",
            &[],
            Arc::new(crate::rest::Limiter::new(1_000)),
            crate::rest::Retry {
                attempts: 1,
                ..crate::rest::Retry::default()
            },
        )
        .unwrap();
        let history: Arc<dyn History> = Arc::new(Unreachable(rest));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut marks = Marks::default();
        marks.saw(&trade("AAPL", 1_000));
        let holding = Repair {
            history: Arc::clone(&history),
            hold: std::time::Duration::from_secs(3_600),
        };
        for until in [2_000, 3_000] {
            let outcome = rt
                .block_on(holding.fill(&ctx, &mut marks, UnixNanos(until)))
                .unwrap();
            assert!(
                matches!(&outcome, Repaired::Held(e) if e.contains("AAPL trades") && e.contains("127.0.0.1:1")),
                "{outcome:?}"
            );
        }
        // Held twice from the same mark: one gap, still being fetched, saying why.
        let gaps = read_all(dir.path());
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0].state, "detected");
        assert_eq!(gaps[0].to, UnixNanos(3_000));
        assert!(
            gaps[0]
                .detail
                .as_deref()
                .unwrap()
                .contains("holding the stream"),
            "{gaps:?}"
        );

        // The hold spent: recorded unfillable, and the stream goes on.
        let spent = Repair {
            history,
            hold: std::time::Duration::ZERO,
        };
        let outcome = rt
            .block_on(spent.fill(&ctx, &mut marks, UnixNanos(4_000)))
            .unwrap();
        assert_eq!(outcome, Repaired::Done);
        let gaps = read_all(dir.path());
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0].state, "unfillable");
        assert!(
            gaps[0]
                .detail
                .as_deref()
                .unwrap()
                .contains("gave up after 1 tries"),
            "{gaps:?}"
        );
        assert_eq!(
            marks.held_since, None,
            "a new hold starts with the next failure"
        );

        // Stopped during a repair: said so, so the caller passes nothing streamed on.
        let (stop, ctx) = context(dir.path());
        stop.send(true).unwrap();
        let outcome = rt
            .block_on(holding.fill(&ctx, &mut marks, UnixNanos(5_000)))
            .unwrap();
        assert_eq!(outcome, Repaired::Stopped);
    }
}
