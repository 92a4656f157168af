//! SNS as a channel for alerts: one `Publish` per alert to a topic, which fans it out to its
//! subscribers (SQS queues, Lambda functions, e-mail, SMS, HTTPS).
//!
//! The message is the alert as JSON, the same fields as the webhook's `json` body; the
//! subject is its one-line summary. Message attributes carry `idempotency_key`, `rule`,
//! `symbol`, `severity` and `kind`, so a subscription's filter policy can route by them and
//! a subscriber can drop a repeat. On a FIFO topic (`….fifo`) the key is also the
//! `MessageDeduplicationId`, so SNS itself drops a repeat within its five minutes, and the
//! symbol is the `MessageGroupId`, keeping each symbol's alerts in order.
//!
//! No answer, a 5xx or throttling is worth another attempt; any other refusal (a topic that
//! does not exist, no permission to publish) is permanent.

use std::time::Duration;

use tickflow_core::notify::{DeliveryError, Notifier, alert_json};
use tickflow_model::Alert;

use crate::client::{AwsConfig, Client, Error, Service};

/// SNS's `Subject`: fewer than 100 characters, no line breaks or control characters.
const SUBJECT_MAX: usize = 99;

/// An SNS topic's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnsConfig {
    pub aws: AwsConfig,
    /// `arn:aws:sns:<region>:<account>:<name>`; a name ending in `.fifo` is a FIFO topic.
    pub topic_arn: String,
    /// For the whole request, connection included.
    pub timeout: Duration,
}

impl SnsConfig {
    /// What is wrong with the settings, by key.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = self.aws.problems();
        let parts: Vec<&str> = self.topic_arn.split(':').collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[2] != "sns" || parts[5].is_empty() {
            out.push((
                "topic_arn",
                format!(
                    "{:?} is not a topic ARN (arn:aws:sns:<region>:<account>:<name>)",
                    self.topic_arn
                ),
            ));
        }
        out
    }

    /// Whether the topic is a FIFO topic.
    fn is_fifo(&self) -> bool {
        self.topic_arn.ends_with(".fifo")
    }
}

/// Publishes alerts to an SNS topic; see the module docs.
#[derive(Debug)]
pub struct SnsNotifier {
    config: SnsConfig,
    client: Client,
}

impl SnsNotifier {
    /// A notifier for the topic; the region defaults to the topic ARN's.
    ///
    /// # Errors
    /// No AWS keys, or the HTTP client could not be built.
    pub fn new(config: SnsConfig) -> Result<Self, Error> {
        let mut aws = config.aws.clone();
        if aws.region.is_none() {
            aws.region = config
                .topic_arn
                .split(':')
                .nth(3)
                .filter(|r| !r.is_empty())
                .map(str::to_string);
        }
        let client = Client::new(&aws, Service::Sns, config.timeout)?;
        Ok(Self { config, client })
    }

    /// The form parameters of `alert`'s `Publish`.
    fn params(&self, alert: &Alert, key: &str) -> Vec<(String, String)> {
        let mut params = vec![
            ("TopicArn".to_string(), self.config.topic_arn.clone()),
            ("Message".to_string(), alert_json(alert, key).to_string()),
            ("Subject".to_string(), subject(alert)),
        ];
        let attributes = [
            ("idempotency_key", key),
            ("rule", alert.rule.as_str()),
            ("symbol", alert.symbol.as_str()),
            ("severity", alert.severity.as_str()),
            ("kind", alert.kind.as_str()),
        ];
        for (i, (name, value)) in attributes.iter().enumerate() {
            let entry = format!("MessageAttributes.entry.{}", i + 1);
            params.push((format!("{entry}.Name"), (*name).to_string()));
            params.push((format!("{entry}.Value.DataType"), "String".to_string()));
            params.push((format!("{entry}.Value.StringValue"), (*value).to_string()));
        }
        if self.config.is_fifo() {
            params.push(("MessageGroupId".into(), alert.symbol.as_str().to_string()));
            params.push((
                "MessageDeduplicationId".into(),
                key.chars().take(128).collect(),
            ));
        }
        params
    }
}

/// The one-line summary SNS takes as a subject: `[WARNING] NVDA: price 505 above 500`.
fn subject(alert: &Alert) -> String {
    let line = format!("[{}] {}: {}", alert.tag(), alert.symbol, alert.message);
    line.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SUBJECT_MAX)
        .collect()
}

#[async_trait::async_trait]
impl Notifier for SnsNotifier {
    async fn deliver(&self, alert: &Alert, key: &str) -> Result<(), DeliveryError> {
        let params = self.params(alert, key);
        let borrowed: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match self.client.query("Publish", "2010-03-31", &borrowed).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let message = format!("SNS {}: {e}", self.config.topic_arn);
                Err(if e.is_retryable() {
                    DeliveryError::Retry(message)
                } else {
                    DeliveryError::Permanent(message)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(arn: &str) -> SnsConfig {
        SnsConfig {
            aws: AwsConfig {
                access_key_id: Some("AKID".into()),
                secret_access_key: Some("secret".into()),
                ..AwsConfig::default()
            },
            topic_arn: arn.into(),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_topic_arn_is_checked_and_names_the_region() {
        assert!(
            config("arn:aws:sns:eu-west-1:123456789012:alerts")
                .problems()
                .is_empty()
        );
        let bad = config("alerts").problems();
        assert_eq!(bad[0].0, "topic_arn");
        let n = SnsNotifier::new(config("arn:aws:sns:eu-west-1:123456789012:alerts")).unwrap();
        assert_eq!(n.client.region(), "eu-west-1");
    }

    #[test]
    fn a_fifo_topic_gets_the_key_as_deduplication_id_and_the_symbol_as_group() {
        let rows = tickflow_core::contract::sample_rows(1, 1);
        let alert = &rows.alerts[0];
        let fifo = SnsNotifier::new(config("arn:aws:sns:us-east-1:1:alerts.fifo")).unwrap();
        let params = fifo.params(alert, "k:sns");
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("MessageDeduplicationId").as_deref(), Some("k:sns"));
        assert_eq!(
            get("MessageGroupId").as_deref(),
            Some(alert.symbol.as_str())
        );
        assert!(get("Subject").unwrap().chars().count() <= SUBJECT_MAX);
        let standard = SnsNotifier::new(config("arn:aws:sns:us-east-1:1:alerts")).unwrap();
        assert!(
            !standard
                .params(alert, "k:sns")
                .iter()
                .any(|(k, _)| k == "MessageDeduplicationId")
        );
    }

    #[test]
    fn a_subject_has_no_line_breaks_and_fits() {
        let rows = tickflow_core::contract::sample_rows(1, 1);
        let mut alert = rows.alerts[0].clone();
        alert.message = format!("line one\nline two {}", "x".repeat(300));
        let s = subject(&alert);
        assert!(!s.contains('\n'), "{s}");
        assert_eq!(s.chars().count(), SUBJECT_MAX);
    }
}
