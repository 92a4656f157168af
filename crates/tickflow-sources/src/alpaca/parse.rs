//! Alpaca's real-time market data frames (stocks `v2/<feed>` and crypto
//! `v1beta3/crypto/us`), read without I/O. Every frame is a JSON array of messages, each
//! with its type in `T`: trades, quotes and minute and daily bars become events; the
//! handshake, subscription and error messages are control. Numbers are read from their text,
//! never through `f64`.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use tickflow_model::{BarInterval, Event, Quote, Symbol, Trade, UnixNanos};

use crate::calendar;
use crate::wire::{Ohlcv, Stamp, fed_bar, price, qty, text};

/// Every field of the messages read here; numbers and arrays stay raw.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "T", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "S", borrow, default)]
    symbol: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    msg: Option<Cow<'a, str>>,
    #[serde(default)]
    code: Option<u32>,
    #[serde(rename = "t", borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(rename = "i", borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(rename = "x", borrow, default)]
    exchange: Option<&'a RawValue>,
    #[serde(rename = "p", borrow, default)]
    price: Option<&'a RawValue>,
    #[serde(rename = "s", borrow, default)]
    size: Option<&'a RawValue>,
    #[serde(borrow, default)]
    bp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    bs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ap: Option<&'a RawValue>,
    #[serde(rename = "as", borrow, default)]
    ask_size: Option<&'a RawValue>,
    #[serde(rename = "o", borrow, default)]
    open: Option<&'a RawValue>,
    #[serde(rename = "h", borrow, default)]
    high: Option<&'a RawValue>,
    #[serde(rename = "l", borrow, default)]
    low: Option<&'a RawValue>,
    #[serde(rename = "c", borrow, default)]
    close: Option<&'a RawValue>,
    #[serde(rename = "v", borrow, default)]
    volume: Option<&'a RawValue>,
    #[serde(rename = "vw", borrow, default)]
    vwap: Option<&'a RawValue>,
    #[serde(rename = "n", default)]
    count: Option<u64>,
}

/// What a frame holds besides events.
#[derive(Debug, PartialEq)]
pub enum Control {
    /// `success` `connected`: authenticate now.
    Connected,
    /// `success` `authenticated`: subscribe now.
    Authenticated,
    /// `subscription`: the set now sent.
    Subscribed,
    /// `error` with its code and message.
    Error(u32, String),
}

/// One frame read: its events, and its control messages in order.
#[derive(Debug, Default, PartialEq)]
pub struct Frame {
    pub events: Vec<Event>,
    pub control: Vec<Control>,
    /// Messages of types not stored (statuses, LULD bands, corrections, updated bars).
    pub skipped: usize,
}

/// The authentication message.
pub fn auth(key: &str, secret: &str) -> String {
    serde_json::json!({"action": "auth", "key": key, "secret": secret}).to_string()
}

