//! Exact fixed-point numbers.
//!
//! Every raw value is scaled by [`FIXED_SCALE`] (10^9) whatever the display precision, so
//! arithmetic is plain integer arithmetic and precision only matters for display. Values are
//! parsed from their decimal text; building them as `f64 * scale` is how older catalogs picked
//! up float errors (0.1 + 0.2 and friends), so there is deliberately no `From<f64>`.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, short_u64};

/// Scale of every raw value: 9 decimal places.
pub const FIXED_SCALE: i64 = 1_000_000_000;
/// The most fractional digits a value may carry.
pub const MAX_PRECISION: u8 = 9;

/// A decimal parsed into raw units of 10^-9, plus the number of fractional digits it was written with.
fn parse_decimal(text: &str) -> Result<(i128, u8)> {
    match parse_plain_decimal(text.as_bytes()) {
        Some(parsed) => Ok(parsed),
        None => parse_general_decimal(text),
    }
}

/// The common shape, `[-+]digits[.digits]` with at most 9 fractional and 20 integer digits,
/// without allocating; `None` sends anything else (exponents, spaces, errors) to
/// [`parse_general_decimal`], which gives the same value for this shape.
fn parse_plain_decimal(b: &[u8]) -> Option<(i128, u8)> {
    let (negative, b) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let dot = b.iter().position(|&c| c == b'.').unwrap_or(b.len());
    let (int_part, frac_part) = (&b[..dot], b.get(dot + 1..).unwrap_or_default());
    if (int_part.is_empty() && frac_part.is_empty())
        || int_part.len() > 20
        || frac_part.len() > usize::from(MAX_PRECISION)
    {
        return None;
    }
    // Up to 19 digits fit u64, which is cheaper to accumulate in than u128.
    let digits = |part: &[u8]| {
        if part.is_empty() {
            Some(0)
        } else {
            short_u64(part)
        }
    };
    let int = match int_part.split_at_checked(int_part.len().saturating_sub(19)) {
        Some((high, low)) if !high.is_empty() => {
            u128::from(digits(high)?) * 10u128.pow(19) + u128::from(digits(low)?)
        }
        _ => u128::from(digits(int_part)?),
    };
    let frac = digits(frac_part)?;
    let frac_scale = 10u64.pow(u32::from(MAX_PRECISION) - frac_part.len() as u32);
    // At most 10^20 * 10^9: far inside i128; frac * frac_scale is below 10^9.
    let raw = (int * FIXED_SCALE as u128 + u128::from(frac * frac_scale)) as i128;
    Some((if negative { -raw } else { raw }, frac_part.len() as u8))
}

/// Every accepted form: exponents, surrounding spaces, trailing fractional zeros past 9 digits.
fn parse_general_decimal(text: &str) -> Result<(i128, u8)> {
    let err = |reason| Error::Decimal {
        value: text.to_string(),
        reason,
    };
    let s = text.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => {
            let exp: i32 = s[i + 1..].parse().map_err(|_| err("bad exponent"))?;
            (&s[..i], exp)
        }
        None => (s, 0),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(err("no digits"));
    }
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(err("not a decimal number"));
    }
    if exponent.abs() > 40 {
        return Err(err("exponent out of range"));
    }
    // digits * 10^(exponent - frac_len) in units of 10^-9.
    let digits = int_part.trim_start_matches('0').to_string() + frac_part;
    let digits = digits.trim_start_matches('0');
    let mut shift = 9 + exponent - frac_part.len() as i32;
    let mut significant = digits;
    while shift < 0 {
        match significant.strip_suffix('0') {
            Some(rest) => significant = rest,
            None if significant.is_empty() => break,
            None => return Err(err("more than 9 decimal places")),
        }
        shift += 1;
    }
    if significant.len() as i32 + shift.max(0) > 38 {
        return Err(err("too large"));
    }
    let mut raw: i128 = if significant.is_empty() {
        0
    } else {
        significant.parse().map_err(|_| err("too large"))?
    };
    for _ in 0..shift.max(0) {
        raw = raw.checked_mul(10).ok_or_else(|| err("too large"))?;
    }
    let precision = (frac_part.len() as i32 - exponent).clamp(0, MAX_PRECISION as i32) as u8;
    Ok((if negative { -raw } else { raw }, precision))
}

