//! Parsing, checking and evaluating rule expressions on rows.

use std::sync::Arc;

use rust_decimal::Decimal;
use tickflow_model::{
    Bar, BarInterval, DailyMetric, Date, Price, Qty, Symbol, Trade, UnixNanos, Volume,
};

use super::{Expr, Row, Watch};

fn trade(sym: &str, price: &str) -> Trade {
    Trade {
        symbol: Symbol::parse(sym).unwrap(),
        ts_event: UnixNanos(1),
        ts_recv: UnixNanos(1),
        price: Price::parse(price).unwrap(),
        size: Qty::parse("100").unwrap(),
        trade_id: None,
        exchange: Some(Arc::from("XNAS")),
        source: Arc::from("sim"),
        feed: Arc::from("sim"),
        seq: None,
    }
}

fn bar(close: &str, vwap: Option<&str>) -> Bar {
    let p = Price::parse(close).unwrap();
    Bar {
        symbol: Symbol::parse("NVDA").unwrap(),
        interval: BarInterval::M1,
        start: UnixNanos(0),
        end: UnixNanos(BarInterval::M1.nanos()),
        open: p,
        high: p,
        low: p,
        close: p,
        volume: Volume::parse("1000").unwrap(),
        vwap: vwap.map(|v| Price::parse(v).unwrap()),
        trade_count: Some(3),
        is_final: true,
        source: None,
    }
}

fn holds(text: &str, watch: Watch, row: &Row<'_>) -> Option<bool> {
    let e = Expr::parse(text, watch, None).unwrap_or_else(|e| panic!("{text}: {e}"));
    e.eval(row, &mut |_| None)
}

fn error(text: &str, watch: Watch, interval: Option<BarInterval>) -> String {
    Expr::parse(text, watch, interval).unwrap_err()
}

#[test]
fn comparisons_are_exact_decimals() {
    let t = trade("NVDA", "0.3");
    let row = Row::Trade(&t);
    // 0.1 + 0.2 is not 0.3 in floats.
    assert_eq!(holds("price = 0.1 + 0.2", Watch::Trades, &row), Some(true));
    let t = trade("NVDA", "500.100000001");
    let row = Row::Trade(&t);
    assert_eq!(holds("price > 500.10", Watch::Trades, &row), Some(true));
    assert_eq!(
        holds("price > 500.100000001", Watch::Trades, &row),
        Some(false)
    );
    assert_eq!(
        holds(
            "symbol = 'NVDA' AND price * size >= 50010.0000001",
            Watch::Trades,
            &row
        ),
        Some(true)
    );
    assert_eq!(holds("price > 5e2", Watch::Trades, &row), Some(true));
}

#[test]
fn in_between_not_and_abs_work_as_in_sql() {
    let t = trade("AAPL", "15");
    let row = Row::Trade(&t);
    assert_eq!(
        holds(
            "symbol IN ('NVDA', 'AAPL') AND price BETWEEN 10 AND 20",
            Watch::Trades,
            &row
        ),
        Some(true)
    );
    assert_eq!(
        holds("symbol NOT IN ('AAPL')", Watch::Trades, &row),
        Some(false)
    );
    assert_eq!(
        holds("NOT price NOT BETWEEN 15 AND 15", Watch::Trades, &row),
        Some(true)
    );
    assert_eq!(
        holds("abs(10 - price) = 5 AND -price < 0", Watch::Trades, &row),
        Some(true)
    );
    assert_eq!(
        holds("exchange = 'XNAS' AND feed <> 'x'", Watch::Trades, &row),
        Some(true)
    );
}

