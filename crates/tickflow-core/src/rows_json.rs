//! Rows as JSON lines, one object per row with the SQL tables' column names: what the S3
//! JSON sink writes for Athena and what broker sinks publish. Prices and sizes are JSON
//! numbers written with their exact digits, never through a float.

use std::fmt::Write as _;

use tickflow_model::{Date, Rows, UnixNanos};

/// The tables a row can be written from.
pub const TABLES: [&str; 5] = ["trades", "quotes", "bars", "daily_metrics", "alerts"];

/// How times are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Times {
    /// RFC 3339 UTC with nanoseconds: `2026-12-04T15:00:00.123456789Z`.
    Rfc3339,
    /// Hive's text timestamp, UTC: `2026-12-04 15:00:00.123456789`, which Athena's JSON
    /// SerDes read as `timestamp`.
    Hive,
}

/// Which rows and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub times: Times,
    /// Bars once final only: for stores where a line cannot be replaced.
    pub final_bars_only: bool,
}

/// One row as a line.
#[derive(Debug)]
pub struct Line<'a> {
    /// The UTC day it belongs to (event time; a bar's start; a metric's date).
    pub date: Date,
    pub symbol: &'a str,
    /// The row's natural key within its symbol: the same for every version of a bar, and
    /// for a row however it was read back (memory or the lake).
    pub key: &'a str,
    pub text: &'a str,
}

/// A time as `style` writes it.
fn time(t: UnixNanos, times: Times) -> String {
    let text = t.to_string();
    match times {
        Times::Rfc3339 => text,
        Times::Hive => text.trim_end_matches('Z').replacen('T', " ", 1),
    }
}

/// A JSON string.
fn q(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// A JSON string, or `null`.
fn q_opt(text: Option<&str>) -> String {
    text.map_or_else(|| "null".to_string(), q)
}

/// A number from a type whose `Display` writes its exact digits.
fn num(v: impl std::fmt::Display) -> String {
    v.to_string()
}

fn num_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_string(), num)
}

fn float(v: f64) -> String {
    if v.is_finite() {
        v.to_string()
    } else {
        "null".to_string()
    }
}

