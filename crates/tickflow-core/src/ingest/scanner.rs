//! A reader for the common shape of an ingest object, a flat JSON object of strings and
//! numbers, that borrows every field from the line and allocates nothing.
//!
//! It accepts a strict subset of what serde accepts, and reads it the same way: anything it
//! does not cover (escapes, `null`, nested values other than `attrs`, unknown or repeated
//! keys, a syntax error) makes it answer `None`, and the caller asks serde, whose result and
//! error message are then the only ones. A property test holds the two to that.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::Fields;

/// The fields of `text` if it has the common shape, `None` to leave it to serde.
#[cfg(test)]
pub(super) fn scan(text: &str) -> Option<Fields<'_>> {
    let mut fields = Fields::empty();
    scan_into(text, &mut fields).then_some(fields)
}

/// Reads `text` into `f` if it has the common shape; false leaves it to serde, and `f` to be
/// overwritten. Filling the caller's `Fields` in place, rather than returning one, spares
/// moving its 400-odd bytes for every tick.
pub(super) fn scan_into<'a>(text: &'a str, f: &mut Fields<'a>) -> bool {
    scan_fields(text, f).is_some()
}

fn scan_fields<'a>(text: &'a str, f: &mut Fields<'a>) -> Option<()> {
    let mut s = Scanner {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    *f = Fields::empty();
    // One bit per key: a repeated key is serde's to report.
    let mut seen = 0u16;
    s.space();
    s.eat(b'{')?;
    s.space();
    loop {
        let key = s.string()?;
        s.space();
        s.eat(b':')?;
        s.space();
        let bit = match key {
            "type" => {
                f.kind = Cow::Borrowed(s.string()?);
                0
            }
            "symbol" => {
                f.symbol = Cow::Borrowed(s.string()?);
                1
            }
            "ts_event" => {
                f.ts_event = Ok(s.scalar()?);
                2
            }
            "price" => {
                f.price = Some(Ok(s.scalar()?));
                3
            }
            "size" => {
                f.size = Some(Ok(s.scalar()?));
                4
            }
            "bid" => {
                f.bid = Some(Ok(s.scalar()?));
                5
            }
            "bid_size" => {
                f.bid_size = Some(Ok(s.scalar()?));
                6
            }
            "ask" => {
                f.ask = Some(Ok(s.scalar()?));
                7
            }
            "ask_size" => {
                f.ask_size = Some(Ok(s.scalar()?));
                8
            }
            "trade_id" => {
                f.trade_id = Some(Ok(s.scalar()?));
                9
            }
            "exchange" => {
                f.exchange = Some(Cow::Borrowed(s.string()?));
                10
            }
            "source" => {
                f.source = Some(Cow::Borrowed(s.string()?));
                11
            }
            "feed" => {
                f.feed = Some(Cow::Borrowed(s.string()?));
                12
            }
            "seq" => {
                f.seq = Some(s.unsigned()?);
                13
            }
            "attrs" => {
                s.skip_value()?;
                14
            }
            _ => return None,
        };
        if seen & (1 << bit) != 0 {
            return None;
        }
        seen |= 1 << bit;
        s.space();
        match s.next()? {
            b',' => s.space(),
            b'}' => break,
            _ => return None,
        }
    }
    s.space();
    // Trailing text, or a required key missing: serde says which.
    let required = 0b111;
    (s.at == s.bytes.len() && seen & required == required).then_some(())
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn next(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, expected: u8) -> Option<()> {
        (self.next()? == expected).then_some(())
    }

    /// A string without escapes or control characters, borrowed without its quotes.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            match self.next()? {
                b'"' => return Some(&self.text[start..self.at - 1]),
                b'\\' | 0..=0x1f => return None,
                _ => {}
            }
        }
    }

    /// A number by JSON's grammar (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`), as text.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'-' | b'+') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(&self.text[start..self.at])
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    /// A string's contents or a number's text, as the format reads prices and ids.
    fn scalar(&mut self) -> Option<Cow<'a, str>> {
        match self.peek()? {
            b'"' => self.string().map(Cow::Borrowed),
            _ => self.number().map(Cow::Borrowed),
        }
    }

    /// An integer that fits `u64`, as serde reads `seq`.
    fn unsigned(&mut self) -> Option<u64> {
        let text = self.number()?;
        if text.len() <= 19 {
            // One pass instead of a check and a parse.
            return tickflow_model::short_u64(text.as_bytes());
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse().ok()
        } else {
            None
        }
    }

    /// Any JSON value (`attrs` is free-form), measured by serde.
    fn skip_value(&mut self) -> Option<()> {
        let rest = &self.text[self.at..];
        let mut de = serde_json::Deserializer::from_str(rest);
        let raw = <&RawValue>::deserialize(&mut de).ok()?;
        let value = raw.get();
        self.at += value.as_ptr() as usize - rest.as_ptr() as usize + value.len();
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    use super::*;

    const TRADE: &str = r#"{"type":"trade","symbol":"NVDA","ts_event":1763800000123456789,"price":"181.25","size":"100","trade_id":"71","seq":71}"#;

    #[test]
    fn reads_the_common_shapes_itself() {
        for line in [
            TRADE,
            r#" { "type" : "quote", "symbol":"nvda", "ts_event":"2026-11-22T14:30:00.123Z", "bid":"181.20", "bid_size":3, "ask":181.30, "ask_size":5e0 } "#,
            r#"{"type":"trade","symbol":"A","ts_event":-1,"price":"1","size":"2","exchange":"V","source":"s","feed":"f","attrs":{"pad":["x",{"y":null}]}}"#,
        ] {
            let fields = scan(line).unwrap_or_else(|| panic!("scanner gave up on {line}"));
            assert_eq!(
                Ok(&fields),
                super::super::Fields::read_with_serde(line).as_ref()
            );
        }
        let f = scan(TRADE).unwrap();
        assert_eq!(f.price, Some(Ok(Cow::Borrowed("181.25"))));
        assert_eq!(f.seq, Some(71));
    }

    #[test]
    fn leaves_everything_else_to_serde() {
        for line in [
            r#"{"type":"trade","symbol":"N\u0056DA","ts_event":1,"price":"1","size":"1"}"#,
            r#"{"type":"trade","symbol":"A","ts_event":1,"price":null,"size":"1"}"#,
            r#"{"type":"trade","symbol":"A","ts_event":1,"price":"1","price":"2","size":"1"}"#,
            r#"{"type":"trade","symbol":"A","ts_event":1,"prcie":"1","size":"1"}"#,
            r#"{"type":"trade","symbol":"A","price":"1","size":"1"}"#,
            r#"{"type":"trade","symbol":"A","ts_event":01,"price":"1","size":"1"}"#,
            r#"{"type":"trade","symbol":"A","ts_event":1,"price":"1","size":"1","seq":1.0}"#,
            r#"{"type":"trade","symbol":"A","ts_event":1,"price":"1","size":"1","seq":-1}"#,
            r#"{"type":"trade","symbol":"A","ts_event":1,"price":"1","size":"1"} x"#,
            r#"{"type":"trade","symbol":"A","ts_event":1,"price":"1","size":"1",}"#,
            r#"{"type":"trade","symbol":"A","ts_event":1.,"price":"1","size":"1"}"#,
            "{}",
            "",
        ] {
            assert!(scan(line).is_none(), "scanner should leave {line} to serde");
        }
    }

    fn plain_string() -> impl Strategy<Value = String> {
        "\"[A-Za-z0-9 ./:_-]{0,6}\""
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => plain_string(),
            // Escapes, and quotes or backslashes that break the string.
            1 => "\"[a-z\\\\\"]{0,4}\"",
            1 => "\"[a-z\\x01\\té]{0,3}\"",
            // Numbers, some not JSON: 01, 1., -, 1e, +1.
            4 => "[-+]?0?[0-9]{0,3}(\\.[0-9]{0,2})?([eE][-+]?[0-9]{0,2})?",
            1 => "[0-9]{19,21}",
            1 => proptest::sample::select(vec!["null", "true", "{}", "[1,{\"a\":null}]", "{\"a\":"])
                .prop_map(String::from),
        ]
    }

    fn key() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(vec![
            "type", "symbol", "ts_event", "price", "size", "bid", "bid_size", "ask", "ask_size",
            "trade_id", "exchange", "source", "feed", "seq", "attrs", "prcie", "_attrs", "Type",
        ])
    }

    fn space() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(vec!["", "", "", " ", "\t", "\r\n", "x"])
    }

    /// An object with the three required keys first, then any others, each value any shape.
    fn object() -> impl Strategy<Value = String> {
        let entry = (space(), key(), space(), value(), space());
        (
            (plain_string(), plain_string(), value()),
            proptest::collection::vec(entry, 0..6),
            proptest::sample::select(vec![",", ",", ",", " , ", ";", ",,"]),
            proptest::sample::select(vec!["", "", " ", "\n", ",", "}", "x"]),
        )
            .prop_map(|(required, entries, comma, trailer)| {
                let (kind, symbol, ts_event) = required;
                let mut parts = vec![
                    format!("\"type\":{kind}"),
                    format!("\"symbol\":{symbol}"),
                    format!("\"ts_event\":{ts_event}"),
                ];
                parts.extend(
                    entries
                        .into_iter()
                        .map(|(a, k, b, v, c)| format!("{a}\"{k}\"{b}:{v}{c}")),
                );
                format!("{{{}}}{trailer}", parts.join(comma))
            })
    }

    /// The property below only means something if many generated objects get past the scanner.
    #[test]
    fn generated_objects_often_reach_the_scanner() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let read = (0..1000)
            .filter(|_| {
                let line = object().new_tree(&mut runner).unwrap().current();
                scan(&line).is_some()
            })
            .count();
        assert!(
            read > 20,
            "only {read} of 1000 generated objects were scanned"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// Whatever the scanner reads, serde reads identically.
        #[test]
        fn agrees_with_serde_on_whatever_it_reads(line in object()) {
            if let Some(fields) = scan(&line) {
                prop_assert_eq!(Ok(fields), super::super::Fields::read_with_serde(&line), "{}", line);
            }
        }
    }
}
