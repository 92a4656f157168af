//! The connection loop every WebSocket feed shares: connect, subscribe, read frames until the
//! stop, and reconnect after a capped exponential backoff with jitter when the connection
//! drops, goes silent or the venue says something is wrong. Each reconnect is counted in
//! `tickflow_reconnects_total{source, reason}` and shown in the status until a connection
//! works again. What a frame means is the venue's own (`Venue::read`).
//!
//! A quiet market and a dead link look alike from the frames, so the link is checked on its
//! own: after `ping_every` with nothing heard a ping goes out, and a ping unanswered for as
//! long again means the link is dead. A handshake gets twice `ping_every`, and a send
//! `ping_every`: a partition that holds every byte (no reset ever comes) costs seconds, not
//! the kernel's retransmission minutes.
//!
//! A gap repair holds the stream (`crate::gaps`), but not the link: while it runs, frames are
//! read into a queue, so the venue's pings are answered (Binance drops a link whose ping
//! goes a minute unanswered), and handled once it is done, in order.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tickflow_core::codec::{Batch, Rejected};
use tickflow_core::retry::backoff;
use tickflow_core::source::{SourceContext, SourceError};
use tickflow_model::{RejectReason, UnixNanos};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;

use crate::calendar;
use crate::gaps::{Marks, Repair, Repaired};

/// `tickflow_feed_staleness_seconds{source}`; see [`staleness`].
fn report_staleness(source: &str, market_hours: bool, last_event: UnixNanos, now: UnixNanos) {
    metrics::gauge!("tickflow_feed_staleness_seconds", "source" => source.to_string())
        .set(staleness(market_hours, last_event, now));
}

/// Seconds the source has passed on nothing, in the market's hours for a stock feed: 0 while
/// the market is closed, and counted from the session's opening bell at most.
pub fn staleness(market_hours: bool, last_event: UnixNanos, now: UnixNanos) -> f64 {
    let since = if !market_hours {
        last_event
    } else if calendar::in_regular_session(now) {
        last_event.max(calendar::session_open(now))
    } else {
        now
    };
    (now.0 - since.0).max(0) as f64 / 1e9
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Feed {
    pub url: String,
    /// Sent once connected (venues whose URL names the streams send none).
    pub subscribe: Option<String>,
    /// Silence after which the connection is taken for dead and reopened.
    pub stale_after: Duration,
    /// Quiet after which the link is pinged; a ping unanswered this long, or a handshake
    /// that takes twice this, reopens it.
    pub ping_every: Duration,
    /// A stock feed: outside the regular session (`crate::calendar`) silence is the market's,
    /// not the connection's, and staleness does not grow.
    pub market_hours: bool,
    /// The longest wait between reconnects.
    pub retry_max: Duration,
}

/// A venue's reading of its frames.
pub trait Venue {
    /// Appends what one text frame holds to `batch`: events, or nothing for control frames.
    ///
    /// # Errors
    /// [`Frame::Unreadable`] keeps the frame for the DLQ and reads on; [`Frame::Reconnect`]
    /// ends the connection (the venue reported an error or is going away).
    fn read(&mut self, text: &str, now: UnixNanos, batch: &mut Batch) -> Result<(), Frame>;

    /// Messages to send after the frame just read: venues that greet first get their
    /// authentication and subscription this way.
    fn replies(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the frame just read confirmed the subscription: gaps are repaired then.
    fn subscribed(&mut self) -> bool {
        false
    }

    /// Whether the streams are named in the address, so a connection is subscribed once it
    /// opens: gaps are repaired then, before any frame is read.
    fn subscribed_on_connect(&self) -> bool {
        false
    }

    /// Whether the venue confirms a subscription ([`Venue::subscribed`]): the link counts
    /// as working once it has. Otherwise any frame read without error does.
    fn confirms_subscription(&self) -> bool {
        false
    }

    /// The latest event times this venue passed on, for gap repair.
    fn marks(&mut self) -> Option<&mut Marks> {
        None
    }
}

/// A frame that is not events.
#[derive(Debug)]
pub enum Frame {
    Unreadable(String),
    Reconnect(String),
    /// The venue refused the configuration (an unknown product): trying again cannot help,
    /// so the source stops, shown as `failed` with this reason.
    Stop(String),
}

/// Why a connection ended early: the connection (reconnect), or the log or the venue's
/// refusal (stop).
enum Failure {
    Connection { reason: &'static str, error: String },
    Stop(SourceError),
}

fn lost(reason: &'static str, error: impl ToString) -> Failure {
    Failure::Connection {
        reason,
        error: error.to_string(),
    }
}

/// An append that failed: the log's disk at its reserve reconnects later and repairs the
/// gap; any other log error stops the source.
fn append_failed(e: SourceError) -> Failure {
    if e.is::<tickflow_core::source::Refused>() {
        lost("log_refused", e)
    } else {
        Failure::Stop(e)
    }
}

/// A repair's outcome: a history that fails holds the stream, by dropping the connection;
/// `Ok(true)` when the source was stopped during it.
fn held(repaired: Result<Repaired, SourceError>) -> Result<bool, Failure> {
    match repaired.map_err(append_failed)? {
        Repaired::Done => Ok(false),
        Repaired::Stopped => Ok(true),
        Repaired::Held(error) => Err(lost("repair", format!("gap repair failed: {error}"))),
    }
}

/// A failed handshake: the venue's refusal of what was asked for (a 4xx other than 408 and
/// 429: an unknown stream or symbol, a bad key) stops the source with the venue's answer;
/// anything else is the connection's and is retried.
fn refused(url: &str, error: tokio_tungstenite::tungstenite::Error) -> Failure {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Http(response)
            if response.status().is_client_error()
                && !matches!(response.status().as_u16(), 408 | 429) =>
        {
            let body = response
                .body()
                .as_deref()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .chars()
                        .take(300)
                        .collect::<String>()
                })
                .unwrap_or_default();
            Failure::Stop(
                format!("{url} refused the connection: {} {body}", response.status()).into(),
            )
        }
        other => lost("connect", other),
    }
}

