//! Indicators over a symbol's recent final bars of one interval (or its daily rows).
//!
//! For a rule on bars (or daily metrics) the window ends with the row being evaluated, as in
//! charting tools: `sma(close, 20)` on a 1m bar is the mean close of that bar and the 19
//! before it. For a rule on trades or quotes it is the newest final bars of the rule's
//! interval: a bar still open is not history yet.
//!
//! - `sma(x, n)`: the mean of the last n values.
//! - `stddev(x, n)`: their sample standard deviation (n − 1 in the denominator), as SQL's
//!   `stddev` computes it over the same bars.
//! - `ema(x, n)`: exponential average with α = 2 / (n + 1), over the last 4n values and
//!   seeded with the mean of the first n of them, so it depends only on recent bars and a
//!   restart gives the same value (the seed's weight after 3n steps is under 0.3%).
//! - `rsi(x, n)`: Wilder's relative strength index (0–100) over the last 4n + 1 values:
//!   averages of the first n gains and losses, then Wilder's smoothing.
//! - `prev(x, k)`: the value k rows back (k = 1 when left out).
//!
//! A third argument leaves out that many of the newest values: on a bar rule,
//! `sma(volume, 20, 1)` is the mean of the 20 bars before the row, so a surge is compared
//! with what came before it rather than with a mean it has raised itself.
//!
//! Each is NULL until it has its n values (n + 1 for `rsi`), so no rule fires on fewer bars
//! than it asks for; `ema` and `rsi` then keep reading up to 4n values as they come. A row
//! whose value is NULL (a bar without `vwap`, the first day's `daily_pct_change`) is left
//! out of that column's series. Arithmetic is exact to 28 significant digits; the square
//! root is rust_decimal's.

use std::collections::VecDeque;

use rust_decimal::{Decimal, MathematicalOps};

use super::{Column, Row, Source};

/// An indicator function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    Sma,
    Ema,
    Rsi,
    Stddev,
    Prev,
}

impl Func {
    pub(super) fn named(name: &str) -> Option<Self> {
        Some(match name {
            "sma" => Self::Sma,
            "ema" => Self::Ema,
            "rsi" => Self::Rsi,
            "stddev" => Self::Stddev,
            "prev" => Self::Prev,
            _ => return None,
        })
    }
}

/// One indicator of one column of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Indicator {
    pub func: Func,
    pub source: Source,
    pub column: Column,
    pub n: u32,
    /// The newest `skip` values are not part of the window: 1 for `prev`, whose window is
    /// the value k rows back, when the series ends with the row itself.
    skip: u32,
}

impl Indicator {
    /// `func(column, n, offset)` (`prev(column, n)`) read by a rule whose row is the
    /// series' newest value (`includes_row`) or comes after it (a trade or quote).
    pub(super) fn new(
        func: Func,
        source: Source,
        column: Column,
        (n, offset): (u32, u32),
        includes_row: bool,
    ) -> Result<Self, String> {
        if func == Func::Stddev && n < 2 {
            return Err("stddev needs a window of at least 2".into());
        }
        let (n, skip) = match func {
            // k rows back: skip the row itself (when in the series) and k − 1 more.
            Func::Prev => (1, n - u32::from(!includes_row)),
            _ => (n, offset),
        };
        Ok(Self {
            func,
            source,
            column,
            n,
            skip,
        })
    }

    /// Values of the series this indicator needs kept.
    pub fn lookback(&self) -> usize {
        let n = self.n as usize;
        self.skip as usize
            + match self.func {
                Func::Sma | Func::Stddev | Func::Prev => n,
                Func::Ema => 4 * n,
                Func::Rsi => 4 * n + 1,
            }
    }

