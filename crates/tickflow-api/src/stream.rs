//! `GET /api/v1/stream`: the live picture as Server-Sent Events, for the dashboard and any
//! client that wants candles, prices, alerts and status without polling.
//!
//! One [`Hub`] per server looks at the pipeline twice a second while anyone is connected
//! ([`tickflow_pipeline::Pipeline::live_view`]) and broadcasts what changed since its last
//! look; each client only filters that by the topics, interval and symbols it asked for. Ten
//! clients cost ten small writes per look, not ten looks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tickflow_model::{Alert, Bar, BarInterval, Price, Symbol};
use tickflow_pipeline::LiveView;
use tokio::sync::broadcast;

use crate::AppState;
use crate::error::ApiError;

/// How often the hub looks while a client is connected.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// The status goes out every this many looks.
const STATUS_EVERY: u64 = 2;
/// Updates a slow client may fall behind before it is sent the whole picture again.
const BACKLOG: usize = 32;

/// What a client can subscribe to (`?topics=`), all by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topic {
    /// Open bars as they change, and bars as they become final.
    Bars,
    /// Each symbol's last price and change, when it changes.
    Prices,
    /// Alerts as they are raised.
    Alerts,
    /// `GET /api/v1/status`'s answer, every second.
    Status,
}

impl Topic {
    const ALL: [Topic; 4] = [Self::Bars, Self::Prices, Self::Alerts, Self::Status];

    fn name(self) -> &'static str {
        match self {
            Self::Bars => "bars",
            Self::Prices => "prices",
            Self::Alerts => "alerts",
            Self::Status => "status",
        }
    }
}

/// A bar as the stream sends it: times in Unix seconds as `/api/v1/history` has them,
/// prices and volume as exact decimal strings.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct BarMsg {
    symbol: String,
    interval: &'static str,
    t: i64,
    o: String,
    h: String,
    l: String,
    c: String,
    v: String,
    #[serde(rename = "final")]
    is_final: bool,
}

impl From<&Bar> for BarMsg {
    fn from(b: &Bar) -> Self {
        Self {
            symbol: b.symbol.as_str().to_string(),
            interval: b.interval.as_str(),
            t: b.start.0.div_euclid(1_000_000_000),
            o: b.open.to_string(),
            h: b.high.to_string(),
            l: b.low.to_string(),
            c: b.close.to_string(),
            v: b.volume.to_string(),
            is_final: b.is_final,
        }
    }
}

