//! Binance Spot's trade history over REST, read without I/O, for gap repair. Raw trades
//! are paged by id (`GET /api/v3/historicalTrades?fromId=`, 1,000 a page, oldest first),
//! and only aggregate trades can be found by time: so a range's first request is
//! `GET /api/v3/aggTrades?startTime=&limit=1`, whose one row names the first raw trade id
//! (`f`) at or after the start; the raw trades are then read from that id until one is past
//! the range. The key, when configured, goes in `X-MBX-APIKEY`.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use tickflow_model::{Event, Price, Qty, Symbol, Trade, UnixNanos};

use crate::history::{History, Request, What};
use crate::rest::{Page, Rest};

/// The venue's public market-data REST.
pub const DEFAULT_REST_URL: &str = "https://api.binance.com";

/// Trades a page holds at most, as the venue caps it.
const PAGE: usize = 1000;

/// Requests a minute: a page of raw trades weighs 25 of the venue's 6,000 a minute per
/// address, and other clients on the address need some.
pub const REQUESTS_PER_MINUTE: u32 = 120;

/// A row of either answer: an aggregate trade (`a`, `f`) or a raw trade (`id`, `price`,
/// `qty`, `time`).
#[derive(Deserialize)]
struct Row<'a> {
    #[serde(default)]
    f: Option<u64>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow, default)]
    price: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    qty: Option<Cow<'a, str>>,
    #[serde(default)]
    time: Option<i64>,
}

/// Binance's history of a source's symbols.
#[derive(Debug)]
pub struct BinanceHistory {
    /// `https://api.binance.com`.
    pub base: String,
    pub rest: Rest,
    pub source: Arc<str>,
}

impl BinanceHistory {
    /// The venue's name of tickflow's `BTC-USDT`.
    fn venue_symbol(symbol: &str) -> String {
        symbol.replace('-', "")
    }

    fn trades_url(&self, symbol: &str, from_id: u64) -> String {
        format!(
            "{}/api/v3/historicalTrades?symbol={}&fromId={from_id}&limit={PAGE}",
            self.base.trim_end_matches('/'),
            Self::venue_symbol(symbol)
        )
    }
}

/// A raw trade's text field, or why it is missing.
fn need<'a>(value: &'a Option<Cow<'_, str>>, id: u64, key: &str) -> Result<&'a str, String> {
    value
        .as_deref()
        .ok_or_else(|| format!("trade {id}: a trade needs {key:?}"))
}

impl History for BinanceHistory {
    fn serves(&self, what: What) -> bool {
        what == What::Trades
    }

    fn first_url(&self, request: &Request) -> String {
        format!(
            "{}/api/v3/aggTrades?symbol={}&startTime={}&limit=1",
            self.base.trim_end_matches('/'),
            Self::venue_symbol(&request.symbol),
            request.from.0.div_euclid(1_000_000)
        )
    }

    fn read_page(&self, body: &str, request: &Request, now: UnixNanos) -> Result<Page, String> {
        if request.what != What::Trades {
            return Err("Binance's history here is trades only".into());
        }
        let rows: Vec<Row<'_>> = serde_json::from_str(body).map_err(|e| e.to_string())?;
        // The aggregate trade at the start names the first raw trade to read.
        if let Some(first) = rows.first().and_then(|r| r.f) {
            return Ok(Page {
                events: Vec::new(),
                next: Some(self.trades_url(&request.symbol, first)),
            });
        }
        let symbol = Symbol::parse(&request.symbol).map_err(|e| e.to_string())?;
        let feed: Arc<str> = Arc::from(format!(
            "{}:{}",
            self.source,
            super::parse::stream_name(symbol.as_str())
        ));
        let mut events = Vec::with_capacity(rows.len());
        let mut last: Option<(u64, UnixNanos)> = None;
        for (n, row) in rows.iter().enumerate() {
            let id = row
                .id
                .ok_or_else(|| format!("row {n}: a trade needs \"id\""))?;
            let ms = row
                .time
                .ok_or_else(|| format!("trade {id}: a trade needs \"time\""))?;
            let ts_event = UnixNanos(ms.saturating_mul(1_000_000));
            last = Some((id, ts_event));
            events.push(Event::Trade(Trade {
                symbol: symbol.clone(),
                ts_event,
                ts_recv: now,
                price: Price::parse(need(&row.price, id, "price")?)
                    .map_err(|e| format!("trade {id}: \"price\": {e}"))?,
                size: Qty::parse(need(&row.qty, id, "qty")?)
                    .map_err(|e| format!("trade {id}: \"qty\": {e}"))?,
                trade_id: Some(id.to_string().as_str().into()),
                exchange: None,
                source: Arc::clone(&self.source),
                feed: Arc::clone(&feed),
                seq: None,
            }));
        }
        // A short page holds the newest trades; one that passes the range's end is the last.
        let next = last
            .filter(|(_, ts)| rows.len() >= PAGE && *ts <= request.to)
            .map(|(id, _)| self.trades_url(&request.symbol, id + 1));
        Ok(Page { events, next })
    }

