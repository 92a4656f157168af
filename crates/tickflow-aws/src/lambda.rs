//! The AWS Lambda Runtime API, as a custom runtime (`bootstrap`) speaks it, and the SQS event
//! an event source mapping invokes a function with.
//!
//! The runtime asks `GET /runtime/invocation/next` for the next event, long polling with no
//! timeout of its own, and answers each with `/response` or `/error`. A failure before the
//! first event is reported at `/runtime/init/error`. The protocol is four calls, so tickflow
//! speaks it over the HTTP client it already has; the `lambda_runtime` crate would bring a
//! second HTTP stack and panics where tickflow wants a clear error (a missing variable, an
//! answer without a request id).

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

/// The API's version prefix.
const VERSION: &str = "2018-06-01";

/// A Runtime API that answered something tickflow cannot use, or could not be reached.
#[derive(Debug)]
pub enum RuntimeError {
    /// `AWS_LAMBDA_RUNTIME_API` is not set or not `host:port`.
    NoApi(String),
    Http(reqwest::Error),
    /// The API answered with an unexpected status or without a header it must send.
    Answer(String),
}

impl std::fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoApi(m) | Self::Answer(m) => f.write_str(m),
            Self::Http(e) => write!(f, "the Lambda Runtime API cannot be reached: {e}"),
        }
    }
}

impl std::error::Error for RuntimeError {}

impl From<reqwest::Error> for RuntimeError {
    fn from(e: reqwest::Error) -> Self {
        Self::Http(e)
    }
}

/// One invocation: its request id, when it must be answered by, and its event.
#[derive(Debug)]
pub struct Invocation {
    pub request_id: String,
    /// `Lambda-Runtime-Deadline-Ms`: after it the function is stopped.
    pub deadline: SystemTime,
    /// `Lambda-Runtime-Trace-Id`, logged with the invocation's problems.
    pub trace_id: Option<String>,
    pub event: bytes::Bytes,
}

impl Invocation {
    /// How long is left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }
}

/// A client of the Runtime API at `AWS_LAMBDA_RUNTIME_API`.
#[derive(Clone, Debug)]
pub struct Runtime {
    base: String,
    http: reqwest::Client,
}

impl Runtime {
    /// The API `AWS_LAMBDA_RUNTIME_API` names (`host:port`, as Lambda sets it).
    ///
    /// # Errors
    /// The variable is not set, or is not `host:port`.
    pub fn from_env() -> Result<Self, RuntimeError> {
        let api = std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(|_| {
            RuntimeError::NoApi(
                "AWS_LAMBDA_RUNTIME_API is not set: `tickflow lambda` runs inside AWS Lambda (or a stand-in of its Runtime API), which sets it".into(),
            )
        })?;
        Self::new(&api)
    }

    /// The API at `api`, `host:port`.
    ///
    /// # Errors
    /// `api` is not `host:port`.
    pub fn new(api: &str) -> Result<Self, RuntimeError> {
        let base = format!("http://{api}/{VERSION}");
        reqwest::Url::parse(&base)
            .ok()
            .filter(|u| {
                u.host_str().is_some()
                    && api
                        .rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            })
            .ok_or_else(|| {
                RuntimeError::NoApi(format!(
                    "AWS_LAMBDA_RUNTIME_API = {api:?}: expected host:port"
                ))
            })?;
        // ring, as every other client of the binary; a no-op once one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // No timeout: `next` waits as long as there is no event.
        let http = reqwest::Client::builder()
            .user_agent(concat!("tickflow/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { base, http })
    }

    /// Waits for the next invocation.
    ///
    /// # Errors
    /// The API cannot be reached or answered without a request id or deadline; Lambda's own
    /// runtimes exit then, and so does `tickflow lambda`.
    pub async fn next(&self) -> Result<Invocation, RuntimeError> {
        let answer = self
            .http
            .get(format!("{}/runtime/invocation/next", self.base))
            .send()
            .await?;
        let status = answer.status();
        if !status.is_success() {
            let body = answer.text().await.unwrap_or_default();
            return Err(RuntimeError::Answer(format!(
                "the next invocation was refused: {status} {body}"
            )));
        }
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let request_id = header("lambda-runtime-aws-request-id").ok_or_else(|| {
            RuntimeError::Answer(
                "the next invocation came without Lambda-Runtime-Aws-Request-Id".into(),
            )
        })?;
        let deadline = header("lambda-runtime-deadline-ms")
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
            .ok_or_else(|| {
                RuntimeError::Answer(format!(
                    "invocation {request_id} came without a readable Lambda-Runtime-Deadline-Ms"
                ))
            })?;
        let trace_id = header("lambda-runtime-trace-id");
        let event = answer.bytes().await?;
        Ok(Invocation {
            request_id,
            deadline,
            trace_id,
            event,
        })
    }

    /// Answers an invocation with `body`.
    ///
    /// # Errors
    /// The API cannot be reached or refused the answer (an unknown request id, too large).
    pub async fn respond(&self, request_id: &str, body: &Value) -> Result<(), RuntimeError> {
        let url = format!("{}/runtime/invocation/{request_id}/response", self.base);
        self.post(&url, body, None).await
    }

    /// Fails an invocation: Lambda counts a function error, and an event source mapping
    /// makes the whole batch visible again.
    ///
    /// # Errors
    /// As [`Runtime::respond`].
    pub async fn fail(
        &self,
        request_id: &str,
        kind: &str,
        message: &str,
    ) -> Result<(), RuntimeError> {
        let url = format!("{}/runtime/invocation/{request_id}/error", self.base);
        self.post(&url, &error_body(kind, message), Some(kind))
            .await
    }

    /// Reports a failure before the first invocation; the process should exit after it.
    ///
    /// # Errors
    /// As [`Runtime::respond`].
    pub async fn init_failed(&self, kind: &str, message: &str) -> Result<(), RuntimeError> {
        let url = format!("{}/runtime/init/error", self.base);
        self.post(&url, &error_body(kind, message), Some(kind))
            .await
    }

    async fn post(&self, url: &str, body: &Value, error: Option<&str>) -> Result<(), RuntimeError> {
        let mut request = self.http.post(url).body(body.to_string());
        request = match error {
            Some(kind) => request
                .header("Lambda-Runtime-Function-Error-Type", kind)
                .header("Content-Type", "application/vnd.aws.lambda.error+json"),
            None => request.header("Content-Type", "application/json"),
        };
        let answer = request.send().await?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            let text = answer.text().await.unwrap_or_default();
            Err(RuntimeError::Answer(format!("{url}: {status} {text}")))
        }
    }
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"errorType": kind, "errorMessage": message, "stackTrace": []})
}

