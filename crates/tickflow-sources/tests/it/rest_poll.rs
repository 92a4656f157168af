//! The REST quote poller against a local quote API with a custom field mapping: a failed
//! poll is retried and counted, an answer without the mapped price goes to the DLQ whole,
//! and each good poll becomes one bar with exactly the mapped fields.

use tickflow_core::contract::check_source;
use tickflow_model::{BarInterval, Event};
use tickflow_sources::rest_poll::RestPollSource;
use tickflow_sources::rest_poll::parse::{Fields, Shape};

use crate::support::rest_server;

#[test]
fn polls_each_symbol_keeps_the_mapped_fields_and_never_stores_half_an_answer() {
    let (url, seen) = rest_server(|n, uri| {
        if uri.contains("symbols=MSFT") {
            // No price where the mapping says.
            return (
                200,
                Vec::new(),
                r#"{"quoteResponse":{"result":[],"error":null}}"#.into(),
            );
        }
        if n == 0 {
            return (503, Vec::new(), "try again".into());
        }
        (
            200,
            Vec::new(),
            r#"{"quoteResponse":{"result":[{"symbol":"AAPL","regularMarketPrice":184.40,"regularMarketDayHigh":185.1,"regularMarketDayLow":181.9,"regularMarketVolume":54021344}],"error":null}}"#.into(),
        )
    });
    let source = RestPollSource {
        url: format!("{url}/v7/finance/quote?symbols={{symbol}}"),
        headers: vec![("X-API-KEY".into(), "quote-key".into())],
        symbols: vec!["AAPL".into(), "MSFT".into()],
        interval: BarInterval::S1,
        shape: Shape::Custom(Fields {
            price: "/quoteResponse/result/0/regularMarketPrice".into(),
            high: Some("/quoteResponse/result/0/regularMarketDayHigh".into()),
            low: Some("/quoteResponse/result/0/regularMarketDayLow".into()),
            volume: Some("/quoteResponse/result/0/regularMarketVolume".into()),
            open: None,
            time: None,
        }),
        requests_per_minute: 6000,
    };
    // Two polls: one append each.
    let appended = check_source(Box::new(source), 2);
    let bars: Vec<String> = appended
        .events
        .iter()
        .map(|e| match e {
            Event::Bar(b) => format!(
                "{} {} o{} h{} l{} c{} v{}",
                b.bar.symbol,
                b.bar.interval,
                b.bar.open,
                b.bar.high,
                b.bar.low,
                b.bar.close,
                b.bar.volume
            ),
            other => panic!("only bars: {other:?}"),
        })
        .collect();
    assert_eq!(
        bars, ["AAPL 1s o184.40 h185.1 l181.9 c184.40 v54021344"; 2],
        "the first poll's 503 retried, not skipped"
    );
    assert_eq!(appended.rejected.len(), 2, "MSFT's answer, each poll");
    assert!(
        appended.rejected[0].0.contains("MSFT: price: no item 0"),
        "{:?}",
        appended.rejected
    );
    assert!(
        appended.rejected[0].1.contains("quoteResponse"),
        "the answer is kept"
    );
    let seen = seen.lock().unwrap().clone();
    let aapl = seen
        .iter()
        .filter(|s| s.uri.contains("symbols=AAPL"))
        .count();
    assert_eq!(aapl, 3, "two polls and one retry");
    assert!(seen.iter().all(|s| s.headers["x-api-key"] == "quote-key"));
}
