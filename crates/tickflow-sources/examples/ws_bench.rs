//! How fast each WebSocket source takes recorded frames: a local server speaks the venue's
//! protocol (handshake included) and then sends the frames as fast as the socket takes them;
//! the real source reads, parses and appends them to a log that only counts. `bench/run
//! sources` calls it and prints the figures next to the HTTP ingest rate and a Python client.
//!
//! ```text
//! ws_bench stream VENUE EVENTS   # the source over a local socket: JSON with events/s
//! ws_bench parse VENUE EVENTS    # the parser alone, no socket
//! ws_bench serve VENUE EVENTS    # only the server, for a peer client: prints its URL
//! ```
//! VENUE is `coinbase`, `binance`, `alpaca` (20 trades a frame) or `polygon` (20 a frame).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tickflow_core::codec::Batch;
use tickflow_core::metrics::Metrics;
use tickflow_core::source::{Append, Source, SourceContext, SourceError};
use tickflow_model::{Symbol, UnixNanos};
use tokio_tungstenite::tungstenite::Message;

/// Trades in one frame of the venues that batch.
const PER_FRAME: u64 = 20;

fn frames(venue: &str, events: u64) -> Vec<String> {
    let price = |i: u64| format!("{}.{:02}", 63_000 + i % 97, i % 100);
    let ms = |i: u64| 1_715_096_462_000 + i / 10;
    match venue {
        "coinbase" => (0..events)
            .map(|i| format!(r#"{{"type":"match","trade_id":{i},"sequence":{},"maker_order_id":"ac928c66-ca53-498f-9c13-a110027a60e8","taker_order_id":"132fb6ae-456b-4654-b4e0-d681ac05cea1","time":"2024-05-06T14:31:02.{:06}Z","product_id":"BTC-USD","size":"0.0100","price":"{}","side":"sell"}}"#, i + 1, i % 1_000_000, price(i)))
            .collect(),
        "binance" => (0..events)
            .map(|i| format!(r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{},"s":"BTCUSDT","t":{i},"p":"{}000000","q":"0.01000000","T":{},"m":true,"M":true}}}}"#, ms(i), price(i), ms(i)))
            .collect(),
        "alpaca" | "polygon" => (0..events.div_ceil(PER_FRAME))
            .map(|f| {
                let trades: Vec<String> = (f * PER_FRAME..((f + 1) * PER_FRAME).min(events))
                    .map(|i| if venue == "alpaca" {
                        format!(r#"{{"T":"t","S":"AAPL","i":{i},"x":"V","p":{},"s":100,"c":["@"],"t":"2024-05-06T14:31:02.{:06}Z","z":"C"}}"#, price(i), i % 1_000_000)
                    } else {
                        format!(r#"{{"ev":"T","sym":"AAPL","x":4,"i":"{i}","z":3,"p":{},"s":100,"c":[14,41],"t":{},"q":{i}}}"#, price(i), ms(i))
                    })
                    .collect();
                format!("[{}]", trades.join(","))
            })
            .collect(),
        other => panic!("unknown venue {other:?}: coinbase, binance, alpaca or polygon"),
    }
}

/// The venue's side of the handshake, then every frame, then a close.
async fn serve_one(listener: tokio::net::TcpListener, venue: String, frames: Arc<Vec<String>>) {
    let (tcp, _) = listener.accept().await.expect("a client");
    tcp.set_nodelay(true).ok();
    let mut ws = tokio_tungstenite::accept_async(tcp)
        .await
        .expect("a handshake");
    let text = |t: &str| Message::text(t.to_string());
    match venue.as_str() {
        "coinbase" => {
            let _subscribe = ws.next().await;
        }
        "alpaca" => {
            ws.send(text(r#"[{"T":"success","msg":"connected"}]"#))
                .await
                .unwrap();
            let _auth = ws.next().await;
            ws.send(text(r#"[{"T":"success","msg":"authenticated"}]"#))
                .await
                .unwrap();
            let _subscribe = ws.next().await;
            ws.send(text(
                r#"[{"T":"subscription","trades":["AAPL"],"quotes":[],"bars":[]}]"#,
            ))
            .await
            .unwrap();
        }
        "polygon" => {
            ws.send(text(
                r#"[{"ev":"status","status":"connected","message":"Connected Successfully"}]"#,
            ))
            .await
            .unwrap();
            let _auth = ws.next().await;
            ws.send(text(
                r#"[{"ev":"status","status":"auth_success","message":"authenticated"}]"#,
            ))
            .await
            .unwrap();
            let _subscribe = ws.next().await;
        }
        _ => {}
    }
    for frame in frames.iter() {
        ws.feed(Message::text(frame.as_str())).await.unwrap();
    }
    ws.flush().await.unwrap();
    // Until the client has read everything and goes.
    while let Some(Ok(_)) = ws.next().await {}
}

/// A log that only counts, and stops the source once every event is in.
#[derive(Debug)]
struct Counting {
    events: AtomicU64,
    want: u64,
    done: tokio::sync::watch::Sender<bool>,
}

impl Append for Counting {
    fn append(&self, _: &str, batch: &Batch) -> Result<std::ops::Range<u64>, SourceError> {
        let n = batch.len() as u64;
        let before = self.events.fetch_add(n, Ordering::Relaxed);
        if before + n >= self.want {
            let _ = self.done.send(true);
        }
        Ok(before..before + n)
    }
}

fn source(venue: &str, url: &str) -> Box<dyn Source> {
    let (stale_after, retry_max) = (Duration::from_secs(30), Duration::from_secs(1));
    match venue {
        "coinbase" => Box::new(tickflow_sources::coinbase::CoinbaseSource {
            url: url.to_string(),
            symbols: vec!["BTC-USD".into()],
            stale_after,
            ping_every: Duration::from_secs(10),
            retry_max,
            rest_url: "http://127.0.0.1:9".into(),
            repair_gaps: false,
            repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
        }),
        "binance" => Box::new(tickflow_sources::binance::BinanceSource {
            url: url.to_string(),
            symbols: vec![Symbol::parse("BTC-USDT").unwrap()],
            stale_after,
            ping_every: Duration::from_secs(10),
            retry_max,
            rest_url: "http://127.0.0.1:9".into(),
            key: None,
            repair_gaps: false,
            repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
        }),
        "alpaca" => Box::new(tickflow_sources::alpaca::AlpacaSource {
            url: format!("{url}/v1beta3/crypto/us"),
            rest_url: "http://127.0.0.1:9".into(),
            requests_per_minute: 200,
            key: "k".into(),
            secret: "s".into(),
            trades: vec!["AAPL".into()],
            quotes: Vec::new(),
            bars: Vec::new(),
            daily_bars: Vec::new(),
            stale_after,
            ping_every: Duration::from_secs(10),
            retry_max,
            on_change: false,
            repair_gaps: false,
            repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
        }),
        "polygon" => Box::new(tickflow_sources::polygon::PolygonSource {
            ws_url: format!("{url}/stocks"),
            rest_url: "http://127.0.0.1:9".into(),
            key: "k".into(),
            trades: vec!["AAPL".into()],
            quotes: Vec::new(),
            second_bars: Vec::new(),
            minute_bars: Vec::new(),
            daily_bars: Vec::new(),
            history_days: 0,
            daily_at_minute: 0,
            requests_per_minute: 5,
            repair_gaps: false,
            repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
            stale_after,
            ping_every: Duration::from_secs(10),
            retry_max,
        }),
        other => panic!("unknown venue {other:?}"),
    }
}

fn stream(venue: &str, events: u64) -> serde_json::Value {
    let frames = Arc::new(frames(venue, events));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (server_venue, server_frames) = (venue.to_string(), Arc::clone(&frames));
    // The server on a thread of its own, as a venue is another machine.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                serve_one(listener, server_venue, server_frames).await;
            });
    });
    let (done, stop) = tokio::sync::watch::channel(false);
    let log = Arc::new(Counting {
        events: AtomicU64::new(0),
        want: events,
        done,
    });
    let ctx = SourceContext::new(
        "bench",
        Arc::clone(&log) as Arc<dyn Append>,
        Arc::new(Metrics::default()),
        stop,
    );
    let started = Instant::now();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(source(venue, &url).run(ctx))
        .expect("the source runs");
    let seconds = started.elapsed().as_secs_f64();
    let got = log.events.load(Ordering::Relaxed);
    serde_json::json!({"venue": venue, "events": got, "frames": frames.len(), "seconds": seconds, "events_per_second": got as f64 / seconds})
}

fn parse(venue: &str, events: u64) -> serde_json::Value {
    let frames = frames(venue, events);
    let (source, now) = (Arc::<str>::from("bench"), UnixNanos::now());
    let feed = Arc::<str>::from("bench:feed");
    let symbols =
        tickflow_sources::binance::parse::symbol_map(&[Symbol::parse("BTC-USDT").unwrap()]);
    let started = Instant::now();
    let mut parsed = 0usize;
    for frame in &frames {
        parsed += match venue {
            "coinbase" => usize::from(
                tickflow_sources::coinbase::parse::parse(frame, &source, &feed, now).is_ok(),
            ),
            "binance" => usize::from(
                tickflow_sources::binance::parse::parse(frame, &symbols, &source, now).is_ok(),
            ),
            "alpaca" => tickflow_sources::alpaca::parse::parse(frame, &source, &feed, now)
                .map_or(0, |f| f.events.len()),
            _ => tickflow_sources::polygon::parse::parse(frame, &source, &feed, now)
                .map_or(0, |f| f.events.len()),
        };
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(parsed as u64, events, "every recorded event parses");
    serde_json::json!({"venue": venue, "events": parsed, "seconds": seconds, "events_per_second": parsed as f64 / seconds})
}

fn serve(venue: &str, events: u64) {
    let frames = Arc::new(frames(venue, events));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    println!("ws://{}", listener.local_addr().unwrap());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serve_one(listener, venue.to_string(), frames).await;
        });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: ws_bench stream|parse|serve coinbase|binance|alpaca|polygon EVENTS";
    let (Some(mode), Some(venue), Some(events)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let events: u64 = events.parse().unwrap_or_else(|_| {
        eprintln!("{usage}");
        std::process::exit(2)
    });
    match mode.as_str() {
        "stream" => println!("{}", stream(venue, events)),
        "parse" => println!("{}", parse(venue, events)),
        "serve" => serve(venue, events),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
