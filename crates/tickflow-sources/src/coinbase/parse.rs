//! Coinbase Exchange's WebSocket frames, read without I/O: a `match` (or the `last_match`
//! sent on subscribing) is a trade; the subscription acknowledgement, heartbeats and errors
//! are control frames; anything else is malformed input for the DLQ.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use tickflow_model::{Price, Qty, Symbol, Trade, UnixNanos};

/// Every field a frame of the channels read here may carry.
#[derive(Debug, Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    trade_id: Option<u64>,
    #[serde(default)]
    sequence: Option<u64>,
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    product_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    size: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    price: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
}

/// What one frame says.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Trade(Trade),
    /// `subscriptions`: the channels and products now sent.
    Subscribed,
    Heartbeat,
    /// `error`: the venue refused something (a product it does not know, a late subscribe).
    Error(String),
}

/// The subscribe message for `symbols` (as Coinbase names them, `BTC-USD`) on `matches`.
pub fn subscribe(symbols: &[String]) -> String {
    serde_json::json!({
        "type": "subscribe",
        "product_ids": symbols,
        "channels": ["matches", "heartbeat"],
    })
    .to_string()
}

/// Reads one text frame received at `ts_recv`; a trade gets `source` and `feed`.
///
/// # Errors
/// Why the frame is not one of the above, for the DLQ.
pub fn parse(
    frame: &str,
    source: &Arc<str>,
    feed: &Arc<str>,
    ts_recv: UnixNanos,
) -> Result<Parsed, String> {
    let f: Frame<'_> = serde_json::from_str(frame).map_err(|e| e.to_string())?;
    match f.kind.as_ref() {
        "match" | "last_match" => {
            let need = |v: Option<Cow<'_, str>>, key: &str| {
                v.map(Cow::into_owned)
                    .ok_or_else(|| format!("a match needs {key:?}"))
            };
            let product = need(f.product_id, "product_id")?;
            let time = need(f.time, "time")?;
            let trade_id = f.trade_id.ok_or("a match needs \"trade_id\"")?;
            Ok(Parsed::Trade(Trade {
                symbol: Symbol::parse(&product).map_err(|e| e.to_string())?,
                ts_event: UnixNanos::parse(&time).map_err(|e| format!("\"time\": {e}"))?,
                ts_recv,
                price: Price::parse(&need(f.price, "price")?)
                    .map_err(|e| format!("\"price\": {e}"))?,
                size: Qty::parse(&need(f.size, "size")?).map_err(|e| format!("\"size\": {e}"))?,
                trade_id: Some(trade_id.to_string().as_str().into()),
                exchange: None,
                source: Arc::clone(source),
                feed: Arc::clone(feed),
                seq: f.sequence,
            }))
        }
        "subscriptions" => Ok(Parsed::Subscribed),
        "heartbeat" => Ok(Parsed::Heartbeat),
        "error" => Ok(Parsed::Error(format!(
            "{}{}",
            f.message.as_deref().unwrap_or("error"),
            f.reason.map(|r| format!(": {r}")).unwrap_or_default()
        ))),
        other => Err(format!("unexpected frame type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames in the shapes the venue sends, one per line (testdata/frames.ndjson).
    const FRAMES: &str = include_str!("testdata/frames.ndjson");

    fn read(frame: &str) -> Result<Parsed, String> {
        parse(
            frame,
            &Arc::from("coinbase"),
            &Arc::from("coinbase:matches"),
            UnixNanos(7),
        )
    }

    #[test]
    fn reads_every_captured_shape() {
        let parsed: Vec<Result<Parsed, String>> = FRAMES.lines().map(read).collect();
        assert_eq!(parsed[0], Ok(Parsed::Subscribed));
        let Ok(Parsed::Trade(last)) = &parsed[1] else {
            panic!("last_match is a trade: {:?}", parsed[1])
        };
        assert_eq!(last.trade_id.as_deref(), Some("9"));
        let Ok(Parsed::Trade(t)) = &parsed[2] else {
            panic!("a match: {:?}", parsed[2])
        };
        assert_eq!(t.symbol.as_str(), "BTC-USD");
        assert_eq!(t.price.to_string(), "63012.50");
        assert_eq!(t.size.to_string(), "0.0123");
        assert_eq!(
            t.ts_event,
            UnixNanos::parse("2024-05-06T14:31:02.123456Z").unwrap()
        );
        assert_eq!((t.seq, t.ts_recv), (Some(50), UnixNanos(7)));
        assert_eq!(&*t.source, "coinbase");
        assert_eq!(&*t.feed, "coinbase:matches");
        assert_eq!(parsed[3], Ok(Parsed::Heartbeat));
        assert_eq!(
            parsed[4],
            Ok(Parsed::Error(
                "Failed to subscribe: ZZZ-USD is not a valid product".into()
            ))
        );
    }

    #[test]
    fn a_frame_that_cannot_be_read_says_why() {
        for (frame, said) in [
            (
                r#"{"type":"match","trade_id":1,"time":"2024-05-06T14:31:02Z","product_id":"BTC-USD","size":"1"}"#,
                "needs \"price\"",
            ),
            (
                r#"{"type":"match","trade_id":1,"time":"yesterday","product_id":"BTC-USD","size":"1","price":"1"}"#,
                "\"time\"",
            ),
            (r#"{"type":"l2update"}"#, "unexpected frame type"),
            (r#"{"type":"match","trade_id":1,"#, "EOF"),
        ] {
            let err = read(frame).unwrap_err();
            assert!(err.contains(said), "{frame}: {err}");
        }
    }
}
