//! Alpaca's real-time market data stream: stocks (`v2/iex`, `v2/sip`, `v2/delayed_sip`,
//! `v2/test`) and crypto (`v1beta3/crypto/us`). The server greets, the client authenticates
//! by message and subscribes once authenticated; frames are arrays of mixed messages.
//!
//! The vendor's error codes are handled as it intends: a refused key or plan (401, 402, 403,
//! 408, 409, 410, 411) stops the source with the vendor's message, since retrying cannot
//! help; a symbol limit (405) is reported and the rest keeps running; a connection limit
//! (406), a slow client (407), an auth timeout (404) or a server error reconnect after the
//! shared loop's backoff (`crate::ws`).

pub mod history;
pub mod parse;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tickflow_core::codec::Batch;
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_model::{Event, Price, Symbol, UnixNanos};

use crate::gaps::{Marks, Repair};
use crate::ws::{self, Feed, Frame, Venue};
use parse::Control;

/// The free plan's stock feed.
pub const DEFAULT_URL: &str = "wss://stream.data.alpaca.markets/v2/iex";
/// Historical data over REST.
pub const DEFAULT_REST_URL: &str = "https://data.alpaca.markets";

/// An Alpaca source as its config entry sets it up.
#[derive(Clone)]
pub struct AlpacaSource {
    /// The stream, path included: `…/v2/iex`, `…/v1beta3/crypto/us`.
    pub url: String,
    /// The historical REST base (`https://data.alpaca.markets`), for backfill and gap repair.
    pub rest_url: String,
    /// REST calls allowed a minute with this key (the free plan: 200).
    pub requests_per_minute: u32,
    pub key: String,
    pub secret: String,
    /// Symbols as Alpaca names them (`AAPL`, `BTC/USD`), per channel.
    pub trades: Vec<String>,
    pub quotes: Vec<String>,
    pub bars: Vec<String>,
    pub daily_bars: Vec<String>,
    pub stale_after: Duration,
    /// How often the link is pinged; see [`crate::ws`].
    pub ping_every: Duration,
    pub retry_max: Duration,
    /// Send a trade or quote only when its price differs from the symbol's previous one, as
    /// the producers tickflow replaces did; the rest are counted in
    /// `tickflow_source_unchanged_total{source}`.
    pub on_change: bool,
    /// Fetch what the stream missed (trades and minute bars) over REST after a reconnect
    /// or a restart (`crate::gaps`).
    pub repair_gaps: bool,
    /// How long the stream waits for a history that fails (`crate::gaps::Repair::hold`).
    pub repair_hold: Duration,
}

impl std::fmt::Debug for AlpacaSource {
    /// The key and secret never show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlpacaSource")
            .field("url", &self.url)
            .field("rest_url", &self.rest_url)
            .field("key", &"***")
            .field("secret", &"***")
            .field("trades", &self.trades)
            .field("quotes", &self.quotes)
            .field("bars", &self.bars)
            .field("daily_bars", &self.daily_bars)
            .field("on_change", &self.on_change)
            .finish_non_exhaustive()
    }
}

impl AlpacaSource {
    /// The REST history client of this source's key: the stream's stocks feed or crypto.
    ///
    /// # Errors
    /// The key is not a valid header value, or TLS could not be set up.
    pub fn history(
        &self,
        id: &str,
        retry: crate::rest::Retry,
    ) -> Result<history::AlpacaHistory, String> {
        let crypto = self.url.contains("/crypto/");
        let limiter = crate::rest::limiter(&self.rest_url, &self.key, self.requests_per_minute);
        let feed = self.feed_name(id);
        let stream = feed.rsplit(':').next().unwrap_or_default().to_string();
        Ok(history::AlpacaHistory {
            base: self.rest_url.clone(),
            path: if crypto {
                "v1beta3/crypto/us"
            } else {
                "v2/stocks"
            }
            .to_string(),
            // The delayed and test streams read the SIP's history.
            feed_param: (!crypto).then(|| match stream.as_str() {
                "iex" => "iex".to_string(),
                _ => "sip".to_string(),
            }),
            rest: crate::rest::Rest::new(
                id,
                &[
                    ("APCA-API-KEY-ID", &self.key),
                    ("APCA-API-SECRET-KEY", &self.secret),
                ],
                limiter,
                retry,
            )?,
            source: Arc::from(id),
            feed: Arc::from(feed),
        })
    }

