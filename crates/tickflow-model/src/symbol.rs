use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// A normalized instrument symbol: upper case, with `-` between the legs of a pair
/// (`BTC-USD`, never `BTC/USD`). Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Symbol(Arc<str>);

impl Symbol {
    /// Longest symbol accepted; options symbols (OCC) are 21 characters.
    pub const MAX_LEN: usize = 32;

    /// Normalizes a venue's symbol: trims, upper-cases, and turns `/` or `_` pair separators into `-`.
    ///
    /// # Errors
    /// Empty, too long, or characters other than letters, digits, `.`, `-`, `/`, `_`, `:`.
    pub fn parse(raw: &str) -> Result<Self> {
        Self::normalize(raw).map(|s| Self(Arc::from(s.as_ref())))
    }

    /// The normalized text of `raw`, as [`Symbol::parse`] would hold it, borrowed when `raw`
    /// is already normalized: hot paths that only copy the text need no allocation.
    ///
    /// # Errors
    /// As [`Symbol::parse`].
    pub fn normalize(raw: &str) -> Result<Cow<'_, str>> {
        let err = |reason| Error::Symbol {
            value: raw.to_string(),
            reason,
        };
        let s = raw.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(err("longer than 32 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'/' | b'_' | b':'))
        {
            return Err(err("only letters, digits and . - / _ : are allowed"));
        }
        if s.bytes().all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b':')
        }) {
            return Ok(Cow::Borrowed(s));
        }
        Ok(Cow::Owned(
            s.chars()
                .map(|c| {
                    if matches!(c, '/' | '_') {
                        '-'
                    } else {
                        c.to_ascii_uppercase()
                    }
                })
                .collect(),
        ))
    }

    /// The normalized text.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it names a pair (`BTC-USD`): a crypto or currency pair, traded around the
    /// clock, whose days are UTC's; a listed instrument's are its exchange's.
    pub fn is_pair(&self) -> bool {
        self.0.contains('-')
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbol({})", self.0)
    }
}

impl Serialize for Symbol {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Symbol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Symbol::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_pairs() {
        assert_eq!(Symbol::parse("btc/usd").unwrap().as_str(), "BTC-USD");
        assert_eq!(Symbol::parse(" NVDA ").unwrap().as_str(), "NVDA");
        assert_eq!(Symbol::parse("BRK.B").unwrap().as_str(), "BRK.B");
        assert!(Symbol::parse("").is_err());
        assert!(Symbol::parse("A B").is_err());
        assert!(Symbol::parse(&"X".repeat(33)).is_err());
    }

    #[test]
    fn normalize_borrows_only_what_is_already_normal() {
        assert!(matches!(
            Symbol::normalize("BTC-USD"),
            Ok(Cow::Borrowed("BTC-USD"))
        ));
        assert!(matches!(
            Symbol::normalize(" NVDA "),
            Ok(Cow::Borrowed("NVDA"))
        ));
        assert_eq!(Symbol::normalize("eth_usd").unwrap(), "ETH-USD");
        assert!(Symbol::normalize("A B").is_err());
    }
}
