//! A generic REST quote poller: one URL per symbol, every interval, as the stock-quote job
//! tickflow replaces did. Each answer becomes a bar-like event of the interval starting at the
//! poll: the price as its close, and only what the answer maps (Alpha Vantage's
//! `GLOBAL_QUOTE` built in, any JSON by pointers).
//!
//! A poll is stored whole or not at all: a failed request is retried (`crate::rest`), then
//! counted in `tickflow_poll_failures_total{source}` and tried at the next interval; an answer
//! saying to slow down holds every request of the key for a minute; an answer that names no
//! quote goes to the DLQ with its reason; a refused key stops the source.

pub mod parse;

use std::sync::Arc;
use std::time::Duration;

use tickflow_core::codec::{Batch, Rejected};
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_model::{BarInterval, Event, RejectReason, Symbol, UnixNanos};

use crate::rest::{Rest, Retry, limiter};
use parse::{NoQuote, Shape};

/// A poller as its config entry sets it up.
#[derive(Clone)]
pub struct RestPollSource {
    /// The URL with `{symbol}` where each symbol goes (a key in the query is never shown).
    pub url: String,
    /// Extra request headers (an API key header), never shown.
    pub headers: Vec<(String, String)>,
    /// As the API names them; stored normalized (`BRK.B`, `BTC-USD`).
    pub symbols: Vec<String>,
    /// How often, and the bars' interval.
    pub interval: BarInterval,
    pub shape: Shape,
    pub requests_per_minute: u32,
}

impl std::fmt::Debug for RestPollSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestPollSource")
            .field("url", &crate::rest::redact(&self.url))
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("symbols", &self.symbols)
            .field("interval", &self.interval)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl RestPollSource {
    fn url_of(&self, symbol: &str) -> String {
        self.url.replace("{symbol}", symbol)
    }
}

/// How long until the next multiple of `interval`.
fn until_next(interval: BarInterval) -> Duration {
    let now = UnixNanos::now().0;
    let next = interval.start_of(UnixNanos(now)).0 + interval.nanos();
    Duration::from_nanos(u64::try_from(next - now).unwrap_or(0))
}

#[async_trait::async_trait]
impl Source for RestPollSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let host = self.url.split('/').take(3).collect::<Vec<_>>().join("/");
        let bucket = limiter(&host, &self.url, self.requests_per_minute);
        // A request that takes longer than the interval holds up the next poll: a partition
        // is noticed within an interval (2 s at least, 30 s at most).
        let interval = Duration::from_nanos(u64::try_from(self.interval.nanos()).unwrap_or(0));
        let retry = Retry {
            attempts: 3,
            timeout: interval.clamp(Duration::from_secs(2), Duration::from_secs(30)),
            ..Retry::default()
        };
        let rest = Rest::new(ctx.id(), &headers, Arc::clone(&bucket), retry)?;
        let source: Arc<str> = Arc::from(ctx.id());
        let feed: Arc<str> = Arc::from(format!("{}:poll", ctx.id()));
        let mut symbols = Vec::new();
        for name in &self.symbols {
            symbols.push((name.clone(), Symbol::parse(name)?));
        }
        let mut batch = Batch::default();
        loop {
            batch.clear();
            for (name, symbol) in &symbols {
                let url = self.url_of(name);
                let answer = tokio::select! {
                    () = ctx.stopped() => return Ok(()),
                    answer = rest.get(&url) => answer,
                };
                let now = UnixNanos::now();
                let body = match answer {
                    Ok(body) => {
                        ctx.link().working();
                        body
                    }
                    Err(e) if e.is_refusal() => return Err(e.into()),
                    Err(e) => {
                        metrics::counter!("tickflow_poll_failures_total", "source" => source.to_string())
                            .increment(1);
                        tracing::warn!(source = %source, symbol = name, error = %e, "poll failed; trying at the next interval");
                        ctx.link().failed(format!("{name}: {e}"));
                        continue;
                    }
                };
                match parse::read(
                    &body,
                    &self.shape,
                    symbol,
                    self.interval,
                    &source,
                    &feed,
                    now,
                ) {
                    Ok(bar) => batch.push(&Event::Bar(bar)),
                    Err(NoQuote::Throttled(note)) => {
                        metrics::counter!("tickflow_rest_retries_total", "source" => source.to_string(), "reason" => "rate_limited")
                            .increment(1);
                        tracing::warn!(source = %source, symbol = name, note, "the API asks to slow down; every request of the key waits a minute");
                        bucket.hold(tokio::time::Instant::now() + Duration::from_secs(60));
                    }
                    Err(NoQuote::Unreadable(error)) => batch.push_rejected(&Rejected {
                        reason: RejectReason::Malformed,
                        ts_recv: now,
                        source: &source,
                        error: &format!("{name}: {error}"),
                        payload: tickflow_core::codec::payload_prefix(&body),
                    }),
                }
            }
            if !batch.is_empty() {
                ctx.append(&batch)?;
            }
            tokio::select! {
                () = ctx.stopped() => return Ok(()),
                () = tokio::time::sleep(until_next(self.interval)) => {}
            }
        }
    }
}
