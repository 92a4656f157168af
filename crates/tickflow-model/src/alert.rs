use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Price, Symbol, UnixNanos};

/// How urgent an alert is, least first.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
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

/// What an alert row records: a rule's condition firing, still holding, or clearing, or a
/// burst folded into one message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The condition became true, or a detector fired.
    #[default]
    Fired,
    /// Still true a rule's reminder interval after it was last sent.
    Reminder,
    /// The condition cleared (past the rule's hysteresis band).
    Resolved,
    /// Fired inside a burst of its rule: recorded here, not sent; the burst's digest counts it.
    Coalesced,
    /// The one message that tells how many alerts a burst coalesced.
    Digest,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 5] = [
        Self::Fired,
        Self::Reminder,
        Self::Resolved,
        Self::Coalesced,
        Self::Digest,
    ];

    /// The snake_case name stored in `alerts.kind`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fired => "fired",
            Self::Reminder => "reminder",
            Self::Resolved => "resolved",
            Self::Coalesced => "coalesced",
            Self::Digest => "digest",
        }
    }

    /// Whether notifiers send it: every kind but a coalesced one, which its digest stands for.
    pub const fn is_sent(self) -> bool {
        !matches!(self, Self::Coalesced)
    }
}

impl fmt::Display for AlertKind {
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
    /// Channels it was handed to when it fired, comma separated: `log`, the processor's
    /// line. Notifiers deliver later; SQL's `alerts.delivered_to` adds those that succeeded
    /// (see [`AlertDelivery`]).
    pub delivered_to: String,
    /// Fired, reminder, resolved, coalesced or digest; rows written before kinds existed read
    /// as fired.
    #[serde(default)]
    pub kind: AlertKind,
}

impl Alert {
    /// What a message leads with: the severity, with the kind unless it fired
    /// (`WARNING`, `WARNING REMINDER`, `RESOLVED`, `CRITICAL DIGEST`).
    pub fn tag(&self) -> String {
        let severity = self.severity.as_str().to_uppercase();
        match self.kind {
            AlertKind::Fired | AlertKind::Coalesced => severity,
            AlertKind::Resolved => "RESOLVED".to_string(),
            kind => format!("{severity} {}", kind.as_str().to_uppercase()),
        }
    }
}

/// How one notifier's delivery of an alert ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// The channel took it.
    Delivered,
    /// Every attempt failed, or the channel refused it for good; the alert is in the DLQ.
    Failed,
}

impl DeliveryStatus {
    /// Every status, in the order the log's records number them.
    pub const ALL: [DeliveryStatus; 2] = [Self::Delivered, Self::Failed];

    /// The snake_case name stored in `alert_deliveries.status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// One notifier's settled delivery of one alert: a row of `alert_deliveries`. Natural key:
/// (alert_id, notifier).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertDelivery {
    pub alert_id: String,
    pub notifier: String,
    /// When it was settled.
    pub ts: UnixNanos,
    pub status: DeliveryStatus,
    /// Attempts it took, this one included.
    pub attempts: u32,
    /// The last attempt's error: why it failed, or for one delivered after retries, what the
    /// retry before it met. `None` when the first attempt went through.
    #[serde(default)]
    pub error: Option<String>,
}
