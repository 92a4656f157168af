//! The Alpaca source against a local server speaking its real-time protocol: the server
//! greets, the client authenticates by message and subscribes once authenticated; batched
//! frames of mixed messages become trades, quotes and bars; a refused key stops the source.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tickflow_core::contract::check_source;
use tickflow_model::{BarInterval, Event};
use tickflow_sources::alpaca::AlpacaSource;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{local_server, run_until_failed};

/// What the local server saw: the client's messages and the connections it accepted.
type Seen = (Arc<Mutex<Vec<String>>>, Arc<Mutex<u32>>);

/// A server that greets, checks the key, and then sends `frames`; it answers a wrong key
/// with error 402. Returns the address and what it saw.
fn venue(frames: Vec<&'static str>) -> (String, Seen) {
    let said = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(0));
    let (log, count) = (Arc::clone(&said), Arc::clone(&connections));
    let url = local_server(move |listener| {
        Box::pin(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                *count.lock().unwrap() += 1;
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                ws.send(Message::text(r#"[{"T":"success","msg":"connected"}]"#))
                    .await
                    .unwrap();
                let auth = text(ws.next().await, &log);
                if !auth.contains(r#""secret":"s3cret""#) {
                    ws.send(Message::text(
                        r#"[{"T":"error","code":402,"msg":"auth failed"}]"#,
                    ))
                    .await
                    .unwrap();
                    while let Some(Ok(_)) = ws.next().await {}
                    continue;
                }
                ws.send(Message::text(r#"[{"T":"success","msg":"authenticated"}]"#))
                    .await
                    .unwrap();
                let _subscribe = text(ws.next().await, &log);
                ws.send(Message::text(r#"[{"T":"subscription","trades":["AAPL"],"quotes":["AAPL"],"bars":["SPY"],"updatedBars":[],"dailyBars":[],"statuses":[],"lulds":[]}]"#))
                    .await
                    .unwrap();
                for frame in &frames {
                    ws.send(Message::text(*frame)).await.unwrap();
                }
                while let Some(Ok(_)) = ws.next().await {}
            }
        })
    });
    (format!("{url}/v2/iex"), (said, connections))
}

/// A client message's text, noted in `log`.
fn text(
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    log: &Mutex<Vec<String>>,
) -> String {
    match message {
        Some(Ok(Message::Text(t))) => {
            log.lock().unwrap().push(t.to_string());
            t.to_string()
        }
        _ => String::new(),
    }
}

fn source(url: String, secret: &str) -> AlpacaSource {
    AlpacaSource {
        url,
        rest_url: "http://127.0.0.1:9".into(),
        requests_per_minute: 200,
        key: "PKTEST".into(),
        secret: secret.into(),
        trades: vec!["AAPL".into()],
        quotes: vec!["AAPL".into()],
        bars: vec!["SPY".into()],
        daily_bars: Vec::new(),
        stale_after: Duration::from_secs(30),
        ping_every: Duration::from_secs(10),
        retry_max: Duration::from_millis(100),
        on_change: false,
        repair_gaps: false,
        repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
    }
}

#[test]
fn alpaca_authenticates_subscribes_and_reads_batched_frames() {
    let (url, (said, _)) = venue(vec![
        r#"[{"T":"t","S":"AAPL","i":1,"x":"V","p":187.41,"s":100,"c":["@"],"t":"2024-05-06T14:31:02.1Z","z":"C"},{"T":"q","S":"AAPL","bx":"V","bp":187.40,"bs":2,"ax":"V","ap":187.43,"as":3,"c":["R"],"t":"2024-05-06T14:31:02.2Z","z":"C"},{"T":"t","S":"AAPL","i":2,"x":"V","p":187.42,"s":5,"c":["@"],"t":"2024-05-06T14:31:02.3Z","z":"C"}]"#,
        r#"[{"T":"b","S":"SPY","o":512.10,"h":512.34,"l":512.02,"c":512.30,"v":48211,"t":"2024-05-06T14:31:00Z","n":512,"vw":512.18}]"#,
        r#"[{"T":"t","S":"AAPL","#,
    ]);
    let appended = check_source(Box::new(source(url, "s3cret")), 3);
    let said = said.lock().unwrap().clone();
    assert_eq!(said.len(), 2, "{said:?}");
    let auth: serde_json::Value = serde_json::from_str(&said[0]).unwrap();
    assert_eq!(
        (auth["action"].as_str(), auth["key"].as_str()),
        (Some("auth"), Some("PKTEST"))
    );
    let subscribe: serde_json::Value = serde_json::from_str(&said[1]).unwrap();
    assert_eq!(subscribe["action"], "subscribe", "only once authenticated");
    assert_eq!(subscribe["trades"][0], "AAPL");
    assert_eq!(subscribe["bars"][0], "SPY");
    let kinds: Vec<&str> = appended
        .events
        .iter()
        .map(|e| match e {
            Event::Trade(_) => "trade",
            Event::Quote(_) => "quote",
            Event::Bar(b) if b.bar.interval == BarInterval::M1 => "minute bar",
            Event::Bar(_) => "other bar",
        })
        .collect();
    assert_eq!(kinds, ["trade", "quote", "trade", "minute bar"]);
    let Event::Trade(t) = &appended.events[0] else {
        unreachable!()
    };
    assert_eq!(&*t.feed, "contract:iex");
    assert_eq!(t.price.to_string(), "187.41");
    assert_eq!(appended.rejected.len(), 1, "{:?}", appended.rejected);
    assert_eq!(appended.batches, 3, "one append per frame");
}

#[test]
fn a_refused_key_stops_the_source_with_the_vendors_message() {
    let (url, (_, connections)) = venue(Vec::new());
    let err = run_until_failed(Box::new(source(url, "wrong"))).to_string();
    assert!(err.contains("error 402: auth failed"), "{err}");
    assert!(
        !err.contains("wrong"),
        "the secret is not in the message: {err}"
    );
    assert_eq!(*connections.lock().unwrap(), 1, "no retry storm");
}

#[test]
fn emit_on_change_drops_exactly_the_unchanged_prices() {
    let (url, _) = venue(vec![
        r#"[{"T":"t","S":"AAPL","i":1,"p":187.41,"s":100,"t":"2024-05-06T14:31:02.1Z"},{"T":"t","S":"AAPL","i":2,"p":187.41,"s":5,"t":"2024-05-06T14:31:02.2Z"},{"T":"t","S":"MSFT","i":3,"p":187.41,"s":5,"t":"2024-05-06T14:31:02.2Z"},{"T":"t","S":"AAPL","i":4,"p":187.42,"s":5,"t":"2024-05-06T14:31:02.3Z"},{"T":"t","S":"AAPL","i":5,"p":187.410,"s":5,"t":"2024-05-06T14:31:02.4Z"}]"#,
        r#"[{"T":"q","S":"AAPL","bp":187.40,"bs":2,"ap":187.43,"as":3,"t":"2024-05-06T14:31:02.5Z"},{"T":"q","S":"AAPL","bp":187.40,"bs":9,"ap":187.43,"as":1,"t":"2024-05-06T14:31:02.6Z"},{"T":"q","S":"AAPL","bp":187.40,"bs":9,"ap":187.44,"as":1,"t":"2024-05-06T14:31:02.7Z"}]"#,
    ]);
    let mut on_change = source(url, "s3cret");
    on_change.on_change = true;
    let appended = check_source(Box::new(on_change), 2);
    let kept: Vec<String> = appended
        .events
        .iter()
        .map(|e| match e {
            Event::Trade(t) => format!("trade {}", t.trade_id.as_deref().unwrap_or_default()),
            Event::Quote(q) => format!("quote {}/{}", q.bid, q.ask),
            Event::Bar(_) => "bar".into(),
        })
        .collect();
    // Trade 2 repeats AAPL's 187.41; MSFT's first is its own; 187.410 after 187.42 moved;
    // the second quote changed only sizes.
    assert_eq!(
        kept,
        [
            "trade 1",
            "trade 3",
            "trade 4",
            "trade 5",
            "quote 187.40/187.43",
            "quote 187.40/187.44"
        ]
    );
}

#[test]
fn a_connection_limit_and_a_slow_client_disconnect_reconnect_and_keep_streaming() {
    let connections = Arc::new(Mutex::new(0u32));
    let count = Arc::clone(&connections);
    let trade = |id: u32| {
        format!(
            r#"[{{"T":"t","S":"AAPL","i":{id},"p":187.4{id},"s":1,"t":"2024-05-06T14:31:0{id}Z"}}]"#
        )
    };
    let sessions: Vec<Vec<String>> = vec![
        // Refused at once: the plan's connections are in use.
        vec![r#"[{"T":"error","code":406,"msg":"connection limit exceeded"}]"#.into()],
        // A trade, then dropped for reading too slowly.
        vec![
            trade(1),
            r#"[{"T":"error","code":407,"msg":"slow client"}]"#.into(),
        ],
        vec![trade(2)],
    ];
    let url = local_server(move |listener| {
        Box::pin(async move {
            for frames in sessions {
                let (tcp, _) = listener.accept().await.unwrap();
                *count.lock().unwrap() += 1;
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                ws.send(Message::text(r#"[{"T":"success","msg":"connected"}]"#))
                    .await
                    .unwrap();
                let _auth = ws.next().await;
                ws.send(Message::text(r#"[{"T":"success","msg":"authenticated"}]"#))
                    .await
                    .unwrap();
                let _subscribe = ws.next().await;
                ws.send(Message::text(
                    r#"[{"T":"subscription","trades":["AAPL"],"quotes":[],"bars":[]}]"#,
                ))
                .await
                .unwrap();
                for frame in frames {
                    ws.send(Message::text(frame)).await.unwrap();
                }
                // The venue closes after an error; the client reconnects on its own.
                let _ = ws.close(None).await;
            }
            std::future::pending::<()>().await;
        })
    });
    let appended = check_source(Box::new(source(format!("{url}/v2/iex"), "s3cret")), 2);
    let ids: Vec<String> = appended
        .events
        .iter()
        .map(|e| match e {
            Event::Trade(t) => t.trade_id.as_deref().unwrap_or_default().to_string(),
            other => panic!("trades only: {other:?}"),
        })
        .collect();
    assert_eq!(ids, ["1", "2"]);
    assert_eq!(
        *connections.lock().unwrap(),
        3,
        "406 and 407 each reconnect"
    );
}
