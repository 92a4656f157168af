//! Messages in other shapes than tickflow's ingest format, read through a field mapping.
//!
//! A broker's topic often carries JSON some other program wrote: the old pipeline's
//! `market_ticks` (`{"timestamp": "...", "symbol": "AAPL", "price": 189.52, "direction": "UP",
//! "precentage": 0.01}`), or a vendor's own. A [`Format`] says how each message becomes
//! trades: tickflow's own format, the `market_ticks` shape, or [`Fields`] naming where each
//! of a trade's fields is, as JSON pointers (`"/p"`, `"/data/price"`), as the `rest_poll`
//! source names them. Values are copied as their JSON text into
//! an ingest line, so prices keep every digit and parsing and validation are the ingest
//! format's own; keys the mapping does not name are ignored.

use serde_json::value::RawValue;

use crate::codec::Batch;
use crate::ingest;
use tickflow_model::UnixNanos;

/// How a source reads its messages.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// tickflow's ingest format: one object, NDJSON lines or a JSON array per message.
    #[default]
    Tickflow,
    /// One trade per message, each field where [`Fields`] says.
    Fields(Fields),
}

/// Where a trade's fields are in a message: JSON pointers (RFC 6901).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fields {
    pub symbol: String,
    pub price: String,
    /// None: every trade has `size_default`.
    pub size: Option<String>,
    /// The size of a trade whose message has none (a shape that carries prices only).
    pub size_default: Option<String>,
    pub ts_event: String,
    /// How a number in `ts_event` counts: seconds, milliseconds, microseconds or nanoseconds
    /// since the epoch. A string is read as RFC 3339 whatever this says.
    pub time_unit: TimeUnit,
    pub trade_id: Option<String>,
    pub exchange: Option<String>,
}

/// The unit of a numeric timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl TimeUnit {
    pub const NAMES: &[&str] = &["s", "ms", "us", "ns"];

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "s" => Self::Seconds,
            "ms" => Self::Millis,
            "us" => Self::Micros,
            "ns" => Self::Nanos,
            _ => return None,
        })
    }

    /// Digits to append to a whole number of this unit to make nanoseconds.
    fn zeros(self) -> usize {
        match self {
            Self::Seconds => 9,
            Self::Millis => 6,
            Self::Micros => 3,
            Self::Nanos => 0,
        }
    }
}

impl Fields {
    /// The old pipeline's `market_ticks` messages: `symbol`, `price` and `timestamp` (ISO
    /// 8601 with offset); `direction` and `precentage` are derived and dropped. The shape
    /// has no size, so each message counts as one unit of volume.
    pub fn market_ticks() -> Self {
        Self {
            symbol: "/symbol".into(),
            price: "/price".into(),
            size: None,
            size_default: Some("1".into()),
            ts_event: "/timestamp".into(),
            time_unit: TimeUnit::Seconds,
            trade_id: None,
            exchange: None,
        }
    }
}

impl Format {
    /// The format a config names: `tickflow` or `market_ticks`; `fields` means a mapping
    /// the caller builds.
    pub const NAMES: &[&str] = &["tickflow", "market_ticks", "fields"];

    /// Adds the message's events to `batch`; nothing of it when any part cannot be read.
    ///
    /// # Errors
    /// What is wrong with the message, for the DLQ.
    pub fn read_into(
        &self,
        body: &str,
        source: &str,
        ts_recv: UnixNanos,
        batch: &mut Batch,
    ) -> Result<(), String> {
        match self {
            Self::Tickflow => {
                ingest::parse_body_into(body, source, ts_recv, batch).map_err(|e| e.to_string())
            }
            Self::Fields(fields) => {
                let line = fields.ingest_line(body)?;
                ingest::parse_body_into(&line, source, ts_recv, batch).map_err(|e| e.to_string())
            }
        }
    }
}

