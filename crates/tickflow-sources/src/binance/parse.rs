//! Binance Spot's trade stream frames, read without I/O: `<symbol>@trade` events, raw or in
//! a combined stream's `{"stream":…,"data":…}` wrapper, become trades; `serverShutdown` and
//! error frames end the connection; anything else is malformed input for the DLQ.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use tickflow_model::{Price, Qty, Symbol, Trade, UnixNanos};

/// A combined stream's wrapper.
#[derive(Deserialize)]
struct Wrapped<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Every field of the frames read here.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "e", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "s", borrow, default)]
    symbol: Option<Cow<'a, str>>,
    #[serde(rename = "t", default)]
    trade_id: Option<u64>,
    #[serde(rename = "p", borrow, default)]
    price: Option<Cow<'a, str>>,
    #[serde(rename = "q", borrow, default)]
    qty: Option<Cow<'a, str>>,
    #[serde(rename = "T", default)]
    trade_time_ms: Option<i64>,
    #[serde(default)]
    code: Option<i64>,
    #[serde(borrow, default)]
    msg: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<u64>,
}

/// What one frame says.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Trade(Trade),
    /// A reply to a control request (`{"result":null,"id":1}`).
    Reply,
    /// The venue is about to close the connection, or refused something: reconnect.
    Reconnect(String),
}

/// The stream of `symbol` (tickflow's form, `BTC-USDT`): `btcusdt@trade`.
pub fn stream_name(symbol: &str) -> String {
    format!("{}@trade", symbol.replace('-', "").to_ascii_lowercase())
}

/// The combined-stream address of `symbols` under `base` (`wss://stream.binance.com:9443`).
pub fn streams_url(base: &str, symbols: &[String]) -> String {
    let names: Vec<String> = symbols.iter().map(|s| stream_name(s)).collect();
    format!(
        "{}/stream?streams={}",
        base.trim_end_matches('/'),
        names.join("/")
    )
}

/// Binance's symbols (`BTCUSDT`) to tickflow's (`BTC-USDT`), for the configured ones.
pub fn symbol_map(symbols: &[Symbol]) -> HashMap<String, Symbol> {
    symbols
        .iter()
        .map(|s| (s.as_str().replace('-', ""), s.clone()))
        .collect()
}

/// Reads one text frame received at `ts_recv`; a trade gets `source` and its stream as feed
/// (`<source>:btcusdt@trade`, which keeps the venue's symbol).
///
/// # Errors
/// Why the frame is not one of the above, for the DLQ.
pub fn parse(
    frame: &str,
    symbols: &HashMap<String, Symbol>,
    source: &Arc<str>,
    ts_recv: UnixNanos,
) -> Result<Parsed, String> {
    let inner = match serde_json::from_str::<Wrapped<'_>>(frame) {
        Ok(w) => w.data.get(),
        Err(_) => frame,
    };
    let e: Event<'_> = serde_json::from_str(inner).map_err(|e| e.to_string())?;
    if let Some(code) = e.code {
        return Ok(Parsed::Reconnect(format!(
            "error {code}: {}",
            e.msg.as_deref().unwrap_or_default()
        )));
    }
    match e.kind.as_deref() {
        Some("trade") => {
            let raw = e.symbol.ok_or("a trade needs \"s\"")?;
            let symbol = symbols
                .get(raw.as_ref())
                .cloned()
                .ok_or_else(|| format!("symbol {raw:?} was not subscribed"))?;
            let ms = e.trade_time_ms.ok_or("a trade needs \"T\"")?;
            let price = e.price.ok_or("a trade needs \"p\"")?;
            let qty = e.qty.ok_or("a trade needs \"q\"")?;
            Ok(Parsed::Trade(Trade {
                ts_event: UnixNanos(ms.saturating_mul(1_000_000)),
                ts_recv,
                price: Price::parse(&price).map_err(|e| format!("\"p\": {e}"))?,
                size: Qty::parse(&qty).map_err(|e| format!("\"q\": {e}"))?,
                trade_id: Some(
                    e.trade_id
                        .ok_or("a trade needs \"t\"")?
                        .to_string()
                        .as_str()
                        .into(),
                ),
                exchange: None,
                source: Arc::clone(source),
                feed: Arc::from(format!("{source}:{}", stream_name(symbol.as_str()))),
                seq: None,
                symbol,
            }))
        }
        Some("serverShutdown") => Ok(Parsed::Reconnect("the server is shutting down".into())),
        None if e.id.is_some() => Ok(Parsed::Reply),
        Some(other) => Err(format!("unexpected event type {other:?}")),
        None => Err("neither an event nor a reply".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAMES: &str = include_str!("testdata/frames.ndjson");

    fn read(frame: &str) -> Result<Parsed, String> {
        let symbols = symbol_map(&[
            Symbol::parse("BTC-USDT").unwrap(),
            Symbol::parse("ETH-USDT").unwrap(),
        ]);
        parse(frame, &symbols, &Arc::from("binance"), UnixNanos(7))
    }

    #[test]
    fn names_streams_as_the_venue_does() {
        assert_eq!(stream_name("BTC-USDT"), "btcusdt@trade");
        assert_eq!(
            streams_url(
                "wss://stream.binance.com:9443/",
                &["BTC-USDT".into(), "ETH-USDT".into()]
            ),
            "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade"
        );
    }

    #[test]
    fn reads_every_captured_shape() {
        let parsed: Vec<Result<Parsed, String>> = FRAMES.lines().map(read).collect();
        let Ok(Parsed::Trade(t)) = &parsed[0] else {
            panic!("a wrapped trade: {:?}", parsed[0])
        };
        assert_eq!(t.symbol.as_str(), "BTC-USDT");
        assert_eq!(
            &*t.feed, "binance:btcusdt@trade",
            "the venue's symbol is kept"
        );
        assert_eq!(t.price.to_string(), "63012.50000000");
        assert_eq!(t.size.to_string(), "0.01230000");
        assert_eq!(t.ts_event, UnixNanos(1_715_096_462_128_000_000));
        assert_eq!(t.trade_id.as_deref(), Some("3601234567"));
        let Ok(Parsed::Trade(raw)) = &parsed[1] else {
            panic!("a raw trade: {:?}", parsed[1])
        };
        assert_eq!(raw.symbol.as_str(), "ETH-USDT");
        assert_eq!(parsed[2], Ok(Parsed::Reply));
        assert!(matches!(&parsed[3], Ok(Parsed::Reconnect(m)) if m.contains("shutting down")));
        assert!(matches!(&parsed[4], Ok(Parsed::Reconnect(m)) if m.contains("unknown stream")));
    }

    #[test]
    fn a_frame_that_cannot_be_read_says_why() {
        for (frame, said) in [
            (
                r#"{"e":"trade","s":"DOGEUSDT","t":1,"p":"1","q":"1","T":1}"#,
                "not subscribed",
            ),
            (
                r#"{"e":"trade","s":"BTCUSDT","t":1,"p":"x","q":"1","T":1}"#,
                "\"p\"",
            ),
            (
                r#"{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1"}"#,
                "needs \"T\"",
            ),
            (r#"{"e":"kline"}"#, "unexpected event type"),
            (r#"{"stream":"btcusdt@trade","data":{"e":"trade","#, "EOF"),
        ] {
            let err = read(frame).unwrap_err();
            assert!(err.contains(said), "{frame}: {err}");
        }
    }
}