#[test]
fn null_is_unknown_and_follows_three_valued_logic() {
    let b = bar("10", None);
    let row = Row::Bar(&b);
    let on = Watch::Bars(BarInterval::M1);
    assert_eq!(holds("vwap > 1", on, &row), None);
    assert_eq!(holds("vwap > 1 OR close > 1", on, &row), Some(true));
    assert_eq!(holds("vwap > 1 AND close > 100", on, &row), Some(false));
    assert_eq!(
        holds("vwap IS NULL AND trade_count IS NOT NULL", on, &row),
        Some(true)
    );
    // Dividing by zero is NULL, not a panic.
    assert_eq!(holds("close / (close - 10) > 1", on, &row), None);
    // An indicator still warming up is NULL.
    let e = Expr::parse("close > sma(close, 20)", on, None).unwrap();
    assert_eq!(e.eval(&row, &mut |_| None), None);
    assert_eq!(e.eval(&row, &mut |_| Some(Decimal::from(9))), Some(true));
    assert_eq!(
        e.describe(&row, &mut |_| Some(Decimal::from(9))),
        "close=10, sma(close, 20)=9"
    );
}

#[test]
fn daily_percent_change_and_volatility_come_exactly_from_the_prices() {
    let m = DailyMetric {
        symbol: Symbol::parse("QUBT").unwrap(),
        date: Date::parse("2026-11-20").unwrap(),
        open: Price::parse("98").unwrap(),
        high: Price::parse("99").unwrap(),
        low: Price::parse("94").unwrap(),
        close: Price::parse("95").unwrap(),
        volume: Volume::parse("10").unwrap(),
        volatility: 5.263157894736842,
        rolling_avg_5d: Price::parse("97").unwrap(),
        daily_pct_change: Some(-5.000000000000001),
    };
    let row = Row::Daily {
        metric: &m,
        prev_close: Some(Price::parse("100").unwrap()),
        end: 0,
    };
    let on = Watch::DailyMetrics;
    assert_eq!(holds("daily_pct_change <= -5", on, &row), Some(true));
    assert_eq!(holds("daily_pct_change < -5", on, &row), Some(false));
    assert_eq!(holds("volatility * 95 = 500", on, &row), Some(true));
    let first_day = Row::Daily {
        metric: &m,
        prev_close: None,
        end: 0,
    };
    assert_eq!(holds("daily_pct_change < -5", on, &first_day), None);
}

#[test]
fn mistakes_are_named_with_the_part_they_concern() {
    let e = error("close > 1", Watch::Trades, None);
    assert!(
        e.contains("no column \"close\" on a trade row: its columns are symbol, price"),
        "{e}"
    );
    let e = error("prize > 1", Watch::Trades, None);
    assert!(e.contains("unknown column \"prize\""), "{e}");
    let e = error("symbol > 5", Watch::Trades, None);
    assert!(
        e.contains("compares text (`symbol`) with a number (`5`)"),
        "{e}"
    );
    let e = error("price + 1", Watch::Trades, None);
    assert!(
        e.contains("`price + 1` is a number; a rule needs a condition"),
        "{e}"
    );
    let e = error("price > sma(close, 20)", Watch::Trades, None);
    assert!(e.contains("needs `interval`"), "{e}");
    let e = error(
        "price > sma(close, 0)",
        Watch::Trades,
        Some(BarInterval::D1),
    );
    assert!(e.contains("from 1 to 10000, not 0"), "{e}");
    let e = error(
        "price > median(close, 3)",
        Watch::Trades,
        Some(BarInterval::D1),
    );
    assert!(e.contains("unknown function median()"), "{e}");
    let e = error(
        "price > sma(close + 1, 3)",
        Watch::Trades,
        Some(BarInterval::D1),
    );
    assert!(e.contains("must be a column"), "{e}");
    let e = error("price > 1 1", Watch::Trades, None);
    assert!(
        e.contains("unexpected 1 after the expression `price > 1`"),
        "{e}"
    );
    let e = error("symbol = \"NVDA\"", Watch::Trades, None);
    assert!(e.contains("write text in single quotes: 'NVDA'"), "{e}");
    let e = error("price >", Watch::Trades, None);
    assert!(e.contains("Expected"), "{e}");
    let e = error("price > (SELECT 1)", Watch::Trades, None);
    assert!(e.contains("is not supported"), "{e}");
    assert!(
        Watch::parse("bars", None)
            .unwrap_err()
            .contains("needs `interval`")
    );
    assert!(
        Watch::parse("ticks", None)
            .unwrap_err()
            .contains("unknown table \"ticks\"")
    );
}
