//! Where a symbol's bars of one interval come from: built here from its trades, or received
//! whole from a feed (a vendor's aggregates). The rule that keeps a bar from being counted
//! twice when both arrive:
//!
//! 1. Until a feed's bar of an interval arrives, that interval is built from trades.
//! 2. The first feed bar takes the interval over: built bars that ended by its start are
//!    emitted final as they would have been, those still open are dropped (the feed sends
//!    its own), and from then on trades no longer build that interval. Other intervals and
//!    the trades themselves are untouched.
//! 3. A feed bar whose window lies inside the span already built from trades is not stored:
//!    the built bar stands, and the feed bar counts as a duplicate.
//! 4. A feed's bars arrive in time order. One that starts at or before the newest stored,
//!    but not before the first, is a redelivery (a duplicate); one that starts before the
//!    feed's first goes to the DLQ as `late`, since daily metrics are computed in order.
//!    History therefore goes in first, oldest to newest, then the live feed. A window
//!    missing inside a feed's span reads as sent: repairing such a gap means replaying the
//!    trades behind it.
//!
//! So the lake never holds two bars of one (symbol, interval, start).

use serde::{Deserialize, Serialize};

/// One interval's origin for one symbol, with the spans each origin has covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// Bars built from trades and emitted: the first one's start and the newest one's end.
    built: Option<(i64, i64)>,
    /// A feed's bars: the first one's start and the newest one's start.
    fed: Option<(i64, i64)>,
}

/// What becomes of a feed's bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Stored; `takes_over` when it is the interval's first feed bar.
    Store { takes_over: bool },
    /// Already stored, from the feed or built from trades.
    Duplicate,
    /// Starts before the feed's first bar, which it is `first` (nanoseconds).
    BeforeFirst { first: i64 },
}

impl Origin {
    /// Whether trades still build this interval.
    pub fn built_from_trades(&self) -> bool {
        self.fed.is_none()
    }

    /// Records a bar built from trades and emitted final.
    pub fn built(&mut self, start: i64, end: i64) {
        self.built = Some(match self.built {
            Some((first, newest)) => (first.min(start), newest.max(end)),
            None => (start, end),
        });
    }

    /// Decides on a feed's bar over `[start, end)` and, when it is stored, records it.
    pub fn feed(&mut self, start: i64, end: i64) -> Verdict {
        if let Some((first, newest)) = self.fed {
            if start < first {
                return Verdict::BeforeFirst { first };
            }
            if start <= newest {
                return Verdict::Duplicate;
            }
        }
        if let Some((first, until)) = self.built
            && start < until
            && end > first
        {
            return Verdict::Duplicate;
        }
        let takes_over = self.fed.is_none();
        self.fed = Some(match self.fed {
            Some((first, _)) => (first, start),
            None => (start, start),
        });
        Verdict::Store { takes_over }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_takes_over_after_what_trades_built_and_keeps_its_own_order() {
        let mut o = Origin::default();
        assert!(o.built_from_trades());
        // Trades built [100, 400).
        o.built(100, 200);
        o.built(300, 400);
        // History before any trade is stored, and takes the interval over.
        assert_eq!(o.feed(0, 100), Verdict::Store { takes_over: true });
        assert!(!o.built_from_trades());
        // Inside what trades built: the built bar stands.
        assert_eq!(o.feed(200, 300), Verdict::Duplicate);
        assert_eq!(o.feed(350, 450), Verdict::Duplicate);
        // After it, in order: stored; sent again: a duplicate.
        assert_eq!(o.feed(400, 500), Verdict::Store { takes_over: false });
        assert_eq!(o.feed(400, 500), Verdict::Duplicate);
        assert_eq!(o.feed(0, 100), Verdict::Duplicate);
        assert_eq!(o.feed(-100, 0), Verdict::BeforeFirst { first: 0 });
        assert_eq!(o.feed(500, 600), Verdict::Store { takes_over: false });
    }
}