/// Calls `out` with each row of `table` in `rows` as a JSON line.
pub fn each(table: &str, rows: &Rows, style: Style, out: &mut dyn FnMut(Line<'_>)) {
    let mut line = String::new();
    let t_ = |t: UnixNanos| time(t, style.times);
    match table {
        "trades" => {
            for t in &rows.trades {
                line.clear();
                let _ = write!(
                    line,
                    "{{\"symbol\":{},\"ts_event\":{},\"ts_recv\":{},\"price\":{},\"size\":{},\"trade_id\":{},\"exchange\":{},\"source\":{},\"feed\":{},\"seq\":{}}}",
                    q(t.symbol.as_str()),
                    q(&t_(t.ts_event)),
                    q(&t_(t.ts_recv)),
                    num(t.price),
                    num(t.size),
                    q_opt(t.trade_id.as_ref().map(|i| i.as_str())),
                    q_opt(t.exchange.as_deref()),
                    q(&t.source),
                    q(&t.feed),
                    num_opt(t.seq)
                );
                let key = match (&t.trade_id, t.seq) {
                    (Some(id), _) => format!("{}|{}|id:{id}", t.ts_event.0, t.source),
                    (None, Some(seq)) => format!("{}|{}|#{seq}", t.ts_event.0, t.source),
                    (None, None) => {
                        format!("{}|{}|={}x{}", t.ts_event.0, t.source, t.price, t.size)
                    }
                };
                out(Line {
                    date: t.ts_event.date(),
                    symbol: t.symbol.as_str(),
                    key: &key,
                    text: &line,
                });
            }
        }
        "quotes" => {
            for x in &rows.quotes {
                line.clear();
                let _ = write!(
                    line,
                    "{{\"symbol\":{},\"ts_event\":{},\"ts_recv\":{},\"bid\":{},\"bid_size\":{},\"ask\":{},\"ask_size\":{},\"source\":{},\"feed\":{},\"seq\":{}}}",
                    q(x.symbol.as_str()),
                    q(&t_(x.ts_event)),
                    q(&t_(x.ts_recv)),
                    num(x.bid),
                    num(x.bid_size),
                    num(x.ask),
                    num(x.ask_size),
                    q(&x.source),
                    q(&x.feed),
                    num_opt(x.seq)
                );
                let key = match x.seq {
                    Some(seq) => format!("{}|{}|#{seq}", x.ts_event.0, x.source),
                    None => format!(
                        "{}|{}|={}x{}/{}x{}",
                        x.ts_event.0, x.source, x.bid, x.bid_size, x.ask, x.ask_size
                    ),
                };
                out(Line {
                    date: x.ts_event.date(),
                    symbol: x.symbol.as_str(),
                    key: &key,
                    text: &line,
                });
            }
        }
        "bars" => {
            // Final bars only: an open bar is written again each time it changes, and JSON
            // lines cannot be updated in place, so a query would count it more than once.
            for b in rows
                .bars
                .iter()
                .filter(|b| b.is_final || !style.final_bars_only)
            {
                line.clear();
                let _ = write!(
                    line,
                    "{{\"symbol\":{},\"interval\":{},\"start\":{},\"end\":{},\"open\":{},\"high\":{},\"low\":{},\"close\":{},\"volume\":{},\"vwap\":{},\"trade_count\":{},\"final\":{},\"source\":{}}}",
                    q(b.symbol.as_str()),
                    q(b.interval.as_str()),
                    q(&t_(b.start)),
                    q(&t_(b.end)),
                    num(b.open),
                    num(b.high),
                    num(b.low),
                    num(b.close),
                    num(b.volume),
                    num_opt(b.vwap),
                    num_opt(b.trade_count),
                    b.is_final,
                    q_opt(b.source.as_deref())
                );
                let key = format!("{}|{}", b.interval.as_str(), b.start.0);
                out(Line {
                    date: b.start.date(),
                    symbol: b.symbol.as_str(),
                    key: &key,
                    text: &line,
                });
            }
        }
        "daily_metrics" => {
            for d in &rows.daily_metrics {
                line.clear();
                let _ = write!(
                    line,
                    "{{\"symbol\":{},\"date\":{},\"open\":{},\"high\":{},\"low\":{},\"close\":{},\"volume\":{},\"volatility\":{},\"rolling_avg_5d\":{},\"daily_pct_change\":{}}}",
                    q(d.symbol.as_str()),
                    q(&d.date.to_string()),
                    num(d.open),
                    num(d.high),
                    num(d.low),
                    num(d.close),
                    num(d.volume),
                    float(d.volatility),
                    num(d.rolling_avg_5d),
                    d.daily_pct_change.map_or_else(|| "null".to_string(), float)
                );
                let key = d.date.to_string();
                out(Line {
                    date: d.date,
                    symbol: d.symbol.as_str(),
                    key: &key,
                    text: &line,
                });
            }
        }
        "alerts" => {
            for a in &rows.alerts {
                line.clear();
                let _ = write!(
                    line,
                    "{{\"alert_id\":{},\"rule\":{},\"symbol\":{},\"ts\":{},\"value\":{},\"threshold\":{},\"message\":{},\"severity\":{},\"kind\":{}}}",
                    q(&a.alert_id),
                    q(&a.rule),
                    q(a.symbol.as_str()),
                    q(&t_(a.ts)),
                    num(a.value),
                    q(&a.threshold),
                    q(&a.message),
                    q(a.severity.as_str()),
                    q(a.kind.as_str())
                );
                out(Line {
                    date: a.ts.date(),
                    symbol: a.symbol.as_str(),
                    key: &a.alert_id,
                    text: &line,
                });
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_one_json_line_with_exact_numbers() {
        let mut rows = crate::contract::sample_rows(1, 2);
        rows.bars[0].is_final = false;
        for (style, times) in [
            (
                Style {
                    times: Times::Hive,
                    final_bars_only: true,
                },
                Times::Hive,
            ),
            (
                Style {
                    times: Times::Rfc3339,
                    final_bars_only: false,
                },
                Times::Rfc3339,
            ),
        ] {
            for table in TABLES {
                let mut got = Vec::new();
                each(table, &rows, style, &mut |l| {
                    got.push((l.symbol.to_string(), l.text.to_string()))
                });
                let expected = if table == "bars" && style.final_bars_only {
                    1
                } else {
                    2
                };
                assert_eq!(got.len(), expected, "{table}");
                for (symbol, line) in &got {
                    let v: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("{table}: {e}: {line}"));
                    assert_eq!(v["symbol"], symbol.as_str(), "{line}");
                }
            }
            let mut trades = Vec::new();
            each("trades", &rows, style, &mut |l| {
                trades.push(l.text.to_string())
            });
            let t = &rows.trades[0];
            assert!(
                trades[0].contains(&format!("\"price\":{},", t.price)),
                "{}",
                trades[0]
            );
            let shown = time(t.ts_event, times);
            assert_eq!(shown.contains('T'), times == Times::Rfc3339, "{shown}");
        }
    }
}
