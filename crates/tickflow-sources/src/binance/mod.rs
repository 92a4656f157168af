//! Binance Spot's public trade streams (`<symbol>@trade`): every trade, with no account. One
//! combined-stream connection carries every configured symbol; the venue's 24-hour limit and
//! its `serverShutdown` notice end it, and the shared loop (`crate::ws`) reconnects.

pub mod parse;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tickflow_core::codec::Batch;
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_model::{Event, Symbol, UnixNanos};

use crate::ws::{self, Feed, Frame, Venue};
use parse::Parsed;

/// The venue's market-data-only endpoint.
pub const DEFAULT_URL: &str = "wss://data-stream.binance.vision";

/// A Binance source as its config entry sets it up.
#[derive(Clone, Debug)]
pub struct BinanceSource {
    /// The endpoint, without `/stream?…`.
    pub url: String,
    /// In tickflow's form, `BTC-USDT`; the stream is `btcusdt@trade`.
    pub symbols: Vec<Symbol>,
    pub stale_after: Duration,
    /// How often the link is pinged; see [`crate::ws`].
    pub ping_every: Duration,
    pub retry_max: Duration,
}

struct Trades {
    symbols: HashMap<String, Symbol>,
    source: Arc<str>,
}

impl Venue for Trades {
    fn read(&mut self, text: &str, now: UnixNanos, batch: &mut Batch) -> Result<(), Frame> {
        match parse::parse(text, &self.symbols, &self.source, now) {
            Ok(Parsed::Trade(trade)) => batch.push(&Event::Trade(trade)),
            Ok(Parsed::Reply) => {}
            Ok(Parsed::Reconnect(why)) => return Err(Frame::Reconnect(why)),
            Err(error) => return Err(Frame::Unreadable(error)),
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Source for BinanceSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let names: Vec<String> = self
            .symbols
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        let feed = Feed {
            url: parse::streams_url(&self.url, &names),
            subscribe: None,
            stale_after: self.stale_after,
            ping_every: self.ping_every,
            market_hours: false,
            retry_max: self.retry_max,
        };
        let mut venue = Trades {
            symbols: parse::symbol_map(&self.symbols),
            source: Arc::from(ctx.id()),
        };
        ws::follow(&feed, &ctx, &mut venue, None).await
    }
}
