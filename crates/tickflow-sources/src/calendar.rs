//! The US equity market's calendar in its own time zone (America/New_York, daylight saving
//! included): where a trading day starts, and when the regular session is open. Vendors
//! stamp daily bars at the exchange's midnight; staleness means nothing outside the session.
//!
//! NYSE holidays and early closes are computed for any year from the exchange's rules
//! (NYSE Rule 7.2), not looked up in a table that runs out:
//! - New Year's Day, Martin Luther King Jr. Day (third Monday of January, from 1998),
//!   Washington's Birthday (third Monday of February), Good Friday, Memorial Day (last
//!   Monday of May), Juneteenth (from 2022), Independence Day, Labor Day (first Monday of
//!   September), Thanksgiving (fourth Thursday of November) and Christmas Day;
//! - a holiday on a Saturday is observed the Friday before, one on a Sunday the Monday
//!   after, except New Year's Day on a Saturday, which is not observed (the Friday ends a
//!   year);
//! - the session closes at 13:00 on July 3 and December 24 when they are Monday to
//!   Thursday, and on the day after Thanksgiving (before 2013, on July 5 too when the 4th
//!   was a Thursday).
//!
//! Closures the rules cannot foresee (national days of mourning, 2012's hurricane) are not
//! known here.

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use tickflow_model::UnixNanos;

fn new_york() -> TimeZone {
    // Bundled with the binary, so a host without tzdata reads it the same.
    TimeZone::get("America/New_York").unwrap_or(TimeZone::UTC)
}

fn zoned(ts: UnixNanos) -> jiff::Zoned {
    Timestamp::from_nanosecond(i128::from(ts.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned(new_york())
}

/// The exchange's calendar date at `ts`.
pub fn exchange_date(ts: UnixNanos) -> Date {
    zoned(ts).date()
}

/// Midnight in New York starting the exchange date at `ts`: where vendors start daily bars.
pub fn exchange_day_start(ts: UnixNanos) -> UnixNanos {
    day_start(exchange_date(ts))
}

/// Midnight in New York starting `date`.
pub fn day_start(date: Date) -> UnixNanos {
    date.to_zoned(new_york()).map_or(UnixNanos(0), |z| {
        UnixNanos(z.timestamp().as_nanosecond() as i64)
    })
}

/// Where a vendor's bar stamped `t` starts and ends: a daily bar is the exchange's day, from
/// its midnight to the next (23 or 25 hours when the clocks change), whether the vendor
/// stamps its start or its close; other intervals start at `t`.
pub fn bar_span(interval: tickflow_model::BarInterval, t: UnixNanos) -> (UnixNanos, UnixNanos) {
    if interval == tickflow_model::BarInterval::D1 {
        let date = exchange_date(t);
        (day_start(date), day_start(date.tomorrow().unwrap_or(date)))
    } else {
        (t, UnixNanos(t.0.saturating_add(interval.nanos())))
    }
}

/// Easter Sunday of `year` in the Gregorian calendar (the anonymous Gregorian computus).
fn easter(year: i16) -> Option<Date> {
    let y = i32::from(year);
    let (a, b, c) = (y % 19, y / 100, y % 100);
    let (d, e) = (b / 4, b % 4);
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let (i, k) = (c / 4, c % 4);
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    Date::new(year, month as i8, day as i8).ok()
}

/// The NYSE holidays of `year`, as observed, with their names.
fn holidays(year: i16) -> impl Iterator<Item = (Date, &'static str)> {
    let nth = |month: i8, n: i8, weekday: Weekday| {
        Date::new(year, month, 1)
            .and_then(|d| d.nth_weekday_of_month(n, weekday))
            .ok()
    };
    // A Sunday holiday moves to the Monday after; a Saturday one to the Friday before when
    // `saturday_moves`, and is not observed otherwise.
    let observed = |month: i8, day: i8, saturday_moves: bool| {
        let date = Date::new(year, month, day).ok()?;
        match date.weekday() {
            Weekday::Saturday if saturday_moves => date.yesterday().ok(),
            Weekday::Saturday => None,
            Weekday::Sunday => date.tomorrow().ok(),
            _ => Some(date),
        }
    };
    [
        (observed(1, 1, false), "New Year's Day"),
        (
            nth(1, 3, Weekday::Monday).filter(|_| year >= 1998),
            "Martin Luther King Jr. Day",
        ),
        (nth(2, 3, Weekday::Monday), "Washington's Birthday"),
        (
            easter(year).and_then(|e| e.checked_sub(jiff::Span::new().days(2)).ok()),
            "Good Friday",
        ),
        (nth(5, -1, Weekday::Monday), "Memorial Day"),
        (
            observed(6, 19, true).filter(|_| year >= 2022),
            "Juneteenth National Independence Day",
        ),
        (observed(7, 4, true), "Independence Day"),
        (nth(9, 1, Weekday::Monday), "Labor Day"),
        (nth(11, 4, Weekday::Thursday), "Thanksgiving Day"),
        (observed(12, 25, true), "Christmas Day"),
    ]
    .into_iter()
    .filter_map(|(date, name)| Some((date?, name)))
}

/// The NYSE holiday that closes the market on `date`, if one does.
pub fn holiday(date: Date) -> Option<&'static str> {
    holidays(date.year())
        .find(|(d, _)| *d == date)
        .map(|(_, name)| name)
}

/// Whether the NYSE trades on `date`: a weekday that is not one of its holidays.
pub fn is_trading_day(date: Date) -> bool {
    !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday) && holiday(date).is_none()
}

