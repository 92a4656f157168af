//! The log notifier: one warning line per alert, on stderr with every other log line.

use tickflow_core::notify::{DeliveryError, Notifier};
use tickflow_model::Alert;

/// Writes each alert as a log line; it cannot fail.
#[derive(Debug, Clone)]
pub struct LogNotifier {
    pub id: String,
}

#[async_trait::async_trait]
impl Notifier for LogNotifier {
    async fn deliver(&self, alert: &Alert, key: &str) -> Result<(), DeliveryError> {
        tracing::warn!(
            notifier = %self.id,
            rule = %alert.rule,
            symbol = %alert.symbol,
            value = %alert.value,
            severity = %alert.severity,
            kind = %alert.kind,
            key,
            "{}",
            alert.message
        );
        Ok(())
    }
}