/// A symbol's last price, with the change since the previous session's close (or, before
/// a session has closed, since this one's open).
#[derive(Clone, Debug, PartialEq, Serialize)]
struct PriceMsg {
    symbol: String,
    last: String,
    day_open: Option<String>,
    prev_close: Option<String>,
    change_pct: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
struct AlertMsg {
    ts: String,
    rule: String,
    symbol: String,
    value: String,
    message: String,
    severity: &'static str,
    kind: &'static str,
}

impl From<&Alert> for AlertMsg {
    fn from(a: &Alert) -> Self {
        Self {
            ts: a.ts.to_string(),
            rule: a.rule.clone(),
            symbol: a.symbol.as_str().to_string(),
            value: a.value.to_string(),
            message: a.message.clone(),
            severity: a.severity.as_str(),
            kind: a.kind.as_str(),
        }
    }
}

/// One look's changes, shared by every client.
#[derive(Debug, Default)]
struct Update {
    bars: Vec<BarMsg>,
    prices: Vec<PriceMsg>,
    alerts: Vec<AlertMsg>,
    /// The status as JSON, on every [`STATUS_EVERY`]th look.
    status: Option<Arc<str>>,
    /// Final bars were produced that the pipeline could not keep for the stream: clients
    /// load their history again.
    dropped: bool,
    /// The server is stopping: every stream ends.
    close: bool,
}

/// What the hub last saw: the open bars, prices and status a new client starts from.
#[derive(Debug, Default)]
struct Picture {
    /// Open bars by symbol, interval and start (several of an interval can be open while
    /// late ticks may still come).
    open: HashMap<(String, &'static str, i64), BarMsg>,
    /// The newest final bar's start by symbol and interval: an open copy at or before it is
    /// a snapshot that lagged the bar turning final, and is not shown.
    finals: HashMap<(String, &'static str), i64>,
    prices: BTreeMap<String, PriceMsg>,
    /// Each symbol's newest two final daily bars as (start, close), newest first: the change
    /// is measured from the one before the price's session.
    closes: HashMap<String, Vec<(i64, Price)>>,
    status: Option<Arc<str>>,
    /// When the looker last looked.
    looked: Option<Instant>,
}

impl Picture {
    /// Keeps a final daily close if it is among the symbol's newest two.
    fn close(&mut self, symbol: &str, start: i64, close: Price) {
        let closes = self.closes.entry(symbol.to_string()).or_default();
        closes.retain(|(t, _)| *t != start);
        closes.push((start, close));
        closes.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
        closes.truncate(2);
    }

    /// The close a price in the session starting at `session` is compared with: the newest
    /// final daily close before it.
    fn base(&self, symbol: &str, session: i64) -> Option<Price> {
        self.closes
            .get(symbol)?
            .iter()
            .find(|(t, _)| *t < session)
            .map(|(_, c)| *c)
    }
}

/// The stream's one looker and its clients; see the module docs.
#[derive(Debug)]
pub(crate) struct Hub {
    tx: broadcast::Sender<Arc<Update>>,
    picture: RwLock<Picture>,
    clients: AtomicUsize,
    closed: AtomicBool,
}

impl Hub {
    pub(crate) fn new() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
            picture: RwLock::default(),
            clients: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Ends every client's stream, so the server can stop.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Arc::new(Update {
            close: true,
            ..Default::default()
        }));
    }

    /// Clients connected now.
    pub(crate) fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Takes in one look: the changes since the previous look, which also become the
    /// picture new clients start from.
    fn absorb(&self, view: LiveView, status: Option<Arc<str>>) -> Update {
        let mut picture = self.picture.write().unwrap_or_else(|e| e.into_inner());
        picture.looked = Some(Instant::now());
        let mut update = Update {
            dropped: view.dropped > 0,
            ..Default::default()
        };
        for bar in &view.final_bars {
            let msg = BarMsg::from(bar);
            let newest = picture
                .finals
                .entry((msg.symbol.clone(), msg.interval))
                .or_insert(msg.t);
            *newest = (*newest).max(msg.t);
            picture
                .open
                .remove(&(msg.symbol.clone(), msg.interval, msg.t));
            if bar.interval == BarInterval::D1 {
                picture.close(&msg.symbol, msg.t, bar.close);
            }
            update.bars.push(msg);
        }
        let open: Vec<(&Bar, BarMsg)> = view
            .open_bars
            .iter()
            .map(|b| (b, BarMsg::from(b)))
            .filter(|(_, msg)| {
                picture
                    .finals
                    .get(&(msg.symbol.clone(), msg.interval))
                    .is_none_or(|final_t| msg.t > *final_t)
            })
            .collect();
        let mut still_open = HashSet::new();
        for (_, msg) in &open {
            let key = (msg.symbol.clone(), msg.interval, msg.t);
            if picture.open.get(&key) != Some(msg) {
                picture.open.insert(key.clone(), msg.clone());
                update.bars.push(msg.clone());
            }
            still_open.insert(key);
        }
        if !view.open_bars.is_empty() {
            picture.open.retain(|key, _| still_open.contains(key));
        }
        let open_bars: Vec<&Bar> = open.iter().map(|(b, _)| *b).collect();
        for (symbol, (bar, session)) in latest_bars(&view.final_bars, &open_bars) {
            // The session the price belongs to: the open daily bar's, else the last final one's.
            let session_start = session.map_or_else(
                || {
                    picture
                        .closes
                        .get(symbol)
                        .and_then(|c| c.first())
                        .map_or(i64::MAX, |(t, _)| *t)
                },
                |s| s.0,
            );
            let prev_close = picture.base(symbol, session_start);
            let day_open = session.map(|s| s.1);
            let base = prev_close.or(day_open).filter(|p| p.as_f64() != 0.0);
            let price = PriceMsg {
                symbol: symbol.to_string(),
                last: bar.close.to_string(),
                day_open: day_open.map(|p| p.to_string()),
                prev_close: prev_close.map(|p| p.to_string()),
                change_pct: base.map(|b| (bar.close.as_f64() / b.as_f64() - 1.0) * 100.0),
            };
            if picture.prices.get(&price.symbol) != Some(&price) {
                picture.prices.insert(price.symbol.clone(), price.clone());
                update.prices.push(price);
            }
        }
        update.alerts = view.alerts.iter().map(AlertMsg::from).collect();
        if let Some(s) = status {
            picture.status = Some(Arc::clone(&s));
            update.status = Some(s);
        }
        update
    }

    /// Forgets the picture when no look has been taken for a while (nobody watched): a new
    /// client then starts from the next look, not from what was seen hours ago.
    fn forget_if_stale(&self) {
        let mut picture = self.picture.write().unwrap_or_else(|e| e.into_inner());
        if picture.looked.is_none_or(|t| t.elapsed() > 4 * LOOK_EVERY) {
            let closes = std::mem::take(&mut picture.closes);
            *picture = Picture {
                closes,
                ..Picture::default()
            };
        }
    }

    /// The events a new (or lagging) client starts from.
    fn snapshot(&self, filter: &Filter) -> Vec<Event> {
        let picture = self.picture.read().unwrap_or_else(|e| e.into_inner());
        let update = Update {
            bars: picture.open.values().cloned().collect(),
            prices: picture.prices.values().cloned().collect(),
            status: picture.status.clone(),
            ..Default::default()
        };
        filter.events(&update)
    }
}