/// Whether the session of `date`, a trading day, closes early, at 13:00.
pub fn is_early_close(date: Date) -> bool {
    if !is_trading_day(date) {
        return false;
    }
    let monday_to_thursday = matches!(
        date.weekday(),
        Weekday::Monday | Weekday::Tuesday | Weekday::Wednesday | Weekday::Thursday
    );
    let after_thanksgiving = Date::new(date.year(), 11, 1)
        .and_then(|d| d.nth_weekday_of_month(4, Weekday::Thursday))
        .and_then(|d| d.tomorrow())
        .is_ok_and(|d| d == date && date.year() >= 1993);
    match (date.month(), date.day()) {
        (7, 3) | (12, 24) => monday_to_thursday,
        (7, 5) => date.year() < 2013 && date.weekday() == Weekday::Friday,
        _ => after_thanksgiving,
    }
}

/// The regular session of `date`: 09:30 to 16:00 New York time, or to 13:00 on an early
/// close; `None` when the market is closed.
pub fn session(date: Date) -> Option<(UnixNanos, UnixNanos)> {
    if !is_trading_day(date) {
        return None;
    }
    let at = |hour: i8, minute: i8| {
        date.at(hour, minute, 0, 0)
            .to_zoned(new_york())
            .ok()
            .map(|z| UnixNanos(z.timestamp().as_nanosecond() as i64))
    };
    let close = if is_early_close(date) { 13 } else { 16 };
    Some((at(9, 30)?, at(close, 0)?))
}

/// Whether the regular session is open at `ts`.
pub fn in_regular_session(ts: UnixNanos) -> bool {
    session(exchange_date(ts)).is_some_and(|(open, close)| open <= ts && ts < close)
}

/// 09:30 New York time on the exchange date at `ts`: the regular session's opening bell.
pub fn session_open(ts: UnixNanos) -> UnixNanos {
    exchange_date(ts)
        .at(9, 30, 0, 0)
        .to_zoned(new_york())
        .map_or(ts, |z| UnixNanos(z.timestamp().as_nanosecond() as i64))
}

/// [`previous_trading_day`] for the model's dates (reports and jobs count in those).
pub fn trading_day_before(date: tickflow_model::Date) -> tickflow_model::Date {
    let (y, m, d) = date.ymd();
    let (Ok(y), Ok(m), Ok(d)) = (i16::try_from(y), i8::try_from(m), i8::try_from(d)) else {
        return date;
    };
    Date::new(y, m, d)
        .ok()
        .and_then(|civil| {
            tickflow_model::Date::parse(&previous_trading_day(civil).to_string()).ok()
        })
        .unwrap_or(date)
}

