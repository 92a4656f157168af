//! Polygon's stocks WebSocket frames, read without I/O. Every frame is a JSON array of
//! messages with their type in `ev`: trades (`T`), quotes (`Q`) and second and minute
//! aggregates (`A`, `AM`) become events; `status` messages drive the handshake. Numbers are
//! read from their text, never through `f64`; times are Unix milliseconds.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use tickflow_model::{BarInterval, Event, Quote, Symbol, Trade, UnixNanos};

use crate::wire::{Ohlcv, Stamp, fed_bar, price, qty, text};

/// Every field of the messages read here; numbers stay raw.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    ev: Cow<'a, str>,
    #[serde(borrow, default)]
    sym: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    /// Trade id (a string) on trades.
    #[serde(borrow, default)]
    i: Option<&'a RawValue>,
    #[serde(default)]
    x: Option<u32>,
    #[serde(borrow, default)]
    p: Option<&'a RawValue>,
    /// Trade size; on aggregates, the window's start (ms).
    #[serde(borrow, default)]
    s: Option<&'a RawValue>,
    #[serde(default)]
    t: Option<i64>,
    #[serde(default)]
    q: Option<u64>,
    #[serde(borrow, default)]
    bp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    bs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ap: Option<&'a RawValue>,
    #[serde(rename = "as", borrow, default)]
    ask_size: Option<&'a RawValue>,
    #[serde(borrow, default)]
    o: Option<&'a RawValue>,
    #[serde(borrow, default)]
    h: Option<&'a RawValue>,
    #[serde(borrow, default)]
    l: Option<&'a RawValue>,
    #[serde(borrow, default)]
    c: Option<&'a RawValue>,
    #[serde(borrow, default)]
    v: Option<&'a RawValue>,
    #[serde(borrow, default)]
    vw: Option<&'a RawValue>,
    #[serde(default)]
    e: Option<i64>,
}

/// What a frame holds besides events.
#[derive(Debug, PartialEq)]
pub enum Control {
    /// `connected`: authenticate now.
    Connected,
    /// `auth_success`: subscribe now.
    Authenticated,
    /// `success`: a subscription confirmed (one message per topic).
    Subscribed,
    /// `auth_failed`: the key is wrong; retrying cannot help.
    AuthFailed(String),
    /// `max_connections`, `auth_timeout` or `error`: reconnect after the backoff.
    Error(String),
}

/// One frame read: its events and control messages in order, and how many messages were of
/// types not stored (subscription confirmations, imbalances, LULD bands).
#[derive(Debug, Default, PartialEq)]
pub struct Frame {
    pub events: Vec<Event>,
    pub control: Vec<Control>,
    pub skipped: usize,
}

/// The authentication message.
pub fn auth(key: &str) -> String {
    serde_json::json!({"action": "auth", "params": key}).to_string()
}

/// The subscription message: `T.AAPL,Q.AAPL,A.AAPL,AM.AAPL`.
pub fn subscribe(
    trades: &[String],
    quotes: &[String],
    seconds: &[String],
    minutes: &[String],
) -> String {
    let params: Vec<String> = [
        ("T", trades),
        ("Q", quotes),
        ("A", seconds),
        ("AM", minutes),
    ]
    .iter()
    .flat_map(|(topic, symbols)| symbols.iter().map(move |s| format!("{topic}.{s}")))
    .collect();
    serde_json::json!({"action": "subscribe", "params": params.join(",")}).to_string()
}

/// Unix milliseconds as nanoseconds.
pub(crate) fn millis(ms: i64) -> UnixNanos {
    UnixNanos(ms.saturating_mul(1_000_000))
}

