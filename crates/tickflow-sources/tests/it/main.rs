//! Sources against the source contract, and what replay reads from each format.

mod alpaca;
mod binance;
mod coinbase;
mod polygon;
mod rest_faults;
mod rest_poll;
mod support;

use std::sync::Arc;

use tickflow_core::contract::{check_source, sample_rows};
use tickflow_model::Event;
use tickflow_sources::{ReplaySource, SimSymbol, SimulatorConfig, SimulatorSource, replay};

#[test]
fn simulator_meets_the_source_contract() {
    let source = SimulatorSource {
        config: SimulatorConfig {
            symbols: SimSymbol::demo_universe(),
            seed: 1,
            quote_ratio: 0.5,
            anomaly_rate: 0.0,
            source: Arc::from("contract"),
            feed: Arc::from("sim"),
        },
        rate: 0,
        history_days: 1,
        history_step_nanos: 300_000_000_000,
        push_history: true,
    };
    let appended = check_source(Box::new(source), 3);
    assert!(appended.events.len() > 1000, "{}", appended.events.len());
    assert!(appended.rejected.is_empty());
}

#[test]
fn replay_reads_every_format_day_by_day_in_event_time_order() {
    let dir = tempfile::tempdir().unwrap();
    // The lake's own files: trades and quotes are read, derived tables skipped.
    let lake = tickflow_lake::Lake::open(dir.path().join("lake")).unwrap();
    lake.write(&sample_rows(1, 6), 1).unwrap();
    // NDJSON out of order, with one line that cannot be read.
    let ndjson = dir.path().join("more/2026-11-24.ndjson");
    std::fs::create_dir_all(ndjson.parent().unwrap()).unwrap();
    std::fs::write(
        &ndjson,
        "{\"type\":\"trade\",\"symbol\":\"MSFT\",\"ts_event\":\"2026-11-24T15:00:00Z\",\"price\":\"410.5\",\"size\":\"3\"}\n\
         {\"type\":\"trade\",\"symbol\":\"MSFT\",\"ts_event\":\"2026-11-24T14:00:00Z\",\"prcie\":\"1\"}\n\
         \n\
         {\"type\":\"trade\",\"symbol\":\"MSFT\",\"ts_event\":\"2026-11-24T09:00:00Z\",\"price\":\"409\",\"size\":\"1\"}\n",
    )
    .unwrap();
    // CSV as the CSV sink writes it, a day later.
    let csv = dir.path().join("backup/trades/2026-11-25.csv");
    std::fs::create_dir_all(csv.parent().unwrap()).unwrap();
    std::fs::write(
        &csv,
        "symbol,ts_event,ts_recv,price,size,trade_id,exchange,source,feed,seq\n\
         AAPL,2026-11-25T14:30:00.000000001Z,2026-11-25T14:30:00.5Z,230.1,5,a1,,alpaca,alpaca:iex,7\n\
         AAPL,2026-11-25T14:29:00Z,2026-11-25T14:29:00.5Z,-1,5,a0,,alpaca,alpaca:iex,6\n\
         AAPL,not-a-time,x,1,1,,,alpaca,alpaca:iex,\n",
    )
    .unwrap();

    let source = ReplaySource {
        path: dir.path().to_path_buf(),
        speed: None,
    };
    let appended = check_source(Box::new(source), 1000);
    // Two unreadable inputs, each with its file and line.
    assert_eq!(appended.rejected.len(), 2, "{:?}", appended.rejected);
    assert!(
        appended.rejected[0]
            .0
            .contains("2026-11-24.ndjson:2: unknown field `prcie`"),
        "{:?}",
        appended.rejected
    );
    assert!(appended.rejected[0].1.contains("prcie"), "the line is kept");
    assert!(
        appended.rejected[1].0.contains("2026-11-25.csv:4:"),
        "{:?}",
        appended.rejected
    );
    // 6 trades, 6 quotes and a feed's 2 bars from the lake (2026-11-24; its bars built from
    // trades are derived again, not read), 2 NDJSON trades, 2 CSV trades (the negative price
    // is for processing to reject, with its reason).
    assert_eq!(appended.events.len(), 18);
    let fed: Vec<&str> = appended
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Bar(b) => Some(b.source()),
            _ => None,
        })
        .collect();
    assert_eq!(fed, ["contract:feed", "contract:feed"]);
    let day = |e: &Event| e.ts_event().date().to_string();
    let days: Vec<String> = appended.events.iter().map(day).collect();
    assert!(days[..16].iter().all(|d| d == "2026-11-24"), "{days:?}");
    assert!(days[16..].iter().all(|d| d == "2026-11-25"), "{days:?}");
    for pair in appended.events.windows(2) {
        if day(&pair[0]) == day(&pair[1]) {
            assert!(
                replay::replay_time(&pair[0]) <= replay::replay_time(&pair[1]),
                "event-time order within a day, a bar at its end"
            );
        }
    }
    // Recorded names and sequence numbers are kept; lines that name no source get the id.
    let Event::Trade(csv_trade) = &appended.events[17] else {
        panic!("a trade")
    };
    assert_eq!(&*csv_trade.source, "alpaca");
    assert_eq!(&*csv_trade.feed, "alpaca:iex");
    assert_eq!(csv_trade.seq, Some(7));
    assert_eq!(csv_trade.price.to_string(), "230.1");
    let msft: Vec<&Event> = appended
        .events
        .iter()
        .filter(|e| e.symbol().as_str() == "MSFT")
        .collect();
    assert_eq!(msft.len(), 2);
    let Event::Trade(t) = msft[0] else {
        panic!("a trade")
    };
    assert_eq!(&*t.source, "contract");
    assert_eq!(t.price.to_string(), "409", "the earlier trade first");
    let lake_trades = appended
        .events
        .iter()
        .filter(
            |e| matches!(e, Event::Trade(t) if &*t.source == "contract" && t.trade_id.is_some()),
        )
        .count();
    assert_eq!(lake_trades, 6);
}

#[test]
fn replay_stops_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticks.ndjson");
    let mut text = String::new();
    for i in 0..30_000u64 {
        text.push_str(&format!(
            "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":{},\"price\":\"181.25\",\"size\":\"1\",\"seq\":{i}}}\n",
            1_795_444_200_000_000_000u64 + i
        ));
    }
    std::fs::write(&path, text).unwrap();
    let appended = check_source(Box::new(ReplaySource { path, speed: None }), 1);
    assert!(appended.events.len() < 30_000, "stopped before the end");
    assert!(!appended.events.is_empty());
}

#[test]
fn replay_of_a_missing_path_is_a_clear_error() {
    let err = tickflow_sources::replay::plan(std::path::Path::new("/no/such/ticks.ndjson"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/no/such/ticks.ndjson"), "{err}");
}
