//! Reading one quote answer, without I/O: Alpha Vantage's `GLOBAL_QUOTE` built in, any other
//! JSON by JSON pointers (RFC 6901) to its price, open, high, low, volume and time. Numbers
//! are read from their text, never through `f64`.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;
use tickflow_model::{Bar, BarInterval, FedBar, Price, Symbol, UnixNanos, Volume};

use crate::wire::text;

/// Where the fields are in an answer: JSON pointers; only `price` is required.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fields {
    pub price: String,
    pub open: Option<String>,
    pub high: Option<String>,
    pub low: Option<String>,
    pub volume: Option<String>,
    /// Unix seconds, milliseconds or nanoseconds, or RFC 3339; without it, the poll time.
    pub time: Option<String>,
}

/// The answer's shape.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// `{"Global Quote": {"05. price": "169.4500", …}}`, every value a string; throttling and
    /// errors come back as 200 with `Note`, `Information` or `Error Message`.
    AlphaVantage,
    Custom(Fields),
}

impl Shape {
    fn fields(&self) -> Fields {
        match self {
            Self::AlphaVantage => Fields {
                price: "/Global Quote/05. price".into(),
                open: Some("/Global Quote/02. open".into()),
                high: Some("/Global Quote/03. high".into()),
                low: Some("/Global Quote/04. low".into()),
                volume: Some("/Global Quote/06. volume".into()),
                time: None,
            },
            Self::Custom(f) => f.clone(),
        }
    }
}

/// Why an answer holds no quote.
#[derive(Debug, PartialEq)]
pub enum NoQuote {
    /// The vendor asks to slow down (Alpha Vantage's `Note` or `Information`): try later.
    Throttled(String),
    /// The answer cannot be read, or names no quote: for the DLQ.
    Unreadable(String),
}

/// The value at `pointer` (RFC 6901: `/a/0/b`, `~1` for `/`, `~0` for `~`), borrowed.
pub fn pointer<'a>(json: &'a str, pointer: &str) -> Result<&'a RawValue, String> {
    let mut here: &RawValue = serde_json::from_str(json).map_err(|e| e.to_string())?;
    if pointer.is_empty() {
        return Ok(here);
    }
    let Some(path) = pointer.strip_prefix('/') else {
        return Err(format!(
            "{pointer:?} is not a JSON pointer: it starts with /"
        ));
    };
    for token in path.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        let text = here.get();
        here = if text.starts_with('{') {
            let object: HashMap<String, &RawValue> =
                serde_json::from_str(text).map_err(|e| e.to_string())?;
            *object
                .get(&token)
                .ok_or_else(|| format!("no {token:?} at {pointer:?}"))?
        } else if text.starts_with('[') {
            let array: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
            let i: usize = token
                .parse()
                .map_err(|_| format!("{token:?} is not an index, at {pointer:?}"))?;
            *array
                .get(i)
                .ok_or_else(|| format!("no item {i} at {pointer:?}"))?
        } else {
            return Err(format!("nothing under {token:?} at {pointer:?}"));
        };
    }
    Ok(here)
}

/// A time field: integer seconds, milliseconds or nanoseconds since the epoch (told apart by
/// size), or RFC 3339.
fn time(raw: &str) -> Result<UnixNanos, String> {
    if let Ok(n) = raw.parse::<i64>() {
        let scale = if n.abs() < 100_000_000_000 {
            1_000_000_000
        } else if n.abs() < 100_000_000_000_000 {
            1_000_000
        } else {
            1
        };
        return Ok(UnixNanos(n.saturating_mul(scale)));
    }
    UnixNanos::parse(raw).map_err(|e| e.to_string())
}

