//! The weekly market report: every symbol's weekly return and range from its daily bars, the
//! best and worst in the subject, an HTML table, and a 30-day candlestick chart per symbol.
//!
//! Pure: daily bars in, a [`WeeklyReport`] out. Where the bars come from (SQL over the lake)
//! and where the report goes (files, e-mail) is the caller's business.
//!
//! - Weekly return % = (last close − first open) / first open × 100, over the week's bars.
//! - Range % = (week high − week low) / first open × 100: how far the week swung, on the same
//!   base as the return.
//!
//! Both are computed exactly (prices are integers of 10⁻⁹) and rounded half away from zero for
//! display: one decimal in the subject, two in the table.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use tickflow_model::{Date, Price, Symbol};

use crate::chart;

/// Trading days a chart shows, ending with the week's last.
pub const CHART_DAYS: usize = 30;

/// One symbol's daily bar, as the report reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyBar {
    pub symbol: Symbol,
    /// The session's date.
    pub date: Date,
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub close: Price,
}

/// An ISO 8601 week: `2026-W48`, Monday to Sunday.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IsoWeek {
    pub year: i32,
    pub week: u32,
}

impl IsoWeek {
    /// The week `date` falls in (its ISO year may differ from the date's near New Year).
    pub fn containing(date: Date) -> Self {
        let thursday = Date(date.0 - date.weekday() as i32 + 3);
        let year = thursday.ymd().0 as i32;
        let first = Self { year, week: 1 }.monday();
        Self {
            year,
            week: ((thursday.0 - first.0) / 7 + 1) as u32,
        }
    }

    /// The last week that has ended by `date`: the one before `date`'s week, unless `date` is
    /// that week's Saturday or Sunday (the report of Saturday covers the week just traded).
    pub fn last_traded(date: Date) -> Self {
        let this = Self::containing(date);
        if date.weekday() >= 5 {
            this
        } else {
            Self::containing(Date(date.0 - 7))
        }
    }

    /// Its Monday.
    pub fn monday(self) -> Date {
        let jan4 = Date(tickflow_model::days_from_civil(i64::from(self.year), 1, 4) as i32);
        Date(jan4.0 - jan4.weekday() as i32 + 7 * (self.week as i32 - 1))
    }

    /// Its Sunday.
    pub fn sunday(self) -> Date {
        Date(self.monday().0 + 6)
    }

    fn weeks_in_year(year: i32) -> u32 {
        Self::containing(Date(
            tickflow_model::days_from_civil(i64::from(year), 12, 28) as i32,
        ))
        .week
    }
}

impl FromStr for IsoWeek {
    type Err = String;

    /// Parses `YYYY-Www`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected an ISO week such as 2026-W48, got {s:?}");
        let (year, week) = s.split_once("-W").ok_or_else(bad)?;
        let year: i32 = year.parse().map_err(|_| bad())?;
        let week: u32 = week.parse().map_err(|_| bad())?;
        if !(1970..=9999).contains(&year) || week == 0 || week > Self::weeks_in_year(year) {
            return Err(format!("{s:?} is not a week of {year}"));
        }
        Ok(Self { year, week })
    }
}

impl fmt::Display for IsoWeek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-W{:02}", self.year, self.week)
    }
}

/// A percentage kept exact: the fraction `num / den` of a percent, `den > 0`. Only display
/// rounds it, once.
#[derive(Clone, Copy, Debug)]
pub struct Percent {
    num: i128,
    den: i128,
}

impl Percent {
    /// `(to − from) / base × 100`; `None` when the base is not positive.
    fn change(from: Price, to: Price, base: Price) -> Option<Self> {
        if base.raw() <= 0 {
            return None;
        }
        Some(Self {
            num: (i128::from(to.raw()) - i128::from(from.raw())) * 100,
            den: i128::from(base.raw()),
        })
    }

    /// Rounded half away from zero to `digits` decimals (at most 9).
    pub fn rounded(self, digits: u32) -> String {
        let digits = digits.min(9);
        let scale = 10i128.pow(digits);
        let scaled = self.num * scale;
        let mut q = scaled / self.den;
        if 2 * (scaled % self.den).abs() >= self.den {
            q += scaled.signum();
        }
        let sign = if q < 0 { "-" } else { "" };
        let q = q.abs();
        if digits == 0 {
            format!("{sign}{q}")
        } else {
            format!(
                "{sign}{}.{:0width$}",
                q / scale,
                q % scale,
                width = digits as usize
            )
        }
    }

    /// Not below zero.
    pub fn is_gain(self) -> bool {
        self.num >= 0
    }

    /// For charts only.
    pub fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

impl Ord for Percent {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (
            self.num.checked_mul(other.den),
            other.num.checked_mul(self.den),
        ) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.as_f64().total_cmp(&other.as_f64()),
        }
    }
}

