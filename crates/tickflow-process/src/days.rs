//! Where a symbol's day starts, for its daily bars and daily metrics. A listed instrument's
//! day is its exchange's, midnight to midnight in the exchange's time zone (US equities:
//! America/New_York, so 23 or 25 hours when the clocks change), as vendors stamp their
//! daily bars; a pair (`BTC-USD`) trades around the clock and its day is UTC's, as crypto
//! venues' daily candles are. Other intervals are aligned to UTC, which is the same in
//! every zone whose offset is a whole number of hours.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use tickflow_model::{BarInterval, Date, Symbol, UnixNanos};

/// The day of daily bars for listed instruments; pairs always use UTC's.
#[derive(Clone, Debug)]
pub struct Days {
    zone: TimeZone,
}

impl Default for Days {
    /// The US equity market's day.
    fn default() -> Self {
        Self::in_zone(Self::EXCHANGE).unwrap_or_else(|_| Self::utc())
    }
}

impl Days {
    /// The default zone: the NYSE's.
    pub const EXCHANGE: &'static str = "America/New_York";

    /// Days in UTC for every symbol.
    pub fn utc() -> Self {
        Self {
            zone: TimeZone::UTC,
        }
    }

    /// Listed instruments' days in the IANA zone `name` (bundled with the binary).
    ///
    /// # Errors
    /// A zone the bundled database does not know.
    pub fn in_zone(name: &str) -> Result<Self, String> {
        TimeZone::get(name)
            .map(|zone| Self { zone })
            .map_err(|e| format!("time zone {name:?}: {e}"))
    }

    fn zone(&self, symbol: &Symbol) -> TimeZone {
        if symbol.is_pair() {
            TimeZone::UTC
        } else {
            self.zone.clone()
        }
    }

    /// `[start, end)` of `symbol`'s bar of `interval` that holds `ts`.
    pub fn bar_span(&self, symbol: &Symbol, interval: BarInterval, ts: UnixNanos) -> (i64, i64) {
        if interval != BarInterval::D1 {
            let start = interval.start_of(ts).0;
            return (start, start.saturating_add(interval.nanos()));
        }
        let zone = self.zone(symbol);
        let date = Timestamp::from_nanosecond(i128::from(ts.0))
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(zone.clone())
            .date();
        (
            midnight(&zone, date),
            midnight(&zone, date.tomorrow().unwrap_or(date)),
        )
    }

    /// The calendar date of `symbol`'s day starting at `start`.
    pub fn date(&self, symbol: &Symbol, start: UnixNanos) -> Date {
        let date = Timestamp::from_nanosecond(i128::from(start.0))
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(self.zone(symbol))
            .date();
        let utc = date
            .to_zoned(TimeZone::UTC)
            .map_or(start, |z| UnixNanos(z.timestamp().as_nanosecond() as i64));
        utc.date()
    }

    /// Where `symbol`'s day `date` ends.
    pub fn end_of(&self, symbol: &Symbol, date: Date) -> i64 {
        let start = UnixNanos::from_date(date);
        let zone = self.zone(symbol);
        let civil = Timestamp::from_nanosecond(i128::from(start.0))
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(TimeZone::UTC)
            .date();
        midnight(&zone, civil.tomorrow().unwrap_or(civil))
    }
}

/// Midnight starting `date` in `zone`, in nanoseconds since the epoch (the first instant of
/// the day where a zone skips midnight).
fn midnight(zone: &TimeZone, date: jiff::civil::Date) -> i64 {
    date.to_zoned(zone.clone())
        .map_or(0, |z| z.timestamp().as_nanosecond() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> UnixNanos {
        UnixNanos::parse(text).unwrap()
    }

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    #[test]
    fn an_equity_day_is_new_york_midnight_to_midnight_across_the_clock_change() {
        let days = Days::default();
        let nvda = sym("NVDA");
        // 01:30 UTC on 6 December is still 5 December in New York (EST, UTC−5).
        let (start, end) = days.bar_span(&nvda, BarInterval::D1, at("2026-12-06T01:30:00Z"));
        assert_eq!(start, at("2026-12-05T05:00:00Z").0);
        assert_eq!(end, at("2026-12-06T05:00:00Z").0);
        assert_eq!(
            days.date(&nvda, UnixNanos(start)),
            Date::parse("2026-12-05").unwrap()
        );
        assert_eq!(days.end_of(&nvda, Date::parse("2026-12-05").unwrap()), end);
        // 8 March 2026 loses an hour, 1 November gains one.
        let (start, end) = days.bar_span(&nvda, BarInterval::D1, at("2026-03-08T12:00:00Z"));
        assert_eq!(end - start, 23 * 3_600_000_000_000);
        let (start, end) = days.bar_span(&nvda, BarInterval::D1, at("2026-11-01T12:00:00Z"));
        assert_eq!(end - start, 25 * 3_600_000_000_000);
        assert_eq!(start, at("2026-11-01T04:00:00Z").0);
    }

    #[test]
    fn a_pair_keeps_utc_days_and_other_intervals_stay_utc_aligned() {
        let days = Days::default();
        let btc = sym("BTC-USD");
        let (start, end) = days.bar_span(&btc, BarInterval::D1, at("2026-12-06T01:30:00Z"));
        assert_eq!(
            (start, end),
            (at("2026-12-06T00:00:00Z").0, at("2026-12-07T00:00:00Z").0)
        );
        assert_eq!(
            days.date(&btc, UnixNanos(start)),
            Date::parse("2026-12-06").unwrap()
        );
        let (start, end) = days.bar_span(&sym("NVDA"), BarInterval::H1, at("2026-12-06T01:30:00Z"));
        assert_eq!(
            (start, end),
            (at("2026-12-06T01:00:00Z").0, at("2026-12-06T02:00:00Z").0)
        );
    }

    #[test]
    fn a_zone_east_of_utc_dates_its_day_by_its_own_calendar() {
        let days = Days::in_zone("Asia/Tokyo").unwrap();
        let sony = sym("6758.T");
        let (start, _) = days.bar_span(&sony, BarInterval::D1, at("2026-12-06T16:00:00Z"));
        assert_eq!(start, at("2026-12-06T15:00:00Z").0);
        assert_eq!(
            days.date(&sony, UnixNanos(start)),
            Date::parse("2026-12-07").unwrap()
        );
        assert!(Days::in_zone("Mars/Olympus").is_err());
    }
}
