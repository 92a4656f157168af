//! Coinbase Exchange's trade history over REST, read without I/O, for gap repair:
//! `GET /products/{product}/trades` answers the newest trades first, 1,000 a page, and
//! `after=<trade_id>` asks for the page of trades older than that one (the `CB-AFTER` cursor
//! is the oldest id of the page). No key is needed. A range is read backwards from now until
//! a page reaches its start; [`crate::history::fetch`] hands it on oldest first.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use tickflow_model::{Event, Price, Qty, Symbol, Trade, UnixNanos};

use crate::history::{History, Request, What};
use crate::rest::{Page, Rest};

/// The venue's public REST.
pub const DEFAULT_REST_URL: &str = "https://api.exchange.coinbase.com";

/// Trades a page holds at most, as the venue caps it.
const PAGE: usize = 1000;

/// Requests a minute: the venue allows 10 a second per address for public endpoints.
pub const REQUESTS_PER_MINUTE: u32 = 300;

/// One trade as the history sends it.
#[derive(Deserialize)]
struct Row<'a> {
    #[serde(borrow)]
    time: Cow<'a, str>,
    trade_id: u64,
    #[serde(borrow)]
    price: Cow<'a, str>,
    #[serde(borrow)]
    size: Cow<'a, str>,
}

/// Coinbase's history of a source's products.
#[derive(Debug)]
pub struct CoinbaseHistory {
    /// `https://api.exchange.coinbase.com`.
    pub base: String,
    pub rest: Rest,
    pub source: Arc<str>,
    /// The stream's feed name (`<id>:matches`), so fetched trades read as streamed ones.
    pub feed: Arc<str>,
}

impl CoinbaseHistory {
    fn url(&self, product: &str, after: Option<u64>) -> String {
        let mut url = format!(
            "{}/products/{product}/trades?limit={PAGE}",
            self.base.trim_end_matches('/')
        );
        if let Some(id) = after {
            url.push_str(&format!("&after={id}"));
        }
        url
    }
}

/// A page's oldest trade: its id, the next page's cursor, and its time.
type Oldest = (u64, UnixNanos);

/// Reads one page of `product`'s trades, received at `ts_recv`; the page's oldest trade
/// comes back with it, for the next page.
///
/// # Errors
/// The body is not an array of trades, or a trade cannot be read.
pub fn read(
    body: &str,
    product: &str,
    source: &Arc<str>,
    feed: &Arc<str>,
    ts_recv: UnixNanos,
) -> Result<(Vec<Event>, Option<Oldest>), String> {
    let rows: Vec<Row<'_>> = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let symbol = Symbol::parse(product).map_err(|e| e.to_string())?;
    let mut oldest: Option<Oldest> = None;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.trade_id;
        let ts_event =
            UnixNanos::parse(&row.time).map_err(|e| format!("trade {id}: \"time\": {e}"))?;
        if oldest.is_none_or(|(oldest_id, _)| id < oldest_id) {
            oldest = Some((id, ts_event));
        }
        events.push(Event::Trade(Trade {
            symbol: symbol.clone(),
            ts_event,
            ts_recv,
            price: Price::parse(&row.price).map_err(|e| format!("trade {id}: \"price\": {e}"))?,
            size: Qty::parse(&row.size).map_err(|e| format!("trade {id}: \"size\": {e}"))?,
            trade_id: Some(id.to_string().as_str().into()),
            exchange: None,
            source: Arc::clone(source),
            feed: Arc::clone(feed),
            // The stream's `sequence` is the feed's, which the history does not have.
            seq: None,
        }));
    }
    Ok((events, oldest))
}

impl History for CoinbaseHistory {
    fn serves(&self, what: What) -> bool {
        what == What::Trades
    }

    fn first_url(&self, request: &Request) -> String {
        self.url(&request.symbol, None)
    }

