//! The ingest JSON format: one object per event, as NDJSON or a JSON array.
//!
//! ```json
//! {"type":"trade","symbol":"NVDA","ts_event":1763800000123456789,"price":"181.25","size":"100","trade_id":"71","seq":71}
//! {"type":"quote","symbol":"NVDA","ts_event":"2026-11-22T14:30:00.123Z","bid":"181.20","bid_size":"3","ask":"181.30","ask_size":"5"}
//! {"type":"bar","symbol":"NVDA","interval":"1d","start":"2026-11-21T05:00:00Z","open":"180.1","high":"183.25","low":"179.5","close":"182","volume":"123456789","vwap":"181.04","trade_count":991222}
//! ```
//! A bar is a feed's aggregate, received whole; `vwap` and `trade_count` are optional.
//! Prices and sizes may be strings or JSON numbers; numbers are parsed from their text, never
//! through `f64`. Unknown keys are rejected so a typo (`"prcie"`) is an error, not a silent
//! default; free-form data may ride in `"attrs"`, which is accepted and dropped.
//!
//! Parsing is syntactic: a negative price parses, and validation later sends it to the DLQ
//! with its reason. What cannot be parsed at all is refused with the line it is on.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use tickflow_model::{Bar, BarInterval, Event, FedBar, Price, Qty, Symbol, UnixNanos, Volume};

use crate::codec::{Batch, Decoder, QuoteRef, TradeRef};
use crate::{Error, Result};

mod scanner;

/// Longest accepted `trade_id`, `exchange`, `source` or `feed`.
const MAX_NAME_LEN: usize = 256;

/// The format as serde reads it: every valid object, and the error for every invalid one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    symbol: Cow<'a, str>,
    #[serde(borrow, default)]
    ts_event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    price: Option<&'a RawValue>,
    #[serde(borrow, default)]
    size: Option<&'a RawValue>,
    #[serde(borrow, default)]
    bid: Option<&'a RawValue>,
    #[serde(borrow, default)]
    bid_size: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ask: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ask_size: Option<&'a RawValue>,
    #[serde(borrow, default)]
    trade_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    exchange: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    feed: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    interval: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    start: Option<&'a RawValue>,
    #[serde(borrow, default)]
    open: Option<&'a RawValue>,
    #[serde(borrow, default)]
    high: Option<&'a RawValue>,
    #[serde(borrow, default)]
    low: Option<&'a RawValue>,
    #[serde(borrow, default)]
    close: Option<&'a RawValue>,
    #[serde(borrow, default)]
    volume: Option<&'a RawValue>,
    #[serde(borrow, default)]
    vwap: Option<&'a RawValue>,
    #[serde(default)]
    trade_count: Option<u64>,
    #[serde(borrow, default, rename = "attrs")]
    _attrs: Option<&'a RawValue>,
}

/// A bar's fields as text: only serde reads bars (they come a few per symbol and minute).
#[derive(Debug, Default, PartialEq)]
struct BarFields<'a> {
    interval: Option<Cow<'a, str>>,
    start: Option<Scalar<'a>>,
    open: Option<Scalar<'a>>,
    high: Option<Scalar<'a>>,
    low: Option<Scalar<'a>>,
    close: Option<Scalar<'a>>,
    volume: Option<Scalar<'a>>,
    vwap: Option<Scalar<'a>>,
    trade_count: Option<u64>,
}

/// A scalar field's text (a string's contents or a number's digits), or why it is neither.
type Scalar<'a> = std::result::Result<Cow<'a, str>, String>;

/// One object's fields as text, before any of them is interpreted. Both readers produce it:
/// [`scanner::scan`] for the common shape without allocating, serde for everything else.
#[derive(Debug, PartialEq)]
struct Fields<'a> {
    kind: Cow<'a, str>,
    symbol: Cow<'a, str>,
    ts_event: Scalar<'a>,
    price: Option<Scalar<'a>>,
    size: Option<Scalar<'a>>,
    bid: Option<Scalar<'a>>,
    bid_size: Option<Scalar<'a>>,
    ask: Option<Scalar<'a>>,
    ask_size: Option<Scalar<'a>>,
    trade_id: Option<Scalar<'a>>,
    exchange: Option<Cow<'a, str>>,
    source: Option<Cow<'a, str>>,
    feed: Option<Cow<'a, str>>,
    seq: Option<u64>,
    /// Set only when the object has a bar's keys.
    bar: Option<Box<BarFields<'a>>>,
}

