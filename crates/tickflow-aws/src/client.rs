//! Signed requests to one AWS service: the JSON 1.0 protocol (SQS, DynamoDB) and the query
//! protocol (SNS), over tickflow's own HTTP client (reqwest with rustls and ring).
//!
//! The AWS SDK would bring a second HTTP and TLS stack and a dozen crates of generated code
//! for the handful of calls tickflow makes; signing is the only part that must match AWS
//! exactly, and `aws-sigv4` (the SDK's own signer) does that.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

/// The AWS services tickflow calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Sqs,
    Sns,
    DynamoDb,
}

impl Service {
    /// The name in SigV4 and in the default endpoint's host.
    fn name(self) -> &'static str {
        match self {
            Self::Sqs => "sqs",
            Self::Sns => "sns",
            Self::DynamoDb => "dynamodb",
        }
    }

    /// The `X-Amz-Target` prefix of the JSON protocol's operations.
    fn target(self) -> &'static str {
        match self {
            Self::Sqs => "AmazonSQS",
            Self::Sns => "",
            Self::DynamoDb => "DynamoDB_20120810",
        }
    }

    /// The environment variable that overrides this service's endpoint, as the AWS SDKs
    /// read it (`AWS_ENDPOINT_URL_SQS`), before the one for every service.
    fn endpoint_var(self) -> &'static str {
        match self {
            Self::Sqs => "AWS_ENDPOINT_URL_SQS",
            Self::Sns => "AWS_ENDPOINT_URL_SNS",
            Self::DynamoDb => "AWS_ENDPOINT_URL_DYNAMODB",
        }
    }
}

/// Where and as whom to call AWS. Unset fields come from the standard environment
/// (`AWS_REGION`, `AWS_ENDPOINT_URL[_<SERVICE>]`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`), which is also how a Lambda function receives its role's keys.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AwsConfig {
    pub region: Option<String>,
    /// `http://127.0.0.1:5000` for moto_server or LocalStack; the service's public endpoint
    /// in the region when unset.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsConfig")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl AwsConfig {
    /// What is wrong with the settings, by key: an endpoint that is not an http(s) URL, a
    /// key without its secret.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(e) = &self.endpoint
            && !reqwest::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            out.push((
                "endpoint",
                format!("{e:?} is not an http:// or https:// address"),
            ));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            out.push((
                // The key that is there, so the error points at its line.
                if self.access_key_id.is_some() {
                    "access_key_id"
                } else {
                    "secret_access_key"
                },
                "access_key_id and secret_access_key come together (or both from the environment)"
                    .to_string(),
            ));
        }
        out
    }
}

/// A failed call: the transport's, or the service's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No answer: refused, reset, timed out. Worth another attempt.
    Transport(String),
    /// The service refused: its HTTP status, error code (`QueueDoesNotExist`) and message.
    Service {
        status: u16,
        code: String,
        message: String,
    },
    /// A setting is missing or wrong; no attempt can succeed.
    Config(String),
}

impl Error {
    /// Whether a later attempt may succeed: no answer, a 5xx, or throttling.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Service { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || code.contains("Throttl")
                    || code.contains("RequestLimitExceeded")
                    || code.contains("ProvisionedThroughputExceeded")
            }
            Self::Config(_) => false,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(m) | Self::Config(m) => f.write_str(m),
            Self::Service {
                status,
                code,
                message,
            } => write!(f, "{code} ({status}): {message}"),
        }
    }
}

impl std::error::Error for Error {}