/// One SQS message of an event source mapping's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsRecord {
    pub message_id: String,
    pub body: String,
    /// `attributes.ApproximateReceiveCount`: 1 the first time.
    pub receives: u32,
    /// `eventSourceARN`: the queue it came from.
    pub queue_arn: String,
}

/// The SQS messages of an event, in order.
///
/// # Errors
/// The event is not an SQS event (no `Records` array, or a record without a `messageId`):
/// the whole invocation then fails, as nothing in it can be acknowledged one by one.
pub fn sqs_records(event: &[u8]) -> Result<Vec<SqsRecord>, String> {
    let event: Value =
        serde_json::from_slice(event).map_err(|e| format!("the event is not JSON: {e}"))?;
    let records = event["Records"]
        .as_array()
        .ok_or("the event has no Records array: tickflow lambda takes SQS events")?;
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if r["eventSource"].as_str().is_some_and(|s| s != "aws:sqs") {
                return Err(format!(
                    "record {i} comes from {}, not aws:sqs",
                    r["eventSource"]
                ));
            }
            Ok(SqsRecord {
                message_id: r["messageId"]
                    .as_str()
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| format!("record {i} has no messageId"))?
                    .to_string(),
                body: r["body"].as_str().unwrap_or_default().to_string(),
                receives: r["attributes"]["ApproximateReceiveCount"]
                    .as_str()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
                queue_arn: r["eventSourceARN"].as_str().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// The answer listing the messages to be received again: an event source mapping with
/// `ReportBatchItemFailures` deletes the rest. From a FIFO queue, every message after the
/// first failure is listed too, as the order within a group must hold.
pub fn batch_response(records: &[SqsRecord], failed: &[bool]) -> Value {
    let fifo = records.iter().any(|r| r.queue_arn.ends_with(".fifo"));
    let mut failing = false;
    let items: Vec<Value> = records
        .iter()
        .zip(failed)
        .filter_map(|(r, f)| {
            failing = if fifo { failing || *f } else { *f };
            failing.then(|| json!({"itemIdentifier": r.message_id}))
        })
        .collect();
    json!({"batchItemFailures": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, arn: &str) -> SqsRecord {
        SqsRecord {
            message_id: id.into(),
            body: String::new(),
            receives: 1,
            queue_arn: arn.into(),
        }
    }

    #[test]
    fn an_sqs_event_is_read_in_order_with_its_receive_counts() {
        let event = br#"{"Records":[
            {"messageId":"a","body":"{\"x\":1}","attributes":{"ApproximateReceiveCount":"3"},"eventSource":"aws:sqs","eventSourceARN":"arn:aws:sqs:us-east-1:1:q"},
            {"messageId":"b","body":"","attributes":{},"eventSource":"aws:sqs","eventSourceARN":"arn:aws:sqs:us-east-1:1:q"}]}"#;
        let records = sqs_records(event).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].message_id, "a");
        assert_eq!(records[0].body, "{\"x\":1}");
        assert_eq!(records[0].receives, 3);
        assert_eq!(records[1].receives, 1);
    }

    #[test]
    fn events_that_are_not_sqs_are_refused_with_the_reason() {
        assert!(sqs_records(b"nope").unwrap_err().contains("not JSON"));
        assert!(sqs_records(b"{}").unwrap_err().contains("no Records"));
        let s3 = br#"{"Records":[{"eventSource":"aws:s3","messageId":"a"}]}"#;
        assert!(sqs_records(s3).unwrap_err().contains("aws:s3"));
        let no_id = br#"{"Records":[{"eventSource":"aws:sqs","body":"x"}]}"#;
        assert!(
            sqs_records(no_id)
                .unwrap_err()
                .contains("record 0 has no messageId")
        );
    }

    #[test]
    fn only_failed_messages_are_listed_but_on_fifo_queues_all_after_the_first() {
        let std_q: Vec<_> = ["a", "b", "c"].iter().map(|i| record(i, "arn:q")).collect();
        let answer = batch_response(&std_q, &[false, true, false]);
        assert_eq!(
            answer,
            json!({"batchItemFailures": [{"itemIdentifier": "b"}]})
        );
        let none = batch_response(&std_q, &[false, false, false]);
        assert_eq!(none, json!({"batchItemFailures": []}));
        let fifo: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|i| record(i, "arn:q.fifo"))
            .collect();
        let answer = batch_response(&fifo, &[false, true, false]);
        assert_eq!(
            answer,
            json!({"batchItemFailures": [{"itemIdentifier": "b"}, {"itemIdentifier": "c"}]})
        );
    }

    #[test]
    fn the_api_address_must_be_host_and_port() {
        assert!(Runtime::new("127.0.0.1:9001").is_ok());
        let e = Runtime::new("no port").unwrap_err().to_string();
        assert!(e.contains("expected host:port"), "{e}");
    }
}