impl<'a> Fields<'a> {
    /// No field read yet.
    fn empty() -> Self {
        Self {
            kind: Cow::Borrowed(""),
            symbol: Cow::Borrowed(""),
            ts_event: Ok(Cow::Borrowed("")),
            price: None,
            size: None,
            bid: None,
            bid_size: None,
            ask: None,
            ask_size: None,
            trade_id: None,
            exchange: None,
            source: None,
            feed: None,
            seq: None,
            bar: None,
        }
    }

    /// Reads one object into `self`: the scanner when it can, serde (and its error
    /// messages) otherwise.
    fn read(&mut self, text: &'a str) -> std::result::Result<(), String> {
        if !scanner::scan_into(text, self) {
            *self = Self::read_with_serde(text)?;
        }
        Ok(())
    }

    fn read_with_serde(text: &'a str) -> std::result::Result<Self, String> {
        let w: Wire<'a> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let scalar = |raw: Option<&'a RawValue>| raw.map(scalar_text);
        let bar = BarFields {
            interval: w.interval,
            start: scalar(w.start),
            open: scalar(w.open),
            high: scalar(w.high),
            low: scalar(w.low),
            close: scalar(w.close),
            volume: scalar(w.volume),
            vwap: scalar(w.vwap),
            trade_count: w.trade_count,
        };
        Ok(Self {
            kind: w.kind,
            symbol: w.symbol,
            ts_event: match w.ts_event {
                Some(raw) => scalar_text(raw),
                None => Err("missing".to_string()),
            },
            price: scalar(w.price),
            size: scalar(w.size),
            bid: scalar(w.bid),
            bid_size: scalar(w.bid_size),
            ask: scalar(w.ask),
            ask_size: scalar(w.ask_size),
            trade_id: scalar(w.trade_id),
            exchange: w.exchange,
            source: w.source,
            feed: w.feed,
            seq: w.seq,
            bar: (bar != BarFields::default()).then(|| Box::new(bar)),
        })
    }
}

/// Text of a JSON string or number, without going through f64.
fn scalar_text(raw: &RawValue) -> Scalar<'_> {
    let text = raw.get();
    if text.starts_with('"') {
        serde_json::from_str::<Cow<'_, str>>(text).map_err(|e| e.to_string())
    } else if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        Ok(Cow::Borrowed(text))
    } else {
        Err(format!("expected a string or number, got {text}"))
    }
}

fn field<'f>(
    raw: &'f Option<Scalar<'_>>,
    name: &str,
    kind: &str,
) -> std::result::Result<&'f str, String> {
    match raw {
        None => Err(format!("{kind} needs \"{name}\"")),
        Some(Ok(text)) => Ok(text),
        Some(Err(e)) => Err(format!("\"{name}\": {e}")),
    }
}

fn name<'f>(
    value: &'f Option<Cow<'_, str>>,
    key: &str,
) -> std::result::Result<Option<&'f str>, String> {
    match value.as_deref() {
        Some(v) if v.len() > MAX_NAME_LEN => {
            Err(format!("\"{key}\" is longer than {MAX_NAME_LEN} bytes"))
        }
        Some("") => Err(format!("\"{key}\" is empty")),
        other => Ok(other),
    }
}

