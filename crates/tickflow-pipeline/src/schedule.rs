//! When a scheduled job runs: a cron expression read in a time zone of its own, optionally
//! on NYSE trading days only (the old pipelines' `daily_update` ran Tuesday to Saturday at
//! 13:00 UTC for the trading day before; a holiday made it fetch nothing).
//!
//! Fire times follow the zone's clocks: `0 9 * * *` in New York is 09:00 in winter and in
//! summer. On the night the clocks spring forward, a time that does not exist fires at the
//! first time after the gap; on the night they fall back, a time that happens twice fires
//! once (`croner`'s rules). A run missed while tickflow was down is run once at start, not
//! once per missed time ([`Schedule::missed`]).

use std::str::FromStr;

use croner::Cron;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use tickflow_model::UnixNanos;
use tickflow_sources::calendar;

/// A job's schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
    /// Fire only when the New York exchange date of the fire time is an NYSE trading day.
    trading_days: bool,
}

/// Fire times looked at before giving up on finding a trading day. A time on a day the
/// exchange is closed skips the rest of that day, so this is about a year of days, whatever
/// the cron's frequency.
const SEARCH: usize = 400;

impl Schedule {
    /// A schedule from a five-field cron expression (`minute hour day-of-month month
    /// day-of-week`, or six with seconds first) and an IANA time zone (`UTC`,
    /// `America/New_York`).
    ///
    /// # Errors
    /// The expression or the zone is not valid, with the reason.
    pub fn parse(cron: &str, tz: &str, trading_days: bool) -> Result<Self, String> {
        let parsed = Cron::from_str(cron).map_err(|e| format!("{cron:?}: {e}"))?;
        let tz = TimeZone::get(tz).map_err(|e| format!("time zone {tz:?}: {e}"))?;
        Ok(Self {
            cron: parsed,
            tz,
            trading_days,
        })
    }

    fn zoned(&self, at: UnixNanos) -> Option<jiff::Zoned> {
        Timestamp::from_nanosecond(i128::from(at.0))
            .ok()
            .map(|t| t.to_zoned(self.tz.clone()))
    }

    fn nanos(z: &jiff::Zoned) -> UnixNanos {
        UnixNanos(z.timestamp().as_nanosecond() as i64)
    }

    fn wanted(&self, at: UnixNanos) -> bool {
        !self.trading_days || calendar::is_trading_day(calendar::exchange_date(at))
    }

    /// The calendar date of `at` in the schedule's zone.
    pub fn local_date(&self, at: UnixNanos) -> Option<tickflow_model::Date> {
        let d = self.zoned(at)?.date();
        let days =
            tickflow_model::days_from_civil(i64::from(d.year()), d.month() as u32, d.day() as u32);
        Some(tickflow_model::Date(days as i32))
    }

    /// Whether `a` and `b` fall on the same calendar day in the schedule's zone.
    pub fn same_day(&self, a: UnixNanos, b: UnixNanos) -> bool {
        match (self.zoned(a), self.zoned(b)) {
            (Some(a), Some(b)) => a.date() == b.date(),
            _ => false,
        }
    }

    /// The first fire time strictly after `after`; `None` if there is none (a pattern that
    /// never matches, or no trading day within a year).
    pub fn next_after(&self, after: UnixNanos) -> Option<UnixNanos> {
        let mut from = self.zoned(after)?;
        for _ in 0..SEARCH {
            let next = self.cron.find_next_occurrence(&from, false).ok()?;
            let at = Self::nanos(&next);
            if self.wanted(at) {
                return Some(at);
            }
            // The exchange is closed all that day: go on from its end.
            let tomorrow = calendar::exchange_date(at).tomorrow().ok()?;
            from = self.zoned(UnixNanos(calendar::day_start(tomorrow).0 - 1))?;
        }
        None
    }

