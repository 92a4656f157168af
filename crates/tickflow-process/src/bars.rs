//! OHLCV bars from event time.
//!
//! Each (symbol, interval) keeps its open bars ordered by start. A trade lands in the bar
//! whose calendar-aligned window holds its `ts_event` (a daily bar's is the symbol's day,
//! `days.rs`); a bar becomes final, and is emitted,
//! once the symbol's watermark (the newest event time seen) passes its end plus the lateness
//! budget. A trade that would land in a final bar is older than that line and was already
//! rejected as late, so a final bar never changes.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tickflow_model::{Bar, BarInterval, Price, Symbol, Trade, UnixNanos, Volume};

use crate::days::Days;

/// A bar being built, with the exact Σ price × size behind its VWAP.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenBar {
    pub bar: Bar,
    /// Σ price.raw × size.raw, in units of 10^-18.
    notional: i128,
}

impl OpenBar {
    /// A bar as an older checkpoint stored it.
    pub(crate) fn from_parts(bar: Bar, notional: i128) -> Self {
        Self { bar, notional }
    }

    fn new(
        symbol: &Symbol,
        interval: BarInterval,
        (start, end): (i64, i64),
        trade: &Trade,
    ) -> Self {
        let mut volume = Volume::default();
        volume.add(trade.size);
        let bar = Bar {
            symbol: symbol.clone(),
            interval,
            start: UnixNanos(start),
            end: UnixNanos(end),
            open: trade.price,
            high: trade.price,
            low: trade.price,
            close: trade.price,
            volume,
            vwap: Some(trade.price),
            trade_count: Some(1),
            is_final: false,
            source: None,
        };
        Self {
            bar,
            notional: i128::from(trade.price.raw()) * i128::from(trade.size.raw()),
        }
    }

    /// Folds a trade into the bar. Trades may arrive out of order within the lateness budget,
    /// so open and close follow event time, not arrival.
    fn add(&mut self, trade: &Trade, first_ts: &mut i64, last_ts: &mut i64) {
        let b = &mut self.bar;
        if trade.ts_event.0 < *first_ts {
            *first_ts = trade.ts_event.0;
            b.open = trade.price;
        }
        if trade.ts_event.0 >= *last_ts {
            *last_ts = trade.ts_event.0;
            b.close = trade.price;
        }
        b.high = b.high.max(trade.price);
        b.low = b.low.min(trade.price);
        b.volume.add(trade.size);
        b.trade_count = Some(b.trade_count.unwrap_or(0) + 1);
        // Saturates instead of wrapping: only absurd bars (≈170 trades near 10⁹ × 10⁹) get there.
        self.notional = self
            .notional
            .saturating_add(i128::from(trade.price.raw()) * i128::from(trade.size.raw()));
    }

    /// The bar as it stands, VWAP computed exactly and rounded to 10^-9.
    pub fn snapshot(&self, is_final: bool) -> Bar {
        let mut bar = self.bar.clone();
        let precision = bar.open.precision().max(bar.close.precision()).max(2) + 2;
        if let Some(vwap) = Price::from_ratio(self.notional, bar.volume.raw(), precision.min(9)) {
            bar.vwap = Some(vwap);
        }
        bar.is_final = is_final;
        bar
    }
}

/// One interval's open bars for one symbol, plus the event-time span of each.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct IntervalBars {
    open: VecDeque<(OpenBar, i64, i64)>,
}

impl IntervalBars {
    /// Open bars as an older checkpoint stored them.
    pub(crate) fn from_parts(open: VecDeque<(OpenBar, i64, i64)>) -> Self {
        Self { open }
    }

    /// Hands this interval over to a feed whose first bar starts at `start`: bars that end by
    /// then are emitted final, as they would have been; the rest are the feed's to send, and
    /// are dropped.
    pub fn hand_over(&mut self, start: i64, out: &mut Vec<Bar>) {
        for (b, _, _) in self.open.drain(..) {
            if b.bar.end.0 <= start {
                out.push(b.snapshot(true));
            }
        }
    }

    /// Adds a trade to its bar, opening one if needed; `days` places a daily bar.
    pub fn add(&mut self, symbol: &Symbol, interval: BarInterval, trade: &Trade, days: &Days) {
        let ts = trade.ts_event.0;
        // Almost every trade falls in the newest bar: found without dividing to align it.
        if let Some((bar, first, last)) = self.open.back_mut()
            && (bar.bar.start.0..bar.bar.end.0).contains(&ts)
        {
            bar.add(trade, first, last);
            return;
        }
        let span = days.bar_span(symbol, interval, trade.ts_event);
        let start = UnixNanos(span.0);
        match self.open.iter().rposition(|(b, _, _)| b.bar.start <= start) {
            Some(i) if self.open[i].0.bar.start == start => {
                let (bar, first, last) = &mut self.open[i];
                bar.add(trade, first, last);
            }
            Some(i) => self
                .open
                .insert(i + 1, (OpenBar::new(symbol, interval, span, trade), ts, ts)),
            None => self
                .open
                .push_front((OpenBar::new(symbol, interval, span, trade), ts, ts)),
        }
    }

    /// Emits, as final, every bar whose end + lateness is at or below the watermark.
    pub fn close_until(&mut self, watermark: i64, lateness: i64, out: &mut Vec<Bar>) {
        while let Some((b, _, _)) = self.open.front() {
            if b.bar.end.0.saturating_add(lateness) > watermark {
                break;
            }
            if let Some((b, _, _)) = self.open.pop_front() {
                out.push(b.snapshot(true));
            }
        }
    }

    /// Open bars as they stand, not final.
    pub fn open_bars(&self) -> impl Iterator<Item = Bar> + '_ {
        self.open.iter().map(|(b, _, _)| b.snapshot(false))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tickflow_model::Qty;

    use super::*;

    fn trade(ts: i64, size: &str) -> Trade {
        Trade {
            symbol: Symbol::parse("NVDA").unwrap(),
            ts_event: UnixNanos(ts),
            ts_recv: UnixNanos(ts),
            price: Price::parse("10").unwrap(),
            size: Qty::parse(size).unwrap(),
            trade_id: None,
            exchange: None,
            source: Arc::from("test"),
            feed: Arc::from("test"),
            seq: None,
        }
    }

    #[test]
    fn trades_land_in_their_own_window_whichever_bar_is_newest() {
        let s = 1_000_000_000;
        let symbol = Symbol::parse("NVDA").unwrap();
        let mut bars = IntervalBars::default();
        // Newest bar, an older open one, one before all, and the newest bar's last instant.
        for (ts, size) in [
            (s + 500, "1"),
            (2 * s + 500, "2"),
            (s + 700, "4"),
            (100, "8"),
            (3 * s - 1, "16"),
        ] {
            bars.add(&symbol, BarInterval::S1, &trade(ts, size), &Days::utc());
        }
        let got: Vec<(i64, String, u64)> = bars
            .open_bars()
            .map(|b| (b.start.0, b.volume.to_string(), b.trade_count.unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                (0, "8".to_string(), 1),
                (s, "5".to_string(), 2),
                (2 * s, "18".to_string(), 2)
            ]
        );
    }
}
