//! Reading vendors' numbers exactly: a price, size or volume is taken from its JSON text
//! (number or string), never through `f64`, and a missing or bad one is named by its key.

use std::borrow::Cow;

use serde_json::value::RawValue;
use std::sync::Arc;

use tickflow_model::{Bar, BarInterval, Event, FedBar, Price, Qty, Symbol, UnixNanos, Volume};

/// The text of a JSON number or string.
///
/// # Errors
/// The field is missing, or a string that is not valid JSON.
pub(crate) fn text<'a>(
    raw: Option<&'a RawValue>,
    key: &str,
    kind: &str,
) -> Result<Cow<'a, str>, String> {
    let raw = raw.ok_or_else(|| format!("a {kind} needs {key:?}"))?.get();
    if raw.starts_with('"') {
        serde_json::from_str::<String>(raw)
            .map(Cow::Owned)
            .map_err(|e| format!("{key:?}: {e}"))
    } else {
        Ok(Cow::Borrowed(raw))
    }
}

pub(crate) fn price(raw: Option<&RawValue>, key: &str, kind: &str) -> Result<Price, String> {
    Price::parse(&text(raw, key, kind)?).map_err(|e| format!("{key:?}: {e}"))
}

pub(crate) fn qty(raw: Option<&RawValue>, key: &str, kind: &str) -> Result<Qty, String> {
    Qty::parse(&text(raw, key, kind)?).map_err(|e| format!("{key:?}: {e}"))
}

pub(crate) fn volume(raw: Option<&RawValue>, key: &str, kind: &str) -> Result<Volume, String> {
    Volume::parse(&text(raw, key, kind)?).map_err(|e| format!("{key:?}: {e}"))
}

/// An optional price: absent stays `None`, present must read.
pub(crate) fn maybe_price(
    raw: Option<&RawValue>,
    key: &str,
    kind: &str,
) -> Result<Option<Price>, String> {
    raw.map(|r| price(Some(r), key, kind)).transpose()
}

/// A vendor bar's fields as they came, before reading.
#[derive(Default)]
pub(crate) struct Ohlcv<'a> {
    pub(crate) open: Option<&'a RawValue>,
    pub(crate) high: Option<&'a RawValue>,
    pub(crate) low: Option<&'a RawValue>,
    pub(crate) close: Option<&'a RawValue>,
    pub(crate) volume: Option<&'a RawValue>,
    pub(crate) vwap: Option<&'a RawValue>,
    pub(crate) trades: Option<u64>,
}

/// Where an event came from and when it was received.
pub(crate) struct Stamp<'a> {
    pub(crate) source: &'a Arc<str>,
    pub(crate) feed: &'a Arc<str>,
    pub(crate) ts_recv: UnixNanos,
}

/// A feed's bar of `interval` over `[start, end)`, read exactly from `raw`; `kind` names the
/// message in errors (`bar`, `aggregate`).
pub(crate) fn fed_bar(
    symbol: Symbol,
    interval: BarInterval,
    (start, end): (UnixNanos, UnixNanos),
    raw: &Ohlcv<'_>,
    kind: &str,
    stamp: &Stamp<'_>,
) -> Result<Event, String> {
    if end <= start {
        // A time past what nanoseconds since 1970 can hold (the year 2262).
        return Err(format!("{kind}: its time is out of range"));
    }
    Ok(Event::Bar(FedBar {
        bar: Bar {
            symbol,
            interval,
            start,
            end,
            open: price(raw.open, "o", kind)?,
            high: price(raw.high, "h", kind)?,
            low: price(raw.low, "l", kind)?,
            close: price(raw.close, "c", kind)?,
            volume: volume(raw.volume, "v", kind)?,
            vwap: maybe_price(raw.vwap, "vw", kind)?,
            trade_count: raw.trades,
            is_final: true,
            source: Some(Arc::clone(stamp.source)),
        },
        ts_recv: stamp.ts_recv,
        feed: Arc::clone(stamp.feed),
    }))
}