/// Follows `feed` until the stop, reconnecting as needed; with `repair`, what the stream
/// missed is fetched over REST each time the subscription is confirmed (`crate::gaps`).
///
/// # Errors
/// The log's (a source whose events cannot be made durable stops), or the venue's refusal
/// of the configuration ([`Frame::Stop`]).
pub async fn follow(
    feed: &Feed,
    ctx: &SourceContext,
    venue: &mut impl Venue,
    repair: Option<&Repair>,
) -> Result<(), SourceError> {
    let result = follow_until_done(feed, ctx, venue, repair).await;
    if let Some(marks) = venue.marks() {
        marks.save(ctx.state_dir(), true);
    }
    result
}

async fn follow_until_done(
    feed: &Feed,
    ctx: &SourceContext,
    venue: &mut impl Venue,
    repair: Option<&Repair>,
) -> Result<(), SourceError> {
    let mut delays = backoff(feed.retry_max);
    let mut last_event = UnixNanos::now();
    loop {
        let reason = match session(feed, ctx, venue, repair, &mut last_event).await {
            Ok(true) => return Ok(()),
            Ok(false) => {
                ctx.link().failed("closed by the venue".into());
                "closed"
            }
            Err(Failure::Stop(e)) => return Err(e),
            Err(Failure::Connection { reason, error }) => {
                tracing::warn!(source = ctx.id(), url = %feed.url, reason, error = %error, "connection lost; reconnecting");
                // A full disk is the log's, not the link's.
                if reason != "log_refused" {
                    ctx.link().failed(format!("{reason}: {error}"));
                }
                reason
            }
        };
        metrics::counter!("tickflow_reconnects_total", "source" => ctx.id().to_string(), "reason" => reason)
            .increment(1);
        let wait = delays.next().unwrap_or(feed.retry_max);
        tokio::select! {
            () = ctx.stopped() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
        if reason == "closed" {
            // A clean close after a good session starts the backoff over.
            delays = backoff(feed.retry_max);
        }
    }
}

/// One connection: `Ok(true)` when stopped, `Ok(false)` when the venue closed it.
async fn session(
    feed: &Feed,
    ctx: &SourceContext,
    venue: &mut impl Venue,
    repair: Option<&Repair>,
    last_event: &mut UnixNanos,
) -> Result<bool, Failure> {
    let handshake = feed.ping_every * 2;
    let (mut ws, _) = tokio::select! {
        () = ctx.stopped() => return Ok(true),
        connected = tokio::time::timeout(handshake, tokio_tungstenite::connect_async(feed.url.as_str())) => {
            connected
                .map_err(|_| lost("connect", format!("no answer to the handshake in {handshake:?}")))?
                .map_err(|e| refused(&feed.url, e))?
        }
    };
    if let Some(subscribe) = &feed.subscribe {
        send(&mut ws, Message::text(subscribe.as_str()), feed.ping_every).await?;
    }
    let mut queued = VecDeque::new();
    if venue.subscribed_on_connect()
        && let (Some(repair), Some(marks)) = (repair, venue.marks())
    {
        // What the venue streams meanwhile waits in the queue, so the log stays in order.
        let fill = repair.fill(ctx, marks, UnixNanos::now());
        if repairing(&mut ws, &mut queued, fill).await? {
            return Ok(true);
        }
    }
    let mut batch = Batch::default();
    let mut tick = tokio::time::interval(
        feed.stale_after
            .div_f64(4.0)
            .min(feed.ping_every.div_f64(2.0))
            .min(Duration::from_secs(1)),
    );
    // Any frame shows the link is alive; pongs aside (they answer ours), it shows the feed
    // is. Both are set again after a frame's work: frames that came meanwhile wait unread.
    let mut heard = std::time::Instant::now();
    let mut heard_venue = heard;
    let mut pinged: Option<std::time::Instant> = None;
    let mut working = false;
    loop {
        let frame = if let Some(frame) = queued.pop_front() {
            frame
        } else {
            tokio::select! {
                () = ctx.stopped() => {
                    let _ = ws.close(None).await;
                    return Ok(true);
                }
                _ = tick.tick() => {
                    let now = UnixNanos::now();
                    report_staleness(ctx.id(), feed.market_hours, *last_event, now);
                    match pinged.filter(|at| heard < *at) {
                        Some(at) if at.elapsed() >= feed.ping_every => {
                            return Err(lost("timeout", format!("a ping unanswered for {:?}", feed.ping_every)));
                        }
                        Some(_) => {}
                        None if heard.elapsed() >= feed.ping_every => {
                            pinged = Some(std::time::Instant::now());
                            send(&mut ws, Message::Ping(Default::default()), feed.ping_every).await?;
                        }
                        None => {}
                    }
                    if heard_venue.elapsed() >= feed.stale_after {
                        if feed.market_hours && !calendar::in_regular_session(now) {
                            // A closed market is quiet; the session's opening restarts the watch.
                            heard_venue = std::time::Instant::now();
                            continue;
                        }
                        return Err(lost("stale", format!("silent for {:?}", feed.stale_after)));
                    }
                    continue;
                }
                next = ws.next() => next,
            }
        };
        heard = std::time::Instant::now();
        if !working && venue.subscribed_on_connect() && matches!(frame, Some(Ok(_))) {
            // A venue that reads its streams from the address refuses a bad one at the
            // handshake; a frame after it, even a ping or a pong, shows the link holds.
            working = true;
            ctx.link().working();
        }
        let from_venue = !matches!(frame, Some(Ok(Message::Pong(_))));
        if from_venue {
            heard_venue = heard;
        }
        let text = match frame {
            None | Some(Ok(Message::Close(_))) => return Ok(false),
            Some(Err(e)) => return Err(lost("read", e)),
            Some(Ok(Message::Text(text))) => text,
            // Pings are answered by the library; binary frames are not these feeds'.
            Some(Ok(_)) => continue,
        };
        let now = UnixNanos::now();
        batch.clear();
        let read = venue.read(&text, now, &mut batch);
        let subscribed = venue.subscribed();
        let serves =
            read.is_ok() && (subscribed || !venue.confirms_subscription() || !batch.is_empty());
        match read {
            Ok(()) => {}
            Err(Frame::Reconnect(message)) => return Err(lost("error", message)),
            Err(Frame::Stop(message)) => {
                let _ = ws.close(None).await;
                return Err(Failure::Stop(
                    format!("{} refused the configuration: {message}", feed.url).into(),
                ));
            }
            Err(Frame::Unreadable(error)) => {
                batch.clear();
                batch.push_rejected(&Rejected {
                    reason: RejectReason::Malformed,
                    ts_recv: now,
                    source: ctx.id(),
                    error: &error,
                    payload: tickflow_core::codec::payload_prefix(&text),
                });
            }
        }
        if !batch.is_empty() {
            ctx.append(&batch).map_err(append_failed)?;
            *last_event = now;
            if let Some(marks) = venue.marks() {
                marks.save(ctx.state_dir(), false);
            }
        }
        if subscribed && let (Some(repair), Some(marks)) = (repair, venue.marks()) {
            // Frames sent meanwhile wait in the queue, so the log stays in time order.
            if repairing(&mut ws, &mut queued, repair.fill(ctx, marks, now)).await? {
                return Ok(true);
            }
        }
        if !working && serves {
            // The venue serves this connection, and what it missed is repaired: whatever
            // failed before is over.
            working = true;
            ctx.link().working();
        }
        for reply in venue.replies() {
            send(&mut ws, Message::text(reply), feed.ping_every).await?;
        }
        // A slow append or a gap repair read nothing: what the link said meanwhile waits.
        heard = std::time::Instant::now();
        if from_venue {
            heard_venue = heard;
        }
    }
}

/// The most bytes of frames read while a repair runs; past it the link is left unread.
const QUEUED_BYTES: usize = 64 << 20;

/// What a queued frame costs: its payload and a frame's bookkeeping.
fn queued_size(frame: &Option<Result<Message, WsError>>) -> usize {
    64 + frame
        .as_ref()
        .and_then(|f| f.as_ref().ok())
        .map_or(0, Message::len)
}

/// Awaits a repair while reading the link into `queued` (up to [`QUEUED_BYTES`]), which
/// answers the venue's pings meanwhile; `Ok(true)` when the source was stopped during it.
async fn repairing<S>(
    ws: &mut S,
    queued: &mut VecDeque<Option<Result<Message, WsError>>>,
    repair: impl std::future::Future<Output = Result<Repaired, SourceError>>,
) -> Result<bool, Failure>
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut repair = std::pin::pin!(repair);
    let mut bytes: usize = queued.iter().map(queued_size).sum();
    let mut open = !matches!(queued.back(), Some(None | Some(Err(_))));
    loop {
        tokio::select! {
            biased;
            repaired = &mut repair => return held(repaired),
            frame = ws.next(), if open && bytes < QUEUED_BYTES => {
                // The end of the link, or an error, is the last frame: it is handled in turn.
                open = matches!(frame, Some(Ok(_)));
                bytes += queued_size(&frame);
                queued.push_back(frame);
            }
        }
    }
}