    /// The value over `values` (oldest first); `None` while the window is not full.
    pub fn compute(&self, values: &VecDeque<Decimal>) -> Option<Decimal> {
        let end = values.len().checked_sub(self.skip as usize)?;
        let n = self.n as usize;
        let first = end.saturating_sub(self.lookback() - self.skip as usize);
        if end - first < n + usize::from(self.func == Func::Rsi) {
            return None;
        }
        let window = values.range(first..end);
        match self.func {
            Func::Prev => values.get(end - 1).copied(),
            Func::Sma => mean(window.skip(end - first - n)),
            Func::Stddev => stddev(window.skip(end - first - n)),
            Func::Ema => ema(window, n),
            Func::Rsi => rsi(window, n),
        }
    }
}

fn mean<'a>(values: impl ExactSizeIterator<Item = &'a Decimal>) -> Option<Decimal> {
    let n = Decimal::from(values.len());
    let mut sum = Decimal::ZERO;
    for v in values {
        sum = sum.checked_add(*v)?;
    }
    sum.checked_div(n)
}

fn stddev<'a>(values: impl ExactSizeIterator<Item = &'a Decimal> + Clone) -> Option<Decimal> {
    let n = values.len();
    let m = mean(values.clone())?;
    let mut squares = Decimal::ZERO;
    for v in values {
        let d = v.checked_sub(m)?;
        squares = squares.checked_add(d.checked_mul(d)?)?;
    }
    squares.checked_div(Decimal::from(n - 1))?.sqrt()
}

fn ema<'a>(
    values: impl ExactSizeIterator<Item = &'a Decimal> + Clone,
    n: usize,
) -> Option<Decimal> {
    let alpha = Decimal::TWO.checked_div(Decimal::from(n + 1))?;
    let mut e = mean(values.clone().take(n))?;
    for v in values.skip(n) {
        e = e.checked_add(alpha.checked_mul(v.checked_sub(e)?)?)?;
    }
    Some(e)
}

fn rsi<'a>(values: impl Iterator<Item = &'a Decimal>, n: usize) -> Option<Decimal> {
    let values: Vec<Decimal> = values.copied().collect();
    let changes = values
        .windows(2)
        .map(|w| w[1].checked_sub(w[0]))
        .collect::<Option<Vec<_>>>()?;
    let split = |d: Decimal| {
        if d.is_sign_positive() {
            (d, Decimal::ZERO)
        } else {
            (Decimal::ZERO, -d)
        }
    };
    let nd = Decimal::from(n);
    let (mut gain, mut loss) = (Decimal::ZERO, Decimal::ZERO);
    for d in &changes[..n] {
        let (g, l) = split(*d);
        gain = gain.checked_add(g)?;
        loss = loss.checked_add(l)?;
    }
    gain = gain.checked_div(nd)?;
    loss = loss.checked_div(nd)?;
    let keep = nd - Decimal::ONE;
    for d in &changes[n..] {
        let (g, l) = split(*d);
        gain = gain.checked_mul(keep)?.checked_add(g)?.checked_div(nd)?;
        loss = loss.checked_mul(keep)?.checked_add(l)?.checked_div(nd)?;
    }
    let total = gain.checked_add(loss)?;
    if total.is_zero() {
        // Not a single move in the window: neither strength nor weakness.
        return Some(Decimal::from(50));
    }
    Decimal::ONE_HUNDRED.checked_mul(gain)?.checked_div(total)
}

/// The series one symbol keeps for the rules in force, with each indicator's value cached
/// until its series moves.
#[derive(Debug, Default)]
pub(crate) struct Series {
    /// Per series (see [`Layout`]): its values, oldest first.
    values: Vec<Held>,
    cache: Vec<Option<Option<Decimal>>>,
}

#[derive(Debug, Default)]
struct Held {
    key: Option<(Source, Column)>,
    values: VecDeque<Decimal>,
    /// The place of each value's row in the series ([`Row::series_key`]), beside it.
    times: VecDeque<i64>,
}

impl Held {
    fn drop_oldest(&mut self) {
        self.values.pop_front();
        self.times.pop_front();
    }
}

/// Which series the rules in force need, how long, and which indicator reads which.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Layout {
    pub(crate) series: Vec<((Source, Column), usize)>,
    /// Per indicator slot: the indicator and its series' position.
    pub(crate) slots: Vec<(Indicator, usize)>,
}

