use crate::{Alert, Bar, DailyMetric, DlqRecord, Quote, Trade};

/// Rows for every table: what processing produces and what the lake writes.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    pub trades: Vec<Trade>,
    pub quotes: Vec<Quote>,
    pub bars: Vec<Bar>,
    pub daily_metrics: Vec<DailyMetric>,
    pub alerts: Vec<Alert>,
    pub dlq: Vec<DlqRecord>,
}

impl Rows {
    /// Rows over all tables.
    pub fn len(&self) -> usize {
        self.trades.len()
            + self.quotes.len()
            + self.bars.len()
            + self.daily_metrics.len()
            + self.alerts.len()
            + self.dlq.len()
    }

    /// Whether there are no rows at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empty tables with room for as many rows as `like` holds, so a buffer refilled at a
    /// steady rate is not copied again and again while it grows.
    pub fn with_capacity_of(like: &Rows) -> Rows {
        Rows {
            trades: Vec::with_capacity(like.trades.len()),
            quotes: Vec::with_capacity(like.quotes.len()),
            bars: Vec::with_capacity(like.bars.len()),
            daily_metrics: Vec::with_capacity(like.daily_metrics.len()),
            alerts: Vec::with_capacity(like.alerts.len()),
            dlq: Vec::with_capacity(like.dlq.len()),
        }
    }

    /// Drops every row, keeping the capacity: a flushed buffer is refilled without faulting
    /// in fresh memory.
    pub fn clear(&mut self) {
        self.trades.clear();
        self.quotes.clear();
        self.bars.clear();
        self.daily_metrics.clear();
        self.alerts.clear();
        self.dlq.clear();
    }

    /// Moves every row of `other` into `self`.
    pub fn append(&mut self, other: &mut Rows) {
        self.trades.append(&mut other.trades);
        self.quotes.append(&mut other.quotes);
        self.bars.append(&mut other.bars);
        self.daily_metrics.append(&mut other.daily_metrics);
        self.alerts.append(&mut other.alerts);
        self.dlq.append(&mut other.dlq);
    }
}
