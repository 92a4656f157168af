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

use backon::BackoffBuilder;
use futures_util::{SinkExt, StreamExt};
use tickflow_core::codec::{Batch, Rejected};
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_model::{Event, RejectReason, UnixNanos};
use tokio_tungstenite::tungstenite::Message;

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
    /// The longest wait between reconnects.
    pub retry_max: Duration,
}

/// How a session ended, when it did not fail.
enum Ended {
    Stopped,
    Closed,
}

#[async_trait::async_trait]
impl Source for CoinbaseSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let source: Arc<str> = Arc::from(ctx.id());
        let feed: Arc<str> = Arc::from(format!("{}:matches", ctx.id()));
        let mut backoff = self.backoff();
        loop {
            let reason = match self.session(&ctx, &source, &feed).await {
                Ok(Ended::Stopped) => return Ok(()),
                Ok(Ended::Closed) => "closed",
                Err(Failure::Log(e)) => return Err(e),
                Err(Failure::Connection { reason, error }) => {
                    tracing::warn!(source = %source, url = %self.url, reason, error = %error, "connection lost; reconnecting");
                    reason
                }
            };
            metrics::counter!("tickflow_reconnects_total", "source" => source.to_string(), "reason" => reason)
                .increment(1);
            let wait = backoff.next().unwrap_or(self.retry_max);
            tokio::select! {
                () = ctx.stopped() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
            if reason != "closed" {
                continue;
            }
            // A clean close after a good session starts the backoff over.
            backoff = self.backoff();
        }
    }
}

/// Why a session ended early: the connection (reconnect) or the log (stop).
enum Failure {
    Connection { reason: &'static str, error: String },
    Log(SourceError),
}

fn lost(reason: &'static str, error: impl ToString) -> Failure {
    Failure::Connection {
        reason,
        error: error.to_string(),
    }
}

impl CoinbaseSource {
    fn backoff(&self) -> backon::ExponentialBackoff {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100).min(self.retry_max))
            .with_max_delay(self.retry_max)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// One connection: subscribe, then append every trade until it ends.
    async fn session(
        &self,
        ctx: &SourceContext,
        source: &Arc<str>,
        feed: &Arc<str>,
    ) -> Result<Ended, Failure> {
        let (mut ws, _) = tokio::select! {
            () = ctx.stopped() => return Ok(Ended::Stopped),
            connected = tokio_tungstenite::connect_async(self.url.as_str()) => {
                connected.map_err(|e| lost("connect", e))?
            }
        };
        ws.send(Message::text(parse::subscribe(&self.symbols)))
            .await
            .map_err(|e| lost("send", e))?;
        let mut batch = Batch::default();
        loop {
            let frame = tokio::select! {
                () = ctx.stopped() => {
                    let _ = ws.close(None).await;
                    return Ok(Ended::Stopped);
                }
                next = tokio::time::timeout(self.stale_after, ws.next()) => next,
            };
            let text = match frame {
                Err(_) => return Err(lost("stale", format!("silent for {:?}", self.stale_after))),
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Ok(Ended::Closed),
                Ok(Some(Err(e))) => return Err(lost("read", e)),
                Ok(Some(Ok(Message::Text(text)))) => text,
                // Pings are answered by the library; binary frames are not this feed's.
                Ok(Some(Ok(_))) => continue,
            };
            let now = UnixNanos::now();
            batch.clear();
            match parse::parse(&text, source, feed, now) {
                Ok(Parsed::Trade(trade)) => batch.push(&Event::Trade(trade)),
                Ok(Parsed::Subscribed | Parsed::Heartbeat) => {}
                Ok(Parsed::Error(message)) => return Err(lost("error", message)),
                Err(error) => batch.push_rejected(&Rejected {
                    reason: RejectReason::Malformed,
                    ts_recv: now,
                    source,
                    error: &error,
                    payload: &text,
                }),
            }
            if !batch.is_empty() {
                ctx.append(&batch).map_err(Failure::Log)?;
            }
        }
    }
}