impl Layout {
    /// Gives each distinct indicator a slot, and each (source, column) a series as long
    /// as its longest indicator needs; returns the slots of `indicators`.
    pub(crate) fn add(&mut self, indicators: &[Indicator]) -> Vec<usize> {
        indicators
            .iter()
            .map(|ind| {
                let key = (ind.source, ind.column);
                let series = match self.series.iter().position(|(k, _)| *k == key) {
                    Some(s) => s,
                    None => {
                        self.series.push((key, 0));
                        self.series.len() - 1
                    }
                };
                let len = &mut self.series[series].1;
                *len = (*len).max(ind.lookback());
                match self.slots.iter().position(|(i, _)| i == ind) {
                    Some(slot) => slot,
                    None => {
                        self.slots.push((*ind, series));
                        self.slots.len() - 1
                    }
                }
            })
            .collect()
    }

    /// Whether some series of this layout needs more history than `before` kept.
    pub(crate) fn needs_more_than(&self, before: &Layout) -> bool {
        self.series
            .iter()
            .any(|(key, len)| !before.series.iter().any(|(k, l)| k == key && l >= len))
    }
}

impl Series {
    /// Lays the series out for `layout`, keeping the values of every (source, column) still
    /// needed.
    pub(crate) fn lay_out(&mut self, layout: &Layout) {
        let mut old = std::mem::take(&mut self.values);
        self.values = layout
            .series
            .iter()
            .map(|(key, len)| {
                let mut held = old
                    .iter()
                    .position(|h| h.key == Some(*key))
                    .map(|i| old.swap_remove(i))
                    .unwrap_or_default();
                held.key = Some(*key);
                while held.values.len() > *len {
                    held.drop_oldest();
                }
                held
            })
            .collect();
        self.cache = vec![None; layout.slots.len()];
    }

    /// Appends a final row (a bar, or a day's metrics) to each series made of such rows.
    pub(crate) fn push(&mut self, layout: &Layout, row: &Row<'_>) {
        let Some((source, ts)) = row.series_key() else {
            return;
        };
        let mut moved = false;
        for (held, (key, len)) in self.values.iter_mut().zip(&layout.series) {
            if key.0 != source || held.times.back().is_some_and(|newest| ts <= *newest) {
                continue;
            }
            let Some(v) = row.number(key.1) else { continue };
            held.values.push_back(v);
            held.times.push_back(ts);
            if held.values.len() > *len {
                held.drop_oldest();
            }
            moved = true;
        }
        if moved {
            self.cache.iter_mut().for_each(|c| *c = None);
        }
    }

    /// Puts history older than what each series holds in front of it: final `rows` of one
    /// symbol, oldest first. A full series, or rows at or after its oldest, are left
    /// alone, so warming up after rows were pushed adds only what came before them.
    pub(crate) fn warm(&mut self, layout: &Layout, rows: &[Row<'_>]) {
        for (held, (key, len)) in self.values.iter_mut().zip(&layout.series) {
            for row in rows.iter().rev() {
                if held.values.len() >= *len {
                    break;
                }
                let Some((source, ts)) = row.series_key() else {
                    continue;
                };
                if source != key.0 || held.times.front().is_some_and(|oldest| ts >= *oldest) {
                    continue;
                }
                if let Some(v) = row.number(key.1) {
                    held.values.push_front(v);
                    held.times.push_front(ts);
                }
            }
        }
        self.cache.iter_mut().for_each(|c| *c = None);
    }

    /// The value of indicator `slot`.
    pub(crate) fn value(&mut self, layout: &Layout, slot: usize) -> Option<Decimal> {
        let (indicator, series) = layout.slots.get(slot)?;
        let values = &self.values.get(*series)?.values;
        *self
            .cache
            .get_mut(slot)?
            .get_or_insert_with(|| indicator.compute(values))
    }
}

#[cfg(test)]
mod tests;
