//! The Coinbase source against a local server speaking the venue's WebSocket protocol: it
//! subscribes, keeps a frame it cannot read, and after a connection dropped without a close
//! frame reconnects and subscribes again; the trade repeated on resubscribing is a duplicate
//! that processing drops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tickflow_core::contract::check_source;
use tickflow_model::{Event, UnixNanos};
use tickflow_process::{Output, Processor, ProcessorConfig};
use tickflow_sources::coinbase::CoinbaseSource;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{local_server, run_until_failed};

fn matched(kind: &str, id: u64) -> String {
    format!(
        r#"{{"type":"{kind}","trade_id":{id},"sequence":{},"maker_order_id":"ac928c66-ca53-498f-9c13-a110027a60e8","taker_order_id":"132fb6ae-456b-4654-b4e0-d681ac05cea1","time":"2024-05-06T14:31:{id:02}.123456Z","product_id":"BTC-USD","size":"0.01","price":"630{id:02}.50","side":"sell"}}"#,
        id + 40
    )
}

const SUBSCRIBED: &str = r#"{"type":"subscriptions","channels":[{"name":"matches","product_ids":["BTC-USD"]},{"name":"heartbeat","product_ids":["BTC-USD"]}]}"#;

/// Serves two connections: the first sends four frames (one garbled) and drops without a
/// close frame; the second repeats the last trade, sends one more and stays open. Returns
/// the address and the subscribe messages received.
fn venue() -> (String, Arc<Mutex<Vec<String>>>) {
    let subscribes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&subscribes);
    let url = local_server(move |listener| {
        Box::pin(async move {
            let sessions = [
                vec![
                    SUBSCRIBED.to_string(),
                    matched("last_match", 9),
                    matched("match", 10),
                    r#"{"type":"match","trade_id":11,"#.to_string(),
                    matched("match", 11),
                ],
                vec![
                    SUBSCRIBED.to_string(),
                    matched("last_match", 11),
                    matched("match", 12),
                ],
            ];
            for (i, frames) in sessions.into_iter().enumerate() {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let Some(Ok(Message::Text(subscribe))) = ws.next().await else {
                    panic!("no subscribe message")
                };
                seen.lock().unwrap().push(subscribe.to_string());
                for frame in frames {
                    ws.send(Message::text(frame)).await.unwrap();
                }
                if i == 0 {
                    // Gone without a close frame, as a dropped connection is.
                    drop(ws);
                    continue;
                }
                while let Some(Ok(_)) = ws.next().await {}
            }
        })
    });
    (url, subscribes)
}

#[test]
fn coinbase_reconnects_resubscribes_and_keeps_what_it_cannot_read() {
    let (url, subscribes) = venue();
    let source = CoinbaseSource {
        url,
        symbols: vec!["BTC-USD".into()],
        stale_after: Duration::from_secs(30),
        ping_every: Duration::from_secs(10),
        retry_max: Duration::from_millis(200),
        rest_url: "http://127.0.0.1:9".into(),
        repair_gaps: false,
        repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
    };
    // Four records from the first connection, two from the second.
    let appended = check_source(Box::new(source), 6);

    let subscribes = subscribes.lock().unwrap().clone();
    assert_eq!(subscribes.len(), 2, "subscribed again after the drop");
    for s in &subscribes {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        assert_eq!(v["type"], "subscribe");
        assert_eq!(v["product_ids"][0], "BTC-USD");
        assert_eq!(v["channels"][0], "matches");
    }
    let ids: Vec<&str> = appended
        .events
        .iter()
        .map(|e| match e {
            Event::Trade(t) => t.trade_id.as_deref().unwrap_or_default(),
            other => panic!("only trades: {other:?}"),
        })
        .collect();
    assert_eq!(ids, ["9", "10", "11", "11", "12"]);
    let Event::Trade(t) = &appended.events[1] else {
        unreachable!()
    };
    assert_eq!(t.symbol.as_str(), "BTC-USD");
    assert_eq!(t.price.to_string(), "63010.50");
    assert_eq!((&*t.source, &*t.feed), ("contract", "contract:matches"));
    assert_eq!(t.seq, Some(50));
    assert_eq!(appended.rejected.len(), 1, "{:?}", appended.rejected);
    assert!(
        appended.rejected[0].1.contains(r#""trade_id":11,"#),
        "the frame is kept: {:?}",
        appended.rejected
    );

    // Processing keeps each trade once: the repeat sent on resubscribing is a duplicate.
    let mut processor = Processor::new(ProcessorConfig::default());
    let mut out = Output::default();
    for e in appended.events {
        processor.process(None, e, UnixNanos::now(), &mut out);
    }
    assert_eq!(out.rows.trades.len(), 4);
    assert_eq!(out.duplicates, 1);
}

#[test]
fn a_product_the_venue_does_not_know_stops_the_source_with_its_reason() {
    let connections = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&connections);
    let url = local_server(move |listener| {
        Box::pin(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                *counted.lock().unwrap() += 1;
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let _subscribe = ws.next().await;
                let refusal = r#"{"type":"error","message":"Failed to subscribe","reason":"ZZZ-USD is not a valid product"}"#;
                ws.send(Message::text(refusal)).await.unwrap();
                while let Some(Ok(_)) = ws.next().await {}
            }
        })
    });
    let err = run_until_failed(Box::new(CoinbaseSource {
        url,
        symbols: vec!["ZZZ-USD".into()],
        stale_after: Duration::from_secs(30),
        ping_every: Duration::from_secs(10),
        retry_max: Duration::from_millis(100),
        rest_url: "http://127.0.0.1:9".into(),
        repair_gaps: false,
        repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
    }));
    assert!(
        err.to_string().contains("ZZZ-USD is not a valid product"),
        "{err}"
    );
    assert_eq!(*connections.lock().unwrap(), 1, "no retry storm");
}

