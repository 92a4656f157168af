use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Price, Symbol, UnixNanos};

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fired alert. `alert_id` is derived from (rule, symbol, ts) so a replay yields the same id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub rule: String,
    pub symbol: Symbol,
    /// Event time of the tick that fired it.
    pub ts: UnixNanos,
    pub value: Price,
    /// The rule's threshold as text (a price, or `k=6σ` for detectors).
    pub threshold: String,
    pub message: String,
    pub severity: Severity,
    /// Channels it was handed to, comma separated (`log` for now).
    pub delivered_to: String,
}
