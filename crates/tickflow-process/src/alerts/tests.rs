//! Each behaviour of a rule shown by a price series built for it.

use std::sync::Arc;

use tickflow_model::{
    Alert, AlertKind, Bar, BarInterval, Event, Price, Qty, Quote, Severity, Symbol, Trade,
    UnixNanos,
};

use super::{ExprRule, Firing, Hysteresis, SpikeRule, ThresholdRule};
use crate::{Output, Processor, ProcessorConfig, State};

const SEC: i64 = 1_000_000_000;
/// 2026-11-23T14:30:00Z
const T0: i64 = 1_795_444_200 * SEC;

fn trade(sym: &str, at: i64, price: &str) -> Event {
    Event::Trade(Trade {
        symbol: Symbol::parse(sym).unwrap(),
        ts_event: UnixNanos(T0 + at),
        ts_recv: UnixNanos(T0 + at),
        price: Price::parse(price).unwrap(),
        size: Qty::parse("1").unwrap(),
        trade_id: Some(format!("{sym}-{at}").as_str().into()),
        exchange: None,
        source: Arc::from("test"),
        feed: Arc::from("test"),
        seq: None,
    })
}

/// One symbol's trades, a second apart, at these prices.
fn series(sym: &str, prices: &[&str]) -> Vec<Event> {
    (0..)
        .zip(prices)
        .map(|(i, p)| trade(sym, i * SEC, p))
        .collect()
}

fn above(name: &str, threshold: &str, hysteresis: &str, firing: Firing) -> ThresholdRule {
    ThresholdRule {
        name: name.into(),
        symbol: None,
        condition: format!("price > {threshold}").parse().unwrap(),
        hysteresis: hysteresis.parse().unwrap(),
        firing,
    }
}

fn no_cooldown() -> Firing {
    Firing {
        cooldown_nanos: 0,
        ..Firing::default()
    }
}

fn processor(thresholds: Vec<ThresholdRule>) -> Processor {
    Processor::new(ProcessorConfig {
        thresholds,
        ..ProcessorConfig::default()
    })
}

fn run(p: &mut Processor, events: Vec<Event>) -> Vec<Alert> {
    let mut out = Output::default();
    for e in events {
        p.process(None, e, UnixNanos(T0), &mut out);
    }
    out.rows.alerts
}

/// (seconds after T0, kind) of each alert.
fn when(alerts: &[Alert]) -> Vec<(i64, AlertKind)> {
    alerts
        .iter()
        .map(|a| ((a.ts.0 - T0) / SEC, a.kind))
        .collect()
}

#[test]
fn a_price_hovering_at_the_threshold_fires_once_with_a_band_and_on_every_cross_without() {
    let hover = [
        "199.90", "200.10", "199.95", "200.20", "199.80", "200.05", "199.70", "200.30", "199.40",
        "200.40",
    ];
    let banded = run(
        &mut processor(vec![above("a", "200", "0.5", no_cooldown())]),
        series("NVDA", &hover),
    );
    // Crosses at 1, 3, 5, 7 stay inside the band (clear at 199.5); 199.40 clears it, 200.40
    // fires again.
    assert_eq!(
        when(&banded),
        [(1, AlertKind::Fired), (9, AlertKind::Fired)]
    );
    let bare = run(
        &mut processor(vec![above("a", "200", "0", no_cooldown())]),
        series("NVDA", &hover),
    );
    assert_eq!(bare.len(), 5, "every cross fires without a band");
    let pct = run(
        &mut processor(vec![above("a", "200", "0.25%", no_cooldown())]),
        series("NVDA", &hover),
    );
    assert_eq!(when(&pct), when(&banded), "0.25% of 200 is the same band");
    assert_eq!(
        above("b", "200", "0.25%", no_cooldown()).clear_level(),
        Price::parse("199.5").unwrap()
    );
    assert!("-1".parse::<Hysteresis>().is_err());
    assert!("1 %%".parse::<Hysteresis>().is_err());
}