impl PartialOrd for Percent {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Percent {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Percent {}

/// One symbol's week.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolWeek {
    pub symbol: Symbol,
    /// The first trading day's open and the last one's close.
    pub open: Price,
    pub close: Price,
    pub high: Price,
    pub low: Price,
    pub return_pct: Percent,
    pub range_pct: Percent,
    /// Trading days with a bar this week.
    pub days: usize,
}

/// A symbol's chart: a PNG of its last [`CHART_DAYS`] trading days.
#[derive(Clone, Debug)]
pub struct Chart {
    pub symbol: Symbol,
    /// `NVDA.png`
    pub file_name: String,
    pub png: Vec<u8>,
    /// Trading days drawn.
    pub days: usize,
}

/// The report for one week.
#[derive(Clone, Debug)]
pub struct WeeklyReport {
    pub week: IsoWeek,
    /// Best return first.
    pub symbols: Vec<SymbolWeek>,
    pub charts: Vec<Chart>,
}

/// Chart size in pixels.
pub const CHART_WIDTH: u32 = 900;
pub const CHART_HEIGHT: u32 = 420;

impl WeeklyReport {
    /// Builds the report of `week` from daily bars that include at least the week and the
    /// trading days before it that the charts show. Symbols without a bar in the week are left
    /// out; one bar per symbol and date is used (the last given).
    ///
    /// # Errors
    /// A chart that cannot be drawn.
    pub fn build(week: IsoWeek, bars: &[DailyBar]) -> Result<Self, String> {
        let mut by_symbol: BTreeMap<&Symbol, BTreeMap<Date, &DailyBar>> = BTreeMap::new();
        for bar in bars.iter().filter(|b| b.date <= week.sunday()) {
            by_symbol
                .entry(&bar.symbol)
                .or_default()
                .insert(bar.date, bar);
        }
        let mut symbols = Vec::new();
        let mut charts = Vec::new();
        for (symbol, days) in by_symbol {
            let this_week: Vec<&DailyBar> = days
                .range(week.monday()..=week.sunday())
                .map(|(_, b)| *b)
                .collect();
            let (Some(first), Some(last)) = (this_week.first(), this_week.last()) else {
                continue;
            };
            let high = this_week.iter().map(|b| b.high).max().unwrap_or(first.high);
            let low = this_week.iter().map(|b| b.low).min().unwrap_or(first.low);
            let (Some(return_pct), Some(range_pct)) = (
                Percent::change(first.open, last.close, first.open),
                Percent::change(low, high, first.open),
            ) else {
                continue;
            };
            symbols.push(SymbolWeek {
                symbol: symbol.clone(),
                open: first.open,
                close: last.close,
                high,
                low,
                return_pct,
                range_pct,
                days: this_week.len(),
            });
            let shown: Vec<&DailyBar> = days
                .values()
                .rev()
                .take(CHART_DAYS)
                .rev()
                .copied()
                .collect();
            let png = chart::candlesticks(symbol.as_str(), &shown, CHART_WIDTH, CHART_HEIGHT)?;
            charts.push(Chart {
                symbol: symbol.clone(),
                file_name: format!("{}.png", file_safe(symbol.as_str())),
                png,
                days: shown.len(),
            });
        }
        symbols.sort_by(|a, b| {
            b.return_pct
                .cmp(&a.return_pct)
                .then_with(|| a.symbol.cmp(&b.symbol))
        });
        Ok(Self {
            week,
            symbols,
            charts,
        })
    }

    /// `Weekly Market Report - Best: NVDA: 8.5% | Worst: QUBT: -3.2%`, the old pipeline's
    /// subject to the character.
    pub fn subject(&self) -> String {
        match (self.symbols.first(), self.symbols.last()) {
            (Some(best), Some(worst)) => format!(
                "Weekly Market Report - Best: {}: {}% | Worst: {}: {}%",
                best.symbol,
                best.return_pct.rounded(1),
                worst.symbol,
                worst.return_pct.rounded(1)
            ),
            _ => format!("Weekly Market Report - {}: no trading data", self.week),
        }
    }

    /// The HTML body. `image_src` gives each chart's `src`: a file name beside the HTML on
    /// disk, `cid:` in a mail.
    pub fn html(&self, image_src: impl Fn(&Chart) -> String) -> String {
        let mut rows = String::new();
        for s in &self.symbols {
            let class = if s.return_pct.is_gain() { "up" } else { "down" };
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}%</td><td>{}</td><td>{}</td><td>{}%</td><td>{}</td></tr>\n",
                escape(s.symbol.as_str()),
                s.open,
                s.close,
                s.return_pct.rounded(2),
                s.high,
                s.low,
                s.range_pct.rounded(2),
                s.days
            ));
        }
        let mut images = String::new();
        for c in &self.charts {
            images.push_str(&format!(
                "<figure><img src=\"{}\" alt=\"{} candlesticks, last {} trading days\" width=\"{CHART_WIDTH}\" height=\"{CHART_HEIGHT}\"><figcaption>{}: last {} trading days</figcaption></figure>\n",
                escape(&image_src(c)),
                escape(c.symbol.as_str()),
                c.days,
                escape(c.symbol.as_str()),
                c.days
            ));
        }
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>\
body{{font-family:sans-serif;color:#222}}table{{border-collapse:collapse}}\
td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}}\
td:first-child,th:first-child{{text-align:left}}.up{{color:#1a7f37}}.down{{color:#c62828}}\
</style></head><body>\n<h1>{title}</h1>\n<p>Week {week}: {from} to {to}. Return is from the week's first open to its last close; range is the week's high less its low, as a share of that open.</p>\n\
<table>\n<tr><th>Symbol</th><th>Open</th><th>Close</th><th>Return</th><th>High</th><th>Low</th><th>Range</th><th>Days</th></tr>\n{rows}</table>\n{images}</body></html>\n",
            title = escape(&self.subject()),
            week = self.week,
            from = self.week.monday(),
            to = self.week.sunday(),
        )
    }
}