/// A client of one service in one region.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    service: Service,
    url: String,
    region: String,
    credentials: Credentials,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.service)
            .field("url", &self.url)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Client {
    /// A client for `service` with `config`, the environment filling what it leaves unset;
    /// requests time out after `timeout` (long polls add their wait to it).
    ///
    /// # Errors
    /// [`Error::Config`] without a region or keys.
    pub fn new(config: &AwsConfig, service: Service, timeout: Duration) -> Result<Self, Error> {
        let region = config
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .ok_or_else(|| {
                Error::Config("no AWS region: set `region` or AWS_REGION".to_string())
            })?;
        let key = config
            .access_key_id
            .clone()
            .or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret = config
            .secret_access_key
            .clone()
            .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        let (Some(key), Some(secret)) = (key, secret) else {
            return Err(Error::Config(
                "no AWS keys: set access_key_id and secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".to_string(),
            ));
        };
        let token = config
            .session_token
            .clone()
            .or_else(|| env("AWS_SESSION_TOKEN"));
        let url = config
            .endpoint
            .clone()
            .or_else(|| env(service.endpoint_var()))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://{}.{region}.amazonaws.com", service.name()));
        let url = format!("{}/", url.trim_end_matches('/'));
        // ring, as every other client of the binary; a no-op once one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            service,
            url,
            region,
            credentials: Credentials::new(key, secret, token, None, "tickflow"),
        })
    }

    /// The endpoint requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Calls `operation` with a JSON 1.0 body and returns the answer's JSON.
    ///
    /// # Errors
    /// [`Error::Transport`] without an answer, [`Error::Service`] with the service's code.
    pub async fn json(
        &self,
        operation: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        self.call_json(operation, body, None).await
    }

    /// [`Client::json`] for a long poll that may take `wait` before answering.
    ///
    /// # Errors
    /// As [`Client::json`].
    pub async fn json_waiting(
        &self,
        operation: &str,
        body: &serde_json::Value,
        wait: Duration,
    ) -> Result<serde_json::Value, Error> {
        self.call_json(operation, body, Some(wait)).await
    }

    async fn call_json(
        &self,
        operation: &str,
        body: &serde_json::Value,
        wait: Option<Duration>,
    ) -> Result<serde_json::Value, Error> {
        let target = format!("{}.{operation}", self.service.target());
        let body = serde_json::to_vec(body).map_err(|e| Error::Config(e.to_string()))?;
        let headers = [
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", target.as_str()),
        ];
        let (status, text) = self.send(&headers, body, wait).await?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|e| Error::Service {
                status,
                code: "UnreadableAnswer".into(),
                message: format!("{e}: {}", preview(&text)),
            });
        }
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        // `"__type": "com.amazonaws.sqs#QueueDoesNotExist"`, or only the name.
        let code = answer["__type"]
            .as_str()
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .unwrap_or_else(|| format!("HTTP{status}"));
        let message = answer["message"]
            .as_str()
            .or_else(|| answer["Message"].as_str())
            .map_or_else(|| preview(&text), str::to_string);
        Err(Error::Service {
            status,
            code,
            message,
        })
    }

    /// Calls `action` of the query protocol (SNS) with form parameters and returns the XML
    /// answer.
    ///
    /// # Errors
    /// As [`Client::json`].
    pub async fn query(
        &self,
        action: &str,
        version: &str,
        params: &[(&str, &str)],
    ) -> Result<String, Error> {
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", action)
                .append_pair("Version", version);
            for (k, v) in params {
                form.append_pair(k, v);
            }
            form.finish().into_bytes()
        };
        let headers = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        let (status, text) = self.send(&headers, body, None).await?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        #[derive(serde::Deserialize, Default)]
        struct ErrorResponse {
            #[serde(rename = "Error", default)]
            error: ErrorBody,
        }
        #[derive(serde::Deserialize, Default)]
        struct ErrorBody {
            #[serde(rename = "Code", default)]
            code: String,
            #[serde(rename = "Message", default)]
            message: String,
        }
        let answer: ErrorResponse = quick_xml::de::from_str(&text).unwrap_or_default();
        Err(Error::Service {
            status,
            code: if answer.error.code.is_empty() {
                format!("HTTP{status}")
            } else {
                answer.error.code
            },
            message: if answer.error.message.is_empty() {
                preview(&text)
            } else {
                answer.error.message
            },
        })
    }

    /// Signs and sends one POST; the answer's status and text. `wait` lengthens the timeout
    /// for a long poll.
    async fn send(
        &self,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        wait: Option<Duration>,
    ) -> Result<(u16, String), Error> {
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service.name())
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Error::Config(format!("signing: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            &self.url,
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| Error::Config(format!("signing: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| Error::Config(format!("signing: {e}")))?
            .into_parts();
        let mut request = self.http.post(&self.url);
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            request = request.header(name, value);
        }
        if let Some(wait) = wait {
            request = request.timeout(wait + Duration::from_secs(10));
        }
        let response = request.body(body).send().await.map_err(|e| {
            Error::Transport(format!(
                "{} {}: {}",
                self.service.name(),
                self.url,
                error_chain(&e)
            ))
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| {
            Error::Transport(format!("{} reading the answer: {e}", self.service.name()))
        })?;
        Ok((status, text))
    }
}

/// The start of an answer, for an error message.
fn preview(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

/// An error with its causes, which reqwest keeps apart.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_retried_and_a_wrong_request_is_not() {
        let service = |status: u16, code: &str| Error::Service {
            status,
            code: code.into(),
            message: String::new(),
        };
        assert!(Error::Transport("refused".into()).is_retryable());
        assert!(service(503, "ServiceUnavailable").is_retryable());
        assert!(service(400, "ThrottlingException").is_retryable());
        assert!(service(400, "ProvisionedThroughputExceededException").is_retryable());
        assert!(!service(400, "QueueDoesNotExist").is_retryable());
        assert!(!service(403, "InvalidClientTokenId").is_retryable());
        assert!(!Error::Config("no region".into()).is_retryable());
    }

    #[test]
    fn settings_win_over_the_environment_and_the_default_endpoint_is_the_regions() {
        let config = AwsConfig {
            region: Some("eu-west-2".into()),
            access_key_id: Some("AKID".into()),
            secret_access_key: Some("secret".into()),
            ..AwsConfig::default()
        };
        let client = Client::new(&config, Service::Sqs, Duration::from_secs(5)).unwrap();
        assert_eq!(client.region(), "eu-west-2");
        if std::env::var("AWS_ENDPOINT_URL").is_err()
            && std::env::var("AWS_ENDPOINT_URL_SQS").is_err()
        {
            assert_eq!(client.url(), "https://sqs.eu-west-2.amazonaws.com/");
        }
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
