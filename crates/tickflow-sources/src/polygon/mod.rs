//! Polygon: the stocks WebSocket (trades, quotes, second and minute aggregates) and daily
//! bars over REST, history on the first start and each trading day's bar after it, as the
//! `initialize` and `daily_update` jobs tickflow replaces did.
//!
//! The WebSocket greets, the client authenticates by message and subscribes once
//! authenticated. A refused key (`auth_failed`) stops the source with the vendor's message;
//! `max_connections`, `auth_timeout` and other errors reconnect after the shared loop's
//! backoff (`crate::ws`). REST calls go through one token bucket per key (`crate::rest`): the
//! free plan allows 5 a minute.

pub mod parse;
pub mod rest;

use std::sync::Arc;
use std::time::Duration;

use tickflow_core::codec::Batch;
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_model::{BarInterval, UnixNanos};

use crate::calendar;
use crate::gaps::{Marks, Repair};
use crate::history::{self, Fetch, Request, What};
use crate::rest::{Rest, Retry};
use crate::ws::{self, Feed, Frame, Venue};
use parse::Control;
use rest::PolygonHistory;

/// The real-time stocks stream.
pub const DEFAULT_WS_URL: &str = "wss://socket.polygon.io/stocks";
pub const DEFAULT_REST_URL: &str = "https://api.polygon.io";

/// A Polygon source as its config entry sets it up.
#[derive(Clone)]
pub struct PolygonSource {
    /// The stream, market path included: `…/stocks`.
    pub ws_url: String,
    pub rest_url: String,
    pub key: String,
    /// Symbols per WebSocket channel (`*` = all).
    pub trades: Vec<String>,
    pub quotes: Vec<String>,
    pub second_bars: Vec<String>,
    pub minute_bars: Vec<String>,
    /// Symbols whose daily bars are fetched over REST.
    pub daily_bars: Vec<String>,
    /// Days of daily bars fetched at start (the old `initialize`: about 70).
    pub history_days: u32,
    /// When each day's update runs, as minutes after midnight UTC (the old `daily_update`:
    /// 13:00); it fetches every trading day since the last one fetched.
    pub daily_at_minute: u32,
    pub requests_per_minute: u32,
    /// Fetch the minute and second bars the stream missed over REST after a reconnect or a
    /// restart (`crate::gaps`); trades and quotes are recorded as unfillable.
    pub repair_gaps: bool,
    /// How long the stream waits for a history that fails (`crate::gaps::Repair::hold`).
    pub repair_hold: Duration,
    pub stale_after: Duration,
    /// How often the link is pinged; see [`crate::ws`].
    pub ping_every: Duration,
    pub retry_max: Duration,
}

impl std::fmt::Debug for PolygonSource {
    /// The key never shows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolygonSource")
            .field("ws_url", &self.ws_url)
            .field("rest_url", &self.rest_url)
            .field("key", &"***")
            .field("trades", &self.trades)
            .field("quotes", &self.quotes)
            .field("second_bars", &self.second_bars)
            .field("minute_bars", &self.minute_bars)
            .field("daily_bars", &self.daily_bars)
            .finish_non_exhaustive()
    }
}

impl PolygonSource {
    /// The feed name events carry: `<id>:stocks`, `<id>:delayed`.
    pub fn feed_name(&self, id: &str) -> String {
        let host = self.ws_url.split("://").nth(1).unwrap_or_default();
        let market = host
            .rsplit('/')
            .next()
            .filter(|m| !m.is_empty())
            .unwrap_or("stocks");
        if host.starts_with("delayed.") {
            format!("{id}:delayed")
        } else {
            format!("{id}:{market}")
        }
    }

    /// The REST history client of this source's key.
    ///
    /// # Errors
    /// The key is not a valid header value, or TLS could not be set up.
    pub fn history(&self, id: &str, retry: Retry) -> Result<PolygonHistory, String> {
        let limiter = crate::rest::limiter(&self.rest_url, &self.key, self.requests_per_minute);
        let bearer = format!("Bearer {}", self.key);
        Ok(PolygonHistory {
            base: self.rest_url.clone(),
            rest: Rest::new(id, &[("authorization", &bearer)], limiter, retry)?,
            source: Arc::from(id),
            feed: Arc::from(self.feed_name(id)),
        })
    }