/// A symbol as a file name: `BTC-USD` stays, `BRK/B` becomes `BRK_B`.
fn file_safe(symbol: &str) -> String {
    symbol
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Text made safe to put in HTML.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(symbol: &str, date: &str, o: &str, h: &str, l: &str, c: &str) -> DailyBar {
        DailyBar {
            symbol: Symbol::parse(symbol).unwrap(),
            date: Date::parse(date).unwrap(),
            open: Price::parse(o).unwrap(),
            high: Price::parse(h).unwrap(),
            low: Price::parse(l).unwrap(),
            close: Price::parse(c).unwrap(),
        }
    }

    #[test]
    fn iso_weeks_follow_the_standard() {
        let week = |d: &str| IsoWeek::containing(Date::parse(d).unwrap()).to_string();
        assert_eq!(week("2026-11-23"), "2026-W48");
        assert_eq!(week("2026-11-29"), "2026-W48");
        assert_eq!(week("2021-01-03"), "2020-W53");
        assert_eq!(week("2024-12-30"), "2025-W01");
        let w: IsoWeek = "2026-W48".parse().unwrap();
        assert_eq!(w.monday().to_string(), "2026-11-23");
        assert_eq!(w.sunday().to_string(), "2026-11-29");
        assert!("2025-W53".parse::<IsoWeek>().is_err(), "2025 has 52 weeks");
        assert!(
            "2026-W53".parse::<IsoWeek>().is_ok(),
            "2026 starts on a Thursday"
        );
        assert!("2026-48".parse::<IsoWeek>().is_err());
        // A Saturday's report covers the week just traded; a Tuesday's, the week before.
        let last = |d: &str| IsoWeek::last_traded(Date::parse(d).unwrap()).to_string();
        assert_eq!(last("2026-11-28"), "2026-W48");
        assert_eq!(last("2026-12-01"), "2026-W48");
    }

    #[test]
    fn returns_and_ranges_are_exact_and_the_subject_names_best_and_worst() {
        let bars = [
            bar("NVDA", "2026-11-20", "90", "91", "89", "90"), // the week before
            bar("NVDA", "2026-11-23", "100", "104", "99", "103"),
            bar("NVDA", "2026-11-27", "103", "109", "102", "108.45"),
            bar("QUBT", "2026-11-24", "20", "20.5", "19", "19.5"),
            bar("QUBT", "2026-11-25", "19.5", "19.8", "19.2", "19.36"),
            bar("AAPL", "2026-11-30", "1", "1", "1", "1"), // the next week
        ];
        let report = WeeklyReport::build("2026-W48".parse().unwrap(), &bars).unwrap();
        assert_eq!(
            report.subject(),
            "Weekly Market Report - Best: NVDA: 8.5% | Worst: QUBT: -3.2%"
        );
        let nvda = &report.symbols[0];
        assert_eq!(nvda.return_pct.rounded(2), "8.45");
        assert_eq!(nvda.range_pct.rounded(2), "10.00", "(109 − 99) / 100");
        assert_eq!(nvda.days, 2);
        assert_eq!(report.symbols[1].return_pct.rounded(2), "-3.20");
        assert_eq!(report.symbols[1].range_pct.rounded(2), "7.50");
        assert_eq!(report.charts.len(), 2, "AAPL did not trade that week");
        assert_eq!(
            report.charts[0].days, 3,
            "NVDA's chart includes the week before"
        );
        let html = report.html(|c| c.file_name.clone());
        assert!(
            html.contains("<td>NVDA</td><td>100</td><td>108.45</td><td class=\"up\">8.45%</td>"),
            "{html}"
        );
        assert!(html.contains("src=\"QUBT.png\""));
    }

    #[test]
    fn percent_rounds_half_away_from_zero() {
        let p = |from: &str, to: &str| {
            Percent::change(
                Price::parse(from).unwrap(),
                Price::parse(to).unwrap(),
                Price::parse(from).unwrap(),
            )
            .unwrap()
        };
        assert_eq!(p("100", "100.05").rounded(1), "0.1");
        assert_eq!(p("100", "99.95").rounded(1), "-0.1");
        assert_eq!(p("3", "4").rounded(2), "33.33");
        assert_eq!(p("100", "100").rounded(1), "0.0");
    }
}
