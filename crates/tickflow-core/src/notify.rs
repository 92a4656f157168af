//! The notifier contract: how alerts leave tickflow for people.
//!
//! A notifier delivers one alert at a time to one channel (a webhook, a mailbox, a topic).
//! Every delivery carries an idempotency key, the same for every attempt of one alert on one
//! channel, so a receiver can drop a repeat. The pipeline retries a failed delivery with
//! capped exponential backoff and jitter, records each delivered alert durably before the
//! next, and sends a delivery that has run out of attempts to the DLQ with reason
//! `delivery_failed`: a restart neither loses an alert nor delivers one twice.

use tickflow_model::Alert;

/// Why a delivery failed: worth another attempt or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// The channel may take it later: refused connection, timeout, 5xx, 429.
    Retry(String),
    /// Another attempt cannot succeed: a 4xx that says the request is wrong.
    Permanent(String),
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retry(m) => write!(f, "{m} (will retry)"),
            Self::Permanent(m) => write!(f, "{m} (permanent)"),
        }
    }
}

impl std::error::Error for DeliveryError {}

/// The idempotency key of `alert` on the channel `notifier`: `<alert_id>:<notifier>`.
pub fn idempotency_key(alert: &Alert, notifier: &str) -> String {
    format!("{}:{notifier}", alert.alert_id)
}

/// An alert as the channels that take JSON receive it (a webhook's `json` body, an SNS
/// message): every field as text, exact, with the delivery's idempotency key.
pub fn alert_json(alert: &Alert, key: &str) -> serde_json::Value {
    serde_json::json!({
        "alert_id": alert.alert_id,
        "idempotency_key": key,
        "rule": alert.rule,
        "symbol": alert.symbol.as_str(),
        "ts": alert.ts.to_string(),
        "value": alert.value.to_string(),
        "threshold": alert.threshold,
        "message": alert.message,
        "severity": alert.severity.as_str(),
        "kind": alert.kind.as_str(),
    })
}

/// A channel alerts are delivered to; see the module docs.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// Delivers `alert` once, sending `key` where the channel takes one (the webhook's
    /// `Idempotency-Key` header).
    ///
    /// # Errors
    /// [`DeliveryError::Retry`] when a later attempt may succeed, else
    /// [`DeliveryError::Permanent`].
    async fn deliver(&self, alert: &Alert, key: &str) -> Result<(), DeliveryError>;
}
