//! Coinbase Exchange's public trade stream (`matches`): every trade of the products asked
//! for, with no account. The quickest way to see real trades flow through tickflow.
//!
//! The client connects, subscribes within the venue's 5 s, and appends each trade as it
//! comes (one append per frame: a product trades tens of times a second, and the log's group
//! commit shares fsyncs among sources). A frame it cannot read goes to the DLQ with its
//! reason. A dropped connection, an `error` frame or silence longer than `stale_after` (the
//! `heartbeat` channel speaks every second) reconnects after a capped exponential backoff
//! with jitter, resubscribing; each reconnect is counted in
//! `tickflow_reconnects_total{source, reason}`. Trades repeated across a reconnect (the
//! `last_match` sent on subscribing) carry their venue `trade_id`, so processing drops them
//! as duplicates. With `repair_gaps`, the trades a reconnect or a restart missed are fetched
//! from the venue's REST history ([`history`]) once the subscription is confirmed, before
//! the stream goes on (`crate::gaps`).

pub mod history;
pub mod parse;

use std::sync::Arc;
use std::time::Duration;

use tickflow_core::codec::Batch;
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_model::{Event, UnixNanos};

use crate::gaps::{Marks, Repair};
use crate::ws::{self, Feed, Frame, Venue};
use parse::Parsed;

/// The venue's public feed.
pub const DEFAULT_URL: &str = "wss://ws-feed.exchange.coinbase.com";

/// A Coinbase source as its config entry sets it up.
#[derive(Clone, Debug)]
pub struct CoinbaseSource {
    pub url: String,
    /// Products as Coinbase names them: `BTC-USD`.
    pub symbols: Vec<String>,
    /// Silence after which the connection is taken for dead and reopened.
    pub stale_after: Duration,
    /// How often the link is pinged; see [`crate::ws`].
    pub ping_every: Duration,
    /// The longest wait between reconnects.
    pub retry_max: Duration,
    /// The REST history, for gap repair.
    pub rest_url: String,
    /// Fetch the trades a reconnect or a restart missed.
    pub repair_gaps: bool,
    /// How long the stream waits for a history that fails (`crate::gaps::Repair::hold`).
    pub repair_hold: Duration,
}

impl CoinbaseSource {
    /// The REST history client, as source `id` reads it.
    ///
    /// # Errors
    /// TLS could not be set up.
    pub fn history(
        &self,
        id: &str,
        retry: crate::rest::Retry,
    ) -> Result<history::CoinbaseHistory, String> {
        Ok(history::CoinbaseHistory {
            base: self.rest_url.clone(),
            rest: crate::rest::Rest::new(
                id,
                &[],
                crate::rest::limiter(&self.rest_url, "", history::REQUESTS_PER_MINUTE),
                retry,
            )?,
            source: Arc::from(id),
            feed: feed_name(id),
        })
    }
}

/// The feed trades carry: `<id>:matches`.
fn feed_name(id: &str) -> Arc<str> {
    Arc::from(format!("{id}:matches"))
}

/// Frames read under the source's id.
struct Matches {
    source: Arc<str>,
    feed: Arc<str>,
    marks: Marks,
    /// The frame just read confirmed the subscription.
    subscribed: bool,
}

impl Venue for Matches {
    fn read(&mut self, text: &str, now: UnixNanos, batch: &mut Batch) -> Result<(), Frame> {
        match parse::parse(text, &self.source, &self.feed, now) {
            Ok(Parsed::Trade(trade)) => {
                let event = Event::Trade(trade);
                self.marks.saw(&event);
                batch.push(&event);
            }
            Ok(Parsed::Subscribed) => self.subscribed = true,
            Ok(Parsed::Heartbeat) => {}
            // A product it does not know: subscribing again would be refused again.
            Ok(Parsed::Error(message)) if message.starts_with("Failed to subscribe") => {
                return Err(Frame::Stop(message));
            }
            Ok(Parsed::Error(message)) => return Err(Frame::Reconnect(message)),
            Err(error) => return Err(Frame::Unreadable(error)),
        }
        Ok(())
    }

    fn subscribed(&mut self) -> bool {
        std::mem::take(&mut self.subscribed)
    }

    fn marks(&mut self) -> Option<&mut Marks> {
        Some(&mut self.marks)
    }
}

#[async_trait::async_trait]
impl Source for CoinbaseSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let feed = Feed {
            url: self.url.clone(),
            subscribe: Some(parse::subscribe(&self.symbols)),
            stale_after: self.stale_after,
            ping_every: self.ping_every,
            market_hours: false,
            retry_max: self.retry_max,
        };
        let mut venue = Matches {
            source: Arc::from(ctx.id()),
            feed: feed_name(ctx.id()),
            marks: Marks::load(ctx.state_dir()),
            subscribed: false,
        };
        let repair = Repair::when(self.repair_gaps, self.repair_hold, || {
            self.history(ctx.id(), crate::rest::Retry::default())
        })?;
        ws::follow(&feed, &ctx, &mut venue, repair.as_ref()).await
    }
}