/// Reads a quote answer for `symbol`, polled at `now`, into a bar of `interval` starting at
/// the poll (or the answer's own time) floored to the interval: `close` is the price, and
/// open, high and low what the answer maps, the price where it maps none.
///
/// # Errors
/// See [`NoQuote`].
pub fn read(
    body: &str,
    shape: &Shape,
    symbol: &Symbol,
    interval: BarInterval,
    source: &Arc<str>,
    feed: &Arc<str>,
    now: UnixNanos,
) -> Result<FedBar, NoQuote> {
    let unreadable = NoQuote::Unreadable;
    if *shape == Shape::AlphaVantage {
        for key in ["Note", "Information"] {
            if let Ok(note) = pointer(body, &format!("/{key}")) {
                return Err(NoQuote::Throttled(note.get().trim_matches('"').to_string()));
            }
        }
        if let Ok(error) = pointer(body, "/Error Message") {
            return Err(unreadable(error.get().trim_matches('"').to_string()));
        }
    }
    let fields = shape.fields();
    let field = |name: &str, at: &str| -> Result<String, NoQuote> {
        let raw = pointer(body, at).map_err(|e| unreadable(format!("{name}: {e}")))?;
        let value = text(Some(raw), name, "quote").map_err(unreadable)?;
        Ok(value.trim().trim_end_matches('%').to_string())
    };
    let price_at = |name: &str, at: &Option<String>, or: Price| -> Result<Price, NoQuote> {
        match at {
            Some(at) => {
                Price::parse(&field(name, at)?).map_err(|e| unreadable(format!("{name}: {e}")))
            }
            None => Ok(or),
        }
    };
    let close = Price::parse(&field("price", &fields.price)?)
        .map_err(|e| unreadable(format!("price: {e}")))?;
    let open = price_at("open", &fields.open, close)?;
    let high = price_at("high", &fields.high, close)?;
    let low = price_at("low", &fields.low, close)?;
    let volume = match &fields.volume {
        Some(at) => {
            Volume::parse(&field("volume", at)?).map_err(|e| unreadable(format!("volume: {e}")))?
        }
        None => Volume::default(),
    };
    let at = match &fields.time {
        Some(at) => time(&field("time", at)?).map_err(|e| unreadable(format!("time: {e}")))?,
        None => now,
    };
    let start = interval.start_of(at);
    Ok(FedBar {
        bar: Bar {
            symbol: symbol.clone(),
            interval,
            start,
            end: UnixNanos(start.0 + interval.nanos()),
            open,
            high,
            low,
            close,
            volume,
            vwap: None,
            trade_count: None,
            is_final: true,
            source: Some(Arc::clone(source)),
        },
        ts_recv: now,
        feed: Arc::clone(feed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(body: &str, shape: &Shape) -> Result<FedBar, NoQuote> {
        read(
            body,
            shape,
            &Symbol::parse("IBM").unwrap(),
            BarInterval::M1,
            &Arc::from("quotes"),
            &Arc::from("quotes:poll"),
            UnixNanos::parse("2024-05-06T14:31:42Z").unwrap(),
        )
    }

    #[test]
    fn alpha_vantage_global_quote_keeps_price_high_low_and_the_poll_minute() {
        let b = quote(
            include_str!("testdata/global-quote.json"),
            &Shape::AlphaVantage,
        )
        .unwrap();
        assert_eq!(b.bar.close.to_string(), "169.4500");
        assert_eq!(b.bar.high.to_string(), "169.9900");
        assert_eq!(b.bar.low.to_string(), "167.5100");
        assert_eq!(b.bar.open.to_string(), "168.2000");
        assert_eq!(b.bar.volume.to_string(), "3812044");
        assert_eq!(
            b.bar.start,
            UnixNanos::parse("2024-05-06T14:31:00Z").unwrap()
        );
        assert_eq!(b.bar.source.as_deref(), Some("quotes"));
    }

    #[test]
    fn alpha_vantage_throttling_and_errors_are_told_apart() {
        let note = r#"{"Note":"Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and 500 calls per day."}"#;
        assert!(
            matches!(quote(note, &Shape::AlphaVantage), Err(NoQuote::Throttled(m)) if m.contains("5 calls per minute"))
        );
        let info = r#"{"Information":"Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day."}"#;
        assert!(matches!(
            quote(info, &Shape::AlphaVantage),
            Err(NoQuote::Throttled(_))
        ));
        let error = r#"{"Error Message":"Invalid API call. Please retry or visit the documentation (https://www.alphavantage.co/documentation/) for GLOBAL_QUOTE."}"#;
        assert!(
            matches!(quote(error, &Shape::AlphaVantage), Err(NoQuote::Unreadable(m)) if m.starts_with("Invalid API call"))
        );
        let empty = r#"{"Global Quote":{}}"#;
        assert!(
            matches!(quote(empty, &Shape::AlphaVantage), Err(NoQuote::Unreadable(m)) if m.contains("05. price"))
        );
    }

    #[test]
    fn a_custom_mapping_reads_numbers_exactly_and_the_answers_own_time() {
        let shape = Shape::Custom(Fields {
            price: "/quoteResponse/result/0/regularMarketPrice".into(),
            high: Some("/quoteResponse/result/0/regularMarketDayHigh".into()),
            low: Some("/quoteResponse/result/0/regularMarketDayLow".into()),
            volume: Some("/quoteResponse/result/0/regularMarketVolume".into()),
            time: Some("/quoteResponse/result/0/regularMarketTime".into()),
            open: None,
        });
        let body = r#"{"quoteResponse":{"result":[{"symbol":"AAPL","regularMarketPrice":184.40,"regularMarketDayHigh":185.1,"regularMarketDayLow":181.9,"regularMarketVolume":54021344,"regularMarketTime":1715025600}],"error":null}}"#;
        let b = quote(body, &shape).unwrap();
        assert_eq!(b.bar.close.to_string(), "184.40");
        assert_eq!(
            b.bar.open.to_string(),
            "184.40",
            "no open mapped: the price"
        );
        assert_eq!(
            b.bar.start,
            UnixNanos::parse("2024-05-06T20:00:00Z").unwrap()
        );
        let missing = quote(r#"{"quoteResponse":{"result":[],"error":null}}"#, &shape);
        assert!(matches!(missing, Err(NoQuote::Unreadable(m)) if m.contains("no item 0")));
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        let json = r#"{"a/b":{"m~n":[1,{"x":"2.50"}]}}"#;
        assert_eq!(pointer(json, "/a~1b/m~0n/1/x").unwrap().get(), r#""2.50""#);
        assert!(pointer(json, "a").is_err());
        assert!(pointer(json, "/a~1b/m~0n/7").is_err());
    }
}
