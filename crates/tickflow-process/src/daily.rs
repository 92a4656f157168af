//! Daily metrics from final daily bars: volatility = (high − low) / close × 100, the 5-day
//! rolling average of close (exact), and the close-to-close % change.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tickflow_model::{Bar, DailyMetric, Date, Price};

/// Sessions in the rolling average.
pub const ROLLING_DAYS: usize = 5;

/// The closes one symbol's metrics need.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DailyState {
    closes: VecDeque<Price>,
}

impl DailyState {
    /// The close of the newest session seen.
    pub fn last_close(&self) -> Option<Price> {
        self.closes.back().copied()
    }

    /// Builds the metric row of `date` from its final `1d` bar and remembers its close.
    pub fn on_final_daily_bar(&mut self, bar: &Bar, date: Date) -> DailyMetric {
        let prev = self.closes.back().copied();
        self.closes.push_back(bar.close);
        if self.closes.len() > ROLLING_DAYS {
            self.closes.pop_front();
        }
        let sum: i128 = self.closes.iter().map(|p| i128::from(p.raw())).sum();
        let n = self.closes.len() as i128;
        let close_f = bar.close.as_f64();
        DailyMetric {
            symbol: bar.symbol.clone(),
            date,
            open: bar.open,
            high: bar.high,
            low: bar.low,
            close: bar.close,
            volume: bar.volume,
            volatility: if close_f == 0.0 {
                0.0
            } else {
                (bar.high.as_f64() - bar.low.as_f64()) / close_f * 100.0
            },
            rolling_avg_5d: Price::from_ratio(sum, n, bar.close.precision().max(4))
                .unwrap_or(bar.close),
            daily_pct_change: prev.filter(|p| p.raw() != 0).map(|p| {
                (i128::from(bar.close.raw()) - i128::from(p.raw())) as f64 / p.raw() as f64 * 100.0
            }),
        }
    }
}