/// The subscription message: each channel with its symbols (as Alpaca names them: `AAPL`,
/// `BTC/USD`).
pub fn subscribe(
    trades: &[String],
    quotes: &[String],
    bars: &[String],
    daily: &[String],
) -> String {
    serde_json::json!({
        "action": "subscribe",
        "trades": trades,
        "quotes": quotes,
        "bars": bars,
        "dailyBars": daily,
    })
    .to_string()
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
            let raw = m.symbol.as_deref().ok_or("a message needs \"S\"")?;
            Symbol::parse(raw).map_err(|e| e.to_string())
        };
        let time = || -> Result<UnixNanos, String> {
            let t = m.time.as_deref().ok_or("a message needs \"t\"")?;
            UnixNanos::parse(t).map_err(|e| format!("\"t\": {e}"))
        };
        match m.kind.as_ref() {
            "t" => out.events.push(Event::Trade(Trade {
                symbol: symbol()?,
                ts_event: time()?,
                ts_recv,
                price: price(m.price, "p", "trade")?,
                size: qty(m.size, "s", "trade")?,
                trade_id: match m.id {
                    Some(_) => Some(text(m.id, "i", "trade")?.as_ref().into()),
                    None => None,
                },
                exchange: match m.exchange {
                    Some(_) => Some(Arc::from(text(m.exchange, "x", "trade")?.as_ref())),
                    None => None,
                },
                source: Arc::clone(source),
                feed: Arc::clone(feed),
                seq: None,
            })),
            "q" => out.events.push(Event::Quote(Quote {
                symbol: symbol()?,
                ts_event: time()?,
                ts_recv,
                bid: price(m.bp, "bp", "quote")?,
                bid_size: qty(m.bs, "bs", "quote")?,
                ask: price(m.ap, "ap", "quote")?,
                ask_size: qty(m.ask_size, "as", "quote")?,
                source: Arc::clone(source),
                feed: Arc::clone(feed),
                seq: None,
            })),
            kind @ ("b" | "d") => {
                let interval = if kind == "b" {
                    BarInterval::M1
                } else {
                    BarInterval::D1
                };
                let raw = Ohlcv {
                    open: m.open,
                    high: m.high,
                    low: m.low,
                    close: m.close,
                    volume: m.volume,
                    vwap: m.vwap,
                    trades: m.count,
                };
                let stamp = Stamp {
                    source,
                    feed,
                    ts_recv,
                };
                let span = calendar::bar_span(interval, time()?);
                out.events
                    .push(fed_bar(symbol()?, interval, span, &raw, "bar", &stamp)?);
            }
            "success" => match m.msg.as_deref() {
                Some("connected") => out.control.push(Control::Connected),
                Some("authenticated") => out.control.push(Control::Authenticated),
                other => return Err(format!("unexpected success message {other:?}")),
            },
            "subscription" => out.control.push(Control::Subscribed),
            "error" => out.control.push(Control::Error(
                m.code.unwrap_or(0),
                m.msg.map(Cow::into_owned).unwrap_or_default(),
            )),
            // Statuses, LULD bands, imbalances, cancels, corrections, order books, and the
            // updated bars re-sent after late trades (a feed's bar is stored once).
            _ => out.skipped += 1,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAMES: &str = include_str!("testdata/frames.ndjson");

    fn read(frame: &str) -> Result<Frame, String> {
        parse(
            frame,
            &Arc::from("alpaca"),
            &Arc::from("alpaca:iex"),
            UnixNanos(7),
        )
    }

    #[test]
    fn reads_every_captured_shape() {
        let frames: Vec<Frame> = FRAMES.lines().map(|l| read(l).unwrap()).collect();
        assert_eq!(frames[0].control, [Control::Connected]);
        assert_eq!(frames[1].control, [Control::Authenticated]);
        assert_eq!(frames[2].control, [Control::Subscribed]);
        let [Event::Trade(t), Event::Quote(q)] = &frames[3].events[..] else {
            panic!("a trade and a quote: {:?}", frames[3])
        };
        assert_eq!(
            t.price.to_string(),
            "187.41",
            "exact from the number's text"
        );
        assert_eq!(t.size.to_string(), "100");
        assert_eq!(t.trade_id.as_deref(), Some("52983525029461"));
        assert_eq!(t.exchange.as_deref(), Some("V"));
        assert_eq!(
            t.ts_event,
            UnixNanos::parse("2024-05-06T14:31:02.123456789Z").unwrap()
        );
        assert_eq!((&*t.source, &*t.feed), ("alpaca", "alpaca:iex"));
        assert_eq!(
            (q.bid.to_string(), q.ask_size.to_string()),
            ("187.40".into(), "3".into())
        );
        let [Event::Bar(m1)] = &frames[4].events[..] else {
            panic!("a minute bar")
        };
        assert_eq!(m1.bar.interval, BarInterval::M1);
        assert_eq!(m1.bar.vwap.map(|p| p.to_string()), Some("512.18".into()));
        assert_eq!(m1.bar.trade_count, Some(512));
        assert_eq!(m1.bar.source.as_deref(), Some("alpaca"));
        let [Event::Bar(d1)] = &frames[5].events[..] else {
            panic!("a daily bar")
        };
        assert_eq!(d1.bar.interval, BarInterval::D1);
        assert_eq!(d1.bar.start.date().to_string(), "2024-05-06");
        let [Event::Trade(crypto)] = &frames[6].events[..] else {
            panic!("a crypto trade")
        };
        assert_eq!(crypto.symbol.as_str(), "BTC-USD", "slash pairs normalized");
        assert_eq!(crypto.size.to_string(), "0.0123");
        assert_eq!((frames[7].events.len(), frames[7].skipped), (0, 2));
        assert_eq!(
            frames[8].control,
            [Control::Error(402, "auth failed".into())]
        );
    }

    #[test]
    fn a_frame_that_cannot_be_read_says_why() {
        for (frame, said) in [
            (
                r#"[{"T":"t","S":"AAPL","p":1,"t":"2024-05-06T14:31:02Z"}]"#,
                "needs \"s\"",
            ),
            (
                r#"[{"T":"q","S":"AAPL","bp":"x","bs":1,"ap":1,"as":1,"t":"2024-05-06T14:31:02Z"}]"#,
                "\"bp\"",
            ),
            (
                r#"[{"T":"t","p":1,"s":1,"t":"2024-05-06T14:31:02Z"}]"#,
                "needs \"S\"",
            ),
            (r#"{"T":"t"}"#, "expected a sequence"),
            (r#"[{"T":"success","msg":"hello"}]"#, "unexpected success"),
        ] {
            let err = read(frame).unwrap_err();
            assert!(err.contains(said), "{frame}: {err}");
        }
    }
}
