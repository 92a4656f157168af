use std::sync::Arc;

use proptest::prelude::*;
use tickflow_model::{AlertKind, Date, Price, Qty, Quote, Severity, Trade, Volume};

use super::*;
use crate::alerts::{Condition, Firing, Hysteresis};

const SEC: i64 = 1_000_000_000;
/// 2026-11-22T00:00:00Z
const T0: i64 = 1_795_305_600 * SEC;

fn trade(sym: &str, ts: i64, price: &str, size: &str, id: u64) -> Event {
    Event::Trade(Trade {
        symbol: Symbol::parse(sym).unwrap(),
        ts_event: UnixNanos(ts),
        ts_recv: UnixNanos(ts),
        price: Price::parse(price).unwrap(),
        size: Qty::parse(size).unwrap(),
        trade_id: Some(id.to_string().into()),
        exchange: None,
        source: Arc::from("test"),
        feed: Arc::from("test"),
        seq: Some(id),
    })
}

fn quote(sym: &str, ts: i64, bid: &str, ask: &str) -> Event {
    Event::Quote(Quote {
        symbol: Symbol::parse(sym).unwrap(),
        ts_event: UnixNanos(ts),
        ts_recv: UnixNanos(ts),
        bid: Price::parse(bid).unwrap(),
        bid_size: Qty::parse("1").unwrap(),
        ask: Price::parse(ask).unwrap(),
        ask_size: Qty::parse("1").unwrap(),
        source: Arc::from("test"),
        feed: Arc::from("test"),
        seq: Some(1),
    })
}

fn run(p: &mut Processor, events: Vec<Event>) -> Output {
    let mut out = Output::default();
    for (i, e) in events.into_iter().enumerate() {
        p.process(Some(i as u64), e, UnixNanos(T0), &mut out);
    }
    out
}

fn bars_of(out: &Output, interval: BarInterval) -> Vec<&Bar> {
    out.rows
        .bars
        .iter()
        .filter(|b| b.interval == interval)
        .collect()
}

#[test]
fn builds_exact_ohlcv_bars_and_finalizes_after_lateness() {
    let mut p = Processor::new(ProcessorConfig {
        lateness_nanos: SEC,
        ..Default::default()
    });
    let out = run(
        &mut p,
        vec![
            trade("NVDA", T0 + 100, "10.00", "1", 1),
            trade("NVDA", T0 + 300, "12.50", "3", 2),
            trade("NVDA", T0 + 200, "9.00", "2", 3), // out of order within the second
            trade("NVDA", T0 + SEC + 5, "11", "1", 4), // next second: bar 0 still open (lateness 1s)
        ],
    );
    assert!(
        bars_of(&out, BarInterval::S1).is_empty(),
        "not final until watermark passes end + lateness"
    );
    let out = run(&mut p, vec![trade("NVDA", T0 + 2 * SEC, "11", "1", 5)]);
    let s1 = bars_of(&out, BarInterval::S1);
    assert_eq!(s1.len(), 1);
    let b = s1[0];
    assert_eq!((b.start.0, b.end.0), (T0, T0 + SEC));
    assert_eq!(
        (
            b.open.to_string(),
            b.high.to_string(),
            b.low.to_string(),
            b.close.to_string()
        ),
        (
            "10.00".into(),
            "12.50".into(),
            "9.00".into(),
            "12.50".into()
        )
    );
    assert_eq!(b.volume.raw(), 6 * SEC as i128);
    assert_eq!(b.trade_count, Some(3));
    // (10*1 + 12.5*3 + 9*2) / 6 = 65.5 / 6 = 10.91666…
    assert_eq!(b.vwap.map(Price::raw), Some(10_916_666_667));
    assert_eq!(b.source, None, "built from trades");
    assert!(b.is_final);
    let open = p.open_bars();
    assert!(
        open.iter()
            .any(|b| b.interval == BarInterval::D1 && !b.is_final && b.trade_count == Some(5))
    );
}