    fn read_page(&self, body: &str, request: &Request, now: UnixNanos) -> Result<Page, String> {
        if request.what != What::Trades {
            return Err("Coinbase's history here is trades only".into());
        }
        let (events, oldest) = read(body, &request.symbol, &self.source, &self.feed, now)?;
        // A short page is the product's first trades; one that reaches the range's start
        // is the last needed.
        let next = oldest
            .filter(|(_, ts)| events.len() >= PAGE && *ts >= request.from)
            .map(|(id, _)| self.url(&request.symbol, Some(id)));
        Ok(Page { events, next })
    }

    fn rest(&self) -> &Rest {
        &self.rest
    }

    fn descending(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> CoinbaseHistory {
        CoinbaseHistory {
            base: "http://venue/".into(),
            rest: Rest::new(
                "coinbase",
                &[],
                crate::rest::limiter("venue", "", 60),
                crate::rest::Retry::default(),
            )
            .unwrap(),
            source: Arc::from("coinbase"),
            feed: Arc::from("coinbase:matches"),
        }
    }

    fn request(from: &str) -> Request {
        Request {
            symbol: "BTC-USD".into(),
            what: What::Trades,
            from: UnixNanos::parse(from).unwrap(),
            to: UnixNanos::parse("2026-12-07T13:00:00Z").unwrap(),
        }
    }

    fn page(first: u64, n: u64) -> String {
        let rows: Vec<String> = (first..first + n)
            .rev()
            .map(|id| {
                format!(
                    r#"{{"time":"2026-12-07T12:{:02}:{:02}.5Z","trade_id":{id},"price":"63012.{id}","size":"0.01","side":"buy"}}"#,
                    id / 60 % 60,
                    id % 60
                )
            })
            .collect();
        format!("[{}]", rows.join(","))
    }

    #[test]
    fn reads_trades_as_the_stream_does_and_pages_back_by_the_oldest_id() {
        let h = history();
        assert_eq!(
            h.first_url(&request("2026-12-07T12:00:00Z")),
            "http://venue/products/BTC-USD/trades?limit=1000"
        );
        let p = h
            .read_page(
                &page(1001, 1000),
                &request("2026-12-07T12:00:00Z"),
                UnixNanos(9),
            )
            .unwrap();
        assert_eq!(p.events.len(), 1000);
        let Event::Trade(t) = &p.events[0] else {
            panic!()
        };
        assert_eq!(t.trade_id.as_deref(), Some("2000"));
        assert_eq!(t.price.to_string(), "63012.2000");
        assert_eq!(&*t.feed, "coinbase:matches");
        assert_eq!(t.ts_recv, UnixNanos(9));
        assert_eq!(
            p.next.as_deref(),
            Some("http://venue/products/BTC-USD/trades?limit=1000&after=1001")
        );
    }

    #[test]
    fn stops_at_the_range_start_or_the_first_trade() {
        let h = history();
        // The oldest trade of the page is before the range: nothing older is needed.
        let p = h
            .read_page(
                &page(1001, 1000),
                &request("2026-12-07T12:30:00Z"),
                UnixNanos(9),
            )
            .unwrap();
        assert!(p.next.is_none());
        // A short page is the start of the product's history.
        let p = h
            .read_page(&page(1, 10), &request("2026-12-07T12:00:00Z"), UnixNanos(9))
            .unwrap();
        assert!(p.next.is_none());
        let p = h
            .read_page("[]", &request("2026-12-07T12:00:00Z"), UnixNanos(9))
            .unwrap();
        assert!(p.events.is_empty() && p.next.is_none());
    }

    #[test]
    fn an_unreadable_page_says_which_trade() {
        let h = history();
        let err = h
            .read_page(
                r#"[{"time":"2026-12-07T12:00:00Z","trade_id":5,"price":"x","size":"1"}]"#,
                &request("2026-12-07T12:00:00Z"),
                UnixNanos(9),
            )
            .unwrap_err();
        assert!(err.contains("trade 5") && err.contains("price"), "{err}");
        assert!(
            h.read_page(
                r#"{"message":"NotFound"}"#,
                &request("2026-12-07T12:00:00Z"),
                UnixNanos(9)
            )
            .is_err()
        );
    }
}
