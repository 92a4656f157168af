//! The Binance source against a local server speaking the venue's combined-stream protocol:
//! the streams are named in the address, a frame it cannot read is kept, and the venue's
//! `serverShutdown` notice is followed by a reconnect to the same streams.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tickflow_core::contract::check_source;
use tickflow_model::{Event, Symbol};
use tickflow_sources::binance::BinanceSource;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use crate::support::local_server;

fn trade(raw: &str, id: u64, price: &str) -> String {
    let stream = raw.to_ascii_lowercase();
    format!(
        r#"{{"stream":"{stream}@trade","data":{{"e":"trade","E":1715096462130,"s":"{raw}","t":{id},"p":"{price}","q":"0.01000000","T":{},"m":true,"M":true}}}}"#,
        1_715_096_462_000u64 + id
    )
}

/// Two connections; the first ends with the venue's shutdown notice. Returns the address and
/// the paths each connection asked for.
// The handshake callback's `Result` is tungstenite's signature, large error and all.
#[allow(clippy::result_large_err)]
fn venue() -> (String, Arc<Mutex<Vec<String>>>) {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&paths);
    let url = local_server(move |listener| {
        Box::pin(async move {
            let sessions = [
                vec![
                    trade("BTCUSDT", 1, "63012.50000000"),
                    trade("ETHUSDT", 2, "3012.01000000"),
                    r#"{"stream":"btcusdt@trade","data":{"e":"trade","#.to_string(),
                    r#"{"e":"serverShutdown","E":1715096463000}"#.to_string(),
                ],
                vec![trade("BTCUSDT", 3, "63013.00000000")],
            ];
            for frames in sessions {
                let (tcp, _) = listener.accept().await.unwrap();
                let seen = Arc::clone(&seen);
                let mut ws = tokio_tungstenite::accept_hdr_async(
                    tcp,
                    move |req: &Request, resp: Response| {
                        seen.lock().unwrap().push(req.uri().to_string());
                        Ok(resp)
                    },
                )
                .await
                .unwrap();
                for frame in frames {
                    ws.send(Message::text(frame)).await.unwrap();
                }
                // Until the client goes: after the notice it hangs up itself.
                while let Some(Ok(_)) = ws.next().await {}
            }
        })
    });
    (url, paths)
}

#[test]
fn binance_names_its_streams_and_reconnects_on_the_shutdown_notice() {
    let (url, paths) = venue();
    let source = BinanceSource {
        url,
        symbols: vec![
            Symbol::parse("BTC-USDT").unwrap(),
            Symbol::parse("ETH-USDT").unwrap(),
        ],
        stale_after: Duration::from_secs(30),
        ping_every: Duration::from_secs(10),
        retry_max: Duration::from_millis(200),
        rest_url: "http://127.0.0.1:9".into(),
        key: None,
        repair_gaps: false,
        repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
    };
    // Two trades and the unreadable frame, then one trade after the reconnect.
    let appended = check_source(Box::new(source), 4);
    let paths = paths.lock().unwrap().clone();
    assert_eq!(
        paths, ["/stream?streams=btcusdt@trade/ethusdt@trade"; 2],
        "the same streams after the notice"
    );
    let got: Vec<(String, String, String)> = appended
        .events
        .iter()
        .map(|e| match e {
            Event::Trade(t) => (
                t.symbol.to_string(),
                t.trade_id.as_deref().unwrap_or_default().to_string(),
                t.feed.to_string(),
            ),
            other => panic!("only trades: {other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "BTC-USDT".into(),
                "1".into(),
                "contract:btcusdt@trade".into()
            ),
            (
                "ETH-USDT".into(),
                "2".into(),
                "contract:ethusdt@trade".into()
            ),
            (
                "BTC-USDT".into(),
                "3".into(),
                "contract:btcusdt@trade".into()
            ),
        ]
    );
    assert_eq!(appended.rejected.len(), 1, "{:?}", appended.rejected);
    assert!(
        appended.rejected[0]
            .1
            .starts_with(r#"{"stream":"btcusdt@trade""#)
    );
}

#[test]
// The handshake callback's `Result` is tungstenite's signature, large error and all.
#[allow(clippy::result_large_err)]
fn a_pair_the_venue_does_not_know_stops_the_source_with_its_answer() {
    let connections = Arc::new(Mutex::new(0u32));
    let count = Arc::clone(&connections);
    let url = local_server(move |listener| {
        Box::pin(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                *count.lock().unwrap() += 1;
                let _ = tokio_tungstenite::accept_hdr_async(tcp, |_: &Request, _: Response| {
                    let mut refusal =
                        tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(
                            Some(r#"{"code":-1121,"msg":"Invalid symbol."}"#.to_string()),
                        );
                    *refusal.status_mut() =
                        tokio_tungstenite::tungstenite::http::StatusCode::BAD_REQUEST;
                    Err(refusal)
                })
                .await;
            }
        })
    });
    let source = BinanceSource {
        url,
        symbols: vec![Symbol::parse("NOPE-USDT").unwrap()],
        stale_after: Duration::from_secs(30),
        ping_every: Duration::from_secs(10),
        retry_max: Duration::from_millis(100),
        rest_url: "http://127.0.0.1:9".into(),
        key: None,
        repair_gaps: false,
        repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
    };
    let err = crate::support::run_until_failed(Box::new(source)).to_string();
    assert!(
        err.contains("400") && err.contains("Invalid symbol."),
        "{err}"
    );
    assert_eq!(*connections.lock().unwrap(), 1, "not retried");
}