    /// The latest fire time in `(last_run, now]`: what a job that last ran at `last_run`
    /// has missed by `now`. Several missed times are one run.
    pub fn missed(&self, last_run: UnixNanos, now: UnixNanos) -> Option<UnixNanos> {
        let mut from = self.zoned(now)?;
        let mut inclusive = true;
        for _ in 0..SEARCH {
            let previous = self.cron.find_previous_occurrence(&from, inclusive).ok()?;
            let at = Self::nanos(&previous);
            if at <= last_run {
                return None;
            }
            if self.wanted(at) {
                return Some(at);
            }
            // The exchange is closed all that day: go on from before its start.
            from = self.zoned(calendar::day_start(calendar::exchange_date(at)))?;
            inclusive = false;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> UnixNanos {
        UnixNanos::parse(text).unwrap()
    }

    fn fires(schedule: &Schedule, from: &str, n: usize) -> Vec<UnixNanos> {
        let mut at = ts(from);
        (0..n)
            .map(|_| {
                at = schedule.next_after(at).unwrap();
                at
            })
            .collect()
    }

    #[test]
    fn the_old_pipelines_schedules_fire_when_they_did() {
        // daily_update: Tuesday to Saturday at 13:00 UTC.
        let daily = Schedule::parse("0 13 * * 2-6", "UTC", false).unwrap();
        assert_eq!(
            fires(&daily, "2026-12-05T13:00:00Z", 3),
            [
                ts("2026-12-08T13:00:00Z"),
                ts("2026-12-09T13:00:00Z"),
                ts("2026-12-10T13:00:00Z")
            ],
            "Saturday's run done, Sunday and Monday have none"
        );
        // weekly_report: Saturday at 16:00 UTC.
        let weekly = Schedule::parse("0 16 * * 6", "UTC", false).unwrap();
        assert_eq!(
            fires(&weekly, "2026-12-05T16:00:00Z", 1),
            [ts("2026-12-12T16:00:00Z")]
        );
    }

    #[test]
    fn a_time_in_new_york_follows_its_clocks_across_daylight_saving() {
        let open = Schedule::parse("30 9 * * 1-5", "America/New_York", false).unwrap();
        // The Friday before the clocks spring forward (EST), then the Monday after (EDT).
        assert_eq!(
            fires(&open, "2026-03-06T12:00:00Z", 2),
            [ts("2026-03-06T14:30:00Z"), ts("2026-03-09T13:30:00Z")]
        );
        // 02:30 does not exist on 8 March 2026 in New York: it fires after the gap, once.
        let gap = Schedule::parse("30 2 * * *", "America/New_York", false).unwrap();
        assert_eq!(
            fires(&gap, "2026-03-07T12:00:00Z", 2),
            [ts("2026-03-08T07:00:00Z"), ts("2026-03-09T06:30:00Z")]
        );
        // 01:30 happens twice on 1 November 2026: it fires once.
        let overlap = Schedule::parse("30 1 * * *", "America/New_York", false).unwrap();
        assert_eq!(
            fires(&overlap, "2026-10-31T12:00:00Z", 2),
            [ts("2026-11-01T05:30:00Z"), ts("2026-11-02T06:30:00Z")]
        );
    }

    #[test]
    fn trading_day_schedules_skip_weekends_and_holidays() {
        // After the close in New York, on trading days: Thanksgiving 2026 is skipped, the
        // early close the day after still runs.
        let after_close = Schedule::parse("30 16 * * *", "America/New_York", true).unwrap();
        assert_eq!(
            fires(&after_close, "2026-11-25T12:00:00Z", 3),
            [
                ts("2026-11-25T21:30:00Z"),
                ts("2026-11-27T21:30:00Z"),
                ts("2026-11-30T21:30:00Z")
            ]
        );
        // New Year's Day 2027 (a Friday) and the weekend.
        assert_eq!(
            fires(&after_close, "2026-12-31T12:00:00Z", 2),
            [ts("2026-12-31T21:30:00Z"), ts("2027-01-04T21:30:00Z")]
        );
    }

    #[test]
    fn runs_missed_while_down_are_one_run() {
        let daily = Schedule::parse("0 13 * * 2-6", "UTC", false).unwrap();
        // Down from Monday to Thursday afternoon: Tuesday's to Thursday's runs are one, the
        // latest.
        assert_eq!(
            daily.missed(ts("2026-12-05T13:00:00Z"), ts("2026-12-10T15:00:00Z")),
            Some(ts("2026-12-10T13:00:00Z"))
        );
        // Nothing missed: the last run was the latest fire time, or none has come since.
        assert_eq!(
            daily.missed(ts("2026-12-10T13:00:00Z"), ts("2026-12-10T15:00:00Z")),
            None
        );
        assert_eq!(
            daily.missed(ts("2026-12-05T13:00:00Z"), ts("2026-12-07T23:00:00Z")),
            None,
            "Sunday and Monday have no run"
        );
        // On trading days only, a holiday's time is not a missed run.
        let after_close = Schedule::parse("30 16 * * *", "America/New_York", true).unwrap();
        assert_eq!(
            after_close.missed(ts("2026-11-25T21:30:00Z"), ts("2026-11-26T23:00:00Z")),
            None,
            "Thanksgiving"
        );
        assert_eq!(
            after_close.missed(ts("2026-11-25T21:30:00Z"), ts("2026-11-28T12:00:00Z")),
            Some(ts("2026-11-27T21:30:00Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_the_reason() {
        let err = Schedule::parse("0 25 * * *", "UTC", false).unwrap_err();
        assert!(err.starts_with("\"0 25 * * *\": "), "{err}");
        let err = Schedule::parse("0 13 * * *", "Mars/Olympus", false).unwrap_err();
        assert!(err.contains("time zone \"Mars/Olympus\""), "{err}");
    }

    #[test]
    fn a_frequent_trading_day_schedule_crosses_a_long_weekend() {
        // Every minute, trading days only: from Wednesday night before Thanksgiving to the
        // Monday after, four closed days of 1,440 minutes each.
        let every_minute = Schedule::parse("* * * * *", "America/New_York", true).unwrap();
        assert_eq!(
            every_minute.next_after(ts("2026-11-26T04:59:30Z")),
            Some(ts("2026-11-27T05:00:00Z")),
            "Friday is a trading day (an early close)"
        );
        assert_eq!(
            every_minute.next_after(ts("2026-11-28T12:00:00Z")),
            Some(ts("2026-11-30T05:00:00Z"))
        );
        assert_eq!(
            every_minute.missed(ts("2026-11-20T00:00:00Z"), ts("2026-11-29T12:00:00Z")),
            Some(ts("2026-11-28T04:59:00Z"))
        );
        assert_eq!(
            every_minute
                .local_date(ts("2026-11-28T04:59:00Z"))
                .unwrap()
                .to_string(),
            "2026-11-27"
        );
    }
}
