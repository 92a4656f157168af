//! Reading vendors' numbers exactly: a price, size or volume is taken from its JSON text
//! (number or string), never through `f64`, and a missing or bad one is named by its key.

use std::borrow::Cow;

use serde_json::value::RawValue;
use tickflow_model::{Price, Qty, Volume};

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