    fn streams(&self) -> bool {
        [
            &self.trades,
            &self.quotes,
            &self.second_bars,
            &self.minute_bars,
        ]
        .iter()
        .any(|c| !c.is_empty())
    }
}

/// The handshake's state and what to send next.
struct Stream {
    auth: String,
    subscribe: String,
    replies: Vec<String>,
    source: Arc<str>,
    feed: Arc<str>,
    marks: Marks,
    /// Authenticated, the subscription not yet confirmed.
    awaiting_subscription: bool,
    /// The frame just read confirmed the subscription, for the first time since the login.
    subscribed: bool,
}

impl Venue for Stream {
    fn read(&mut self, text: &str, now: UnixNanos, batch: &mut Batch) -> Result<(), Frame> {
        let frame = parse::parse(text, &self.source, &self.feed, now).map_err(Frame::Unreadable)?;
        for event in &frame.events {
            self.marks.saw(event);
            batch.push(event);
        }
        for control in frame.control {
            match control {
                Control::Connected => self.replies.push(self.auth.clone()),
                Control::Authenticated => {
                    self.replies.push(self.subscribe.clone());
                    self.awaiting_subscription = true;
                }
                Control::Subscribed => {
                    // One confirmation per topic: the repair runs after the first.
                    self.subscribed |= std::mem::take(&mut self.awaiting_subscription);
                }
                Control::AuthFailed(msg) => return Err(Frame::Stop(format!("auth_failed: {msg}"))),
                Control::Error(msg) => return Err(Frame::Reconnect(msg)),
            }
        }
        Ok(())
    }

    fn replies(&mut self) -> Vec<String> {
        std::mem::take(&mut self.replies)
    }

    fn subscribed(&mut self) -> bool {
        std::mem::take(&mut self.subscribed)
    }

    fn confirms_subscription(&self) -> bool {
        true
    }

    fn marks(&mut self) -> Option<&mut Marks> {
        Some(&mut self.marks)
    }
}

#[async_trait::async_trait]
impl Source for PolygonSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let stream = async {
            if !self.streams() {
                return Ok(());
            }
            let feed = Feed {
                url: self.ws_url.clone(),
                subscribe: None,
                stale_after: self.stale_after,
                ping_every: self.ping_every,
                market_hours: self.ws_url.trim_end_matches('/').ends_with("/stocks"),
                retry_max: self.retry_max,
            };
            let mut venue = Stream {
                auth: parse::auth(&self.key),
                subscribe: parse::subscribe(
                    &self.trades,
                    &self.quotes,
                    &self.second_bars,
                    &self.minute_bars,
                ),
                replies: Vec::new(),
                source: Arc::from(ctx.id()),
                feed: Arc::from(self.feed_name(ctx.id())),
                marks: Marks::load(ctx.state_dir()),
                awaiting_subscription: false,
                subscribed: false,
            };
            let repair = if self.repair_gaps {
                Some(Repair {
                    history: Arc::new(self.history(ctx.id(), Retry::default())?),
                    hold: self.repair_hold,
                })
            } else {
                None
            };
            ws::follow(&feed, &ctx, &mut venue, repair.as_ref()).await
        };
        let daily = async {
            if self.daily_bars.is_empty() {
                return Ok(());
            }
            daily_bars(&self, &ctx).await
        };
        let (stream, daily) = tokio::join!(stream, daily);
        stream.and(daily)
    }
}

/// History at start, then every trading day's bar once a day; a day the vendor cannot serve now
/// is tried again at the next update.
async fn daily_bars(source: &PolygonSource, ctx: &SourceContext) -> Result<(), SourceError> {
    let history = source.history(ctx.id(), Retry::default())?;
    let today = calendar::exchange_date(UnixNanos::now());
    let mut from = today
        .checked_sub(jiff::Span::new().days(i64::from(source.history_days)))
        .unwrap_or(today);
    loop {
        let to = calendar::previous_trading_day(calendar::exchange_date(UnixNanos::now()));
        if from <= to {
            match fetch_days(&history, &source.daily_bars, from, to, ctx).await {
                Ok(()) => from = to.tomorrow().unwrap_or(to),
                Err(Fetch::Sink(e)) => return Err(e),
                Err(Fetch::Vendor(e)) if e.is_refusal() => return Err(e.into()),
                Err(Fetch::Vendor(e)) => {
                    tracing::warn!(source = ctx.id(), error = %e, "daily bars not fetched; trying again at the next update");
                }
            }
        }
        tokio::select! {
            () = ctx.stopped() => return Ok(()),
            () = tokio::time::sleep(until_minute_utc(source.daily_at_minute)) => {}
        }
    }
}