    fn rest(&self) -> &Rest {
        &self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> BinanceHistory {
        BinanceHistory {
            base: "http://venue".into(),
            rest: Rest::new(
                "binance",
                &[],
                crate::rest::limiter("venue", "", 60),
                crate::rest::Retry::default(),
            )
            .unwrap(),
            source: Arc::from("binance"),
        }
    }

    fn request(to_ms: i64) -> Request {
        Request {
            symbol: "BTC-USDT".into(),
            what: What::Trades,
            from: UnixNanos(1_715_096_000_123_456_789),
            to: UnixNanos(to_ms * 1_000_000),
        }
    }

    fn trades(first: u64, n: u64) -> String {
        let rows: Vec<String> = (first..first + n)
            .map(|id| {
                format!(
                    r#"{{"id":{id},"price":"63012.{id}","qty":"0.01","quoteQty":"630.12","time":{},"isBuyerMaker":true,"isBestMatch":true}}"#,
                    1_715_096_000_000 + id as i64
                )
            })
            .collect();
        format!("[{}]", rows.join(","))
    }

    #[test]
    fn finds_the_first_trade_by_time_then_reads_trades_by_id() {
        let h = history();
        let r = request(1_715_096_999_000);
        assert_eq!(
            h.first_url(&r),
            "http://venue/api/v3/aggTrades?symbol=BTCUSDT&startTime=1715096000123&limit=1"
        );
        let p = h
            .read_page(
                r#"[{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,"T":1498793709153,"m":true,"M":true}]"#,
                &r,
                UnixNanos(9),
            )
            .unwrap();
        assert!(p.events.is_empty());
        assert_eq!(
            p.next.as_deref(),
            Some("http://venue/api/v3/historicalTrades?symbol=BTCUSDT&fromId=27781&limit=1000")
        );
        let p = h.read_page(&trades(100, 1000), &r, UnixNanos(9)).unwrap();
        assert_eq!(p.events.len(), 1000);
        let Event::Trade(t) = &p.events[0] else {
            panic!()
        };
        assert_eq!(t.symbol.as_str(), "BTC-USDT");
        assert_eq!(t.trade_id.as_deref(), Some("100"));
        assert_eq!(&*t.feed, "binance:btcusdt@trade", "as the stream names it");
        assert_eq!(t.ts_event, UnixNanos(1_715_096_000_100_000_000));
        assert_eq!(
            p.next.as_deref(),
            Some("http://venue/api/v3/historicalTrades?symbol=BTCUSDT&fromId=1100&limit=1000")
        );
    }

    #[test]
    fn stops_past_the_range_end_at_the_newest_trade_or_with_no_trade_since() {
        let h = history();
        // The last trade of a full page is after the range: nothing newer is needed.
        let p = h
            .read_page(
                &trades(100, 1000),
                &request(1_715_096_000_500),
                UnixNanos(9),
            )
            .unwrap();
        assert!(p.next.is_none());
        // A short page holds the newest trades.
        let p = h
            .read_page(&trades(100, 10), &request(1_715_096_999_000), UnixNanos(9))
            .unwrap();
        assert_eq!(p.events.len(), 10);
        assert!(p.next.is_none());
        // No aggregate trade since the start: nothing to read.
        let p = h
            .read_page("[]", &request(1_715_096_999_000), UnixNanos(9))
            .unwrap();
        assert!(p.events.is_empty() && p.next.is_none());
    }

    #[test]
    fn an_unreadable_page_says_which_trade() {
        let h = history();
        let r = request(1_715_096_999_000);
        let err = h
            .read_page(r#"[{"id":7,"price":"1","time":5}]"#, &r, UnixNanos(9))
            .unwrap_err();
        assert!(err.contains("trade 7") && err.contains("qty"), "{err}");
        assert!(
            h.read_page(
                r#"{"code":-1121,"msg":"Invalid symbol."}"#,
                &r,
                UnixNanos(9)
            )
            .is_err()
        );
    }
}
