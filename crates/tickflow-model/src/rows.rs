use crate::{Alert, AlertDelivery, Bar, DailyMetric, DlqRecord, Quote, Trade};

/// Rows for every table: what processing produces and what the lake writes.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    pub trades: Vec<Trade>,
    pub quotes: Vec<Quote>,
    pub bars: Vec<Bar>,
    pub daily_metrics: Vec<DailyMetric>,
    pub alerts: Vec<Alert>,
    pub dlq: Vec<DlqRecord>,
    pub alert_deliveries: Vec<AlertDelivery>,
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
            + self.alert_deliveries.len()
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
            alert_deliveries: Vec::with_capacity(like.alert_deliveries.len()),
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
        self.alert_deliveries.clear();
    }

    /// Moves every row of `other` into `self`.
    pub fn append(&mut self, other: &mut Rows) {
        self.trades.append(&mut other.trades);
        self.quotes.append(&mut other.quotes);
        self.bars.append(&mut other.bars);
        self.daily_metrics.append(&mut other.daily_metrics);
        self.alerts.append(&mut other.alerts);
        self.dlq.append(&mut other.dlq);
        self.alert_deliveries.append(&mut other.alert_deliveries);
    }
}