#[test]
fn late_ticks_go_to_the_dlq_never_into_bars() {
    let mut p = Processor::new(ProcessorConfig {
        lateness_nanos: SEC,
        ..Default::default()
    });
    let out = run(
        &mut p,
        vec![
            trade("A", T0 + 10 * SEC, "1", "1", 1),
            trade("A", T0 + 5 * SEC, "1", "1", 2),
            trade("A", T0 + 9 * SEC + 1, "2", "1", 3),
        ],
    );
    assert_eq!(out.rows.trades.len(), 2);
    assert_eq!(out.rows.dlq.len(), 1);
    assert_eq!(out.rows.dlq[0].reason, RejectReason::Late);
    assert_eq!(out.rows.dlq[0].offset, Some(1));
    assert!(
        out.rows.dlq[0].payload.contains("\"trade_id\":\"2\""),
        "{}",
        out.rows.dlq[0].payload
    );
    let out = run(&mut p, vec![trade("A", T0 + 60 * SEC, "1", "1", 4)]);
    let s1 = bars_of(&out, BarInterval::S1);
    assert_eq!(
        s1.iter().filter_map(|b| b.trade_count).sum::<u64>(),
        2,
        "the late trade is in no bar"
    );
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let mut p = Processor::new(ProcessorConfig::default());
    let t = trade("A", T0, "1", "1", 7);
    let out = run(
        &mut p,
        vec![
            t.clone(),
            t.clone(),
            quote("A", T0, "1", "2"),
            quote("A", T0, "1", "2"),
            t,
        ],
    );
    assert_eq!(out.rows.trades.len(), 1);
    assert_eq!(out.rows.quotes.len(), 1);
    assert_eq!(out.duplicates, 3);
}

#[test]
fn bad_ticks_get_their_reasons() {
    let mut p = Processor::new(ProcessorConfig::default());
    let out = run(
        &mut p,
        vec![
            trade("A", T0, "-1", "1", 1),
            trade("A", T0, "1", "0", 2),
            quote("A", T0, "2", "1"),
            quote("A", T0, "1", "1"),
            {
                let mut future = trade("A", T0 + 3600 * SEC, "1", "1", 3);
                if let Event::Trade(t) = &mut future {
                    t.ts_recv = UnixNanos(T0);
                }
                future
            },
            trade("A", 1000, "1", "1", 4),
            trade("A", T0, "1000000000", "1", 5),
        ],
    );
    let reasons: Vec<_> = out.rows.dlq.iter().map(|d| d.reason).collect();
    assert_eq!(
        reasons,
        [
            RejectReason::NonPositivePrice,
            RejectReason::ZeroSize,
            RejectReason::CrossedQuote,
            RejectReason::AbsurdTimestamp,
            RejectReason::AbsurdTimestamp,
            RejectReason::OutOfRange
        ]
    );
    assert_eq!(
        out.rows.quotes.len(),
        1,
        "a locked quote (bid == ask) is valid"
    );
}

const DAY: i64 = 86_400 * SEC;

/// A feed's daily bar for day `d` after T0 (starting 05:00 UTC, as US vendors' do).
fn fed_day(sym: &str, d: i64, ohlc: [&str; 4], volume: &str) -> Event {
    let start = T0 + d * DAY + 5 * 3600 * SEC;
    Event::Bar(FedBar {
        bar: Bar {
            symbol: Symbol::parse(sym).unwrap(),
            interval: BarInterval::D1,
            start: UnixNanos(start),
            end: UnixNanos(start + DAY),
            open: Price::parse(ohlc[0]).unwrap(),
            high: Price::parse(ohlc[1]).unwrap(),
            low: Price::parse(ohlc[2]).unwrap(),
            close: Price::parse(ohlc[3]).unwrap(),
            volume: Volume::parse(volume).unwrap(),
            vwap: None,
            trade_count: None,
            is_final: true,
            source: Some(Arc::from("polygon")),
        },
        ts_recv: UnixNanos(T0 + 30 * DAY),
        feed: Arc::from("polygon"),
    })
}