/// A symbol's session in progress: its daily bar's start (Unix seconds) and open.
type Session = Option<(i64, Price)>;

/// Each symbol's bar its price comes from, with its session's (start, open) when a daily
/// bar is open: the newest open daily bar holds the session's last trade and open; without
/// one, the latest bar seen.
fn latest_bars<'a>(finals: &'a [Bar], open: &[&'a Bar]) -> HashMap<&'a str, (&'a Bar, Session)> {
    use std::collections::hash_map::Entry;
    let mut latest: HashMap<&str, (&Bar, Session)> = HashMap::new();
    for bar in finals.iter().chain(open.iter().copied()) {
        let session = (bar.interval == BarInterval::D1 && !bar.is_final)
            .then(|| (bar.start.0.div_euclid(1_000_000_000), bar.open));
        match latest.entry(bar.symbol.as_str()) {
            Entry::Vacant(e) => {
                e.insert((bar, session));
            }
            Entry::Occupied(mut e) => {
                let (held, held_session) = *e.get();
                let newer = bar.end > held.end;
                let replace = match (session, held_session) {
                    (Some(_), None) => true,
                    (Some(_), Some(_)) | (None, None) => newer,
                    (None, Some(_)) => false,
                };
                if replace {
                    e.insert((bar, session));
                }
            }
        }
    }
    latest
}

/// What one client asked for.
#[derive(Debug)]
struct Filter {
    topics: Vec<Topic>,
    interval: Option<&'static str>,
    symbols: Option<HashSet<String>>,
}

impl Filter {
    fn wants(&self, topic: Topic) -> bool {
        self.topics.contains(&topic)
    }

    fn wants_symbol(&self, symbol: &str) -> bool {
        self.symbols.as_ref().is_none_or(|s| s.contains(symbol))
    }

    /// `update` as this client's events: `bars`, `prices` and `alerts` as JSON arrays,
    /// `status` as the status object, `reload` when its history may have a hole.
    fn events(&self, update: &Update) -> Vec<Event> {
        let mut events = Vec::new();
        if update.dropped {
            events.push(Event::default().event("reload").data("{}"));
        }
        let mut push = |topic: Topic, json: String| {
            events.push(Event::default().event(topic.name()).data(json));
        };
        if self.wants(Topic::Bars) {
            let bars: Vec<&BarMsg> = update
                .bars
                .iter()
                .filter(|b| self.interval.is_none_or(|i| i == b.interval))
                .filter(|b| self.wants_symbol(&b.symbol))
                .collect();
            if !bars.is_empty() {
                push(Topic::Bars, to_json(&bars));
            }
        }
        if self.wants(Topic::Prices) {
            let prices: Vec<&PriceMsg> = update
                .prices
                .iter()
                .filter(|p| self.wants_symbol(&p.symbol))
                .collect();
            if !prices.is_empty() {
                push(Topic::Prices, to_json(&prices));
            }
        }
        if self.wants(Topic::Alerts) {
            let alerts: Vec<&AlertMsg> = update
                .alerts
                .iter()
                .filter(|a| self.wants_symbol(&a.symbol))
                .collect();
            if !alerts.is_empty() {
                push(Topic::Alerts, to_json(&alerts));
            }
        }
        if self.wants(Topic::Status)
            && let Some(status) = &update.status
        {
            push(Topic::Status, status.to_string());
        }
        events
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Plain structs of strings and numbers: serializing cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

/// `?topics=bars,prices,alerts,status&interval=1m&symbols=NVDA,AAPL`, each optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamParams {
    topics: Option<String>,
    interval: Option<String>,
    symbols: Option<String>,
}

impl StreamParams {
    fn filter(self) -> Result<Filter, ApiError> {
        let topics = match self.topics.as_deref() {
            None | Some("") => Topic::ALL.to_vec(),
            Some(list) => list
                .split(',')
                .map(|name| {
                    Topic::ALL
                        .into_iter()
                        .find(|t| t.name() == name.trim())
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "topics: {name:?} is not a topic; use bars, prices, alerts or status"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let interval = match self.interval.as_deref() {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<BarInterval>()
                    .map_err(|e| ApiError::bad_request(format!("interval: {e}")))?
                    .as_str(),
            ),
        };
        let symbols = match self.symbols.as_deref() {
            None | Some("") => None,
            Some(list) => Some(
                list.split(',')
                    .map(|s| {
                        Symbol::parse(s.trim())
                            .map(|s| s.as_str().to_string())
                            .map_err(|e| ApiError::bad_request(format!("symbols: {s:?}: {e}")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Filter {
            topics,
            interval,
            symbols,
        })
    }
}

/// Counts a connected client for as long as its stream lives.
struct Client(Arc<Hub>);

impl Client {
    fn new(hub: Arc<Hub>) -> Self {
        hub.clients.fetch_add(1, Ordering::Relaxed);
        Self(hub)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /api/v1/stream`: Server-Sent Events. A client first gets the current picture (the
/// open bars, prices and status), then every change as it is seen: events `bars`,
/// `prices`, `alerts` (JSON arrays) and `status` (an object), and `reload` when bars were
/// produced faster than the stream keeps them, after which a chart should load its history
/// again. 400 names a topic, interval or symbol that is not one.
pub(crate) async fn stream(
    State(state): State<AppState>,
    Query(params): Query<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let filter = params.filter()?;
    let hub = Arc::clone(&state.hub);
    // Subscribed before the snapshot is taken, so nothing between the two is missed.
    let rx = hub.tx.subscribe();
    // Checked after subscribing: a stream that subscribed before the close gets its message.
    if hub.closed.load(Ordering::SeqCst) {
        return Err(ApiError {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            message: "the server is stopping".into(),
            line: None,
            retry_after: None,
        });
    }
    hub.forget_if_stale();
    let client = Client::new(Arc::clone(&hub));
    let first = hub.snapshot(&filter);
    let rest = futures_util::stream::unfold(
        (rx, client, filter),
        |(mut rx, client, filter)| async move {
            loop {
                match rx.recv().await {
                    Ok(update) if update.close => return None,
                    Ok(update) => {
                        let events = filter.events(&update);
                        if !events.is_empty() {
                            return Some((events, (rx, client, filter)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let mut events = vec![Event::default().event("reload").data("{}")];
                        events.extend(client.0.snapshot(&filter));
                        return Some((events, (rx, client, filter)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    let events = futures_util::stream::iter([first])
        .chain(rest)
        .flat_map(futures_util::stream::iter)
        .map(Ok);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The hub's looker: while any client is connected, looks at the pipeline every
/// [`LOOK_EVERY`] and broadcasts the changes. Ends once the hub is closed.
pub(crate) async fn run(state: AppState) {
    let hub = Arc::clone(&state.hub);
    let mut looks = 0u64;
    let mut primed = false;
    let mut tick = tokio::time::interval(LOOK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !hub.closed.load(Ordering::SeqCst) {
        tick.tick().await;
        if hub.clients() == 0 {
            continue;
        }
        if !primed {
            primed = true;
            load_prev_closes(&state).await;
        }
        let with_status = looks.is_multiple_of(STATUS_EVERY);
        looks += 1;
        let pipeline = Arc::clone(&state.pipeline);
        let looker = Arc::clone(&hub);
        // Off the async workers: with many symbols a look copies and formats many bars.
        let look = tokio::task::spawn_blocking(move || {
            let view = pipeline.live_view();
            let status = with_status.then(|| Arc::from(to_json(&pipeline.status())));
            looker.absorb(view, status)
        })
        .await;
        if let Ok(update) = look {
            let _ = hub.tx.send(Arc::new(update));
        }
    }
}

/// Each symbol's newest two final daily closes, from the lake, so prices show their
/// change from the first look on.
async fn load_prev_closes(state: &AppState) {
    let sql = "SELECT symbol, t, close FROM (SELECT symbol, CAST(to_unixtime(start) AS BIGINT) AS t, \
               CAST(close AS VARCHAR) AS close, row_number() OVER (PARTITION BY symbol ORDER BY start DESC) AS n \
               FROM bars WHERE \"interval\" = '1d' AND \"final\") WHERE n <= 2";
    let rows = match crate::handlers::sql::query(state, sql).await {
        Ok(result) => tickflow_query::render(&result, tickflow_query::Format::Json)
            .ok()
            .and_then(|text| serde_json::from_str::<Vec<serde_json::Value>>(&text).ok())
            .unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e.message, "the live stream could not read the last daily closes");
            Vec::new()
        }
    };
    let mut picture = state.hub.picture.write().unwrap_or_else(|e| e.into_inner());
    for row in rows {
        let (Some(symbol), Some(t), Some(close)) = (
            row["symbol"].as_str(),
            row["t"].as_i64(),
            row["close"].as_str(),
        ) else {
            continue;
        };
        if let Ok(close) = Price::parse(close) {
            picture.close(symbol, t, close);
        }
    }
}

#[cfg(test)]
mod tests {
    use tickflow_model::{UnixNanos, Volume};

    use super::*;

    fn bar(symbol: &str, interval: BarInterval, start: i64, close: &str, is_final: bool) -> Bar {
        let p = |s: &str| Price::parse(s).unwrap();
        Bar {
            symbol: Symbol::parse(symbol).unwrap(),
            interval,
            start: UnixNanos(start * 1_000_000_000),
            end: UnixNanos((start + interval.nanos() / 1_000_000_000) * 1_000_000_000),
            open: p("100"),
            high: p("110"),
            low: p("90"),
            close: p(close),
            volume: Volume::default(),
            vwap: None,
            trade_count: Some(1),
            is_final,
            source: None,
        }
    }

    fn all() -> Filter {
        StreamParams {
            topics: None,
            interval: None,
            symbols: None,
        }
        .filter()
        .unwrap()
    }

    #[test]
    fn only_changes_go_out_and_the_picture_keeps_the_latest() {
        let hub = Hub::new();
        let view = LiveView {
            open_bars: vec![
                bar("NVDA", BarInterval::M1, 60, "101", false),
                bar("NVDA", BarInterval::D1, 0, "101", false),
            ],
            ..Default::default()
        };
        let first = hub.absorb(view.clone(), None);
        assert_eq!(first.bars.len(), 2);
        assert_eq!(first.prices.len(), 1);
        assert_eq!(first.prices[0].last, "101");
        assert_eq!(first.prices[0].day_open.as_deref(), Some("100"));
        let again = hub.absorb(view, None);
        assert!(
            again.bars.is_empty() && again.prices.is_empty(),
            "nothing changed"
        );

        let next = LiveView {
            open_bars: vec![
                bar("NVDA", BarInterval::M1, 120, "102", false),
                bar("NVDA", BarInterval::D1, 0, "102", false),
            ],
            final_bars: vec![bar("NVDA", BarInterval::M1, 60, "101.5", true)],
            ..Default::default()
        };
        let update = hub.absorb(next, None);
        let starts: Vec<(i64, bool)> = update.bars.iter().map(|b| (b.t, b.is_final)).collect();
        assert_eq!(starts, vec![(60, true), (120, false), (0, false)]);
        assert_eq!(update.prices[0].last, "102");
        let snapshot = hub.picture.read().unwrap();
        assert_eq!(snapshot.open.len(), 2, "the final bar left the open ones");
        assert!(snapshot.open.contains_key(&("NVDA".to_string(), "1m", 120)));
    }

    #[test]
    fn an_open_copy_that_lags_its_final_bar_is_not_shown() {
        let hub = Hub::new();
        hub.absorb(
            LiveView {
                final_bars: vec![bar("NVDA", BarInterval::M1, 60, "101.5", true)],
                ..Default::default()
            },
            None,
        );
        // The processor's open-bar snapshot still holds the bar that just turned final.
        let update = hub.absorb(
            LiveView {
                open_bars: vec![bar("NVDA", BarInterval::M1, 60, "101", false)],
                ..Default::default()
            },
            None,
        );
        assert!(update.bars.is_empty(), "{:?}", update.bars);
        assert!(hub.picture.read().unwrap().open.is_empty());
    }

    #[test]
    fn after_the_close_the_change_is_from_the_session_before() {
        let hub = Hub::new();
        let update = hub.absorb(
            LiveView {
                final_bars: vec![
                    bar("AAPL", BarInterval::D1, 0, "200", true),
                    bar("AAPL", BarInterval::D1, 86_400, "190", true),
                ],
                ..Default::default()
            },
            None,
        );
        let price = &update.prices[0];
        assert_eq!(price.last, "190");
        assert_eq!(price.prev_close.as_deref(), Some("200"));
        assert!((price.change_pct.unwrap() + 5.0).abs() < 1e-9);
        // An older day pushed late (a backfill) does not move the base.
        hub.absorb(
            LiveView {
                final_bars: vec![bar("AAPL", BarInterval::D1, -86_400, "150", true)],
                ..Default::default()
            },
            None,
        );
        assert_eq!(
            hub.picture.read().unwrap().base("AAPL", 86_400),
            Some(Price::parse("200").unwrap())
        );
    }

    #[test]
    fn the_change_is_measured_from_the_last_daily_close() {
        let hub = Hub::new();
        let update = hub.absorb(
            LiveView {
                final_bars: vec![bar("AAPL", BarInterval::D1, 0, "200", true)],
                open_bars: vec![bar("AAPL", BarInterval::D1, 86_400, "210", false)],
                ..Default::default()
            },
            None,
        );
        let price = &update.prices[0];
        assert_eq!(price.last, "210");
        assert_eq!(price.prev_close.as_deref(), Some("200"));
        assert!((price.change_pct.unwrap() - 5.0).abs() < 1e-9);
    }

    #[test]
    fn a_client_gets_only_what_it_asked_for() {
        let hub = Hub::new();
        let update = hub.absorb(
            LiveView {
                open_bars: vec![
                    bar("NVDA", BarInterval::M1, 60, "101", false),
                    bar("AAPL", BarInterval::M5, 0, "99", false),
                ],
                ..Default::default()
            },
            Some(Arc::from("{}")),
        );
        let filter = StreamParams {
            topics: Some("bars".into()),
            interval: Some("1m".into()),
            symbols: None,
        }
        .filter()
        .unwrap();
        assert_eq!(
            filter.events(&update).len(),
            1,
            "bars only, not prices or status"
        );
        assert_eq!(all().events(&update).len(), 3, "bars, prices and status");
        let only_aapl = StreamParams {
            topics: None,
            interval: Some("1m".into()),
            symbols: Some("AAPL".into()),
        }
        .filter()
        .unwrap();
        // AAPL has no 1-minute bar: its price and the status remain.
        assert_eq!(only_aapl.events(&update).len(), 2);
    }

    #[test]
    fn a_bad_request_names_what_is_wrong() {
        let e = StreamParams {
            topics: Some("bars,candles".into()),
            interval: None,
            symbols: None,
        }
        .filter()
        .unwrap_err();
        assert!(e.message.contains("\"candles\""), "{}", e.message);
        let e = StreamParams {
            topics: None,
            interval: Some("7m".into()),
            symbols: None,
        }
        .filter()
        .unwrap_err();
        assert!(e.message.starts_with("interval"), "{}", e.message);
    }
}
