//! Alpaca's historical market data over REST, read without I/O: bars and trades of stocks
//! (`/v2/stocks/{bars,trades}`) and crypto (`/v1beta3/crypto/us/{bars,trades}`), paged by
//! `next_page_token`, with the key in the `APCA-API-KEY-ID` and `APCA-API-SECRET-KEY` headers.
//! `start` and `end` are both inclusive; a page holds rows ordered by symbol then time.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use tickflow_model::{BarInterval, Event, Symbol, Trade, UnixNanos};

use crate::calendar;
use crate::history::{History, Request, What};
use crate::rest::{Page, Rest};
use crate::wire::{Ohlcv, Stamp, fed_bar, price, qty, text};

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    bars: Option<BTreeMap<Cow<'a, str>, Vec<Row<'a>>>>,
    #[serde(borrow, default)]
    trades: Option<BTreeMap<Cow<'a, str>, Vec<Row<'a>>>>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// A bar's or a trade's fields.
#[derive(Deserialize)]
struct Row<'a> {
    #[serde(borrow)]
    t: Cow<'a, str>,
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
    n: Option<u64>,
    #[serde(borrow, default)]
    p: Option<&'a RawValue>,
    #[serde(borrow, default)]
    s: Option<&'a RawValue>,
    #[serde(borrow, default)]
    i: Option<&'a RawValue>,
    #[serde(borrow, default)]
    x: Option<&'a RawValue>,
}

/// Alpaca's timeframe for an interval (it has no one-second bars).
fn timeframe(interval: BarInterval) -> Option<&'static str> {
    match interval {
        BarInterval::S1 => None,
        BarInterval::M1 => Some("1Min"),
        BarInterval::M5 => Some("5Min"),
        BarInterval::H1 => Some("1Hour"),
        BarInterval::D1 => Some("1Day"),
    }
}

/// Alpaca's history for one stream: stocks of a feed, or crypto.
#[derive(Debug)]
pub struct AlpacaHistory {
    /// `https://data.alpaca.markets`.
    pub base: String,
    /// `v2/stocks` or `v1beta3/crypto/us`.
    pub path: String,
    /// The stocks feed asked for (`iex`, `sip`); none for crypto.
    pub feed_param: Option<String>,
    pub rest: Rest,
    pub source: Arc<str>,
    /// The stream's feed name, so fetched trades dedupe with streamed ones.
    pub feed: Arc<str>,
}

impl AlpacaHistory {
    fn url(&self, request: &Request, page_token: Option<&str>) -> String {
        let (kind, timeframe) = match request.what {
            What::Trades => ("trades", None),
            What::Bars(i) => ("bars", timeframe(i)),
        };
        let mut url = format!(
            "{}/{}/{kind}?symbols={}&start={}&end={}&limit=10000&sort=asc",
            self.base.trim_end_matches('/'),
            self.path.trim_matches('/'),
            // Marks keep tickflow's `BTC-USD`; Alpaca's crypto history wants `BTC/USD`.
            encode(&if self.path.contains("crypto") {
                request.symbol.replace('-', "/")
            } else {
                request.symbol.clone()
            }),
            rfc3339(request.from),
            rfc3339(request.to),
        );
        if let Some(tf) = timeframe {
            url.push_str("&timeframe=");
            url.push_str(tf);
        }
        if let Some(feed) = &self.feed_param {
            url.push_str("&feed=");
            url.push_str(feed);
        }
        if let Some(token) = page_token {
            url.push_str("&page_token=");
            url.push_str(&encode(token));
        }
        url
    }
}

/// Percent-encodes what a query value cannot hold (`/` of crypto pairs, `=` of tokens).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// RFC 3339 in UTC with nanoseconds.
fn rfc3339(ts: UnixNanos) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ts.0))
        .map_or_else(|_| ts.0.to_string(), |t| t.to_string())
}