/// A gap's first raw trade is found by time through the aggregate trades, then raw trades
/// are read by id until a page passes the gap's end; the key goes in its header only.
#[test]
fn a_gap_is_found_by_time_and_read_by_trade_id_with_the_key_in_its_header() {
    use tickflow_model::UnixNanos;
    use tickflow_sources::history::{self, Request, What};
    // Trade `id` at 1715096000000 ms plus `id`; trades 1..=2500.
    let row = |id: u64| {
        format!(
            r#"{{"id":{id},"price":"63000.{id}","qty":"0.01","quoteQty":"630","time":{},"isBuyerMaker":false,"isBestMatch":true}}"#,
            1_715_096_000_000 + id
        )
    };
    let (rest, seen) = crate::support::rest_server(move |_, uri| {
        let body = if uri.starts_with("/api/v3/aggTrades") {
            r#"[{"a":90,"p":"63000.1","q":"0.02","f":100,"l":101,"T":1715096000100,"m":false,"M":true}]"#.to_string()
        } else {
            let from: u64 = uri
                .split("fromId=")
                .nth(1)
                .and_then(|v| v.split('&').next())
                .unwrap()
                .parse()
                .unwrap();
            let rows: Vec<String> = (from..=2500).take(1000).map(row).collect();
            format!("[{}]", rows.join(","))
        };
        (200, Vec::new(), body)
    });
    let source = BinanceSource {
        url: String::new(),
        symbols: vec![Symbol::parse("BTC-USDT").unwrap()],
        stale_after: Duration::from_secs(30),
        ping_every: Duration::from_secs(10),
        retry_max: Duration::from_millis(100),
        rest_url: rest,
        key: Some("BNKEY".into()),
        repair_gaps: true,
        repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
    };
    assert!(
        !format!("{source:?}").contains("BNKEY"),
        "the key never shows"
    );
    let h = source
        .history("binance", tickflow_sources::rest::Retry::default())
        .unwrap();
    let request = Request {
        symbol: "BTC-USDT".into(),
        what: What::Trades,
        from: UnixNanos(1_715_096_000_100_000_000),
        to: UnixNanos(1_715_096_001_500_000_000),
    };
    let mut ids = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = rt
        .block_on(history::fetch(&h, &request, |events| {
            for e in events {
                let Event::Trade(t) = e else { panic!() };
                assert_eq!(t.symbol.as_str(), "BTC-USDT");
                ids.push(t.trade_id.as_deref().unwrap().parse::<u64>().unwrap());
            }
            Ok::<_, ()>(())
        }))
        .unwrap();
    assert_eq!(n, 1401);
    assert_eq!(
        ids,
        (100..=1500).collect::<Vec<u64>>(),
        "in order, each once"
    );
    let seen = seen.lock().unwrap().clone();
    let uris: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(
        uris,
        [
            "/api/v3/aggTrades?symbol=BTCUSDT&startTime=1715096000100&limit=1",
            "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=100&limit=1000",
            "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=1100&limit=1000",
        ],
        "stops at the page that passes the end"
    );
    for s in &seen {
        assert_eq!(s.headers["x-mbx-apikey"], "BNKEY");
    }
}
