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
//! as duplicates.

pub mod parse;

use std::sync::Arc;
use std::time::Duration;

use tickflow_core::codec::Batch;
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_model::{Event, UnixNanos};

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
}

/// Frames read under the source's id.
struct Matches {
    source: Arc<str>,
    feed: Arc<str>,
}

impl Venue for Matches {
    fn read(&mut self, text: &str, now: UnixNanos, batch: &mut Batch) -> Result<(), Frame> {
        match parse::parse(text, &self.source, &self.feed, now) {
            Ok(Parsed::Trade(trade)) => batch.push(&Event::Trade(trade)),
            Ok(Parsed::Subscribed | Parsed::Heartbeat) => {}
            // A product it does not know: subscribing again would be refused again.
            Ok(Parsed::Error(message)) if message.starts_with("Failed to subscribe") => {
                return Err(Frame::Stop(message));
            }
            Ok(Parsed::Error(message)) => return Err(Frame::Reconnect(message)),
            Err(error) => return Err(Frame::Unreadable(error)),
        }
        Ok(())
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
            feed: Arc::from(format!("{}:matches", ctx.id())),
        };
        ws::follow(&feed, &ctx, &mut venue, None).await
    }
}
