//! Polygon's REST aggregates, read without I/O: range bars (`/v2/aggs/ticker/…/range/…`,
//! paged by `next_url`), grouped daily (`/v2/aggs/grouped/locale/us/market/stocks/{date}`)
//! and the previous close (`/v2/aggs/ticker/{ticker}/prev`). The key goes in the
//! `Authorization` header, so `next_url` needs nothing added and no URL holds it.
//!
//! A range bar's `t` is its start; grouped and previous-close bars are stamped at the day's
//! end. Daily bars are keyed here by the exchange's midnight either way (`crate::calendar`),
//! as the range endpoint and Alpaca stamp them.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use tickflow_model::{BarInterval, Event, Symbol, UnixNanos};

use crate::calendar;
use crate::history::{History, Request, What};
use crate::polygon::parse::millis;
use crate::rest::{Page, Rest};
use crate::wire::{Ohlcv, Stamp, fed_bar};

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    ticker: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    results: Option<Vec<Agg<'a>>>,
    #[serde(default)]
    next_url: Option<String>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Agg<'a> {
    #[serde(rename = "T", borrow, default)]
    ticker: Option<Cow<'a, str>>,
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
    t: i64,
    #[serde(default)]
    n: Option<u64>,
}

/// The multiplier and timespan of an interval.
fn timespan(interval: BarInterval) -> (u32, &'static str) {
    match interval {
        BarInterval::S1 => (1, "second"),
        BarInterval::M1 => (1, "minute"),
        BarInterval::M5 => (5, "minute"),
        BarInterval::H1 => (1, "hour"),
        BarInterval::D1 => (1, "day"),
    }
}

/// The range URL: every bar starting in `[from, to]` (Unix milliseconds, inclusive), oldest
/// first, as many per page as the vendor allows.
pub fn range_url(
    base: &str,
    ticker: &str,
    interval: BarInterval,
    from: UnixNanos,
    to: UnixNanos,
) -> String {
    let (multiplier, span) = timespan(interval);
    format!(
        "{}/v2/aggs/ticker/{}/range/{multiplier}/{span}/{}/{}?adjusted=true&sort=asc&limit=50000",
        base.trim_end_matches('/'),
        ticker,
        from.0.div_euclid(1_000_000),
        to.0.div_euclid(1_000_000),
    )
}

/// The grouped-daily URL of one exchange date (`YYYY-MM-DD`).
pub fn grouped_url(base: &str, date: &str) -> String {
    format!(
        "{}/v2/aggs/grouped/locale/us/market/stocks/{date}?adjusted=true",
        base.trim_end_matches('/')
    )
}

/// The previous-close URL of one ticker.
pub fn prev_url(base: &str, ticker: &str) -> String {
    format!(
        "{}/v2/aggs/ticker/{ticker}/prev?adjusted=true",
        base.trim_end_matches('/')
    )
}

/// Reads any aggregates answer into bars of `interval`; a result names its ticker (`T`) or
/// the envelope does. With `only`, results of other tickers are left out (grouped daily).
///
/// # Errors
/// The body is not an aggregates answer, or a bar in it cannot be read.
pub fn read(
    body: &str,
    interval: BarInterval,
    only: Option<&[String]>,
    source: &Arc<str>,
    feed: &Arc<str>,
    ts_recv: UnixNanos,
) -> Result<Page, String> {
    let envelope: Envelope<'_> = serde_json::from_str(body).map_err(|e| e.to_string())?;
    if let Some(error) = envelope.error.as_deref() {
        return Err(format!("the vendor reported an error: {error}"));
    }
    if !matches!(envelope.status.as_deref(), None | Some("OK" | "DELAYED")) {
        return Err(format!("status {:?}", envelope.status.unwrap_or_default()));
    }
    let mut events = Vec::new();
    for agg in envelope.results.unwrap_or_default() {
        let ticker = agg
            .ticker
            .as_deref()
            .or(envelope.ticker.as_deref())
            .ok_or("a result needs \"T\" when the answer has no \"ticker\"")?;
        if only.is_some_and(|only| !only.iter().any(|s| s == ticker)) {
            continue;
        }
        let stamp = Stamp {
            source,
            feed,
            ts_recv,
        };
        let raw = Ohlcv {
            open: agg.o,
            high: agg.h,
            low: agg.l,
            close: agg.c,
            volume: agg.v,
            vwap: agg.vw,
            trades: agg.n,
        };
        let symbol = Symbol::parse(ticker).map_err(|e| e.to_string())?;
        let span = calendar::bar_span(interval, millis(agg.t));
        events.push(fed_bar(symbol, interval, span, &raw, "bar", &stamp)?);
    }
    events.sort_by_key(Event::ts_event);
    Ok(Page {
        events,
        next: envelope.next_url,
    })
}

