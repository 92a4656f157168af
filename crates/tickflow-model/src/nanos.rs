//! UTC timestamps in nanoseconds.
//!
//! # Limitations
//! An `i64` of nanoseconds covers 1677-09-21 to 2262-04-11; anything outside fails to parse.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::date::{civil_from_days, days_from_civil, days_in_month};
use crate::{Date, Error, Result, short_u64};

const NANOS_PER_SEC: i64 = 1_000_000_000;
const NANOS_PER_DAY: i64 = 86_400 * NANOS_PER_SEC;

/// Nanoseconds since the Unix epoch, UTC.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct UnixNanos(pub i64);

impl UnixNanos {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_i64(self) -> i64 {
        self.0
    }

    /// The UTC date this instant falls on.
    pub fn date(self) -> Date {
        Date(self.0.div_euclid(NANOS_PER_DAY) as i32)
    }

    /// Midnight UTC starting `date`.
    pub fn from_date(date: Date) -> Self {
        Self(i64::from(date.0) * NANOS_PER_DAY)
    }

    /// Parses integer nanoseconds or RFC 3339 (`2026-11-22T14:30:00.123Z`, `...+01:00`).
    ///
    /// # Errors
    /// Text in neither form, or outside the representable range.
    pub fn parse(text: &str) -> Result<Self> {
        // The common case, in one pass.
        if let Some(ns) = short_u64(text.as_bytes()).and_then(|v| i64::try_from(v).ok()) {
            return Ok(Self(ns));
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            return text.parse().map(Self).map_err(|_| Error::Timestamp {
                value: text.to_string(),
                reason: "not an integer of nanoseconds",
            });
        }
        Self::parse_rfc3339(text)
    }

    fn parse_rfc3339(text: &str) -> Result<Self> {
        let err = |reason| Error::Timestamp {
            value: text.to_string(),
            reason,
        };
        let b = text.as_bytes();
        if !text.is_ascii() {
            return Err(err("not ASCII"));
        }
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(err("expected RFC 3339, e.g. 2026-11-22T14:30:00Z"));
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64> {
            let s = &text[r];
            if s.bytes().all(|c| c.is_ascii_digit()) {
                s.parse().map_err(|_| err("bad number"))
            } else {
                Err(err("bad number"))
            }
        };
        let (year, month, day) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return Err(err("no such date"));
        }
        if hour > 23 || minute > 59 || second > 60 {
            return Err(err("no such time"));
        }
        let mut i = 19;
        let mut frac: i64 = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 9 {
                    frac = frac * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            let n = i - start;
            if n == 0 {
                return Err(err("empty fraction"));
            }
            for _ in n..9 {
                frac *= 10;
            }
        }
        let offset_secs = match &text[i..] {
            "Z" | "z" => 0,
            tz if tz.len() == 6
                && (tz.starts_with('+') || tz.starts_with('-'))
                && tz.as_bytes()[3] == b':' =>
            {
                let h = num(i + 1..i + 3)?;
                let m = num(i + 4..i + 6)?;
                let s = (h * 60 + m) * 60;
                if tz.starts_with('-') { -s } else { s }
            }
            _ => return Err(err("missing or bad time zone (use Z or +HH:MM)")),
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
        secs.checked_mul(NANOS_PER_SEC)
            .and_then(|n| n.checked_add(frac))
            .map(Self)
            .ok_or_else(|| err("out of range"))
    }
}

impl fmt::Display for UnixNanos {
    /// RFC 3339 with nanoseconds, always UTC.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(NANOS_PER_DAY);
        let rem = self.0.rem_euclid(NANOS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let secs = rem / NANOS_PER_SEC;
        let nanos = rem % NANOS_PER_SEC;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let t = UnixNanos::parse("2026-11-22T14:30:00.123Z").unwrap();
        assert_eq!(
            t.0,
            (days_from_civil(2026, 11, 22) * 86_400 + 14 * 3600 + 30 * 60) * NANOS_PER_SEC
                + 123_000_000
        );
        assert_eq!(
            UnixNanos::parse("2026-11-22T15:30:00.123+01:00").unwrap(),
            t
        );
        assert_eq!(UnixNanos::parse(&t.0.to_string()).unwrap(), t);
        assert_eq!(t.to_string(), "2026-11-22T14:30:00.123000000Z");
        assert_eq!(UnixNanos::parse(&t.to_string()).unwrap(), t);
        assert_eq!(t.date().to_string(), "2026-11-22");
        for bad in [
            "",
            "yesterday",
            "2026-11-22",
            "2026-11-22T14:30:00",
            "2026-02-30T00:00:00Z",
            "2026-11-22T25:00:00Z",
            "99999999999999999999",
            "2026-11-22T14:30:00.Z",
            "2026-11-22T14:30:0éZ",
        ] {
            assert!(UnixNanos::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// The one-pass integer path reads what `str::parse` reads, and refuses what it refuses.
        #[test]
        fn integers_read_as_std_reads_them(text in "-?[0-9]{1,20}") {
            proptest::prop_assert_eq!(UnixNanos::parse(&text).ok().map(|t| t.0), text.parse::<i64>().ok());
        }
    }
}