/// How a window of daily bars is asked for, in the fewest calls (the free plan allows 5 a
/// minute): one grouped-daily call per trading day when there are fewer days than symbols (a
/// daily update of many tickers), else one range call per symbol (history).
#[derive(Debug, PartialEq)]
enum DailyCalls {
    Grouped(Vec<jiff::civil::Date>),
    Ranges,
}

fn daily_calls(symbols: usize, from: jiff::civil::Date, to: jiff::civil::Date) -> DailyCalls {
    let mut days = Vec::new();
    let mut day = from;
    while day <= to && days.len() < symbols {
        if calendar::is_trading_day(day) {
            days.push(day);
        }
        day = match day.tomorrow() {
            Ok(next) => next,
            Err(_) => break,
        };
    }
    if day > to && days.len() < symbols {
        DailyCalls::Grouped(days)
    } else {
        DailyCalls::Ranges
    }
}

/// Fetches each symbol's daily bars of `[from, to]` and appends them.
async fn fetch_days(
    history: &PolygonHistory,
    symbols: &[String],
    from: jiff::civil::Date,
    to: jiff::civil::Date,
    ctx: &SourceContext,
) -> Result<(), Fetch<SourceError>> {
    if let DailyCalls::Grouped(days) = daily_calls(symbols.len(), from, to) {
        let mut batch = Batch::default();
        for day in days {
            let url = rest::grouped_url(&history.base, &day.to_string());
            let body = tokio::select! {
                () = ctx.stopped() => return Ok(()),
                body = history.rest.get(&url) => body.map_err(Fetch::Vendor)?,
            };
            let page = rest::read(
                &body,
                BarInterval::D1,
                Some(symbols),
                &history.source,
                &history.feed,
                UnixNanos::now(),
            )
            .map_err(|error| {
                Fetch::Vendor(crate::rest::RestError::Unreadable {
                    url: url.clone(),
                    error,
                })
            })?;
            batch.clear();
            for e in &page.events {
                batch.push(e);
            }
            if !batch.is_empty() {
                ctx.append(&batch).map_err(Fetch::Sink)?;
            }
            tracing::info!(source = ctx.id(), %day, bars = page.events.len(), "daily bars fetched (grouped)");
        }
        return Ok(());
    }
    for symbol in symbols {
        let request = Request {
            symbol: symbol.clone(),
            what: What::Bars(BarInterval::D1),
            from: calendar::day_start(from),
            to: calendar::day_start(to),
        };
        let mut batch = Batch::default();
        let fetched = tokio::select! {
            () = ctx.stopped() => return Ok(()),
            fetched = history::fetch(history, &request, |events| {
                batch.clear();
                for e in &events {
                    batch.push(e);
                }
                ctx.append(&batch).map(|_| ())
            }) => fetched?,
        };
        tracing::info!(source = ctx.id(), symbol, %from, %to, bars = fetched, "daily bars fetched");
    }
    Ok(())
}

/// How long until the next `minute` after midnight UTC.
fn until_minute_utc(minute: u32) -> Duration {
    let now = UnixNanos::now().0;
    let day = BarInterval::D1.nanos();
    let at = i64::from(minute) * 60_000_000_000;
    let mut next = now - now.rem_euclid(day) + at;
    if next <= now {
        next += day;
    }
    Duration::from_nanos(u64::try_from(next - now).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use jiff::civil::Date;

    use super::*;

    #[test]
    fn a_daily_update_of_many_symbols_is_one_grouped_call_per_trading_day() {
        let (fri, mon) = (Date::constant(2024, 5, 3), Date::constant(2024, 5, 6));
        assert_eq!(
            daily_calls(10, fri, mon),
            DailyCalls::Grouped(vec![fri, mon]),
            "the weekend is not asked for"
        );
        assert_eq!(
            daily_calls(2, fri, mon),
            DailyCalls::Ranges,
            "as many days as symbols"
        );
        assert_eq!(
            daily_calls(3, Date::constant(2024, 2, 1), Date::constant(2024, 4, 30)),
            DailyCalls::Ranges,
            "history: one range call per symbol"
        );
    }
}