    /// The feed name events carry: `<id>:iex`, `<id>:sip`, `<id>:crypto`.
    fn feed_name(&self, id: &str) -> String {
        let path = self.url.split("://").nth(1).unwrap_or_default();
        let last = if path.contains("/crypto/") {
            "crypto"
        } else {
            path.rsplit('/').next().unwrap_or("stream")
        };
        format!("{id}:{last}")
    }
}

/// The handshake's state and what to send next.
struct Stream {
    auth: String,
    subscribe: String,
    replies: Vec<String>,
    source: Arc<str>,
    feed: Arc<str>,
    /// With `emit = "on_change"`: each symbol's last trade price and last bid and ask.
    last: Option<Changes>,
    marks: Marks,
    /// The frame just read confirmed the subscription.
    subscribed: bool,
}

/// The prices last sent, per symbol.
#[derive(Default)]
struct Changes {
    trades: HashMap<Symbol, Price>,
    quotes: HashMap<Symbol, (Price, Price)>,
}

impl Changes {
    /// Whether `event` moves its symbol's price (bars always pass).
    fn changed(&mut self, event: &Event) -> bool {
        match event {
            Event::Trade(t) => self.trades.insert(t.symbol.clone(), t.price) != Some(t.price),
            Event::Quote(q) => {
                let now = (q.bid, q.ask);
                self.quotes.insert(q.symbol.clone(), now) != Some(now)
            }
            Event::Bar(_) => true,
        }
    }
}

impl Venue for Stream {
    fn read(&mut self, text: &str, now: UnixNanos, batch: &mut Batch) -> Result<(), Frame> {
        let frame = parse::parse(text, &self.source, &self.feed, now).map_err(Frame::Unreadable)?;
        let mut unchanged = 0u64;
        for event in &frame.events {
            self.marks.saw(event);
            let moved = self.last.as_mut().is_none_or(|last| last.changed(event));
            if moved {
                batch.push(event);
            } else {
                unchanged += 1;
            }
        }
        if unchanged > 0 {
            metrics::counter!("tickflow_source_unchanged_total", "source" => self.source.to_string())
                .increment(unchanged);
        }
        for control in frame.control {
            match control {
                Control::Connected => self.replies.push(self.auth.clone()),
                Control::Authenticated => self.replies.push(self.subscribe.clone()),
                Control::Subscribed => self.subscribed = true,
                Control::Error(405, msg) => {
                    tracing::warn!(source = %self.source, msg, "symbol limit exceeded: the symbols past the plan's limit are not sent; the rest keeps running");
                }
                Control::Error(code @ (401 | 402 | 403 | 408 | 409 | 410 | 411), msg) => {
                    return Err(Frame::Stop(format!("error {code}: {msg}")));
                }
                Control::Error(code, msg) => {
                    return Err(Frame::Reconnect(format!("error {code}: {msg}")));
                }
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
impl Source for AlpacaSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let feed = Feed {
            url: self.url.clone(),
            // The server speaks first; the venue answers its greeting.
            subscribe: None,
            stale_after: self.stale_after,
            ping_every: self.ping_every,
            market_hours: !self.url.contains("/crypto/"),
            retry_max: self.retry_max,
        };
        let mut venue = Stream {
            auth: parse::auth(&self.key, &self.secret),
            subscribe: parse::subscribe(&self.trades, &self.quotes, &self.bars, &self.daily_bars),
            replies: Vec::new(),
            source: Arc::from(ctx.id()),
            feed: Arc::from(self.feed_name(ctx.id())),
            last: self.on_change.then(Changes::default),
            marks: Marks::load(ctx.state_dir()),
            subscribed: false,
        };
        let repair = Repair::when(self.repair_gaps, self.repair_hold, || {
            self.history(ctx.id(), crate::rest::Retry::default())
        })?;
        ws::follow(&feed, &ctx, &mut venue, repair.as_ref()).await
    }
}
