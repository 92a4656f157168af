use std::fmt;

use serde::{Deserialize, Serialize};

use crate::UnixNanos;

/// Why an event was rejected. Each reason is a label of `tickflow_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The bytes could not be decoded into an event.
    Malformed,
    /// A price that is zero or negative.
    NonPositivePrice,
    /// A trade of size zero.
    ZeroSize,
    /// A quote whose bid is above its ask.
    CrossedQuote,
    /// An event time far in the future or before 2000.
    AbsurdTimestamp,
    /// Later than the lateness budget allows; its bar may already be final.
    Late,
    /// A price or size of a billion or more, beyond what the tables store exactly.
    OutOfRange,
    /// An alert a notifier could not deliver in all its attempts; the payload is the alert.
    DeliveryFailed,
    /// A feed's bar whose high is below its open, close or low, or whose low is above them.
    InconsistentBar,
    /// A row a sink's store refused for a reason retrying cannot fix (a constraint, a value
    /// out of its range); the payload is the row.
    SinkRefused,
}

impl RejectReason {
    /// Every reason, for metrics that list zeros too.
    pub const ALL: [RejectReason; 10] = [
        Self::Malformed,
        Self::NonPositivePrice,
        Self::ZeroSize,
        Self::CrossedQuote,
        Self::AbsurdTimestamp,
        Self::Late,
        Self::OutOfRange,
        Self::DeliveryFailed,
        Self::InconsistentBar,
        Self::SinkRefused,
    ];

    /// The snake_case name stored in the `dlq.reason` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NonPositivePrice => "non_positive_price",
            Self::ZeroSize => "zero_size",
            Self::CrossedQuote => "crossed_quote",
            Self::AbsurdTimestamp => "absurd_timestamp",
            Self::Late => "late",
            Self::OutOfRange => "out_of_range",
            Self::DeliveryFailed => "delivery_failed",
            Self::InconsistentBar => "inconsistent_bar",
            Self::SinkRefused => "sink_refused",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected event, kept with everything needed to inspect and replay it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DlqRecord {
    /// When it was rejected.
    pub ts: UnixNanos,
    pub source: String,
    /// Offset in the durable log, when it got that far.
    pub offset: Option<u64>,
    pub reason: RejectReason,
    /// Human-readable detail.
    pub error: String,
    /// The event in the ingest JSON format, so it can be fixed and replayed.
    pub payload: String,
}
