use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Error, Price, Result, Symbol, UnixNanos, Volume};

/// The bar sizes tickflow builds, aligned to the UTC calendar (a daily bar to its symbol's
/// day: `tickflow_process::days`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BarInterval {
    S1,
    M1,
    M5,
    H1,
    D1,
}

impl BarInterval {
    /// Every interval, shortest first.
    pub const ALL: [BarInterval; 5] = [Self::S1, Self::M1, Self::M5, Self::H1, Self::D1];

    /// Length in nanoseconds.
    pub const fn nanos(self) -> i64 {
        const S: i64 = 1_000_000_000;
        match self {
            Self::S1 => S,
            Self::M1 => 60 * S,
            Self::M5 => 300 * S,
            Self::H1 => 3600 * S,
            Self::D1 => 86_400 * S,
        }
    }

    /// The canonical name used in tables and APIs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::S1 => "1s",
            Self::M1 => "1m",
            Self::M5 => "5m",
            Self::H1 => "1h",
            Self::D1 => "1d",
        }
    }

    /// Start of the bar containing `ts` (for `D1` the UTC day's; processing places a daily bar
    /// in its symbol's day instead).
    pub fn start_of(self, ts: UnixNanos) -> UnixNanos {
        UnixNanos(ts.0 - ts.0.rem_euclid(self.nanos()))
    }
}

impl fmt::Display for BarInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BarInterval {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| Error::Interval {
                value: s.to_string(),
            })
    }
}

/// An OHLCV bar over `[start, end)`. Natural key: (symbol, interval, start).
///
/// Built here from trades, or received whole from a feed (a vendor's aggregate); `source`
/// says which. A symbol's bars of one interval come from one of the two at a time: see
/// `tickflow_process` for the rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    pub symbol: Symbol,
    pub interval: BarInterval,
    pub start: UnixNanos,
    pub end: UnixNanos,
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub close: Price,
    pub volume: Volume,
    /// Volume-weighted average price, exact to 10^-9; a feed's bar may not carry one.
    pub vwap: Option<Price>,
    /// Trades in the bar; a feed's bar may not say.
    pub trade_count: Option<u64>,
    /// True once the lateness budget has passed and the bar can no longer change. A feed's
    /// bars are final as they arrive.
    pub is_final: bool,
    /// The source a feed's bar came from; `None` for a bar built here from trades.
    pub source: Option<Arc<str>>,
}