#[test]
fn a_condition_back_within_the_cooldown_waits_for_it_and_fires_only_if_it_still_holds() {
    let firing = Firing {
        cooldown_nanos: 10 * SEC,
        ..Firing::default()
    };
    // Fires at 0; clears at 1; holds again at 2 (held: 2 s after the last alert); clears at
    // 3, so it never fires; holds at 5 and still at 12, when the cooldown is over.
    let prices = [
        "201", "199", "201", "199", "199", "202", "203", "203", "203", "203", "203", "203", "203",
    ];
    let alerts = run(
        &mut processor(vec![above("a", "200", "0", firing)]),
        series("NVDA", &prices),
    );
    assert_eq!(
        when(&alerts),
        [(0, AlertKind::Fired), (10, AlertKind::Fired)]
    );
}

#[test]
fn a_resolve_follows_only_a_condition_that_was_sent() {
    let firing = Firing {
        cooldown_nanos: 10 * SEC,
        resolve: true,
        severity: Severity::Critical,
        ..Firing::default()
    };
    let prices = ["201", "202", "199.9", "201", "199"];
    let alerts = run(
        &mut processor(vec![above("a", "200", "0", firing.clone())]),
        series("NVDA", &prices),
    );
    // The second activation (3) is inside the cooldown, never sent, so it resolves silently.
    assert_eq!(
        when(&alerts),
        [(0, AlertKind::Fired), (2, AlertKind::Resolved)]
    );
    let resolved = &alerts[1];
    assert_eq!(resolved.severity, Severity::Critical);
    assert_eq!(resolved.value, Price::parse("199.9").unwrap());
    assert!(
        resolved
            .message
            .contains("NVDA back to 199.9: price > 200 cleared"),
        "{}",
        resolved.message
    );
    assert_ne!(alerts[0].alert_id, resolved.alert_id);
    let quiet = run(
        &mut processor(vec![above(
            "a",
            "200",
            "0",
            Firing {
                resolve: false,
                ..firing
            },
        )]),
        series("NVDA", &prices),
    );
    assert_eq!(when(&quiet), [(0, AlertKind::Fired)]);
}

#[test]
fn a_condition_that_holds_is_reminded_every_interval() {
    let firing = Firing {
        reminder_nanos: Some(60 * SEC),
        resolve: true,
        ..no_cooldown()
    };
    // Above 200 for three minutes, a trade every 10 s, then below.
    let mut prices = vec!["201"; 19];
    prices.push("199");
    let alerts = run(
        &mut processor(vec![above("a", "200", "0", firing)]),
        (0..)
            .zip(&prices)
            .map(|(i, p)| trade("NVDA", i * 10 * SEC, p))
            .collect(),
    );
    assert_eq!(
        when(&alerts),
        [
            (0, AlertKind::Fired),
            (60, AlertKind::Reminder),
            (120, AlertKind::Reminder),
            (180, AlertKind::Reminder),
            (190, AlertKind::Resolved),
        ]
    );
    assert!(
        alerts[1]
            .message
            .contains("NVDA still price > 200: 201, since"),
        "{}",
        alerts[1].message
    );
}

#[test]
fn a_burst_is_sent_as_its_first_alert_and_one_digest_that_counts_the_rest() {
    let firing = Firing {
        coalesce_nanos: Some(10 * SEC),
        ..no_cooldown()
    };
    let mut p = processor(vec![above("any-above-100", "100", "0", firing)]);
    // 25 symbols cross 100 within 2.4 s.
    let burst: Vec<Event> = (0..25)
        .map(|i| trade(&format!("S{i:02}"), i * SEC / 10, "101"))
        .collect();
    let alerts = run(&mut p, burst);
    assert_eq!(alerts.len(), 25, "every firing is recorded");
    assert_eq!(alerts[0].kind, AlertKind::Fired);
    assert!(alerts[1..].iter().all(|a| a.kind == AlertKind::Coalesced));
    assert!(alerts.iter().filter(|a| a.kind.is_sent()).count() == 1);
    // Nothing more until event time passes the window; then one digest, and the window is
    // over: the next firing goes out on its own.
    assert!(run(&mut p, vec![trade("ZZ", 9 * SEC, "50")]).is_empty());
    let after = run(
        &mut p,
        vec![trade("ZZ", 10 * SEC, "50"), trade("ZZ", 11 * SEC, "150")],
    );
    assert_eq!(
        when(&after),
        [(10, AlertKind::Digest), (11, AlertKind::Fired)]
    );
    let digest = &after[0];
    assert!(
        digest.message.starts_with(
            "24 more any-above-100 alerts until 2026-11-23T14:30:10.000000000Z: S01, S02, S03, S04, S05, S06, S07, S08, S09, S10 …"
        ),
        "{}",
        digest.message
    );
    assert_eq!(digest.symbol.as_str(), "S01");
}