/// Sends `message`, giving up after `limit`: a link that takes no bytes is as dead as one
/// that sends none.
async fn send<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    message: Message,
    limit: Duration,
) -> Result<(), Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(limit, ws.send(message)).await {
        Ok(sent) => sent.map_err(|e| lost("send", e)),
        Err(_) => Err(lost("send", format!("not taken in {limit:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_night_is_not_stale_and_silence_in_the_session_is() {
        let ts = |t: &str| UnixNanos::parse(t).unwrap();
        // Last trade Friday's close; Saturday noon: a stock feed is not stale, crypto is.
        let friday_close = ts("2024-05-03T20:00:00Z");
        assert_eq!(
            staleness(true, friday_close, ts("2024-05-04T16:00:00Z")),
            0.0
        );
        assert_eq!(
            staleness(false, friday_close, ts("2024-05-04T16:00:00Z")),
            72_000.0
        );
        // Monday, ten minutes after the bell with nothing since Friday: ten minutes stale.
        assert_eq!(
            staleness(true, friday_close, ts("2024-05-06T13:40:00Z")),
            600.0
        );
        // A trade a minute ago.
        assert_eq!(
            staleness(true, ts("2024-05-06T14:00:00Z"), ts("2024-05-06T14:01:00Z")),
            60.0
        );
    }
}
