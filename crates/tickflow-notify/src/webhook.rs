//! The webhook notifier: one HTTP POST per alert.
//!
//! The body is a JSON object with the alert's fields by default; `slack` and `discord` send
//! those services' incoming-webhook shapes (`{"text": …}`, `{"content": …}`). Every request
//! carries `Idempotency-Key: <alert_id>:<notifier id>`, the same on every attempt. A 2xx is
//! delivered; a refused connection, a timeout, a 5xx, 408 or 429 is worth another attempt;
//! any other 4xx is permanent (the request itself is wrong). The URL and header values often
//! hold secrets: they are left out of every message and of `Debug`.

use std::time::Duration;

use tickflow_core::notify::{DeliveryError, Notifier};
use tickflow_model::Alert;

use crate::Error;

/// The body a webhook takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Slack,
    Discord,
}

impl Format {
    /// Every format, by the name the config uses.
    pub const ALL: [(&'static str, Format); 3] = [
        ("json", Format::Json),
        ("slack", Format::Slack),
        ("discord", Format::Discord),
    ];

    /// The config's name for it.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("json", |(n, _)| n)
    }
}

/// A webhook's settings.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub format: Format,
    /// Extra request headers (an `Authorization` token, say).
    pub headers: Vec<(String, String)>,
    /// For the whole request, connection included.
    pub timeout: Duration,
}

impl WebhookConfig {
    /// The URL without its path and query, where tokens live: `https://hooks.slack.com/…`.
    pub fn shown_url(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => {
                let host = rest.split(['/', '?']).next().unwrap_or(rest);
                let host = host.rsplit('@').next().unwrap_or(host);
                let more = rest.len() > host.len();
                format!("{scheme}://{host}{}", if more { "/…" } else { "" })
            }
            None => "(not a URL)".to_string(),
        }
    }
}

impl WebhookConfig {
    /// What is wrong with the settings, by key: a URL that does not parse, a header name or
    /// value HTTP does not allow. Values are not repeated, since they may be secrets.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            Ok(_) => out.push((
                "url",
                "needs an http:// or https:// address with a host".into(),
            )),
            Err(e) => out.push(("url", format!("not a URL: {e}"))),
        }
        for (name, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                out.push(("headers", format!("{name:?} is not a valid header name")));
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                out.push((
                    "headers",
                    format!("the value of {name:?} is not a valid header value"),
                ));
            }
        }
        out
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.shown_url())
            .field("format", &self.format)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A webhook; see the module docs.
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    config: WebhookConfig,
    client: reqwest::Client,
}

impl WebhookNotifier {
    /// A notifier with its own HTTP client (rustls, the platform's trusted roots).
    ///
    /// # Errors
    /// The TLS set-up failed.
    pub fn new(config: WebhookConfig) -> Result<Self, Error> {
        crate::install_crypto();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("tickflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Client(e.without_url().to_string()))?;
        Ok(Self { config, client })
    }

    /// The body for `alert` in this webhook's format.
    pub fn body(&self, alert: &Alert, key: &str) -> serde_json::Value {
        let line = format!(
            "[{}] {} {}: {} (rule {}, value {}, threshold {})",
            alert.tag(),
            alert.symbol,
            alert.ts,
            alert.message,
            alert.rule,
            alert.value,
            alert.threshold
        );
        match self.config.format {
            Format::Json => tickflow_core::notify::alert_json(alert, key),
            Format::Slack => serde_json::json!({ "text": line }),
            Format::Discord => serde_json::json!({ "content": line }),
        }
    }
}

#[async_trait::async_trait]
impl Notifier for WebhookNotifier {
    async fn deliver(&self, alert: &Alert, key: &str) -> Result<(), DeliveryError> {
        let mut request = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(self.body(alert, key).to_string());
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        let where_ = self.config.shown_url();
        match request.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let status = r.status();
                let message = format!("{where_} answered {status}");
                if status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                {
                    Err(DeliveryError::Retry(message))
                } else {
                    Err(DeliveryError::Permanent(message))
                }
            }
            // A request that cannot even be built (a bad header) fails the same way again.
            Err(e) if e.is_builder() => Err(DeliveryError::Permanent(format!(
                "{where_}: {}",
                e.without_url()
            ))),
            // Without the URL: it may hold a token.
            Err(e) => Err(DeliveryError::Retry(format!(
                "{where_}: {}",
                e.without_url()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_what_is_shown() {
        let config = WebhookConfig {
            url: "https://user:pw@hooks.slack.com/services/T000/B000/SECRET?x=1".into(),
            format: Format::Slack,
            headers: vec![("Authorization".into(), "Bearer SECRET".into())],
            timeout: Duration::from_secs(5),
        };
        assert_eq!(config.shown_url(), "https://hooks.slack.com/…");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("pw"),
            "{shown}"
        );
        assert!(shown.contains("Authorization"));
    }
}