impl Fields {
    /// The message as one ingest line.
    fn ingest_line(&self, body: &str) -> Result<String, String> {
        let message: &RawValue =
            serde_json::from_str(body.trim()).map_err(|e| format!("not JSON: {e}"))?;
        let get = |path: &str| find(message, path);
        let required = |path: &str| get(path)?.ok_or_else(|| format!("no {path:?} in the message"));
        let mut line = String::with_capacity(body.len() + 64);
        line.push_str("{\"type\":\"trade\",\"symbol\":");
        line.push_str(required(&self.symbol)?.get());
        line.push_str(",\"price\":");
        line.push_str(required(&self.price)?.get());
        line.push_str(",\"size\":");
        match (&self.size, &self.size_default) {
            (Some(path), default) => match (get(path)?, default) {
                (Some(v), _) => line.push_str(v.get()),
                (None, Some(d)) => push_string(&mut line, d),
                (None, None) => return Err(format!("no {path:?} in the message")),
            },
            (None, Some(d)) => push_string(&mut line, d),
            (None, None) => return Err("the mapping names no size".into()),
        }
        line.push_str(",\"ts_event\":");
        let ts = required(&self.ts_event)?.get();
        if ts.starts_with('"') {
            line.push_str(ts);
        } else {
            line.push_str(&self.nanos(ts)?);
        }
        for (key, path) in [("trade_id", &self.trade_id), ("exchange", &self.exchange)] {
            if let Some(v) = path.as_deref().map(get).transpose()?.flatten() {
                line.push_str(",\"");
                line.push_str(key);
                line.push_str("\":");
                if key == "exchange" && !v.get().starts_with('"') {
                    push_string(&mut line, v.get());
                } else {
                    line.push_str(v.get());
                }
            }
        }
        line.push('}');
        Ok(line)
    }

    /// A numeric timestamp as whole nanoseconds, exactly: digits are shifted, not multiplied
    /// through a float.
    fn nanos(&self, number: &str) -> Result<String, String> {
        let bad = || format!("ts_event {number} is not a time in {:?}", self.time_unit);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let zeros = self.time_unit.zeros();
        if whole.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > zeros {
            return Err(format!(
                "ts_event {number}: finer than a nanosecond in {:?}",
                self.time_unit
            ));
        }
        let mut digits = whole.to_string();
        digits.push_str(fraction);
        digits.extend(std::iter::repeat_n('0', zeros - fraction.len()));
        let out = digits.trim_start_matches('0');
        Ok(if out.is_empty() {
            "0".into()
        } else {
            out.into()
        })
    }
}

fn push_string(line: &mut String, text: &str) {
    line.push_str(&serde_json::Value::from(text).to_string());
}