/// Polygon's history: range aggregates (trades are not on the plans this reads).
#[derive(Debug)]
pub struct PolygonHistory {
    pub base: String,
    pub rest: Rest,
    pub source: Arc<str>,
    pub feed: Arc<str>,
}

impl History for PolygonHistory {
    fn serves(&self, what: What) -> bool {
        matches!(what, What::Bars(_))
    }

    fn first_url(&self, request: &Request) -> String {
        let interval = match request.what {
            What::Bars(i) => i,
            What::Trades => BarInterval::S1,
        };
        range_url(
            &self.base,
            &request.symbol,
            interval,
            request.from,
            request.to,
        )
    }

    fn read_page(&self, body: &str, request: &Request, now: UnixNanos) -> Result<Page, String> {
        let What::Bars(interval) = request.what else {
            return Err("Polygon serves bars only".into());
        };
        read(body, interval, None, &self.source, &self.feed, now)
    }

    fn rest(&self) -> &Rest {
        &self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(body: &str, interval: BarInterval, only: Option<&[String]>) -> Result<Page, String> {
        read(
            body,
            interval,
            only,
            &Arc::from("polygon"),
            &Arc::from("polygon:stocks"),
            UnixNanos(1),
        )
    }

    fn ts(text: &str) -> UnixNanos {
        UnixNanos::parse(text).unwrap()
    }

    #[test]
    fn range_bars_start_at_the_exchanges_midnight_and_keep_the_next_page() {
        let p = page(
            include_str!("testdata/aggs-page1.json"),
            BarInterval::D1,
            None,
        )
        .unwrap();
        assert_eq!(p.events.len(), 2);
        let Event::Bar(first) = &p.events[0] else {
            panic!()
        };
        assert_eq!(first.bar.symbol.as_str(), "AAPL");
        assert_eq!(first.bar.start, ts("2024-05-06T04:00:00Z"));
        assert_eq!(first.bar.end, ts("2024-05-07T04:00:00Z"));
        assert_eq!(first.bar.open.to_string(), "182.35");
        assert_eq!(first.bar.vwap.unwrap().to_string(), "183.912");
        assert_eq!(first.bar.volume.to_string(), "54021344.0");
        assert_eq!(first.bar.trade_count, Some(612_034));
        assert!(p.next.as_deref().unwrap().contains("cursor="));
    }

    #[test]
    fn grouped_and_previous_close_bars_are_keyed_by_their_day() {
        let only = ["AAPL".to_string()];
        let p = page(
            include_str!("testdata/grouped.json"),
            BarInterval::D1,
            Some(&only),
        )
        .unwrap();
        assert_eq!(p.events.len(), 1, "MSFT is not asked for");
        let Event::Bar(b) = &p.events[0] else {
            panic!()
        };
        // Stamped at the close (20:00 UTC), keyed at the day's start like a range bar.
        assert_eq!(b.bar.start, ts("2024-05-06T04:00:00Z"));
        assert!(p.next.is_none());
    }

    #[test]
    fn an_empty_answer_has_no_results_key() {
        let p = page(
            r#"{"ticker":"ZZZZ","queryCount":0,"resultsCount":0,"adjusted":true,"status":"OK","request_id":"x"}"#,
            BarInterval::D1,
            None,
        )
        .unwrap();
        assert!(p.events.is_empty() && p.next.is_none());
        let e = page(
            r#"{"status":"ERROR","request_id":"x","error":"Unknown API Key"}"#,
            BarInterval::D1,
            None,
        )
        .unwrap_err();
        assert!(e.contains("Unknown API Key"), "{e}");
    }

    #[test]
    fn urls_carry_the_bounds_in_milliseconds_and_never_the_key() {
        let url = range_url(
            "http://h/",
            "AAPL",
            BarInterval::M5,
            ts("2024-05-06T13:30:00Z"),
            ts("2024-05-06T14:00:00Z"),
        );
        assert_eq!(
            url,
            "http://h/v2/aggs/ticker/AAPL/range/5/minute/1715002200000/1715004000000?adjusted=true&sort=asc&limit=50000"
        );
    }
}