/// Reads one page of bars or trades for `request`.
///
/// # Errors
/// The body is not Alpaca's documented shape, or a row cannot be read.
pub fn read(
    body: &str,
    what: What,
    source: &Arc<str>,
    feed: &Arc<str>,
    ts_recv: UnixNanos,
) -> Result<(Vec<Event>, Option<String>), String> {
    let envelope: Envelope<'_> = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let rows = match what {
        What::Trades => envelope.trades,
        What::Bars(_) => envelope.bars,
    };
    let mut events = Vec::new();
    for (name, rows) in rows.unwrap_or_default() {
        let symbol = Symbol::parse(&name).map_err(|e| e.to_string())?;
        for row in rows {
            let ts = UnixNanos::parse(&row.t).map_err(|e| format!("\"t\": {e}"))?;
            events.push(match what {
                What::Trades => Event::Trade(Trade {
                    symbol: symbol.clone(),
                    ts_event: ts,
                    ts_recv,
                    price: price(row.p, "p", "trade")?,
                    size: qty(row.s, "s", "trade")?,
                    trade_id: match row.i {
                        Some(_) => Some(text(row.i, "i", "trade")?.as_ref().into()),
                        None => None,
                    },
                    exchange: match row.x {
                        Some(_) => Some(Arc::from(text(row.x, "x", "trade")?.as_ref())),
                        None => None,
                    },
                    source: Arc::clone(source),
                    feed: Arc::clone(feed),
                    seq: None,
                }),
                What::Bars(interval) => {
                    let raw = Ohlcv {
                        open: row.o,
                        high: row.h,
                        low: row.l,
                        close: row.c,
                        volume: row.v,
                        vwap: row.vw,
                        trades: row.n,
                    };
                    let stamp = Stamp {
                        source,
                        feed,
                        ts_recv,
                    };
                    let span = calendar::bar_span(interval, ts);
                    fed_bar(symbol.clone(), interval, span, &raw, "bar", &stamp)?
                }
            });
        }
    }
    Ok((events, envelope.next_page_token.filter(|t| !t.is_empty())))
}

impl History for AlpacaHistory {
    fn serves(&self, what: What) -> bool {
        !matches!(what, What::Bars(BarInterval::S1))
    }

    fn first_url(&self, request: &Request) -> String {
        self.url(request, None)
    }

    fn read_page(&self, body: &str, request: &Request, now: UnixNanos) -> Result<Page, String> {
        let (events, token) = read(body, request.what, &self.source, &self.feed, now)?;
        Ok(Page {
            events,
            next: token.map(|t| self.url(request, Some(&t))),
        })
    }

    fn rest(&self) -> &Rest {
        &self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> UnixNanos {
        UnixNanos::parse(text).unwrap()
    }

    #[test]
    fn reads_bars_and_trades_pages_exactly() {
        let (source, feed) = (Arc::from("alpaca"), Arc::from("alpaca:iex"));
        let (bars, token) = read(
            include_str!("testdata/history-bars.json"),
            What::Bars(BarInterval::M1),
            &source,
            &feed,
            UnixNanos(1),
        )
        .unwrap();
        assert_eq!(
            token.as_deref(),
            Some("QUFQTHxNfDIwMjQtMDUtMDZUMTM6MzI6MDAuMDAwMDAwMDAwWg==")
        );
        let [Event::Bar(a), Event::Bar(b)] = &bars[..] else {
            panic!("{bars:?}")
        };
        assert_eq!(a.bar.start, ts("2024-05-06T13:30:00Z"));
        assert_eq!(b.bar.end, ts("2024-05-06T13:32:00Z"));
        assert_eq!(a.bar.close.to_string(), "182.77");
        assert_eq!(a.bar.trade_count, Some(10_211));
        let (trades, token) = read(
            include_str!("testdata/history-trades.json"),
            What::Trades,
            &source,
            &feed,
            UnixNanos(1),
        )
        .unwrap();
        assert_eq!(token, None);
        let [Event::Trade(t)] = &trades[..] else {
            panic!("{trades:?}")
        };
        assert_eq!(t.ts_event, ts("2021-02-06T13:04:56.334320128Z"));
        assert_eq!(t.trade_id.as_ref().unwrap().to_string(), "52983525029461");
        assert_eq!(t.price.to_string(), "387.62");
        let (none, _) = read(
            r#"{"bars":{},"next_page_token":null}"#,
            What::Bars(BarInterval::D1),
            &source,
            &feed,
            UnixNanos(1),
        )
        .unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn urls_encode_pairs_and_tokens_and_carry_no_key() {
        let request = Request {
            symbol: "BTC/USD".into(),
            what: What::Bars(BarInterval::D1),
            from: ts("2024-05-01T00:00:00Z"),
            to: ts("2024-05-02T00:00:00Z"),
        };
        let h = AlpacaHistory {
            base: "http://h/".into(),
            path: "/v1beta3/crypto/us".into(),
            feed_param: None,
            rest: Rest::new(
                "a",
                &[],
                std::sync::Arc::new(crate::rest::Limiter::new(1)),
                crate::rest::Retry::default(),
            )
            .unwrap(),
            source: Arc::from("a"),
            feed: Arc::from("a:crypto"),
        };
        assert_eq!(
            h.url(&request, Some("ab+/=")),
            "http://h/v1beta3/crypto/us/bars?symbols=BTC%2FUSD&start=2024-05-01T00:00:00Z&end=2024-05-02T00:00:00Z&limit=10000&sort=asc&timeframe=1Day&page_token=ab%2B%2F%3D"
        );
    }
}