/// The value at the JSON pointer `path` (RFC 6901: `/data/p`, `/trades/0/price`), as its
/// JSON text; none when it is missing or null.
fn find<'a>(message: &'a RawValue, path: &str) -> Result<Option<&'a RawValue>, String> {
    let mut at = message;
    for token in path.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let text = at.get();
        let next = if text.starts_with('[') {
            let items: Vec<&'a RawValue> =
                serde_json::from_str(text).map_err(|e| format!("looking for {path:?}: {e}"))?;
            token
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i).copied())
        } else {
            let object: std::collections::HashMap<std::borrow::Cow<'a, str>, &'a RawValue> =
                serde_json::from_str(text).map_err(|_| {
                    format!("looking for {path:?}: the message is not an object there")
                })?;
            object.get(token.as_str()).copied()
        };
        match next {
            Some(v) if v.get() != "null" => at = v,
            _ => return Ok(None),
        }
    }
    Ok(Some(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Decoder;
    use tickflow_model::Event;

    fn read(format: &Format, body: &str) -> Result<Vec<Event>, String> {
        let mut batch = Batch::default();
        format.read_into(body, "k", UnixNanos(5), &mut batch)?;
        let mut decoder = Decoder::new();
        Ok(batch
            .records()
            .map(|r| decoder.decode(r).unwrap())
            .collect())
    }

    #[test]
    fn the_old_market_ticks_shape_is_a_trade_with_exact_price() {
        let format = Format::Fields(Fields::market_ticks());
        let body = r#"{"timestamp": "2025-10-14T15:30:00.123456+00:00", "symbol": "AAPL", "price": 189.520000001, "direction": "UP", "precentage": 0.0123}"#;
        let events = read(&format, body).unwrap();
        let [Event::Trade(t)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(t.symbol.as_str(), "AAPL");
        assert_eq!(t.price.to_string(), "189.520000001");
        assert_eq!(t.size.to_string(), "1");
        assert_eq!(t.ts_event, UnixNanos(1_760_455_800_123_456_000));
        assert_eq!(t.source.as_ref(), "k");
    }

    #[test]
    fn nested_fields_and_numeric_times_in_any_unit_are_read_exactly() {
        let fields = Fields {
            symbol: "/s".into(),
            price: "/data/p".into(),
            size: Some("/data/q/0".into()),
            size_default: None,
            ts_event: "/t".into(),
            time_unit: TimeUnit::Millis,
            trade_id: Some("/id".into()),
            exchange: Some("/x".into()),
        };
        let format = Format::Fields(fields.clone());
        let body = r#"{"s":"BTC-USD","t":1760455800123.5,"id":987,"x":4,"data":{"p":"64000.01","q":[0.25]}}"#;
        let events = read(&format, body).unwrap();
        let Event::Trade(t) = &events[0] else {
            panic!()
        };
        assert_eq!(t.ts_event, UnixNanos(1_760_455_800_123_500_000));
        assert_eq!(t.price.to_string(), "64000.01");
        assert_eq!(t.size.to_string(), "0.25");
        assert_eq!(t.trade_id.as_deref(), Some("987"));
        assert_eq!(t.exchange.as_deref(), Some("4"));
        for (unit, text, nanos) in [
            (
                TimeUnit::Seconds,
                "1760455800",
                1_760_455_800_000_000_000_i64,
            ),
            (
                TimeUnit::Micros,
                "1760455800123456",
                1_760_455_800_123_456_000,
            ),
            (
                TimeUnit::Nanos,
                "1760455800123456789",
                1_760_455_800_123_456_789,
            ),
            (TimeUnit::Seconds, "0.05", 50_000_000),
        ] {
            let f = Fields {
                time_unit: unit,
                ..fields.clone()
            };
            assert_eq!(f.nanos(text).unwrap(), nanos.to_string());
        }
    }

    #[test]
    fn a_message_the_mapping_cannot_read_says_what_is_missing_and_adds_nothing() {
        let format = Format::Fields(Fields::market_ticks());
        let mut batch = Batch::default();
        for (body, said) in [
            (
                r#"{"symbol":"A","timestamp":"2025-10-14T15:30:00Z"}"#,
                "no \"/price\"",
            ),
            ("\"text\"", "not an object"),
            ("{", "not JSON"),
            (
                r#"{"symbol":"A","price":1,"timestamp":1.0000000001}"#,
                "finer than a nanosecond",
            ),
            (
                r#"{"symbol":"A","price":1,"timestamp":-5}"#,
                "is not a time",
            ),
            (
                r#"{"symbol":"A","price":"x","timestamp":"2025-10-14T15:30:00Z"}"#,
                "price",
            ),
        ] {
            let e = format
                .read_into(body, "k", UnixNanos(5), &mut batch)
                .unwrap_err();
            assert!(e.contains(said), "{body}: {e}");
        }
        assert!(batch.is_empty());
    }

    #[test]
    fn the_ingest_format_is_the_default() {
        let body = r#"{"type":"trade","symbol":"A","ts_event":1,"price":"2","size":"3"}"#;
        assert_eq!(read(&Format::default(), body).unwrap().len(), 1);
    }
}
