use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest id kept inline; longer ids go to the heap.
const INLINE: usize = 22;

/// A venue's trade id. Ids are short (exchange sequence numbers, UUIDs at most), and one is
/// made for every trade, so up to 22 bytes live inline instead of in an allocation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TradeId(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// The bytes after `len` are always zero, so derived equality compares the text.
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Heap(Box<str>),
}

impl TradeId {
    /// The id's text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Built from a `&str` cut at its end: always UTF-8.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }
}

impl From<&str> for TradeId {
    fn from(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Self(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Self(Repr::Heap(s.into()))
        }
    }
}

impl From<String> for TradeId {
    fn from(s: String) -> Self {
        if s.len() <= INLINE {
            Self::from(s.as_str())
        } else {
            Self(Repr::Heap(s.into_boxed_str()))
        }
    }
}

impl Deref for TradeId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for TradeId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for TradeId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for TradeId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for TradeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TradeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for TradeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TradeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_inline_long_ones_on_the_heap_same_text() {
        let long = "x".repeat(INLINE + 1);
        for text in ["", "71", "é-ü", &"y".repeat(INLINE), &long] {
            let id = TradeId::from(text);
            assert_eq!(id.as_str(), text);
            assert_eq!(id, TradeId::from(text.to_string()));
            assert_eq!(format!("{id}"), text);
        }
        assert!(matches!(TradeId::from("71").0, Repr::Inline { .. }));
        assert!(matches!(TradeId::from(long.as_str()).0, Repr::Heap(_)));
        assert_ne!(TradeId::from("71"), TradeId::from("710"));
        assert_eq!(std::mem::size_of::<Option<TradeId>>(), 24);
    }
}
