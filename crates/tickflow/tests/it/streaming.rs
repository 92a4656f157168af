//! A local venue that streams one symbol's trades as a test publishes them, to every
//! connection that has subscribed, and serves them all from its REST history: Alpaca,
//! Coinbase or Binance, each speaking its own WebSocket and REST protocol
//! (`reference/protocols.md`); or Polygon, whose history has no trades. Trade `id` happened
//! an hour ago plus `id` milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Whose protocol the venue speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `AAPL` on the stocks stream; `GET /v2/stocks/trades`, by time, `page_token`.
    Alpaca,
    /// `BTC-USD` on `matches`; `GET /products/BTC-USD/trades`, newest first, `after`.
    Coinbase,
    /// `BTC-USDT` on a combined stream; `aggTrades` by time, `historicalTrades` by id.
    Binance,
    /// `AAPL` on `T.AAPL`; no trade history.
    Polygon,
}

impl Dialect {
    /// The symbol as tickflow stores it.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Self::Alpaca | Self::Polygon => "AAPL",
            Self::Coinbase => "BTC-USD",
            Self::Binance => "BTC-USDT",
        }
    }

    /// A streamed trade's frame (Alpaca's and Polygon's rows go into arrays of up to 50).
    fn streamed(self, id: u64) -> String {
        let (price, size) = (100 + id % 50, 1 + id % 7);
        match self {
            Self::Alpaca => format!(
                r#"{{"T":"t","S":"AAPL","i":{id},"x":"V","p":{price}.5,"s":{size},"c":["@"],"t":"{}","z":"C"}}"#,
                when(id)
            ),
            Self::Coinbase => format!(
                r#"{{"type":"match","trade_id":{id},"sequence":{},"maker_order_id":"m","taker_order_id":"t","time":"{}","product_id":"BTC-USD","size":"0.{size}","price":"{price}.5","side":"buy"}}"#,
                id * 3,
                when(id)
            ),
            Self::Binance => format!(
                r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{ms},"s":"BTCUSDT","t":{id},"p":"{price}.5","q":"0.{size}","T":{ms},"m":true,"M":true}}}}"#,
                ms = when(id).0 / 1_000_000
            ),
            Self::Polygon => format!(
                r#"{{"ev":"T","sym":"AAPL","i":"{id}","x":4,"p":{price}.5,"s":{size},"c":[0],"t":{},"q":{id},"z":3}}"#,
                when(id).0 / 1_000_000
            ),
        }
    }

    /// Whether the venue's frames carry arrays of rows.
    fn batches(self) -> bool {
        matches!(self, Self::Alpaca | Self::Polygon)
    }

    /// A trade as the REST history sends it.
    fn historical(self, id: u64) -> String {
        let (price, size) = (100 + id % 50, 1 + id % 7);
        match self {
            Self::Alpaca => format!(
                r#"{{"i":{id},"x":"V","p":{price}.5,"s":{size},"c":["@"],"t":"{}","z":"C"}}"#,
                when(id)
            ),
            Self::Coinbase => format!(
                r#"{{"time":"{}","trade_id":{id},"price":"{price}.5","size":"0.{size}","side":"buy"}}"#,
                when(id)
            ),
            Self::Binance => format!(
                r#"{{"id":{id},"price":"{price}.5","qty":"0.{size}","quoteQty":"1","time":{},"isBuyerMaker":true,"isBestMatch":true}}"#,
                when(id).0 / 1_000_000
            ),
            Self::Polygon => unreachable!("Polygon's history has no trades"),
        }
    }
}

/// When trade `id` happened.
pub(crate) fn when(id: u64) -> tickflow_model::UnixNanos {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let hour_ago = tickflow_model::UnixNanos::now().0 - 3_600_000_000_000;
        hour_ago - hour_ago % 60_000_000_000
    });
    tickflow_model::UnixNanos(base + id as i64 * 1_000_000)
}

/// A venue as strict as Binance, scaled down: it pings each connection every 100 ms and
/// drops one whose ping goes a second unanswered; its history takes 600 ms an answer.
const STRICT_PING: std::time::Duration = std::time::Duration::from_millis(100);
const STRICT_PONG: std::time::Duration = std::time::Duration::from_secs(1);
const STRICT_ANSWER: std::time::Duration = std::time::Duration::from_millis(600);

pub(crate) struct Streaming {
    /// `host:port` of the WebSocket stream.
    pub(crate) ws_addr: String,
    pub(crate) rest_url: String,
    published: Arc<tokio::sync::watch::Sender<u64>>,
    /// Connections that have subscribed.
    subscribed: Arc<AtomicUsize>,
    /// Pings received, over all connections.
    pinged: Arc<AtomicUsize>,
    /// Connections a strict venue dropped for a ping left unanswered.
    unanswered: Arc<AtomicUsize>,
}