fn write_fixed(f: &mut fmt::Formatter<'_>, raw: i128, precision: u8) -> fmt::Result {
    let scale = FIXED_SCALE as i128;
    let sign = if raw < 0 { "-" } else { "" };
    let abs = raw.unsigned_abs();
    let int = abs / scale as u128;
    if precision == 0 {
        return write!(f, "{sign}{int}");
    }
    let frac = abs % scale as u128;
    let frac = frac / 10u128.pow(u32::from(MAX_PRECISION - precision));
    write!(
        f,
        "{sign}{int}.{frac:0width$}",
        width = usize::from(precision)
    )
}

macro_rules! fixed_common {
    ($ty:ident, $raw:ty) => {
        impl $ty {
            /// The raw value in units of 10^-9.
            #[inline]
            pub const fn raw(self) -> $raw {
                self.raw
            }
            /// Digits shown after the decimal point.
            #[inline]
            pub const fn precision(self) -> u8 {
                self.precision
            }
            /// The same value shown with another number of digits (capped at 9).
            pub fn with_precision(self, precision: u8) -> Self {
                Self {
                    raw: self.raw,
                    precision: precision.min(MAX_PRECISION),
                }
            }
            /// The same value shown with the fewest digits that show it exactly (`181.25`,
            /// `100`): what stores that keep the value but not its precision read back, and
            /// how sinks write decimals so the same row always reads the same.
            pub fn normalized(self) -> Self {
                let mut precision = MAX_PRECISION;
                let mut raw = self.raw;
                while precision > 0 && raw % 10 == 0 {
                    raw /= 10;
                    precision -= 1;
                }
                Self {
                    raw: self.raw,
                    precision,
                }
            }
            /// A lossy view for statistics (volatility, z-scores), never for storage.
            pub fn as_f64(self) -> f64 {
                self.raw as f64 / FIXED_SCALE as f64
            }
        }
        impl PartialEq for $ty {
            #[inline]
            fn eq(&self, other: &Self) -> bool {
                self.raw == other.raw
            }
        }
        impl Eq for $ty {}
        impl PartialOrd for $ty {
            #[inline]
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for $ty {
            #[inline]
            fn cmp(&self, other: &Self) -> Ordering {
                self.raw.cmp(&other.raw)
            }
        }
        impl std::hash::Hash for $ty {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.raw.hash(state)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_fixed(f, self.raw as i128, self.precision)
            }
        }
        impl std::str::FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::parse(s)
            }
        }
    };
}

/// An exact price. Negative values are representable so that validation, not parsing, decides
/// what a bad tick is and sends it to the DLQ with its reason.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Price {
    raw: i64,
    precision: u8,
}
fixed_common!(Price, i64);

impl Price {
    /// Builds a price from raw units of 10^-9.
    #[inline]
    pub fn from_raw(raw: i64, precision: u8) -> Self {
        Self {
            raw,
            precision: precision.min(MAX_PRECISION),
        }
    }

    /// Parses decimal text such as `181.25`, `-3`, `1.5e2`.
    ///
    /// # Errors
    /// Text that is not a decimal, has more than 9 significant fractional digits, or does not fit.
    pub fn parse(text: &str) -> Result<Self> {
        let (raw, precision) = parse_decimal(text)?;
        let raw = i64::try_from(raw).map_err(|_| Error::Decimal {
            value: text.to_string(),
            reason: "too large",
        })?;
        Ok(Self { raw, precision })
    }

    /// Rounds an exact rational `num / den` (both in the same units) to a price, half away
    /// from zero. Used for averages (VWAP, rolling close) so they stay exact to 10^-9.
    pub fn from_ratio(num: i128, den: i128, precision: u8) -> Option<Self> {
        if den == 0 {
            return None;
        }
        let q = num / den;
        let r = num % den;
        let q = if 2 * r.abs() >= den.abs() {
            q + (num.signum() * den.signum())
        } else {
            q
        };
        i64::try_from(q)
            .ok()
            .map(|raw| Self::from_raw(raw, precision))
    }
}

/// An exact, non-negative size.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Qty {
    raw: u64,
    precision: u8,
}
fixed_common!(Qty, u64);

impl Qty {
    /// Builds a size from raw units of 10^-9.
    #[inline]
    pub fn from_raw(raw: u64, precision: u8) -> Self {
        Self {
            raw,
            precision: precision.min(MAX_PRECISION),
        }
    }

    /// Parses decimal text such as `100` or `0.0025`.
    ///
    /// # Errors
    /// Negative or malformed text, or a value that does not fit.
    pub fn parse(text: &str) -> Result<Self> {
        let (raw, precision) = parse_decimal(text)?;
        if raw < 0 {
            return Err(Error::Decimal {
                value: text.to_string(),
                reason: "size must not be negative",
            });
        }
        let raw = u64::try_from(raw).map_err(|_| Error::Decimal {
            value: text.to_string(),
            reason: "too large",
        })?;
        Ok(Self { raw, precision })
    }

