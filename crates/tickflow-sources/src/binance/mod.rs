//! Binance Spot's public trade streams (`<symbol>@trade`): every trade, with no account. One
//! combined-stream connection carries every configured symbol; the venue's 24-hour limit and
//! its `serverShutdown` notice end it, and the shared loop (`crate::ws`) reconnects. The
//! streams are named in the address, so a connection is subscribed once it opens: with
//! `repair_gaps`, the trades a reconnect or a restart missed are fetched from the venue's
//! REST history ([`history`]) then, before the stream is read (`crate::gaps`).

pub mod history;
pub mod parse;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tickflow_core::codec::Batch;
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_model::{Event, Symbol, UnixNanos};

use crate::gaps::{Marks, Repair};
use crate::ws::{self, Feed, Frame, Venue};
use parse::Parsed;

/// The venue's market-data-only endpoint.
pub const DEFAULT_URL: &str = "wss://data-stream.binance.vision";

/// A Binance source as its config entry sets it up.
#[derive(Clone)]
pub struct BinanceSource {
    /// The endpoint, without `/stream?…`.
    pub url: String,
    /// In tickflow's form, `BTC-USDT`; the stream is `btcusdt@trade`.
    pub symbols: Vec<Symbol>,
    pub stale_after: Duration,
    /// How often the link is pinged; see [`crate::ws`].
    pub ping_every: Duration,
    pub retry_max: Duration,
    /// The REST history, for gap repair.
    pub rest_url: String,
    /// Sent as `X-MBX-APIKEY` to the REST history, when set.
    pub key: Option<String>,
    /// Fetch the trades a reconnect or a restart missed.
    pub repair_gaps: bool,
    /// How long the stream waits for a history that fails (`crate::gaps::Repair::hold`).
    pub repair_hold: Duration,
}

impl std::fmt::Debug for BinanceSource {
    /// The key never shows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinanceSource")
            .field("url", &self.url)
            .field("rest_url", &self.rest_url)
            .field("key", &self.key.as_ref().map(|_| "***"))
            .field("symbols", &self.symbols)
            .field("repair_gaps", &self.repair_gaps)
            .field("repair_hold", &self.repair_hold)
            .finish_non_exhaustive()
    }
}

impl BinanceSource {
    /// The REST history client, as source `id` reads it.
    ///
    /// # Errors
    /// The key is not a valid header value, or TLS could not be set up.
    pub fn history(
        &self,
        id: &str,
        retry: crate::rest::Retry,
    ) -> Result<history::BinanceHistory, String> {
        let key = self.key.as_deref().unwrap_or_default();
        let headers: &[(&str, &str)] = if key.is_empty() {
            &[]
        } else {
            &[("X-MBX-APIKEY", key)]
        };
        Ok(history::BinanceHistory {
            base: self.rest_url.clone(),
            rest: crate::rest::Rest::new(
                id,
                headers,
                // The venue weighs requests per address, whatever the key.
                crate::rest::limiter(&self.rest_url, "", history::REQUESTS_PER_MINUTE),
                retry,
            )?,
            source: Arc::from(id),
        })
    }
}

struct Trades {
    symbols: HashMap<String, Symbol>,
    source: Arc<str>,
    marks: Marks,
}

impl Venue for Trades {
    fn read(&mut self, text: &str, now: UnixNanos, batch: &mut Batch) -> Result<(), Frame> {
        match parse::parse(text, &self.symbols, &self.source, now) {
            Ok(Parsed::Trade(trade)) => {
                let event = Event::Trade(trade);
                self.marks.saw(&event);
                batch.push(&event);
            }
            Ok(Parsed::Reply) => {}
            Ok(Parsed::Reconnect(why)) => return Err(Frame::Reconnect(why)),
            Err(error) => return Err(Frame::Unreadable(error)),
        }
        Ok(())
    }

    fn subscribed_on_connect(&self) -> bool {
        true
    }

    fn marks(&mut self) -> Option<&mut Marks> {
        Some(&mut self.marks)
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
            marks: Marks::load(ctx.state_dir()),
        };
        let repair = Repair::when(self.repair_gaps, self.repair_hold, || {
            self.history(ctx.id(), crate::rest::Retry::default())
        })?;
        ws::follow(&feed, &ctx, &mut venue, repair.as_ref()).await
    }
}