/// Reads one frame received at `ts_recv`; events get `source` and `feed`.
///
/// # Errors
/// Why the frame cannot be read, for the DLQ; a frame is read whole or not at all.
pub fn parse(
    frame: &str,
    source: &Arc<str>,
    feed: &Arc<str>,
    ts_recv: UnixNanos,
) -> Result<Frame, String> {
    let messages: Vec<Message<'_>> = serde_json::from_str(frame).map_err(|e| e.to_string())?;
    let mut out = Frame::default();
    for m in messages {
        let symbol = || -> Result<Symbol, String> {
            let raw = m.sym.as_deref().ok_or("a message needs \"sym\"")?;
            Symbol::parse(raw).map_err(|e| e.to_string())
        };
        let time = || {
            m.t.map(millis)
                .ok_or_else(|| "a message needs \"t\"".to_string())
        };
        match m.ev.as_ref() {
            "T" => out.events.push(Event::Trade(Trade {
                symbol: symbol()?,
                ts_event: time()?,
                ts_recv,
                price: price(m.p, "p", "trade")?,
                size: qty(m.s, "s", "trade")?,
                trade_id: match m.i {
                    Some(_) => Some(text(m.i, "i", "trade")?.as_ref().into()),
                    None => None,
                },
                exchange: m.x.map(|x| Arc::from(x.to_string())),
                source: Arc::clone(source),
                feed: Arc::clone(feed),
                seq: m.q,
            })),
            "Q" => out.events.push(Event::Quote(Quote {
                symbol: symbol()?,
                ts_event: time()?,
                ts_recv,
                bid: price(m.bp, "bp", "quote")?,
                bid_size: qty(m.bs, "bs", "quote")?,
                ask: price(m.ap, "ap", "quote")?,
                ask_size: qty(m.ask_size, "as", "quote")?,
                source: Arc::clone(source),
                feed: Arc::clone(feed),
                seq: m.q,
            })),
            kind @ ("A" | "AM") => {
                let interval = if kind == "A" {
                    BarInterval::S1
                } else {
                    BarInterval::M1
                };
                let start: i64 = text(m.s, "s", "aggregate")?
                    .parse()
                    .map_err(|_| "\"s\": not Unix milliseconds".to_string())?;
                let start = millis(start);
                let end =
                    m.e.map_or(UnixNanos(start.0.saturating_add(interval.nanos())), millis);
                let raw = Ohlcv {
                    open: m.o,
                    high: m.h,
                    low: m.l,
                    close: m.c,
                    volume: m.v,
                    vwap: m.vw,
                    trades: None,
                };
                let stamp = Stamp {
                    source,
                    feed,
                    ts_recv,
                };
                out.events.push(fed_bar(
                    symbol()?,
                    interval,
                    (start, end),
                    &raw,
                    "aggregate",
                    &stamp,
                )?);
            }
            "status" => {
                let message = m.message.as_deref().unwrap_or_default().to_string();
                match m.status.as_deref() {
                    Some("connected") => out.control.push(Control::Connected),
                    Some("auth_success") => out.control.push(Control::Authenticated),
                    Some("auth_failed") => out.control.push(Control::AuthFailed(message)),
                    Some("success") => out.control.push(Control::Subscribed),
                    Some(other) => out
                        .control
                        .push(Control::Error(format!("{other}: {message}"))),
                    None => return Err("a status message needs \"status\"".into()),
                }
            }
            _ => out.skipped += 1,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(frame: &str) -> Result<Frame, String> {
        parse(
            frame,
            &Arc::from("polygon"),
            &Arc::from("polygon:stocks"),
            UnixNanos(7),
        )
    }

    #[test]
    fn reads_the_documented_messages_exactly() {
        let frame = read(include_str!("testdata/stream.json")).unwrap();
        assert_eq!(frame.control, vec![]);
        assert_eq!(frame.skipped, 1, "the imbalance message is not stored");
        let [
            Event::Trade(t),
            Event::Quote(q),
            Event::Bar(am),
            Event::Bar(a),
        ] = &frame.events[..]
        else {
            panic!("a trade, a quote and two aggregates: {:?}", frame.events)
        };
        assert_eq!(t.symbol.as_str(), "AAPL");
        assert_eq!(t.price.to_string(), "184.41");
        assert_eq!(t.size.to_string(), "100");
        assert_eq!(t.trade_id.as_ref().unwrap().to_string(), "71675");
        assert_eq!(t.exchange.as_deref(), Some("4"));
        assert_eq!(t.ts_event, UnixNanos(1_715_096_462_123_000_000));
        assert_eq!(t.seq, Some(4_011_235));
        assert_eq!(
            (q.bid.to_string(), q.ask.to_string()),
            ("184.40".into(), "184.42".into())
        );
        assert_eq!(
            (q.bid_size.to_string(), q.ask_size.to_string()),
            ("2".into(), "3".into())
        );
        assert_eq!(am.bar.interval, BarInterval::M1);
        assert_eq!(am.bar.start, UnixNanos(1_715_096_400_000_000_000));
        assert_eq!(am.bar.end, UnixNanos(1_715_096_460_000_000_000));
        assert_eq!(am.bar.vwap.unwrap().to_string(), "184.38");
        assert_eq!(am.bar.volume.to_string(), "31210");
        assert_eq!(am.bar.source.as_deref(), Some("polygon"));
        assert_eq!(a.bar.interval, BarInterval::S1);
        assert_eq!(a.bar.end.0 - a.bar.start.0, BarInterval::S1.nanos());
    }

    #[test]
    fn statuses_drive_the_handshake() {
        let f =
            read(r#"[{"ev":"status","status":"connected","message":"Connected Successfully"}]"#)
                .unwrap();
        assert_eq!(f.control, vec![Control::Connected]);
        let f =
            read(r#"[{"ev":"status","status":"auth_success","message":"authenticated"}]"#).unwrap();
        assert_eq!(f.control, vec![Control::Authenticated]);
        let f =
            read(r#"[{"ev":"status","status":"auth_failed","message":"authentication failed"}]"#)
                .unwrap();
        assert_eq!(
            f.control,
            vec![Control::AuthFailed("authentication failed".into())]
        );
        let f = read(r#"[{"ev":"status","status":"max_connections","message":"Maximum number of websocket connections exceeded."}]"#).unwrap();
        assert!(matches!(&f.control[..], [Control::Error(m)] if m.starts_with("max_connections")));
        let f = read(r#"[{"ev":"status","status":"success","message":"subscribed to: T.AAPL"}]"#)
            .unwrap();
        assert_eq!(f.control, vec![Control::Subscribed]);
    }

    #[test]
    fn a_bad_message_fails_its_frame_with_the_key() {
        let e = read(r#"[{"ev":"T","sym":"AAPL","p":"x","s":1,"t":1}]"#).unwrap_err();
        assert!(e.contains("\"p\""), "{e}");
        let e = read(r#"[{"ev":"Q","sym":"AAPL","bp":1,"bs":1,"as":1,"t":1}]"#).unwrap_err();
        assert!(e.contains("\"ap\""), "{e}");
        assert!(read(r#"[{"ev":"T","sym":"AAPL""#).is_err(), "truncated");
    }

    #[test]
    fn subscribes_each_topic_by_symbol() {
        let s = subscribe(&["AAPL".into()], &["AAPL".into()], &[], &["*".into()]);
        assert_eq!(s, r#"{"action":"subscribe","params":"T.AAPL,Q.AAPL,AM.*"}"#);
    }
}