impl Streaming {
    pub(crate) fn start(dialect: Dialect) -> Self {
        Self::start_with(dialect, false)
    }

    /// A venue that pings and wants pongs, with a slow history (`STRICT_*`).
    pub(crate) fn start_strict(dialect: Dialect) -> Self {
        Self::start_with(dialect, true)
    }

    fn start_with(dialect: Dialect, strict: bool) -> Self {
        let ws = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let rest = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        ws.set_nonblocking(true).unwrap();
        rest.set_nonblocking(true).unwrap();
        let ws_addr = ws.local_addr().unwrap().to_string();
        let rest_url = format!("http://{}", rest.local_addr().unwrap());
        let published = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let (history, stream) = (Arc::clone(&published), Arc::clone(&published));
        let subscribed = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&subscribed);
        let pinged = Arc::new(AtomicUsize::new(0));
        let pings = Arc::clone(&pinged);
        let unanswered = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::clone(&unanswered);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
                    let upto = *history.borrow();
                    async move {
                        if strict {
                            tokio::time::sleep(STRICT_ANSWER).await;
                        }
                        let (path, query) = (
                            uri.path().to_string(),
                            uri.query().unwrap_or_default().to_string(),
                        );
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            history_page(dialect, &path, &query, upto),
                        )
                    }
                });
                tokio::spawn(async move {
                    let rest = tokio::net::TcpListener::from_std(rest).unwrap();
                    axum::serve(rest, app).await.unwrap();
                });
                let listener = tokio::net::TcpListener::from_std(ws).unwrap();
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    tokio::spawn(stream_session(
                        dialect,
                        tcp,
                        stream.subscribe(),
                        Arc::clone(&counted),
                        Arc::clone(&pings),
                        strict.then(|| Arc::clone(&dropped)),
                    ));
                }
            });
        });
        Streaming {
            ws_addr,
            rest_url,
            published: Arc::clone(&published),
            subscribed,
            pinged,
            unanswered,
        }
    }

    /// Connections dropped for a ping left unanswered (a strict venue's).
    pub(crate) fn unanswered(&self) -> usize {
        self.unanswered.load(Ordering::SeqCst)
    }

    /// Pings received so far.
    pub(crate) fn pings(&self) -> usize {
        self.pinged.load(Ordering::SeqCst)
    }

    /// Connections that have subscribed so far.
    pub(crate) fn subscriptions(&self) -> usize {
        self.subscribed.load(Ordering::SeqCst)
    }

    /// Trades `1..=n` have happened: they go to every subscribed connection and into the
    /// history.
    pub(crate) fn publish_up_to(&self, n: u64) {
        self.published.send_replace(n);
    }
}

/// A query parameter's value.
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.replace("%3A", ":"))
}

/// One answer of the history over the trades published so far.
fn history_page(dialect: Dialect, path: &str, query: &str, published: u64) -> String {
    let number = |name: &str| {
        param(query, name)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("{name} missing or unreadable in {path}?{query}"))
    };
    let rows = |ids: &mut dyn Iterator<Item = u64>| {
        ids.map(|id| dialect.historical(id))
            .collect::<Vec<String>>()
            .join(",")
    };
    match dialect {
        // `GET /v2/stocks/trades?start&end[&page_token]`, both ends included, 1,000 a page,
        // `page_token` naming the next id.
        Dialect::Alpaca => {
            let time = |name: &str| {
                param(query, name)
                    .and_then(|v| tickflow_model::UnixNanos::parse(&v).ok())
                    .unwrap_or_else(|| panic!("{name} missing or unreadable in {query}"))
            };
            let (start, end) = (time("start"), time("end"));
            let first = param(query, "page_token").map_or(1, |t| t.parse().unwrap());
            let ids: Vec<u64> = (first..=published)
                .filter(|id| (start..=end).contains(&when(*id)))
                .take(1001)
                .collect();
            let next = ids
                .get(1000)
                .map_or("null".to_string(), |id| format!("\"{id}\""));
            format!(
                r#"{{"trades":{{"AAPL":[{}]}},"next_page_token":{next}}}"#,
                rows(&mut ids.iter().copied().take(1000))
            )
        }
        // `GET /products/BTC-USD/trades?limit[&after]`: newest first, older than `after`.
        Dialect::Coinbase => {
            assert_eq!(path, "/products/BTC-USD/trades", "{query}");
            let limit = number("limit") as u64;
            let below = param(query, "after").map_or(published + 1, |a| a.parse().unwrap());
            format!(
                "[{}]",
                rows(&mut (1..below.min(published + 1)).rev().take(limit as usize))
            )
        }
        // `aggTrades?startTime&limit=1`: the first trade at or after the time, its id as
        // `f`; `historicalTrades?fromId&limit`: trades from that id on.
        Dialect::Binance => {
            assert_eq!(
                param(query, "symbol").as_deref(),
                Some("BTCUSDT"),
                "{query}"
            );
            let limit = number("limit") as usize;
            match path {
                "/api/v3/aggTrades" => {
                    let start = number("startTime") * 1_000_000;
                    match (1..=published).find(|id| when(*id).0 >= start) {
                        Some(id) => format!(
                            r#"[{{"a":{id},"p":"1","q":"1","f":{id},"l":{id},"T":{},"m":true,"M":true}}]"#,
                            when(id).0 / 1_000_000
                        ),
                        None => "[]".into(),
                    }
                }
                "/api/v3/historicalTrades" => {
                    let from = number("fromId") as u64;
                    format!("[{}]", rows(&mut (from.max(1)..=published).take(limit)))
                }
                other => panic!("no such endpoint {other}"),
            }
        }
        Dialect::Polygon => panic!("Polygon's history has no trades: asked {path}?{query}"),
    }
}

