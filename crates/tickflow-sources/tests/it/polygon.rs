//! The Polygon source against local servers speaking its protocols: the stocks WebSocket
//! (greeting, auth by message, subscription, batched frames) and the REST aggregates
//! (`next_url` pages, 429s, server errors), with the key sent as a header only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tickflow_core::contract::check_source;
use tickflow_model::{BarInterval, Event};
use tickflow_sources::polygon::PolygonSource;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Answer, local_server, rest_server, run_until_failed};

/// A server that greets, checks the key, confirms the subscription and sends `frames`;
/// answers a wrong key with `auth_failed` and closes. Returns the URL, the client's
/// messages and the connections accepted.
type Said = Arc<Mutex<Vec<String>>>;

fn stream(frames: Vec<&'static str>) -> (String, Said, Arc<Mutex<u32>>) {
    let said = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(0));
    let (log, count) = (Arc::clone(&said), Arc::clone(&connections));
    let url = local_server(move |listener| {
        Box::pin(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                *count.lock().unwrap() += 1;
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let send = |text: &'static str| Message::text(text);
                ws.send(send(
                    r#"[{"ev":"status","status":"connected","message":"Connected Successfully"}]"#,
                ))
                .await
                .unwrap();
                let Some(Ok(Message::Text(auth))) = ws.next().await else {
                    continue;
                };
                log.lock().unwrap().push(auth.to_string());
                if !auth.contains(r#""params":"PGKEY""#) {
                    ws.send(send(r#"[{"ev":"status","status":"auth_failed","message":"authentication failed"}]"#)).await.unwrap();
                    let _ = ws.close(None).await;
                    continue;
                }
                ws.send(send(
                    r#"[{"ev":"status","status":"auth_success","message":"authenticated"}]"#,
                ))
                .await
                .unwrap();
                let Some(Ok(Message::Text(subscribe))) = ws.next().await else {
                    continue;
                };
                log.lock().unwrap().push(subscribe.to_string());
                ws.send(send(r#"[{"ev":"status","status":"success","message":"subscribed to: T.AAPL"},{"ev":"status","status":"success","message":"subscribed to: AM.AAPL"}]"#)).await.unwrap();
                for frame in &frames {
                    ws.send(Message::text(*frame)).await.unwrap();
                }
                while let Some(Ok(_)) = ws.next().await {}
            }
        })
    });
    (format!("{url}/stocks"), said, connections)
}

fn source(ws_url: String, rest_url: String, key: &str) -> PolygonSource {
    PolygonSource {
        ws_url,
        rest_url,
        key: key.into(),
        trades: vec!["AAPL".into()],
        quotes: Vec::new(),
        second_bars: Vec::new(),
        minute_bars: vec!["AAPL".into()],
        daily_bars: Vec::new(),
        history_days: 36_500,
        daily_at_minute: 13 * 60,
        requests_per_minute: 600,
        repair_gaps: false,
        repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
        stale_after: Duration::from_secs(30),
        ping_every: Duration::from_secs(10),
        retry_max: Duration::from_millis(100),
    }
}

#[test]
fn polygon_authenticates_by_message_subscribes_and_reads_batched_frames() {
    let (url, said, _) = stream(vec![
        r#"[{"ev":"T","sym":"AAPL","x":4,"i":"71675","z":3,"p":184.41,"s":100,"c":[14,41],"t":1715096462123,"q":4011235},{"ev":"T","sym":"AAPL","x":4,"i":"71676","z":3,"p":184.42,"s":5,"t":1715096462200,"q":4011236}]"#,
        r#"[{"ev":"AM","sym":"AAPL","v":31210,"av":21034411,"op":182.35,"vw":184.38,"o":184.3,"c":184.41,"h":184.5,"l":184.25,"a":183.77,"z":95,"s":1715096400000,"e":1715096460000}]"#,
        r#"[{"ev":"T","sym":"AAPL","p":"#,
    ]);
    let appended = check_source(
        Box::new(source(url, "http://127.0.0.1:9".into(), "PGKEY")),
        3,
    );
    let said = said.lock().unwrap().clone();
    assert_eq!(
        said,
        [
            r#"{"action":"auth","params":"PGKEY"}"#,
            r#"{"action":"subscribe","params":"T.AAPL,AM.AAPL"}"#
        ]
    );
    let kinds: Vec<String> = appended
        .events
        .iter()
        .map(|e| match e {
            Event::Trade(t) => format!("trade {}", t.price),
            Event::Bar(b) => format!("{} bar {}", b.bar.interval, b.bar.close),
            Event::Quote(_) => "quote".into(),
        })
        .collect();
    assert_eq!(kinds, ["trade 184.41", "trade 184.42", "1m bar 184.41"]);
    let Event::Trade(t) = &appended.events[0] else {
        unreachable!()
    };
    assert_eq!(&*t.feed, "contract:stocks");
    assert_eq!(
        appended.rejected.len(),
        1,
        "the truncated frame, kept for the DLQ"
    );
}

#[test]
fn a_refused_key_stops_the_source_without_retrying() {
    let (url, _, connections) = stream(Vec::new());
    let err =
        run_until_failed(Box::new(source(url, "http://127.0.0.1:9".into(), "WRONG"))).to_string();
    assert!(err.contains("auth_failed: authentication failed"), "{err}");
    assert!(
        !err.contains("WRONG"),
        "the key is not in the message: {err}"
    );
    assert_eq!(*connections.lock().unwrap(), 1);
}

/// Page `n` of AAPL's daily bars: three pages of two, each next page repeating the row on
/// its edge, with a 429 and a 502 on the way.
fn daily_pages(n: usize) -> Answer {
    let bar = |day: u64, close: &str| {
        // 04:00 UTC is midnight in New York in May.
        let t = 1_714_968_000_000u64 + day * 86_400_000;
        format!(
            r#"{{"v":1000,"vw":{close},"o":{close},"c":{close},"h":{close},"l":{close},"t":{t},"n":10}}"#
        )
    };
    let page = |rows: Vec<String>, next: Option<&str>| -> Answer {
        let next = next.map_or(String::new(), |c| format!(r#","next_url":"{{BASE}}{c}""#));
        let body = format!(
            r#"{{"ticker":"AAPL","queryCount":{n},"resultsCount":{n},"adjusted":true,"results":[{}],"status":"OK","request_id":"r"{next}}}"#,
            rows.join(","),
            n = rows.len()
        );
        (200, Vec::new(), body)
    };
    match n {
        0 => page(vec![bar(0, "100.1"), bar(1, "100.2")], Some("/v2/aggs/ticker/AAPL/range/1/day/1715054400000/1715400000000?cursor=Mg")),
        1 => (429, vec![("retry-after", "1".into())], r#"{"status":"ERROR","request_id":"r","error":"You've exceeded the maximum requests per minute, please wait or upgrade your subscription to continue."}"#.into()),
        2 => page(vec![bar(1, "100.2"), bar(2, "100.3")], Some("/v2/aggs/ticker/AAPL/range/1/day/1715140800000/1715400000000?cursor=Mw")),
        3 => (502, Vec::new(), "bad gateway".into()),
        4 => page(vec![bar(3, "100.4"), bar(4, "100.5")], None),
        _ => page(Vec::new(), None),
    }
}

#[test]
fn daily_bars_follow_next_url_through_a_429_and_a_server_error_exactly_once() {
    let (rest, seen) = rest_server(|n, _| daily_pages(n));
    let mut polygon = source(String::new(), rest, "PGKEY");
    (polygon.trades, polygon.minute_bars) = (Vec::new(), Vec::new());
    polygon.daily_bars = vec!["AAPL".into()];
    // One append per page with rows: the three pages.
    let appended = check_source(Box::new(polygon), 3);
    let closes: Vec<String> = appended
        .events
        .iter()
        .map(|e| match e {
            Event::Bar(b) if b.bar.interval == BarInterval::D1 => b.bar.close.to_string(),
            other => panic!("only daily bars: {other:?}"),
        })
        .collect();
    assert_eq!(
        closes,
        ["100.1", "100.2", "100.3", "100.4", "100.5"],
        "the edge rows once each"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(
        seen[0].uri.starts_with("/v2/aggs/ticker/AAPL/range/1/day/"),
        "{}",
        seen[0].uri
    );
    assert_eq!(
        seen[1].uri, seen[2].uri,
        "the page the 429 refused is asked again"
    );
    assert!(
        seen[2].uri.ends_with("cursor=Mg"),
        "next_url followed as given"
    );
    assert!(
        seen[2].at.duration_since(seen[1].at) >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    for s in &seen {
        assert_eq!(s.headers["authorization"], "Bearer PGKEY");
        assert!(!s.uri.contains("PGKEY"), "the key is never in a URL");
    }
}

#[test]
fn a_refused_rest_key_stops_the_source_with_the_vendors_message() {
    let (rest, seen) = rest_server(|_, _| {
        (
            401,
            Vec::new(),
            r#"{"status":"ERROR","request_id":"r","error":"Unknown API Key"}"#.into(),
        )
    });
    let mut polygon = source(String::new(), rest, "BADKEY");
    (polygon.trades, polygon.minute_bars) = (Vec::new(), Vec::new());
    polygon.daily_bars = vec!["AAPL".into()];
    let err = run_until_failed(Box::new(polygon)).to_string();
    assert!(err.contains("(401): Unknown API Key"), "{err}");
    assert!(!err.contains("BADKEY"));
    assert_eq!(seen.lock().unwrap().len(), 1, "a refusal is not retried");
}

#[test]
fn minute_bars_missed_while_disconnected_are_fetched_before_the_stream_goes_on() {
    // Ten minutes ago, on the minute: a gap short enough to repair.
    let now_ms = tickflow_model::UnixNanos::now().0 as u64 / 1_000_000;
    let base = (now_ms - 600_000) / 60_000 * 60_000;
    let minute = move |m: u64, close: &str| {
        let s = base + m * 60_000;
        format!(
            r#"{{"ev":"AM","sym":"AAPL","v":100,"av":100,"op":1,"vw":{close},"o":{close},"c":{close},"h":{close},"l":{close},"a":1,"z":1,"s":{s},"e":{}}}"#,
            s + 60_000
        )
    };
    let sessions = vec![
        format!("[{}]", minute(0, "184.1")),
        format!("[{}]", minute(3, "184.4")),
    ];
    let connections = Arc::new(Mutex::new(0u32));
    let count = Arc::clone(&connections);
    let ws_url = local_server(move |listener| {
        Box::pin(async move {
            for (i, frame) in sessions.into_iter().enumerate() {
                let (tcp, _) = listener.accept().await.unwrap();
                *count.lock().unwrap() += 1;
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                ws.send(Message::text(
                    r#"[{"ev":"status","status":"connected","message":"Connected Successfully"}]"#,
                ))
                .await
                .unwrap();
                let _auth = ws.next().await;
                ws.send(Message::text(
                    r#"[{"ev":"status","status":"auth_success","message":"authenticated"}]"#,
                ))
                .await
                .unwrap();
                let _subscribe = ws.next().await;
                // One confirmation per topic, in separate frames.
                ws.send(Message::text(
                    r#"[{"ev":"status","status":"success","message":"subscribed to: T.AAPL"}]"#,
                ))
                .await
                .unwrap();
                ws.send(Message::text(
                    r#"[{"ev":"status","status":"success","message":"subscribed to: AM.AAPL"}]"#,
                ))
                .await
                .unwrap();
                ws.send(Message::text(frame)).await.unwrap();
                if i == 0 {
                    drop(ws);
                    continue;
                }
                while let Some(Ok(_)) = ws.next().await {}
            }
        })
    });
    let (rest, seen) = rest_server(move |_, _| {
        let bars: Vec<String> = [(0, "184.1"), (1, "184.2"), (2, "184.3")]
            .iter()
            .map(|(m, c)| {
                let t = base + m * 60_000;
                format!(r#"{{"v":100,"vw":{c},"o":{c},"c":{c},"h":{c},"l":{c},"t":{t},"n":3}}"#)
            })
            .collect();
        (
            200,
            Vec::new(),
            format!(
                r#"{{"ticker":"AAPL","queryCount":3,"resultsCount":3,"adjusted":true,"results":[{}],"status":"OK","request_id":"r"}}"#,
                bars.join(",")
            ),
        )
    });
    let mut polygon = source(format!("{ws_url}/stocks"), rest, "PGKEY");
    polygon.trades = vec!["AAPL".into()];
    polygon.repair_gaps = true;
    // The first minute streamed; the repair's page; the minute after the reconnect.
    let appended = check_source(Box::new(polygon), 3);
    let closes: Vec<String> = appended
        .events
        .iter()
        .map(|e| match e {
            Event::Bar(b) => b.bar.close.to_string(),
            other => panic!("bars only: {other:?}"),
        })
        .collect();
    // 14:30 comes twice (the repair's window includes its mark); processing drops the second.
    assert_eq!(
        closes,
        ["184.1", "184.1", "184.2", "184.3", "184.4"],
        "in time order"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        1,
        "one repair for the reconnect, none on the first connection"
    );
    assert!(
        seen[0]
            .uri
            .starts_with(&format!("/v2/aggs/ticker/AAPL/range/1/minute/{base}/")),
        "{}",
        seen[0].uri
    );
    assert_eq!(*connections.lock().unwrap(), 2);
}

#[test]
fn a_daily_update_of_many_symbols_asks_grouped_daily_once_per_trading_day() {
    use tickflow_sources::calendar;
    let symbols: Vec<String> = [
        "AAPL", "MSFT", "NVDA", "AMD", "TSLA", "META", "AMZN", "GOOG",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let names = symbols.clone();
    let (rest, seen) = rest_server(move |_, uri| {
        // /v2/aggs/grouped/locale/us/market/stocks/{date}?adjusted=true
        let date: jiff::civil::Date = uri
            .split('/')
            .nth(8)
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // Stamped at the close, 16:00 in New York.
        let close = date
            .at(16, 0, 0, 0)
            .in_tz("America/New_York")
            .unwrap()
            .timestamp()
            .as_millisecond();
        let results: Vec<String> = names
            .iter()
            .chain(std::iter::once(&"ZZZ".to_string()))
            .map(|t| format!(r#"{{"T":"{t}","o":1.5,"h":2,"l":1,"c":1.75,"v":100,"vw":1.6,"t":{close},"n":3}}"#))
            .collect();
        (
            200,
            Vec::new(),
            format!(
                r#"{{"adjusted":true,"queryCount":9,"resultsCount":9,"status":"OK","request_id":"r","results":[{}]}}"#,
                results.join(",")
            ),
        )
    });
    let mut polygon = source(String::new(), rest, "PGKEY");
    (polygon.trades, polygon.minute_bars) = (Vec::new(), Vec::new());
    polygon.daily_bars = symbols;
    polygon.history_days = 5;
    let today = calendar::exchange_date(tickflow_model::UnixNanos::now());
    let last = calendar::previous_trading_day(today);
    let mut days = 0;
    let mut day = today.checked_sub(jiff::Span::new().days(5)).unwrap();
    while day <= last {
        days += usize::from(calendar::is_trading_day(day));
        day = day.tomorrow().unwrap();
    }
    let appended = check_source(Box::new(polygon), days);
    assert_eq!(
        appended.events.len(),
        8 * days,
        "the eight asked for, not ZZZ, each day"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), days, "one call a trading day for all eight");
    assert!(seen.iter().all(|s| {
        s.uri
            .starts_with("/v2/aggs/grouped/locale/us/market/stocks/")
    }));
    for e in &appended.events {
        let Event::Bar(b) = e else {
            panic!("bars only")
        };
        assert_eq!(
            calendar::exchange_day_start(b.bar.start),
            b.bar.start,
            "keyed at the day's start"
        );
        assert_eq!(b.bar.close.to_string(), "1.75");
    }
}