/// The trading day before `date`: the last full one as a daily update sees it.
pub fn previous_trading_day(date: Date) -> Date {
    let mut d = date.yesterday().unwrap_or(date);
    while !is_trading_day(d) {
        d = d.yesterday().unwrap_or(d);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> UnixNanos {
        UnixNanos::parse(text).unwrap()
    }

    #[test]
    fn the_trading_day_starts_at_midnight_in_new_york_across_daylight_saving() {
        // A summer close (EDT, UTC-4) and a winter one (EST, UTC-5).
        assert_eq!(
            exchange_day_start(ts("2024-05-06T20:00:00Z")),
            ts("2024-05-06T04:00:00Z")
        );
        assert_eq!(
            exchange_day_start(ts("2024-01-08T21:00:00Z")),
            ts("2024-01-08T05:00:00Z")
        );
        // The day the clocks spring forward is 23 hours long; a close stamp keys the same day.
        let spring = tickflow_model::BarInterval::D1;
        assert_eq!(
            bar_span(spring, ts("2024-03-10T05:00:00Z")),
            (ts("2024-03-10T05:00:00Z"), ts("2024-03-11T04:00:00Z"))
        );
        assert_eq!(
            bar_span(spring, ts("2024-03-11T20:00:00Z")).0,
            ts("2024-03-11T04:00:00Z")
        );
        // 02:00 UTC is still the day before in New York.
        assert_eq!(
            exchange_day_start(ts("2024-05-07T02:00:00Z")),
            ts("2024-05-06T04:00:00Z")
        );
    }

    #[test]
    fn the_session_is_weekday_hours_in_new_york() {
        assert!(
            in_regular_session(ts("2024-05-06T13:30:00Z")),
            "Monday 09:30 EDT"
        );
        assert!(!in_regular_session(ts("2024-05-06T13:29:59Z")));
        assert!(
            !in_regular_session(ts("2024-05-06T20:00:00Z")),
            "16:00 is the close"
        );
        assert!(in_regular_session(ts("2024-01-08T14:30:00Z")), "09:30 EST");
        assert!(!in_regular_session(ts("2024-05-04T15:00:00Z")), "Saturday");
        // The opening bell is 09:30 in New York on daylight-saving days too.
        assert_eq!(
            session_open(ts("2024-03-10T18:00:00Z")),
            ts("2024-03-10T13:30:00Z")
        );
        assert_eq!(
            session_open(ts("2024-03-08T18:00:00Z")),
            ts("2024-03-08T14:30:00Z")
        );
        assert_eq!(
            previous_trading_day(Date::constant(2024, 5, 6)),
            Date::constant(2024, 5, 3),
            "Monday's previous trading day is Friday"
        );
        // Holidays: Thanksgiving 2026 is closed, and the Friday after Good Friday 2024's
        // weekend looks back past it.
        assert!(
            !in_regular_session(ts("2026-11-26T15:00:00Z")),
            "Thanksgiving"
        );
        assert!(in_regular_session(ts("2026-11-27T15:00:00Z")));
        assert_eq!(
            previous_trading_day(Date::constant(2024, 4, 1)),
            Date::constant(2024, 3, 28),
            "Good Friday, 29 March 2024, is skipped"
        );
        // An early close ends at 13:00, in EST here.
        assert!(in_regular_session(ts("2026-11-27T17:59:59Z")));
        assert!(!in_regular_session(ts("2026-11-27T18:00:00Z")), "13:00 EST");
    }

    fn dates(year: i16, days: &[(i8, i8)]) -> Vec<Date> {
        days.iter()
            .map(|&(m, d)| Date::new(year, m, d).unwrap())
            .collect()
    }

    /// The exchange's published calendars for 2024 to 2027, and the rules' edge cases.
    #[test]
    fn holidays_and_early_closes_match_the_exchanges_calendars() {
        /// A year's holidays and early closes, as (month, day).
        type Year<'a> = (i16, &'a [(i8, i8)], &'a [(i8, i8)]);
        let published: [Year; 4] = [
            (
                2024,
                &[
                    (1, 1),
                    (1, 15),
                    (2, 19),
                    (3, 29),
                    (5, 27),
                    (6, 19),
                    (7, 4),
                    (9, 2),
                    (11, 28),
                    (12, 25),
                ],
                &[(7, 3), (11, 29), (12, 24)],
            ),
            (
                2025,
                &[
                    (1, 1),
                    (1, 20),
                    (2, 17),
                    (4, 18),
                    (5, 26),
                    (6, 19),
                    (7, 4),
                    (9, 1),
                    (11, 27),
                    (12, 25),
                ],
                &[(7, 3), (11, 28), (12, 24)],
            ),
            (
                // Independence Day on a Saturday: closed Friday the 3rd, no early close.
                2026,
                &[
                    (1, 1),
                    (1, 19),
                    (2, 16),
                    (4, 3),
                    (5, 25),
                    (6, 19),
                    (7, 3),
                    (9, 7),
                    (11, 26),
                    (12, 25),
                ],
                &[(11, 27), (12, 24)],
            ),
            (
                // Juneteenth, Independence Day and Christmas Day on weekends.
                2027,
                &[
                    (1, 1),
                    (1, 18),
                    (2, 15),
                    (3, 26),
                    (5, 31),
                    (6, 18),
                    (7, 5),
                    (9, 6),
                    (11, 25),
                    (12, 24),
                ],
                &[(11, 26)],
            ),
        ];
        for (year, closed, early) in published {
            let computed: Vec<Date> = holidays(year).map(|(d, _)| d).collect();
            assert_eq!(computed, dates(year, closed), "{year} holidays");
            let mut day = Date::new(year, 1, 1).unwrap();
            let mut early_closes = Vec::new();
            while day.year() == year {
                if is_early_close(day) {
                    early_closes.push(day);
                }
                day = day.tomorrow().unwrap();
            }
            assert_eq!(early_closes, dates(year, early), "{year} early closes");
        }
        // New Year's Day 2022 fell on a Saturday and was not observed: the year's last
        // Friday traded.
        assert!(is_trading_day(Date::constant(2021, 12, 31)));
        assert_eq!(holiday(Date::constant(2023, 1, 2)), Some("New Year's Day"));
        // Juneteenth from 2022 only; Martin Luther King Jr. Day from 1998.
        assert!(is_trading_day(Date::constant(2021, 6, 18)));
        assert!(is_trading_day(Date::constant(1997, 1, 20)));
        assert_eq!(
            holiday(Date::constant(1998, 1, 19)),
            Some("Martin Luther King Jr. Day")
        );
        // Computed for any year, far from any table.
        assert_eq!(holiday(Date::constant(2040, 3, 30)), Some("Good Friday"));
        assert_eq!(
            holiday(Date::constant(2100, 11, 25)),
            Some("Thanksgiving Day")
        );
        // Before 2013, a Thursday Independence Day closed early on Friday the 5th.
        assert!(is_early_close(Date::constant(2002, 7, 5)));
        assert!(!is_early_close(Date::constant(2019, 7, 5)));
    }

    #[test]
    fn sessions_are_in_new_york_time_across_daylight_saving() {
        let session_of = |y, m, d| session(Date::constant(y, m, d));
        // The Friday before the clocks change (EST) and the Monday after (EDT).
        assert_eq!(
            session_of(2026, 3, 6),
            Some((ts("2026-03-06T14:30:00Z"), ts("2026-03-06T21:00:00Z")))
        );
        assert_eq!(
            session_of(2026, 3, 9),
            Some((ts("2026-03-09T13:30:00Z"), ts("2026-03-09T20:00:00Z")))
        );
        // Christmas Eve closes at 13:00 EST; Christmas Day and weekends have none.
        assert_eq!(
            session_of(2026, 12, 24),
            Some((ts("2026-12-24T14:30:00Z"), ts("2026-12-24T18:00:00Z")))
        );
        assert_eq!(session_of(2026, 12, 25), None);
        assert_eq!(session_of(2026, 12, 26), None);
    }
}
