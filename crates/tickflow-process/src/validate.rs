//! Validation: what makes a tick bad, with the reason it goes to the DLQ under.

use tickflow_model::{Event, RejectReason, UnixNanos};

/// Prices and sizes are stored as DECIMAL(18, 9): below 10^9 units.
const MAX_STORED_RAW: u128 = 1_000_000_000_000_000_000;

/// Limits on event time relative to our receive time.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Events further ahead of `ts_recv` than this are absurd (clock skew beyond reason).
    pub max_future_nanos: i64,
    /// Events before this are absurd (2000-01-01 by default).
    pub min_ts: UnixNanos,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_future_nanos: 5 * 60 * 1_000_000_000,
            min_ts: UnixNanos(946_684_800 * 1_000_000_000),
        }
    }
}

/// Checks one event; `Err` carries the reason and a human-readable detail.
pub fn check(event: &Event, limits: &Limits) -> Result<(), (RejectReason, String)> {
    let ts = event.ts_event();
    if ts < limits.min_ts || ts.0 > event.ts_recv().0.saturating_add(limits.max_future_nanos) {
        return Err((
            RejectReason::AbsurdTimestamp,
            format!(
                "ts_event {ts} is outside [{}, ts_recv + {}s]",
                limits.min_ts,
                limits.max_future_nanos / 1_000_000_000
            ),
        ));
    }
    let too_big = |raw: i128| raw.unsigned_abs() >= MAX_STORED_RAW;
    let out_of_range = match event {
        Event::Trade(t) => too_big(t.price.raw().into()) || too_big(t.size.raw().into()),
        Event::Quote(q) => {
            [q.bid.raw(), q.ask.raw()]
                .into_iter()
                .any(|r| too_big(r.into()))
                || too_big(q.bid_size.raw().into())
                || too_big(q.ask_size.raw().into())
        }
        Event::Bar(fed) => {
            let b = &fed.bar;
            [b.open, b.high, b.low, b.close]
                .into_iter()
                .chain(b.vwap)
                .any(|p| too_big(p.raw().into()))
        }
    };
    if out_of_range {
        return Err((
            RejectReason::OutOfRange,
            "a price or size is 1,000,000,000 or more".to_string(),
        ));
    }
    match event {
        Event::Trade(t) => {
            if t.price.raw() <= 0 {
                return Err((
                    RejectReason::NonPositivePrice,
                    format!("price {} is not positive", t.price),
                ));
            }
            if t.size.is_zero() {
                return Err((RejectReason::ZeroSize, "size is zero".to_string()));
            }
        }
        Event::Quote(q) => {
            if q.bid.raw() <= 0 || q.ask.raw() <= 0 {
                return Err((
                    RejectReason::NonPositivePrice,
                    format!("bid {} / ask {} must be positive", q.bid, q.ask),
                ));
            }
            if q.bid > q.ask {
                return Err((
                    RejectReason::CrossedQuote,
                    format!("bid {} is above ask {}", q.bid, q.ask),
                ));
            }
        }
        Event::Bar(fed) => {
            let b = &fed.bar;
            if b.low.raw() <= 0 {
                return Err((
                    RejectReason::NonPositivePrice,
                    format!("low {} is not positive", b.low),
                ));
            }
            if b.high < b.open.max(b.close).max(b.low) || b.low > b.open.min(b.close) {
                return Err((
                    RejectReason::InconsistentBar,
                    format!(
                        "open {} high {} low {} close {}: the high must be the highest and the low the lowest",
                        b.open, b.high, b.low, b.close
                    ),
                ));
            }
        }
    }
    Ok(())
}
