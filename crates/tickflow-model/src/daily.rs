use serde::{Deserialize, Serialize};

use crate::{Date, Price, Symbol, Volume};

/// One symbol's session summary. Natural key: (symbol, date).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DailyMetric {
    pub symbol: Symbol,
    pub date: Date,
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub close: Price,
    pub volume: Volume,
    /// (high − low) / close × 100.
    pub volatility: f64,
    /// Mean close of the last five sessions including this one (fewer at the start of history).
    pub rolling_avg_5d: Price,
    /// Close-to-close change in percent; none for the first session.
    pub daily_pct_change: Option<f64>,
}