/// Whose events a body holds.
#[derive(Clone, Copy, Debug)]
pub enum SourceRule<'a> {
    /// This source's, unless a line names another (`"source"`).
    Default(&'a str),
    /// This source's only: a line naming another is refused. For endpoints whose producers
    /// must not pass their events off as another source's.
    Only(&'a str),
}

/// Interprets one object's fields and appends its encoding to `batch`, received at `ts_recv`,
/// under the source `rule` allows.
fn encode_fields(
    f: &Fields<'_>,
    rule: SourceRule<'_>,
    ts_recv: UnixNanos,
    batch: &mut Batch,
) -> std::result::Result<(), String> {
    let symbol = Symbol::normalize(&f.symbol).map_err(|e| e.to_string())?;
    let ts_event = || -> std::result::Result<UnixNanos, String> {
        let text = f
            .ts_event
            .as_ref()
            .map_err(|e| format!("\"ts_event\": {e}"))?;
        UnixNanos::parse(text).map_err(|e| e.to_string())
    };
    let source = match (rule, name(&f.source, "source")?) {
        (SourceRule::Default(default), named) => named.unwrap_or(default),
        (SourceRule::Only(only), Some(named)) if named != only => {
            return Err(format!(
                "\"source\" {named:?} is not this endpoint's: leave it out, or send it to that source's endpoint"
            ));
        }
        (SourceRule::Only(only), _) => only,
    };
    let feed = name(&f.feed, "feed")?.unwrap_or(source);
    let price = |key: &str, raw| -> std::result::Result<Price, String> {
        Price::parse(field(raw, key, &f.kind)?).map_err(|e| format!("\"{key}\": {e}"))
    };
    let qty = |key: &str, raw| -> std::result::Result<Qty, String> {
        Qty::parse(field(raw, key, &f.kind)?).map_err(|e| format!("\"{key}\": {e}"))
    };
    match f.kind.as_ref() {
        "trade" => {
            let trade_id = match &f.trade_id {
                Some(Ok(id)) if id.len() > MAX_NAME_LEN => {
                    return Err(format!("\"trade_id\" is longer than {MAX_NAME_LEN} bytes"));
                }
                Some(Ok(id)) => Some(id.as_ref()),
                Some(Err(e)) => return Err(format!("\"trade_id\": {e}")),
                None => None,
            };
            batch.push_trade(&TradeRef {
                symbol: &symbol,
                ts_event: ts_event()?,
                ts_recv,
                price: price("price", &f.price)?,
                size: qty("size", &f.size)?,
                trade_id,
                exchange: name(&f.exchange, "exchange")?,
                source,
                feed,
                seq: f.seq,
            });
        }
        "quote" => batch.push_quote(&QuoteRef {
            symbol: &symbol,
            ts_event: ts_event()?,
            ts_recv,
            bid: price("bid", &f.bid)?,
            bid_size: qty("bid_size", &f.bid_size)?,
            ask: price("ask", &f.ask)?,
            ask_size: qty("ask_size", &f.ask_size)?,
            source,
            feed,
            seq: f.seq,
        }),
        "bar" => {
            let empty = BarFields::default();
            let b = f.bar.as_deref().unwrap_or(&empty);
            if f.ts_event.is_ok() {
                return Err("a bar has \"start\", not \"ts_event\"".to_string());
            }
            let interval = b
                .interval
                .as_deref()
                .ok_or("bar needs \"interval\"")?
                .parse::<BarInterval>()
                .map_err(|e| format!("\"interval\": {e}"))?;
            let start = UnixNanos::parse(field(&b.start, "start", "bar")?)
                .map_err(|e| format!("\"start\": {e}"))?;
            let volume = Volume::parse(field(&b.volume, "volume", "bar")?)
                .map_err(|e| format!("\"volume\": {e}"))?;
            if volume.raw() < 0 {
                return Err("\"volume\" must not be negative".to_string());
            }
            let vwap = match &b.vwap {
                None => None,
                raw => Some(price("vwap", raw)?),
            };
            batch.push(&Event::Bar(FedBar {
                bar: Bar {
                    symbol: Symbol::parse(&symbol).map_err(|e| e.to_string())?,
                    interval,
                    start,
                    end: UnixNanos(start.0.saturating_add(interval.nanos())),
                    open: price("open", &b.open)?,
                    high: price("high", &b.high)?,
                    low: price("low", &b.low)?,
                    close: price("close", &b.close)?,
                    volume,
                    vwap,
                    trade_count: b.trade_count,
                    is_final: true,
                    source: Some(Arc::from(source)),
                },
                ts_recv,
                feed: Arc::from(feed),
            }));
        }
        other => {
            return Err(format!(
                "unknown \"type\" {other:?}: expected \"trade\", \"quote\" or \"bar\""
            ));
        }
    }
    if f.bar.is_some() && f.kind != "bar" {
        return Err(format!(
            "a {} has no bar fields (\"interval\", \"start\", \"open\", …)",
            f.kind
        ));
    }
    Ok(())
}

/// Parses a request body, NDJSON or a JSON array, into encoded events stamped with
/// `ts_recv`, appended to `batch`. Empty lines are skipped.
///
/// # Errors
/// [`Error::Ingest`] for the first line that cannot be parsed, naming its 1-based line number;
/// `batch` is then left as it was, so a request is taken whole or not at all.
pub fn parse_body_into(
    body: &str,
    default_source: &str,
    ts_recv: UnixNanos,
    batch: &mut Batch,
) -> Result<()> {
    parse_body_for(body, SourceRule::Default(default_source), ts_recv, batch)
}

/// [`parse_body_into`] under a [`SourceRule`].
///
/// # Errors
/// As [`parse_body_into`]; with [`SourceRule::Only`], also a line naming another source.
pub fn parse_body_for(
    body: &str,
    rule: SourceRule<'_>,
    ts_recv: UnixNanos,
    batch: &mut Batch,
) -> Result<()> {
    let before = batch.len();
    let mut fields = Fields::empty();
    let parsed = parse_each(body, |text| {
        fields.read(text)?;
        encode_fields(&fields, rule, ts_recv, batch)
    });
    if parsed.is_err() {
        batch.truncate(before);
    }
    parsed
}

/// Parses a request body, NDJSON or a JSON array, into events stamped with `ts_recv`.
///
/// # Errors
/// As [`parse_body_into`].
pub fn parse_body(body: &str, default_source: &str, ts_recv: UnixNanos) -> Result<Vec<Event>> {
    let mut batch = Batch::default();
    parse_body_into(body, default_source, ts_recv, &mut batch)?;
    let mut decoder = Decoder::new();
    batch.records().map(|r| decoder.decode(r)).collect()
}

/// Calls `each` on every object of the body with its text, naming the line of the first error.
fn parse_each<'a>(
    body: &'a str,
    mut each: impl FnMut(&'a str) -> std::result::Result<(), String>,
) -> Result<()> {
    let trimmed = body.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(body).map_err(|e| Error::Ingest {
            line: e.line(),
            message: format!("not a JSON array of events: {e}"),
        })?;
        let (mut counted_to, mut line) = (0usize, 1usize);
        for (i, item) in items.iter().enumerate() {
            // Count newlines only since the previous element: linear in the body, not quadratic.
            let offset = item.get().as_ptr() as usize - body.as_ptr() as usize;
            line += body.as_bytes()[counted_to..offset]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            counted_to = offset;
            each(item.get()).map_err(|message| Error::Ingest {
                line,
                message: format!("element {i}: {message}"),
            })?;
        }
        return Ok(());
    }
    for (i, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        each(line).map_err(|message| Error::Ingest {
            line: i + 1,
            message,
        })?;
    }
    Ok(())
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json escapes exactly as JSON requires; writing to a String cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// Renders an event in the ingest format, so a DLQ payload can be fixed and replayed as is.
pub fn to_json(event: &Event) -> String {
    let mut out = String::with_capacity(200);
    match event {
        Event::Trade(t) => {
            let _ = write!(
                out,
                r#"{{"type":"trade","symbol":"{}","ts_event":{},"price":"{}","size":"{}""#,
                t.symbol, t.ts_event.0, t.price, t.size
            );
            if let Some(id) = &t.trade_id {
                out.push_str(r#","trade_id":"#);
                push_json_str(&mut out, id);
            }
            if let Some(ex) = &t.exchange {
                out.push_str(r#","exchange":"#);
                push_json_str(&mut out, ex);
            }
            push_common(&mut out, &t.source, &t.feed, t.seq);
        }
        Event::Quote(q) => {
            let _ = write!(
                out,
                r#"{{"type":"quote","symbol":"{}","ts_event":{},"bid":"{}","bid_size":"{}","ask":"{}","ask_size":"{}""#,
                q.symbol, q.ts_event.0, q.bid, q.bid_size, q.ask, q.ask_size
            );
            push_common(&mut out, &q.source, &q.feed, q.seq);
        }
        Event::Bar(fed) => {
            let b = &fed.bar;
            let _ = write!(
                out,
                r#"{{"type":"bar","symbol":"{}","interval":"{}","start":{},"open":"{}","high":"{}","low":"{}","close":"{}","volume":"{}""#,
                b.symbol, b.interval, b.start.0, b.open, b.high, b.low, b.close, b.volume
            );
            if let Some(vwap) = b.vwap {
                let _ = write!(out, r#","vwap":"{vwap}""#);
            }
            if let Some(n) = b.trade_count {
                let _ = write!(out, r#","trade_count":{n}"#);
            }
            push_common(&mut out, fed.source(), &fed.feed, None);
        }
    }
    out.push('}');
    out
}

fn push_common(out: &mut String, source: &str, feed: &str, seq: Option<u64>) {
    out.push_str(r#","source":"#);
    push_json_str(out, source);
    out.push_str(r#","feed":"#);
    push_json_str(out, feed);
    if let Some(seq) = seq {
        let _ = write!(out, r#","seq":{seq}"#);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http() -> &'static str {
        "http"
    }

    #[test]
    fn an_endpoint_of_one_source_refuses_lines_naming_another() {
        let line = r#"{"type":"trade","symbol":"NVDA","ts_event":1,"price":"1","size":"1","source":"vendor-a"}"#;
        let mut batch = Batch::default();
        parse_body_for(line, SourceRule::Only("vendor-a"), UnixNanos(9), &mut batch).unwrap();
        let err = parse_body_for(
            line,
            SourceRule::Only("backtests"),
            UnixNanos(9),
            &mut batch,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"vendor-a\" is not this endpoint's"), "{err}");
        assert_eq!(batch.len(), 1, "the refused body added nothing");
        let events = parse_body(line, "http", UnixNanos(9)).unwrap();
        let Event::Trade(t) = &events[0] else {
            panic!("a trade")
        };
        assert_eq!(
            &*t.source, "vendor-a",
            "the open endpoint keeps a named source"
        );
    }

    #[test]
    fn reads_a_feeds_bar_and_writes_it_back_the_same() {
        let line = r#"{"type":"bar","symbol":"nvda","interval":"1d","start":"2026-11-21T05:00:00Z","open":"180.1","high":183.25,"low":"179.5","close":"182","volume":"123456789","vwap":"181.04","trade_count":991222,"source":"polygon"}"#;
        let events = parse_body(line, "http", UnixNanos(9)).unwrap();
        let Event::Bar(fed) = &events[0] else {
            panic!("a bar")
        };
        let b = &fed.bar;
        assert_eq!(b.symbol.as_str(), "NVDA");
        assert_eq!(b.interval, BarInterval::D1);
        assert_eq!(b.start, UnixNanos::parse("2026-11-21T05:00:00Z").unwrap());
        assert_eq!(b.end.0 - b.start.0, BarInterval::D1.nanos());
        assert_eq!(b.high, Price::parse("183.25").unwrap());
        assert_eq!(b.volume.to_string(), "123456789");
        assert_eq!(b.vwap, Some(Price::parse("181.04").unwrap()));
        assert_eq!(b.trade_count, Some(991_222));
        assert_eq!(b.source.as_deref(), Some("polygon"));
        assert_eq!(&*fed.feed, "polygon");
        assert!(b.is_final);
        let again = parse_body(&to_json(&events[0]), "other", UnixNanos(9)).unwrap();
        assert_eq!(again, events, "a DLQ payload replays as the same bar");

        let minimal = r#"{"type":"bar","symbol":"A","interval":"1m","start":60000000000,"open":1,"high":1,"low":1,"close":1,"volume":0}"#;
        let Event::Bar(fed) = &parse_body(minimal, "http", UnixNanos(9)).unwrap()[0] else {
            panic!("a bar")
        };
        assert_eq!((fed.bar.vwap, fed.bar.trade_count), (None, None));
        assert_eq!(fed.source(), "http");
    }

    #[test]
    fn a_bar_missing_or_mixing_fields_is_refused_with_the_key() {
        let base = r#""symbol":"A","interval":"1d","start":1,"open":1,"high":1,"low":1,"close":1"#;
        for (line, said) in [
            (format!(r#"{{"type":"bar",{base}}}"#), "bar needs \"volume\""),
            (
                format!(r#"{{"type":"bar",{base},"volume":-1}}"#),
                "\"volume\" must not be negative",
            ),
            (
                format!(r#"{{"type":"bar",{base},"volume":1,"ts_event":1}}"#),
                "a bar has \"start\"",
            ),
            (
                r#"{"type":"bar","symbol":"A","interval":"2d","start":1,"open":1,"high":1,"low":1,"close":1,"volume":1}"#.to_string(),
                "\"interval\"",
            ),
            (
                r#"{"type":"trade","symbol":"A","ts_event":1,"price":"1","size":"1","interval":"1d"}"#.to_string(),
                "a trade has no bar fields",
            ),
            (
                r#"{"type":"trade","symbol":"A","price":"1","size":"1"}"#.to_string(),
                "\"ts_event\": missing",
            ),
        ] {
            let err = parse_body(&line, "http", UnixNanos(9))
                .unwrap_err()
                .to_string();
            assert!(err.contains(said), "{line}: {err}");
        }
    }

    #[test]
    fn parses_the_documented_examples() {
        let body = r#"{"type":"trade","symbol":"NVDA","ts_event":1763800000123456789,"price":"181.25","size":"100","trade_id":"71","seq":71}
{"type":"quote","symbol":"nvda","ts_event":"2026-11-22T14:30:00.123Z","bid":"181.20","bid_size":"3","ask":181.30,"ask_size":5}
"#;
        let events = parse_body(body, http(), UnixNanos(9)).unwrap();
        assert_eq!(events.len(), 2);
        let Event::Trade(t) = &events[0] else {
            panic!("trade expected")
        };
        assert_eq!(t.price, Price::parse("181.25").unwrap());
        assert_eq!(t.trade_id.as_deref(), Some("71"));
        assert_eq!(&*t.source, "http");
        assert_eq!(t.ts_recv, UnixNanos(9));
        let Event::Quote(q) = &events[1] else {
            panic!("quote expected")
        };
        assert_eq!(q.symbol.as_str(), "NVDA");
        assert_eq!(
            q.ask.to_string(),
            "181.30",
            "number text kept exactly, precision included"
        );
        assert_eq!(
            q.ts_event,
            UnixNanos::parse("2026-11-22T14:30:00.123Z").unwrap()
        );
    }

    #[test]
    fn array_and_ndjson_agree_and_round_trip() {
        let ndjson = r#"{"type":"trade","symbol":"A","ts_event":1,"price":"1.5","size":"2","exchange":"V"}
{"type":"quote","symbol":"B","ts_event":2,"bid":"1","bid_size":"1","ask":"2","ask_size":"1","seq":3,"source":"x","attrs":{"pad":"zzz"}}"#;
        let array = format!("[{}]", ndjson.replace('\n', ",\n"));
        let a = parse_body(ndjson, http(), UnixNanos(0)).unwrap();
        let b = parse_body(&array, http(), UnixNanos(0)).unwrap();
        assert_eq!(a, b);
        let rendered: Vec<String> = a.iter().map(to_json).collect();
        assert_eq!(
            parse_body(&rendered.join("\n"), http(), UnixNanos(0)).unwrap(),
            a
        );
    }

    #[test]
    fn errors_name_the_line() {
        let good = r#"{"type":"trade","symbol":"A","ts_event":1,"price":"1","size":"1"}"#;
        let cases = [
            (
                format!(
                    "{good}\n\n{{\"type\":\"trade\",\"symbol\":\"A\",\"ts_event\":1,\"prcie\":\"1\",\"size\":\"1\"}}"
                ),
                3,
                "prcie",
            ),
            (format!("{good}\n{{not json"), 2, "key must be a string"),
            (
                format!(
                    "{good}\n{}",
                    good.replace("\"1\",\"size\"", "\"1.0000000001\",\"size\"")
                ),
                2,
                "more than 9 decimal places",
            ),
            (
                format!("{good}\n{}", good.replace("trade", "order")),
                2,
                "unknown \"type\"",
            ),
            (
                format!("{good}\n{}", good.replace(",\"size\":\"1\"", "")),
                2,
                "trade needs \"size\"",
            ),
            (
                format!(
                    "{good}\n{}",
                    good.replace("\"ts_event\":1", "\"ts_event\":\"yesterday\"")
                ),
                2,
                "yesterday",
            ),
            (
                format!(
                    "{good}\n{}",
                    good.replace("\"price\":\"1\"", "\"price\":true")
                ),
                2,
                "expected a string or number",
            ),
            (
                format!(
                    "[{good},\n{}]",
                    good.replace("\"symbol\":\"A\"", "\"symbol\":\"\"")
                ),
                2,
                "element 1",
            ),
        ];
        for (body, line, needle) in cases {
            match parse_body(&body, http(), UnixNanos(0)) {
                Err(Error::Ingest { line: l, message }) => {
                    assert_eq!(l, line, "{message}");
                    assert!(
                        message.contains(needle),
                        "{message:?} should mention {needle:?}"
                    );
                }
                other => panic!("expected an ingest error for {body:?}, got {other:?}"),
            }
        }
    }
}