    /// Whether the size is zero.
    pub fn is_zero(self) -> bool {
        self.raw == 0
    }
}

/// A sum of sizes (bar and daily volume); wide enough that a day of heavy trading cannot overflow.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Volume {
    raw: i128,
    precision: u8,
}
fixed_common!(Volume, i128);

impl Volume {
    /// Builds a volume from raw units of 10^-9.
    #[inline]
    pub fn from_raw(raw: i128, precision: u8) -> Self {
        Self {
            raw,
            precision: precision.min(MAX_PRECISION),
        }
    }

    /// Parses decimal text.
    ///
    /// # Errors
    /// Malformed text.
    pub fn parse(text: &str) -> Result<Self> {
        let (raw, precision) = parse_decimal(text)?;
        Ok(Self { raw, precision })
    }

    /// Adds a size, keeping the wider display precision.
    #[inline]
    pub fn add(&mut self, qty: Qty) {
        self.raw += i128::from(qty.raw());
        self.precision = self.precision.max(qty.precision());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_exactly() {
        let p = Price::parse("181.25").unwrap();
        assert_eq!(p.raw(), 181_250_000_000);
        assert_eq!(p.precision(), 2);
        assert_eq!(p.to_string(), "181.25");
        assert_eq!(
            Price::parse("0.1").unwrap().raw() + Price::parse("0.2").unwrap().raw(),
            Price::parse("0.3").unwrap().raw()
        );
        assert_eq!(Price::parse("-3").unwrap().to_string(), "-3");
        assert_eq!(Price::parse("1.5e2").unwrap(), Price::parse("150").unwrap());
        assert_eq!(Price::parse("1.5e2").unwrap().precision(), 0);
        assert_eq!(Price::parse("12345E-4").unwrap().to_string(), "1.2345");
        assert_eq!(Price::parse(".5").unwrap().raw(), 500_000_000);
        assert_eq!(Price::parse("0.000000001").unwrap().raw(), 1);
        assert_eq!(
            Price::parse("1.1000000000000").unwrap().raw(),
            1_100_000_000
        );
        assert_eq!(Qty::parse("0.0025").unwrap().raw(), 2_500_000);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "-",
            ".",
            "abc",
            "1.2.3",
            "1,5",
            "0.0000000001",
            "1e999",
            "99999999999999999999",
            "NaN",
            "inf",
            "1e",
        ] {
            assert!(Price::parse(bad).is_err(), "{bad:?} should fail");
        }
        assert!(Qty::parse("-1").is_err());
    }

    #[test]
    fn ratio_rounds_half_away_from_zero() {
        assert_eq!(Price::from_ratio(5, 2, 9).unwrap().raw(), 3);
        assert_eq!(Price::from_ratio(-5, 2, 9).unwrap().raw(), -3);
        assert_eq!(Price::from_ratio(4, 3, 9).unwrap().raw(), 1);
        assert!(Price::from_ratio(1, 0, 9).is_none());
    }

    proptest! {
        #[test]
        fn display_round_trips(raw in -999_999_999_999_999_999i64..999_999_999_999_999_999i64) {
            let p = Price::from_raw(raw, 9);
            prop_assert_eq!(Price::parse(&p.to_string()).unwrap(), p);
        }

        #[test]
        fn plain_fast_path_agrees_with_the_general_parser(text in "[-+]?[0-9]{0,21}(\\.[0-9]{0,10})?") {
            if let Some(fast) = parse_plain_decimal(text.as_bytes()) {
                prop_assert_eq!(fast, parse_general_decimal(&text).unwrap());
            } else {
                // Only shapes the fast path does not cover fall through to the general parser.
                let digits = text.trim_start_matches(['-', '+']);
                let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
                prop_assert!(int.len() > 20 || frac.len() > 9 || (int.is_empty() && frac.is_empty()));
            }
        }

        #[test]
        fn parse_matches_integer_arithmetic(int in 0u32..1_000_000, frac in 0u32..1_000_000) {
            let p = Price::parse(&format!("{int}.{frac:06}")).unwrap();
            prop_assert_eq!(p.raw(), i64::from(int) * FIXED_SCALE + i64::from(frac) * 1000);
            prop_assert_eq!(p.precision(), 6);
        }
    }
}