#[test]
fn a_reload_keeps_each_rule_state_by_name() {
    let a = above("a", "200", "0", no_cooldown());
    let b = above("b", "300", "0", no_cooldown());
    let mut p = processor(vec![a.clone()]);
    assert_eq!(run(&mut p, vec![trade("NVDA", 0, "310")]).len(), 1);
    // `b` is new and put first; `a` still holds and must not fire again.
    p.set_rules(vec![b, a], Vec::new(), Vec::new());
    let alerts = run(&mut p, vec![trade("NVDA", SEC, "311")]);
    assert_eq!(
        alerts.iter().map(|a| a.rule.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    // Removing `a` and adding it back starts it afresh.
    p.set_rules(
        vec![above("b", "300", "0", no_cooldown())],
        Vec::new(),
        Vec::new(),
    );
    assert!(run(&mut p, vec![trade("NVDA", 2 * SEC, "312")]).is_empty());
    p.set_rules(
        vec![above("a", "200", "0", no_cooldown())],
        Vec::new(),
        Vec::new(),
    );
    assert_eq!(run(&mut p, vec![trade("NVDA", 3 * SEC, "313")]).len(), 1);
}

#[test]
fn a_format_3_state_keeps_its_cooldowns_and_warm_spike_windows() {
    // Written by the format-3 code: NVDA trading at 201.0/201.1 for 3 s under `nvda-high`
    // (price > 200, cooldown 1 h, fired at T0 of that run) and `spike` (window 50, k 6, 20
    // samples), so the window holds 29 returns.
    let bytes = include_bytes!("../../testdata/state-v3.postcard");
    let state = State::deserialize_v3(&mut postcard::Deserializer::from_bytes(bytes)).unwrap();
    const FIXTURE_T0: i64 = 1_795_305_600 * SEC;
    let rules = (
        vec![ThresholdRule {
            name: "nvda-high".into(),
            symbol: Some(Symbol::parse("NVDA").unwrap()),
            condition: "price > 200".parse().unwrap(),
            hysteresis: Hysteresis::None,
            firing: Firing {
                cooldown_nanos: 3600 * SEC,
                ..Firing::default()
            },
        }],
        vec![SpikeRule {
            name: "spike".into(),
            symbol: None,
            window: 50,
            k: 6.0,
            min_samples: 20,
            min_return: 0.01,
            firing: Firing::default(),
        }],
    );
    let config = ProcessorConfig {
        thresholds: rules.0,
        spikes: rules.1,
        ..ProcessorConfig::default()
    };
    let jump = || {
        let Event::Trade(mut t) = trade("NVDA", 0, "230") else {
            unreachable!()
        };
        t.ts_event = UnixNanos(FIXTURE_T0 + 4 * SEC);
        t.ts_recv = t.ts_event;
        vec![Event::Trade(t)]
    };
    let resumed = run(&mut Processor::with_state(config.clone(), state), jump());
    assert_eq!(
        resumed.iter().map(|a| a.rule.as_str()).collect::<Vec<_>>(),
        ["spike"],
        "the threshold is inside its cooldown; the spike window is warm"
    );
    let fresh = run(&mut Processor::new(config), jump());
    assert_eq!(
        fresh.iter().map(|a| a.rule.as_str()).collect::<Vec<_>>(),
        ["nvda-high"],
        "a fresh processor fires the threshold and has no returns yet"
    );
}

#[test]
fn nothing_is_said_while_the_price_sits_inside_the_band() {
    let firing = Firing {
        cooldown_nanos: 60 * SEC,
        reminder_nanos: Some(30 * SEC),
        ..Firing::default()
    };
    let at = |s: i64, p: &str| trade("NVDA", s * SEC, p);
    let alerts = run(
        &mut processor(vec![above("a", "200", "1", firing)]),
        vec![
            at(0, "201"),     // fires
            at(1, "198"),     // clears
            at(2, "201"),     // holds again, held by the cooldown
            at(70, "199.50"), // cooldown over, but inside the band: not above 200
            at(75, "199.80"), // nor is a reminder due for a price below 200
            at(80, "200.50"), // above again: the held alert goes out now
        ],
    );
    assert_eq!(
        when(&alerts),
        [(0, AlertKind::Fired), (80, AlertKind::Fired)]
    );
    assert!(
        alerts[1].message.contains("200.50 > 200"),
        "{}",
        alerts[1].message
    );
}

#[test]
fn trades_at_one_nanosecond_that_fire_resolve_and_fire_again_have_distinct_ids() {
    let firing = Firing {
        resolve: true,
        ..no_cooldown()
    };
    let alerts = run(
        &mut processor(vec![above("a", "200", "0", firing)]),
        ["201", "199", "201"]
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let Event::Trade(mut t) = trade("NVDA", 0, p) else {
                    unreachable!()
                };
                t.trade_id = Some(i.to_string().as_str().into());
                Event::Trade(t)
            })
            .collect(),
    );
    assert_eq!(alerts.len(), 3);
    let mut ids: Vec<&str> = alerts.iter().map(|a| a.alert_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{alerts:#?}");
}

/// A rule written as an SQL condition over the rows of `on`.
fn expr_rule(name: &str, on: crate::Watch, when: &str, interval: Option<BarInterval>) -> ExprRule {
    ExprRule {
        name: name.into(),
        symbol: None,
        when: crate::Expr::parse(when, on, interval).unwrap(),
        firing: no_cooldown(),
    }
}

fn with_exprs(exprs: Vec<ExprRule>) -> Processor {
    Processor::new(ProcessorConfig {
        lateness_nanos: 0,
        exprs,
        ..ProcessorConfig::default()
    })
}

/// NVDA trades a second apart with these sizes, each its own 1s bar.
fn volumes(from: i64, sizes: &[&str]) -> Vec<Event> {
    (from..)
        .zip(sizes)
        .map(|(i, size)| {
            let Event::Trade(mut t) = trade("NVDA", i * SEC, "100") else {
                unreachable!()
            };
            t.size = Qty::parse(size).unwrap();
            Event::Trade(t)
        })
        .collect()
}

const ON_1S: crate::Watch = crate::Watch::Bars(BarInterval::S1);

#[test]
fn a_bar_rule_with_an_indicator_fires_on_its_edge_with_the_values_in_the_message() {
    let mut p = with_exprs(vec![expr_rule(
        "volume-surge",
        ON_1S,
        "volume > 2 * sma(volume, 3)",
        None,
    )]);
    let alerts = run(
        &mut p,
        volumes(
            0,
            &[
                "10", "10", "10", "100", "200", "10", "10", "10", "100", "10",
            ],
        ),
    );
    // Bar 3 (100 against a mean of 40) and bar 8; bar 4 (200 > 2 × 103.3) still holds.
    assert_eq!(
        when(&alerts),
        [(4, AlertKind::Fired), (9, AlertKind::Fired)]
    );
    assert_eq!(
        alerts[0].message,
        "NVDA 1s bar: volume > 2 * sma(volume, 3) (volume=100, sma(volume, 3)=40)"
    );
    assert_eq!(alerts[0].threshold, "volume > 2 * sma(volume, 3)");
    assert_eq!(alerts[0].value, Price::parse("100").unwrap());
}

#[test]
fn indicator_windows_warm_up_from_stored_bars_so_a_restart_does_not_wait_or_misfire() {
    let rule = || expr_rule("surge", ON_1S, "volume > 2 * sma(volume, 3)", None);
    // What the first run produced and stored: three quiet bars.
    let mut first = with_exprs(vec![rule()]);
    let mut out = Output::default();
    for e in volumes(0, &["10", "10", "10", "10"]) {
        first.process(None, e, UnixNanos(T0), &mut out);
    }
    let stored: Vec<Bar> = out
        .rows
        .bars
        .iter()
        .filter(|b| b.interval == BarInterval::S1)
        .cloned()
        .collect();
    assert_eq!(stored.len(), 3);
    let surge = || volumes(4, &["100", "10"]);
    // Without the history the window holds one bar: NULL, so nothing fires.
    assert!(run(&mut with_exprs(vec![rule()]), surge()).is_empty());
    // Warmed up, the surge is seen on the first bar after the start.
    let mut warmed = with_exprs(vec![rule()]);
    warmed.warm(&stored, &[]);
    assert_eq!(when(&run(&mut warmed, surge())), [(5, AlertKind::Fired)]);
    // Warming up again adds nothing the window already holds.
    let mut twice = with_exprs(vec![rule()]);
    twice.warm(&stored, &[]);
    twice.warm(&stored, &[]);
    assert_eq!(when(&run(&mut twice, surge())), [(5, AlertKind::Fired)]);
}

#[test]
fn a_trade_rule_reads_the_newest_final_bar_and_a_quote_rule_resolves() {
    let mut p = with_exprs(vec![expr_rule(
        "jump",
        crate::Watch::Trades,
        "price > prev(close) * 1.1",
        Some(BarInterval::S1),
    )]);
    // The first trade has no final bar before it (NULL). The trade at 2 s completes the bar
    // of 105 and is compared with it; 121 is not 10% above the bar of 120.
    let alerts = run(&mut p, series("NVDA", &["100", "105", "120", "121"]));
    assert_eq!(when(&alerts), [(2, AlertKind::Fired)]);
    assert!(
        alerts[0].message.contains("prev(close)=105"),
        "{}",
        alerts[0].message
    );

    let mut p = with_exprs(vec![ExprRule {
        firing: Firing {
            resolve: true,
            ..no_cooldown()
        },
        ..expr_rule("wide", crate::Watch::Quotes, "ask - bid > 0.5", None)
    }]);
    let quote = |at: i64, bid: &str, ask: &str| {
        Event::Quote(Quote {
            symbol: Symbol::parse("NVDA").unwrap(),
            ts_event: UnixNanos(T0 + at * SEC),
            ts_recv: UnixNanos(T0 + at * SEC),
            bid: Price::parse(bid).unwrap(),
            bid_size: Qty::parse("1").unwrap(),
            ask: Price::parse(ask).unwrap(),
            ask_size: Qty::parse("1").unwrap(),
            source: Arc::from("test"),
            feed: Arc::from("test"),
            seq: None,
        })
    };
    let alerts = run(
        &mut p,
        vec![
            quote(0, "10", "10.2"),
            quote(1, "10", "11"),
            quote(2, "10", "11.5"),
            quote(3, "10", "10.1"),
        ],
    );
    assert_eq!(
        when(&alerts),
        [(1, AlertKind::Fired), (3, AlertKind::Resolved)]
    );
    assert_eq!(alerts[0].value, Price::parse("10.5").unwrap(), "the mid");
}

#[test]
fn a_reload_that_lengthens_a_window_fills_it_from_history_without_a_hole() {
    let short = expr_rule("surge", ON_1S, "volume > 2 * sma(volume, 2, 1)", None);
    let mut p = with_exprs(vec![short]);
    let mut out = Output::default();
    for e in volumes(0, &["10", "20", "30", "40", "50", "300"]) {
        p.process(None, e, UnixNanos(T0), &mut out);
    }
    assert!(out.rows.alerts.is_empty(), "{:?}", out.rows.alerts);
    let stored: Vec<Bar> = out.rows.bars.clone();
    // Longer now: the window held the last three bars; history gives it the two before.
    let long = expr_rule("surge", ON_1S, "volume > 2 * sma(volume, 4, 1)", None);
    p.set_rules(Vec::new(), Vec::new(), vec![long]);
    p.warm(&stored, &[]);
    let alerts = run(&mut p, volumes(6, &["10"]));
    assert_eq!(when(&alerts), [(6, AlertKind::Fired)]);
    assert!(
        alerts[0]
            .message
            .ends_with("(volume=300, sma(volume, 4, 1)=35)"),
        "the four bars before it, 20 to 50: {}",
        alerts[0].message
    );
}
