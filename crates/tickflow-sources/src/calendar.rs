//! The US equity market's calendar in its own time zone (America/New_York, daylight saving
//! included): where a trading day starts, and whether the regular session is open, NYSE
//! holidays included (`nyse-holiday-cal`, which knows 2020 to 2028; outside those years every
//! weekday counts as a trading day). Vendors stamp daily bars at the exchange's midnight;
//! staleness means nothing outside the session. Early closes (13:00 on the eves of some
//! holidays) are not modelled.

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

/// Whether the NYSE trades on `date`: a weekday that is not one of its holidays.
pub fn is_trading_day(date: Date) -> bool {
    use nyse_holiday_cal::HolidayCal;
    if matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday) {
        return false;
    }
    let day = chrono::NaiveDate::from_ymd_opt(
        i32::from(date.year()),
        u32::from(date.month().unsigned_abs()),
        u32::from(date.day().unsigned_abs()),
    );
    // Outside the holiday table's years, a weekday is taken as a trading day.
    day.and_then(|d| d.is_holiday().ok()) != Some(true)
}

/// The regular session, 09:30 to 16:00 New York time on weekdays.
pub fn in_regular_session(ts: UnixNanos) -> bool {
    let z = zoned(ts);
    let minute = i32::from(z.hour()) * 60 + i32::from(z.minute());
    is_trading_day(z.date()) && (9 * 60 + 30..16 * 60).contains(&minute)
}

/// 09:30 New York time on the exchange date at `ts`: the regular session's opening bell.
pub fn session_open(ts: UnixNanos) -> UnixNanos {
    exchange_date(ts)
        .at(9, 30, 0, 0)
        .to_zoned(new_york())
        .map_or(ts, |z| UnixNanos(z.timestamp().as_nanosecond() as i64))
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
        // Beyond the table's years a weekday is a trading day.
        assert!(is_trading_day(Date::constant(2031, 1, 2)));
    }
}
