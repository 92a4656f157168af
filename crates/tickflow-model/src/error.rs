/// Why a value could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid decimal {value:?}: {reason}")]
    Decimal { value: String, reason: &'static str },
    #[error("invalid timestamp {value:?}: {reason}")]
    Timestamp { value: String, reason: &'static str },
    #[error("invalid symbol {value:?}: {reason}")]
    Symbol { value: String, reason: &'static str },
    #[error("invalid bar interval {value:?}: expected one of 1s, 1m, 5m, 1h, 1d")]
    Interval { value: String },
    #[error("invalid date {value:?}: expected YYYY-MM-DD")]
    Date { value: String },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