/// One stream connection: the venue's handshake and subscription, then every trade
/// published from then on (Alpaca's 50 to a frame); pings are answered while it reads. A
/// strict venue pings too, and drops the connection (counted in `unanswered`) when a ping
/// goes unanswered.
async fn stream_session(
    dialect: Dialect,
    tcp: tokio::net::TcpStream,
    mut published: tokio::sync::watch::Receiver<u64>,
    subscribed: Arc<AtomicUsize>,
    pings: Arc<AtomicUsize>,
    unanswered: Option<Arc<AtomicUsize>>,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (greet, confirm): (&[&str], Option<&str>) = match dialect {
        Dialect::Alpaca => (
            &[
                r#"[{"T":"success","msg":"connected"}]"#,
                r#"[{"T":"success","msg":"authenticated"}]"#,
            ],
            Some(r#"[{"T":"subscription","trades":["AAPL"],"quotes":[],"bars":[]}]"#),
        ),
        // Nothing until the subscribe message, then its acknowledgement.
        Dialect::Coinbase => {
            if !matches!(ws.next().await, Some(Ok(_))) {
                return;
            }
            (
                &[],
                Some(
                    r#"{"type":"subscriptions","channels":[{"name":"matches","product_ids":["BTC-USD"]}]}"#,
                ),
            )
        }
        // The streams are named in the address.
        Dialect::Binance => (&[], None),
        Dialect::Polygon => (
            &[
                r#"[{"ev":"status","status":"connected","message":"Connected Successfully"}]"#,
                r#"[{"ev":"status","status":"auth_success","message":"authenticated"}]"#,
            ],
            Some(r#"[{"ev":"status","status":"success","message":"subscribed to: T.AAPL"}]"#),
        ),
    };
    for reply in greet {
        if ws.send(Message::text(*reply)).await.is_err() {
            return;
        }
        if !matches!(ws.next().await, Some(Ok(_))) {
            return;
        }
    }
    let mut sent = *published.borrow_and_update();
    if let Some(confirm) = confirm
        && ws.send(Message::text(confirm)).await.is_err()
    {
        return;
    }
    subscribed.fetch_add(1, Ordering::SeqCst);
    let mut ping = tokio::time::interval(STRICT_PING);
    let mut answered = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick(), if unanswered.is_some() => {
                if answered.elapsed() > STRICT_PONG {
                    if let Some(n) = &unanswered {
                        n.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = ws.close(None).await;
                    return;
                }
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            changed = published.changed() => {
                if changed.is_err() {
                    return;
                }
                let upto = *published.borrow_and_update();
                while sent < upto {
                    let (frame, last) = if dialect.batches() {
                        let last = upto.min(sent + 50);
                        let rows: Vec<String> = (sent + 1..=last).map(|id| dialect.streamed(id)).collect();
                        (format!("[{}]", rows.join(",")), last)
                    } else {
                        (dialect.streamed(sent + 1), sent + 1)
                    };
                    if ws.send(Message::text(frame)).await.is_err() {
                        return;
                    }
                    sent = last;
                }
            }
            read = ws.next() => match read {
                // Answered by the library at its next read or write.
                Some(Ok(Message::Ping(_))) => {
                    pings.fetch_add(1, Ordering::SeqCst);
                }
                Some(Ok(Message::Pong(_))) => answered = tokio::time::Instant::now(),
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}