#[test]
fn a_feeds_daily_bars_give_the_daily_metrics_by_hand() {
    let mut p = Processor::new(ProcessorConfig::default());
    let series = [
        ["100", "110", "95", "105"],
        ["105", "108", "100", "102"],
        ["102", "110", "101", "108"],
        ["108", "112", "107", "111"],
        ["111", "112", "98", "99"],
        ["99", "121", "99", "120"],
    ];
    let events = (0..6)
        .map(|d| fed_day("NVDA", d, series[d as usize], "1000000.5"))
        .collect();
    let out = run(&mut p, events);
    assert_eq!(out.rows.bars.len(), 6, "every bar stored as sent");
    assert!(
        out.rows
            .bars
            .iter()
            .all(|b| b.source.as_deref() == Some("polygon"))
    );
    let m = &out.rows.daily_metrics;
    assert_eq!(m.len(), 6);
    assert_eq!(m[0].date.to_string(), "2026-11-22");
    assert_eq!(m[5].date.to_string(), "2026-11-27");
    // volatility = (high − low) / close × 100
    let close = |x: f64, y: f64| (x - y).abs() < 1e-9;
    assert!(close(m[0].volatility, 15.0 / 105.0 * 100.0));
    assert!(close(m[4].volatility, 14.0 / 99.0 * 100.0));
    assert!(close(m[5].volatility, 22.0 / 120.0 * 100.0));
    // daily % change, close to close
    assert_eq!(m[0].daily_pct_change, None);
    assert!(close(m[1].daily_pct_change.unwrap(), -3.0 / 105.0 * 100.0));
    assert!(close(m[5].daily_pct_change.unwrap(), 21.0 / 99.0 * 100.0));
    // 5-day average of closes, exact: (105 + 102 + 108 + 111 + 99) / 5 = 105, then
    // (102 + 108 + 111 + 99 + 120) / 5 = 108; on day 2, (105 + 102) / 2 = 103.5
    assert_eq!(m[1].rolling_avg_5d.raw(), 103_500_000_000);
    assert_eq!(m[4].rolling_avg_5d.raw(), 105_000_000_000);
    assert_eq!(m[5].rolling_avg_5d.raw(), 108_000_000_000);
    assert_eq!(m[5].volume.to_string(), "1000000.5");

    // Sent again (a rerun backfill): nothing stored twice, nothing computed twice.
    let again = run(&mut p, vec![fed_day("NVDA", 3, series[3], "1")]);
    assert_eq!(again.duplicates, 1);
    assert!(again.rows.bars.is_empty() && again.rows.daily_metrics.is_empty());
    // Before the feed's first bar: refused, with the order rule in the reason.
    let early = run(&mut p, vec![fed_day("NVDA", -1, series[0], "1")]);
    assert_eq!(early.rows.dlq.len(), 1);
    assert_eq!(early.rows.dlq[0].reason, RejectReason::Late);
    assert!(
        early.rows.dlq[0].error.contains("time order"),
        "{}",
        early.rows.dlq[0].error
    );
    assert!(early.rows.dlq[0].payload.contains(r#""type":"bar""#));
}

#[test]
fn a_feed_takes_an_interval_over_from_trades_and_no_bar_is_counted_twice() {
    // UTC days, so a built day and the feed's New York day overlap.
    let mut p = Processor::new(ProcessorConfig {
        days: Days::utc(),
        ..Default::default()
    });
    // Trades on day 0 and day 1: day 0's built daily bar is final once day 1's trades pass
    // its end; day 1's is still open.
    let mut events = vec![
        trade("NVDA", T0 + 3600 * SEC, "100", "1", 1),
        trade("NVDA", T0 + 7200 * SEC, "104", "1", 2),
        trade("NVDA", T0 + DAY + 3600 * SEC, "106", "1", 3),
        trade("NVDA", T0 + DAY + 3660 * SEC, "107", "1", 4),
    ];
    // The feed's bar for day 0 (05:00 UTC start) overlaps day 0's built bar: kept out.
    events.push(fed_day("NVDA", 0, ["100", "105", "99", "104"], "9"));
    // Day 1's: the feed takes the daily interval over; day 1's open built bar is dropped.
    events.push(fed_day("NVDA", 1, ["106", "110", "105", "109"], "9"));
    // Trades on day 2 still make trades and minute bars, but no daily bar.
    events.push(trade("NVDA", T0 + 2 * DAY + 3600 * SEC, "111", "1", 5));
    events.push(trade("NVDA", T0 + 2 * DAY + 7200 * SEC, "112", "1", 6));
    events.push(trade("NVDA", T0 + 3 * DAY + 3600 * SEC, "113", "1", 7));
    let out = run(&mut p, events);
    let daily = bars_of(&out, BarInterval::D1);
    let got: Vec<(i64, Option<&str>, String)> = daily
        .iter()
        .map(|b| {
            (
                (b.start.0 - T0) / 3600 / SEC,
                b.source.as_deref(),
                b.close.to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (0, None, "104".to_string()),
            (24 + 5, Some("polygon"), "109".to_string())
        ],
        "day 0 built, day 1 from the feed, day 2 from nobody until the feed sends it"
    );
    assert_eq!(out.duplicates, 1, "the feed's day 0");
    assert_eq!(out.rows.trades.len(), 7);
    assert!(
        bars_of(&out, BarInterval::M1).len() >= 5,
        "minute bars are still built from trades"
    );
    let closes: Vec<String> = out
        .rows
        .daily_metrics
        .iter()
        .map(|m| m.close.to_string())
        .collect();
    assert_eq!(
        closes,
        ["104", "109"],
        "daily metrics follow whichever bar stands"
    );
    assert!(
        !p.open_bars().iter().any(|b| b.interval == BarInterval::D1),
        "no daily bar is built any more"
    );
}

#[test]
fn a_feeds_bar_that_cannot_be_is_refused_with_its_reason() {
    let mut p = Processor::new(ProcessorConfig::default());
    let out = run(
        &mut p,
        vec![
            fed_day("A", 0, ["10", "9", "8", "9.5"], "1"),
            fed_day("A", 1, ["10", "11", "10.5", "10.6"], "1"),
            fed_day("A", 2, ["10", "11", "0", "10"], "1"),
        ],
    );
    let reasons: Vec<RejectReason> = out.rows.dlq.iter().map(|d| d.reason).collect();
    assert_eq!(
        reasons,
        [
            RejectReason::InconsistentBar,
            RejectReason::InconsistentBar,
            RejectReason::NonPositivePrice
        ]
    );
    assert!(out.rows.bars.is_empty() && out.rows.daily_metrics.is_empty());
}

#[test]
fn daily_metrics_follow_the_formulas() {
    let mut p = Processor::new(ProcessorConfig::default());
    let day = 86_400 * SEC;
    // closes 100, 110, 99, 120, 130, 140; each day high = close + 10, low = close - 10
    let closes = ["100", "110", "99", "120", "130", "140"];
    let mut events = Vec::new();
    for (d, c) in closes.iter().enumerate() {
        let c: i64 = c.parse().unwrap();
        // 10:00 in New York, X's exchange: its day is New York's.
        let base = T0 + d as i64 * day + 15 * 3600 * SEC;
        events.push(trade("X", base, &(c + 10).to_string(), "1", d as u64 * 10));
        events.push(trade(
            "X",
            base + SEC,
            &(c - 10).to_string(),
            "1",
            d as u64 * 10 + 1,
        ));
        events.push(trade(
            "X",
            base + 2 * SEC,
            &c.to_string(),
            "1",
            d as u64 * 10 + 2,
        ));
    }
    events.push(trade("X", T0 + 7 * day, "1", "1", 999));
    let out = run(&mut p, events);
    let m = &out.rows.daily_metrics;
    assert_eq!(m.len(), 6);
    assert_eq!(m[0].date.to_string(), "2026-11-22");
    assert!((m[0].volatility - 20.0).abs() < 1e-9);
    assert_eq!(m[0].daily_pct_change, None);
    assert!((m[1].daily_pct_change.unwrap() - 10.0).abs() < 1e-9);
    assert!((m[2].volatility - 20.0 / 99.0 * 100.0).abs() < 1e-9);
    // day 6 averages the last five closes: (110 + 99 + 120 + 130 + 140) / 5 = 119.8
    assert_eq!(m[5].rolling_avg_5d.raw(), 119_800_000_000);
    // day 2 averages two closes: 105
    assert_eq!(m[1].rolling_avg_5d.raw(), 105_000_000_000);
    assert_eq!(m[5].volume.raw(), 3 * SEC as i128);
}

#[test]
fn a_threshold_fires_on_its_edge_not_while_it_holds() {
    let rule = ThresholdRule {
        name: "nvda-high".into(),
        symbol: Some(Symbol::parse("NVDA").unwrap()),
        condition: "price > 200".parse().unwrap(),
        hysteresis: Hysteresis::None,
        firing: Firing {
            cooldown_nanos: 10 * SEC,
            severity: Severity::Critical,
            ..Firing::default()
        },
    };
    let mut p = Processor::new(ProcessorConfig {
        thresholds: vec![rule],
        ..Default::default()
    });
    let out = run(
        &mut p,
        vec![
            trade("NVDA", T0, "199", "1", 1),
            trade("NVDA", T0 + SEC, "201", "1", 2),
            trade("NVDA", T0 + 2 * SEC, "202", "1", 3),
            trade("AMD", T0 + 3 * SEC, "300", "1", 4),
            trade("NVDA", T0 + 11 * SEC, "203", "1", 5),
            trade("NVDA", T0 + 12 * SEC, "200", "1", 6),
            trade("NVDA", T0 + 30 * SEC, "204", "1", 7),
        ],
    );
    // Above 200 from 1 s to 11 s is one alert; back at 200 it cleared, and 204 fires again.
    let ts: Vec<_> = out.rows.alerts.iter().map(|a| a.ts.0 - T0).collect();
    assert_eq!(ts, [SEC, 30 * SEC]);
    assert!(out.rows.alerts.iter().all(|a| a.kind == AlertKind::Fired));
    assert_eq!(out.rows.alerts[0].severity, Severity::Critical);
    assert_eq!(out.rows.alerts[0].threshold, "200");
    assert!(
        out.rows.alerts[0].message.contains("201 > 200"),
        "{}",
        out.rows.alerts[0].message
    );
    assert_ne!(out.rows.alerts[0].alert_id, out.rows.alerts[1].alert_id);
    assert_eq!(
        "price < 1.5".parse::<Condition>().unwrap(),
        Condition::Below(Price::parse("1.5").unwrap())
    );
    assert!("price >= 3".parse::<Condition>().is_err());
    assert!("volume > 3".parse::<Condition>().is_err());
}

#[test]
fn each_symbol_is_checked_against_its_own_and_global_rules() {
    let rule = |name: &str, symbol: Option<&str>, condition: &str| ThresholdRule {
        name: name.into(),
        symbol: symbol.map(|s| Symbol::parse(s).unwrap()),
        condition: condition.parse().unwrap(),
        hysteresis: Hysteresis::None,
        firing: Firing {
            cooldown_nanos: 0,
            severity: Severity::Info,
            ..Firing::default()
        },
    };
    let mut p = Processor::new(ProcessorConfig {
        thresholds: vec![
            rule("any-above-100", None, "price > 100"),
            rule("nvda-above-100", Some("NVDA"), "price > 100"),
            rule("amd-above-500", Some("AMD"), "price > 500"),
            rule("amd-below-200", Some("AMD"), "price < 200"),
        ],
        ..Default::default()
    });
    let out = run(
        &mut p,
        vec![
            trade("NVDA", T0, "150", "1", 1),
            trade("AMD", T0, "150", "1", 2),
            trade("AMD", T0 + SEC, "600", "1", 3),
        ],
    );
    let fired: Vec<_> = out
        .rows
        .alerts
        .iter()
        .map(|a| format!("{} {}", a.symbol, a.rule))
        .collect();
    assert_eq!(
        fired,
        [
            "NVDA any-above-100",
            "NVDA nvda-above-100",
            "AMD any-above-100",
            "AMD amd-below-200",
            "AMD amd-above-500",
        ]
    );
}

#[test]
fn spike_detector_fires_on_a_jump_only() {
    let rule = SpikeRule {
        name: "spike".into(),
        symbol: None,
        window: 50,
        k: 6.0,
        min_samples: 20,
        min_return: 0.01,
        firing: Firing {
            cooldown_nanos: 60 * SEC,
            ..Firing::default()
        },
    };
    let mut p = Processor::new(ProcessorConfig {
        spikes: vec![rule],
        ..Default::default()
    });
    let mut events = Vec::new();
    for i in 0..200u64 {
        // ±0.1% zig-zag noise around 100
        let price = if i % 2 == 0 { "100.0" } else { "100.1" };
        events.push(trade("A", T0 + i as i64 * SEC / 10, price, "1", i));
    }
    assert!(
        run(&mut p, events).rows.alerts.is_empty(),
        "noise alone must not fire"
    );
    let out = run(&mut p, vec![trade("A", T0 + 30 * SEC, "110", "1", 1000)]);
    assert_eq!(out.rows.alerts.len(), 1);
    assert!(
        out.rows.alerts[0].message.contains("+9.890%"),
        "{}",
        out.rows.alerts[0].message
    );
}

fn arb_events() -> impl Strategy<Value = Vec<Event>> {
    let one = (
        0usize..3,
        0i64..40,
        1u32..2000,
        1u32..50,
        0u64..30,
        any::<bool>(),
        0u8..20,
    );
    prop::collection::vec(one, 1..300).prop_map(|v| {
        v.into_iter()
            .map(|(s, t, p, q, id, is_trade, bad)| {
                let sym = ["A", "B", "C"][s];
                let ts = T0 + t * SEC / 4;
                let price = if bad == 0 {
                    "-1".to_string()
                } else {
                    format!("{}.{:02}", p / 100, p % 100)
                };
                if is_trade {
                    trade(sym, ts, &price, &q.to_string(), id)
                } else {
                    quote(sym, ts, &price, &format!("{}", p / 100 + 1))
                }
            })
            .collect()
    })
}

proptest! {
    /// Checkpointing the state at any point and resuming gives exactly the rows an
    /// uninterrupted run gives: the property crash recovery relies on.
    #[test]
    fn resume_from_checkpoint_equals_uninterrupted(events in arb_events(), cut in 0usize..300) {
        let config = ProcessorConfig {
            lateness_nanos: SEC,
            thresholds: vec![ThresholdRule { name: "t".into(), symbol: None, condition: "price > 15".parse().unwrap(),
                hysteresis: "0.5".parse().unwrap(),
                firing: Firing { cooldown_nanos: SEC, reminder_nanos: Some(2 * SEC), resolve: true, coalesce_nanos: Some(SEC), severity: Severity::Info } }],
            spikes: vec![SpikeRule { name: "s".into(), symbol: None, window: 10, k: 2.0, min_samples: 5,
                min_return: 0.0, firing: Firing { cooldown_nanos: SEC, coalesce_nanos: Some(3 * SEC), ..Firing::default() } }],
            ..Default::default()
        };
        let cut = cut.min(events.len());
        let mut whole = Processor::new(config.clone());
        let expected = run(&mut whole, events.clone());

        let mut first = Processor::new(config.clone());
        let mut got = run(&mut first, events[..cut].to_vec());
        let bytes = postcard::to_allocvec(first.state()).unwrap();
        let state: State = postcard::from_bytes(&bytes).unwrap();
        let mut second = Processor::with_state(config, state);
        let mut rest = run(&mut second, events[cut..].to_vec());
        got.rows.append(&mut rest.rows);
        got.duplicates += rest.duplicates;

        prop_assert_eq!(got.rows.trades.len(), expected.rows.trades.len());
        prop_assert_eq!(got.rows.bars, expected.rows.bars);
        prop_assert_eq!(got.rows.daily_metrics, expected.rows.daily_metrics);
        prop_assert_eq!(got.rows.alerts, expected.rows.alerts);
        prop_assert_eq!(got.duplicates, expected.duplicates);
        prop_assert_eq!(got.rows.dlq.len(), expected.rows.dlq.len());
        prop_assert_eq!(second.open_bars().len(), whole.open_bars().len());
    }

    /// Feeding every event twice changes nothing but the duplicate count.
    #[test]
    fn redelivery_never_doubles_a_row(events in arb_events()) {
        // Rules that coalesce: a repeated event must not move a burst's window either.
        let config = ProcessorConfig {
            thresholds: vec![ThresholdRule { name: "t".into(), symbol: None, condition: "price > 15".parse().unwrap(),
                hysteresis: "0.5".parse().unwrap(),
                firing: Firing { cooldown_nanos: SEC, reminder_nanos: Some(2 * SEC), resolve: true, coalesce_nanos: Some(SEC), severity: Severity::Info } }],
            ..Default::default()
        };
        let mut once = Processor::new(config.clone());
        let a = run(&mut once, events.clone());
        let mut twice = Processor::new(config);
        let doubled: Vec<Event> = events.iter().flat_map(|e| [e.clone(), e.clone()]).collect();
        let b = run(&mut twice, doubled);
        prop_assert_eq!(a.rows.trades, b.rows.trades);
        prop_assert_eq!(a.rows.quotes, b.rows.quotes);
        prop_assert_eq!(a.rows.bars, b.rows.bars);
        prop_assert_eq!(a.rows.alerts, b.rows.alerts);
    }
}

#[test]
fn a_future_dated_tick_does_not_make_later_ticks_late() {
    let mut p = Processor::new(ProcessorConfig {
        lateness_nanos: SEC,
        ..Default::default()
    });
    let mut skewed = trade("A", T0 + 200 * SEC, "1", "1", 1);
    if let Event::Trade(t) = &mut skewed {
        t.ts_recv = UnixNanos(T0); // 200 s ahead of receipt: within max_future, so accepted
    }
    let out = run(
        &mut p,
        vec![
            skewed,
            trade("A", T0 + SEC / 2, "1", "1", 2),
            trade("A", T0 + SEC, "1", "1", 3),
        ],
    );
    assert!(out.rows.dlq.is_empty(), "{:?}", out.rows.dlq);
    assert_eq!(out.rows.trades.len(), 3);
}

#[test]
fn one_tick_moves_on_a_quiet_symbol_need_the_minimum_return() {
    let quiet = |min_return: f64| {
        let rule = SpikeRule {
            name: "s".into(),
            symbol: None,
            window: 100,
            k: 4.0,
            min_samples: 20,
            min_return,
            firing: Firing {
                cooldown_nanos: 0,
                ..Firing::default()
            },
        };
        let mut p = Processor::new(ProcessorConfig {
            spikes: vec![rule],
            ..Default::default()
        });
        let mut events: Vec<Event> = (0..60)
            .map(|i| {
                trade(
                    "Q",
                    T0 + i * SEC / 10,
                    if i == 30 { "9.81" } else { "9.80" },
                    "1",
                    i as u64,
                )
            })
            .collect();
        events.push(trade("Q", T0 + 7 * SEC, "9.79", "1", 999));
        run(&mut p, events).rows.alerts.len()
    };
    assert!(
        quiet(0.0) > 0,
        "without a minimum the one-cent move is many σ"
    );
    assert_eq!(quiet(0.01), 0, "a 0.1% move is below the 1% minimum");
}

#[test]
fn a_listed_symbol_has_new_york_days_and_a_pair_utc_days() {
    let mut p = Processor::new(ProcessorConfig::default());
    // T0 is 19:00 on 21 November in New York: NVDA's trades an hour either side of it fall in
    // one New York day; BTC-USD's fall in two UTC days.
    let events = vec![
        trade("NVDA", T0 - 3600 * SEC, "100", "1", 1),
        trade("NVDA", T0 + 3600 * SEC, "102", "1", 2),
        trade("BTC-USD", T0 - 3600 * SEC, "50000", "1", 3),
        trade("BTC-USD", T0 + 3600 * SEC, "51000", "1", 4),
        // The next New York day: NVDA's 21 November is final.
        trade("NVDA", T0 + 6 * 3600 * SEC, "103", "1", 5),
        trade("BTC-USD", T0 + 6 * 3600 * SEC, "52000", "1", 6),
    ];
    let out = run(&mut p, events);
    let daily: Vec<(&str, i64, i64, String)> = bars_of(&out, BarInterval::D1)
        .iter()
        .map(|b| {
            let hours = |t: UnixNanos| (t.0 - T0) / 3600 / SEC;
            (
                b.symbol.as_str(),
                hours(b.start),
                hours(b.end),
                b.close.to_string(),
            )
        })
        .collect();
    assert_eq!(
        daily,
        [
            ("BTC-USD", -24, 0, "50000".to_string()),
            ("NVDA", -19, 5, "102".to_string()),
        ],
        "New York midnight is 05:00 UTC in November"
    );
    let dates: Vec<(&str, Date)> = out
        .rows
        .daily_metrics
        .iter()
        .map(|m| (m.symbol.as_str(), m.date))
        .collect();
    let day = |s| Date::parse(s).unwrap();
    assert_eq!(
        dates,
        [("BTC-USD", day("2026-11-21")), ("NVDA", day("2026-11-21"))]
    );
}
