//! Each indicator against values worked out by hand.

use std::collections::VecDeque;

use rust_decimal::Decimal;
use tickflow_model::BarInterval;

use super::{Func, Indicator};
use crate::rules::{Column, Source};

fn values(v: &[i64]) -> VecDeque<Decimal> {
    v.iter().copied().map(Decimal::from).collect()
}

fn on_bars(func: Func, n: u32) -> Indicator {
    Indicator::new(
        func,
        Source::Bars(BarInterval::M1),
        Column::Close,
        (n, 0),
        true,
    )
    .unwrap()
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[test]
fn sma_is_the_mean_of_the_last_n_and_null_until_n_are_held() {
    let sma = on_bars(Func::Sma, 3);
    assert_eq!(sma.compute(&values(&[1, 2])), None);
    assert_eq!(
        sma.compute(&values(&[1, 2, 3, 4, 5])),
        Some(Decimal::from(4))
    );
    // Exact: a third is not rounded to a float.
    assert_eq!(
        on_bars(Func::Sma, 3).compute(&values(&[0, 0, 1])),
        Some(dec("0.3333333333333333333333333333"))
    );
}

#[test]
fn stddev_is_the_sample_deviation_as_sql_computes_it() {
    let sd = on_bars(Func::Stddev, 8);
    // Mean 5, squared deviations sum to 32: sqrt(32 / 7).
    let got = sd.compute(&values(&[2, 4, 4, 4, 5, 5, 7, 9])).unwrap();
    assert_eq!(got.round_dp(10), dec("2.1380899353"));
    assert_eq!(sd.compute(&values(&[2, 4, 4])), None);
    assert!(
        Indicator::new(
            Func::Stddev,
            Source::DailyMetrics,
            Column::Close,
            (1, 0),
            true
        )
        .is_err()
    );
}

#[test]
fn ema_is_seeded_with_the_mean_of_the_first_n_of_its_last_4n_values() {
    let ema = on_bars(Func::Ema, 2);
    // Seed mean(1, 2) = 1.5; α = 2/3 closes 2/3 of a gap of 1.5 each step, so 1 behind.
    let got = ema.compute(&values(&[1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
    assert_eq!(got.round_dp(20), dec("7.5"));
    // Older values than 4n do not count: the same last 8 give the same value.
    let longer = ema
        .compute(&values(&[100, -7, 1, 2, 3, 4, 5, 6, 7, 8]))
        .unwrap();
    assert_eq!(longer, got);
    assert_eq!(ema.compute(&values(&[1])), None);
    assert_eq!(ema.lookback(), 8);
}

#[test]
fn rsi_uses_wilders_smoothing_and_is_null_until_n_changes() {
    let rsi = on_bars(Func::Rsi, 2);
    assert_eq!(rsi.compute(&values(&[1, 2])), None);
    // Changes +1 −1 +1 −1: averages 0.5/0.5, then 0.75/0.25, then 0.375/0.625.
    assert_eq!(rsi.compute(&values(&[1, 2, 1, 2, 1])), Some(dec("37.5")));
    assert_eq!(
        rsi.compute(&values(&[1, 2, 3, 4])),
        Some(Decimal::ONE_HUNDRED)
    );
    assert_eq!(rsi.compute(&values(&[3, 2, 1])), Some(Decimal::ZERO));
    assert_eq!(rsi.compute(&values(&[5, 5, 5])), Some(Decimal::from(50)));
}

#[test]
fn prev_counts_back_from_the_row_or_from_the_newest_final_bar() {
    let held = values(&[10, 20, 30]);
    // On a bar rule the series ends with the row: prev(close) is the bar before it.
    assert_eq!(
        on_bars(Func::Prev, 1).compute(&held),
        Some(Decimal::from(20))
    );
    assert_eq!(
        on_bars(Func::Prev, 2).compute(&held),
        Some(Decimal::from(10))
    );
    assert_eq!(on_bars(Func::Prev, 3).compute(&held), None);
    // On a trade rule the newest final bar is one back.
    let from_trades = Indicator::new(
        Func::Prev,
        Source::Bars(BarInterval::M1),
        Column::Close,
        (1, 0),
        false,
    )
    .unwrap();
    assert_eq!(from_trades.compute(&held), Some(Decimal::from(30)));
}

#[test]
fn an_offset_leaves_out_the_newest_values() {
    let before = Indicator::new(
        Func::Sma,
        Source::Bars(BarInterval::M1),
        Column::Volume,
        (2, 1),
        true,
    )
    .unwrap();
    assert_eq!(
        before.compute(&values(&[1, 3, 100])),
        Some(Decimal::from(2))
    );
    assert_eq!(before.compute(&values(&[3, 100])), None);
    assert_eq!(before.lookback(), 3);
}