#[test]
fn a_socket_that_stays_open_but_goes_silent_is_reopened() {
    let connections = Arc::new(Mutex::new(0u32));
    let count = Arc::clone(&connections);
    let url = local_server(move |listener| {
        Box::pin(async move {
            let mut held = Vec::new();
            for id in [20, 21] {
                let (tcp, _) = listener.accept().await.unwrap();
                *count.lock().unwrap() += 1;
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let _subscribe = ws.next().await;
                ws.send(Message::text(matched("match", id))).await.unwrap();
                // Open, answering nothing and sending nothing more.
                held.push(ws);
            }
            std::future::pending::<()>().await;
        })
    });
    let source = CoinbaseSource {
        url,
        symbols: vec!["BTC-USD".into()],
        stale_after: Duration::from_millis(300),
        ping_every: Duration::from_secs(10),
        retry_max: Duration::from_millis(100),
        rest_url: "http://127.0.0.1:9".into(),
        repair_gaps: false,
        repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
    };
    let appended = check_source(Box::new(source), 2);
    assert_eq!(appended.events.len(), 2, "a trade from each connection");
    assert_eq!(
        *connections.lock().unwrap(),
        2,
        "the silent one was given up"
    );
}

/// The REST history of a Coinbase source whose `rest_url` is `rest`.
fn history_at(rest: String) -> tickflow_sources::coinbase::history::CoinbaseHistory {
    let source = CoinbaseSource {
        url: String::new(),
        symbols: vec!["BTC-USD".into()],
        stale_after: Duration::from_secs(30),
        ping_every: Duration::from_secs(10),
        retry_max: Duration::from_millis(100),
        rest_url: rest,
        repair_gaps: true,
        repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
    };
    source
        .history("coinbase", tickflow_sources::rest::Retry::default())
        .unwrap()
}

/// Trade `id` of the history, at 14:00 plus `id` seconds.
fn historical(id: u64) -> String {
    format!(
        r#"{{"time":"2024-05-06T14:{:02}:{:02}.5Z","trade_id":{id},"price":"630{:02}.5","size":"0.01","side":"buy"}}"#,
        id / 60,
        id % 60,
        id % 100
    )
}

/// A gap is read newest first, a page back at a time by the oldest `trade_id`, until a page
/// reaches its start; the trades go to the log oldest first, each once, only those inside.
#[test]
fn a_gap_is_read_back_from_the_newest_page_and_handed_on_oldest_first() {
    use tickflow_sources::history::{self, History, Request, What};
    // Trades 1..=2500; the gap is 14:05:00 to 14:40:00 (trades 300 to 2400).
    let (rest, seen) = crate::support::rest_server(|_, uri| {
        let after: u64 = uri
            .split("after=")
            .nth(1)
            .map_or(2501, |a| a.parse().unwrap());
        let rows: Vec<String> = (1..after).rev().take(1000).map(historical).collect();
        (200, Vec::new(), format!("[{}]", rows.join(",")))
    });
    let h = history_at(rest);
    assert!(h.serves(What::Trades) && !h.serves(What::Bars(tickflow_model::BarInterval::M1)));
    let request = Request {
        symbol: "BTC-USD".into(),
        what: What::Trades,
        from: UnixNanos::parse("2024-05-06T14:05:00Z").unwrap(),
        to: UnixNanos::parse("2024-05-06T14:40:00Z").unwrap(),
    };
    let mut handed = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = rt
        .block_on(history::fetch(&h, &request, |events| {
            handed.push(events);
            Ok::<_, ()>(())
        }))
        .unwrap();
    assert_eq!(n, 2100);
    assert_eq!(handed.len(), 1, "the range is handed on whole");
    let ids: Vec<u64> = handed[0]
        .iter()
        .map(|e| match e {
            Event::Trade(t) => t.trade_id.as_deref().unwrap().parse().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ids,
        (300..=2399).collect::<Vec<u64>>(),
        "oldest first, each once"
    );
    let seen: Vec<String> = seen.lock().unwrap().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(
        seen,
        [
            "/products/BTC-USD/trades?limit=1000",
            "/products/BTC-USD/trades?limit=1000&after=1501",
            "/products/BTC-USD/trades?limit=1000&after=501",
        ],
        "stops at the page that reaches the start"
    );
}

/// A venue whose cursor stops moving short of the range's start fails the fetch with the
/// reason: trades gathered so far are not handed on as if the range were whole.
#[test]
fn a_gap_whose_pages_stop_short_of_its_start_fails_rather_than_come_back_short() {
    use tickflow_sources::history::{self, Fetch, Request, What};
    // Every page is the same thousand trades, 1501..=2500: `after` never moves.
    let (rest, seen) = crate::support::rest_server(|_, _| {
        let rows: Vec<String> = (1501..=2500).rev().map(historical).collect();
        (200, Vec::new(), format!("[{}]", rows.join(",")))
    });
    let h = history_at(rest);
    let request = Request {
        symbol: "BTC-USD".into(),
        what: What::Trades,
        from: UnixNanos::parse("2024-05-06T14:05:00Z").unwrap(),
        to: UnixNanos::parse("2024-05-06T14:40:00Z").unwrap(),
    };
    let mut handed = 0usize;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(history::fetch(&h, &request, |events| {
        handed += events.len();
        Ok::<_, ()>(())
    }));
    let Err(Fetch::Vendor(e)) = result else {
        panic!("a range paged short of its start must fail: {result:?}")
    };
    assert!(e.to_string().contains("without reaching"), "{e}");
    assert_eq!(handed, 0, "nothing handed on");
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "the repeated cursor stops it"
    );
}
