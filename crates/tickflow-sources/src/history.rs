//! Vendors' history over REST, one interface for backfill and gap repair: a request for one
//! symbol's bars of an interval, or its trades, over an inclusive time range; the vendor's
//! pages followed to the end, with no row dropped or doubled on a page edge.

use tickflow_model::{BarInterval, Event, UnixNanos};

use crate::rest::{Edge, Page, Rest, RestError};

/// What to fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum What {
    Bars(BarInterval),
    Trades,
}

impl What {
    /// `1d`, `1m`, …, or `trades`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bars(i) => i.as_str(),
            Self::Trades => "trades",
        }
    }
}

impl std::str::FromStr for What {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "trades" {
            return Ok(Self::Trades);
        }
        s.parse().map(Self::Bars).map_err(|_| {
            format!("{s:?} is neither `trades` nor a bar interval (1s, 1m, 5m, 1h, 1d)")
        })
    }
}

/// One symbol's history over `[from, to]`, both inclusive.
#[derive(Clone, Debug)]
pub struct Request {
    /// As the vendor names it (`AAPL`, `BTC/USD`).
    pub symbol: String,
    pub what: What,
    pub from: UnixNanos,
    pub to: UnixNanos,
}

/// A vendor's history endpoints.
pub trait History: Send + Sync + std::fmt::Debug {
    /// Whether the vendor serves `what` (Polygon has no trades on the plans this reads).
    fn serves(&self, what: What) -> bool;
    /// The first page's URL.
    fn first_url(&self, request: &Request) -> String;
    /// Reads a page received at `now`; its `next` is the following page's URL.
    ///
    /// # Errors
    /// The body is not the vendor's documented shape.
    fn read_page(&self, body: &str, request: &Request, now: UnixNanos) -> Result<Page, String>;
    /// The client, with the vendor's key, limiter and retries.
    fn rest(&self) -> &Rest;
    /// Whether pages go back in time from the newest (Coinbase): [`fetch`] then gathers
    /// the whole range before handing it on oldest first, as the log wants it.
    fn descending(&self) -> bool {
        false
    }
}

/// The most events a range read backwards is gathered up to: about 200 MB of trades. A
/// longer gap fails as the vendor's, and is recorded unfillable.
pub const MAX_GATHERED: usize = 1_000_000;

/// Follows a request's pages, handing each page's new events to `on_page` in time order;
/// returns how many events there were.
///
/// # Errors
/// The vendor's ([`RestError`]), or `on_page`'s (as [`Fetch::Sink`]).
pub async fn fetch<E>(
    history: &dyn History,
    request: &Request,
    mut on_page: impl FnMut(Vec<Event>) -> Result<(), E>,
) -> Result<u64, Fetch<E>> {
    let mut url = Some(history.first_url(request));
    let mut edge = Edge::default();
    let mut total = 0u64;
    let mut pages = 0u32;
    let mut gathered = Vec::new();
    while let Some(current) = url.take() {
        let body = history.rest().get(&current).await.map_err(Fetch::Vendor)?;
        let mut page = history
            .read_page(&body, request, UnixNanos::now())
            .map_err(|error| {
                Fetch::Vendor(RestError::Unreadable {
                    url: crate::rest::redact(&current),
                    error,
                })
            })?;
        page.events
            .retain(|e| (request.from..=request.to).contains(&e.ts_event()));
        pages += 1;
        let more = page.next.is_some();
        // A cursor that points at itself would loop for ever.
        url = page.next.filter(|next| *next != current && pages < 100_000);
        if history.descending() {
            gathered.append(&mut page.events);
            if gathered.len() > MAX_GATHERED {
                return Err(Fetch::Vendor(RestError::Unreadable {
                    url: crate::rest::redact(&current),
                    error: format!(
                        "the range {}..{} holds more than {MAX_GATHERED} events, too many to gather before handing them on",
                        request.from, request.to
                    ),
                }));
            }
            if url.is_none() && more {
                // Stopped by the page cap or a cursor that repeats, short of the start.
                return Err(Fetch::Vendor(RestError::Unreadable {
                    url: crate::rest::redact(&current),
                    error: format!("paged back {pages} pages without reaching {}", request.from),
                }));
            }
            continue;
        }
        edge.keep_new(&mut page.events);
        total += page.events.len() as u64;
        if !page.events.is_empty() {
            on_page(page.events).map_err(Fetch::Sink)?;
        }
    }
    if !gathered.is_empty() {
        // Stable: events of one time keep the vendor's order, reversed with the pages.
        gathered.reverse();
        gathered.sort_by_key(Event::ts_event);
        edge.keep_new(&mut gathered);
        total = gathered.len() as u64;
        on_page(gathered).map_err(Fetch::Sink)?;
    }
    Ok(total)
}

/// Why a fetch stopped.
#[derive(Debug)]
pub enum Fetch<E> {
    Vendor(RestError),
    Sink(E),
}
