//! SQS as a source: long polls a queue whose messages hold ticks in tickflow's ingest format
//! (one JSON object, NDJSON lines or a JSON array per message, as `POST /api/v1/ingest`
//! takes them).
//!
//! Each received batch (up to 10 messages) is appended to the log, and only once it is
//! durable there are its messages deleted. A crash in between leaves them to come back after
//! the queue's visibility timeout, and processing drops the repeats by natural key, so no
//! tick is stored twice. A batch that takes longer than half the visibility timeout to reach
//! the log has its visibility extended first, so no other consumer receives it meanwhile.
//!
//! A message that cannot be read, or that has been received more than `max_receives` times
//! (a message that keeps coming back is poison, whatever it holds), goes to tickflow's DLQ as
//! `malformed` with the queue, the message id and the reason, and to the dead-letter queue
//! when one is set, with the reason in its `tickflow_reason` attribute; then it is deleted,
//! so one bad message never holds back its batch-mates. A queue that cannot be reached is
//! retried with capped backoff, counted and logged.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tickflow_core::codec::{Batch, Rejected};
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_model::{RejectReason, UnixNanos};

use crate::client::{AwsConfig, Client, Error, Service};

/// The most messages one receive returns (SQS's own limit).
pub const MAX_BATCH: usize = 10;

/// An SQS queue to read ticks from; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqsSource {
    pub aws: AwsConfig,
    /// `https://sqs.<region>.amazonaws.com/<account>/<name>`, as `GetQueueUrl` gives it.
    pub queue_url: String,
    /// How long a receive waits for messages (long polling), 1 to 20 s.
    pub wait: Duration,
    /// A message received more than this many times is not read again but sent on.
    pub max_receives: u32,
    /// Where unreadable and repeatedly received messages go, besides tickflow's DLQ.
    pub dead_letter_queue_url: Option<String>,
    /// The longest wait between attempts while the queue cannot be reached.
    pub retry_max: Duration,
    /// How long a call other than the long poll may take (the long poll: its wait and
    /// 10 s more): a queue that holds every byte is noticed then.
    pub timeout: Duration,
    /// How message bodies are read: tickflow's ingest format unless a mapping says otherwise.
    pub format: tickflow_core::mapping::Format,
}

#[async_trait::async_trait]
impl Source for SqsSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let client = Client::new(&self.aws, Service::Sqs, self.timeout)?;
        let mut delays = tickflow_core::retry::backoff(self.retry_max);
        while !ctx.is_stopping() {
            match self.follow(&client, &ctx).await {
                Ok(()) => return Ok(()),
                Err(Failure::Log(e)) => return Err(e),
                Err(Failure::Queue(e)) => {
                    let delay = delays.next().unwrap_or(self.retry_max);
                    metrics::counter!("tickflow_reconnects_total", "source" => ctx.id().to_string(), "reason" => "error")
                        .increment(1);
                    tracing::warn!(source = ctx.id(), queue = %self.queue_url, error = %e, ?delay, "SQS failed; trying again");
                    ctx.link().failed(e.to_string());
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = ctx.stopped() => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why following the queue stopped.
enum Failure {
    Queue(Error),
    Log(SourceError),
}

/// One received message, as the source needs it.
#[derive(Debug)]
struct Message {
    id: String,
    handle: String,
    body: String,
    receives: u32,
}

impl Message {
    fn from_json(m: &Value) -> Option<Self> {
        Some(Self {
            id: m["MessageId"].as_str()?.to_string(),
            handle: m["ReceiptHandle"].as_str()?.to_string(),
            body: m["Body"].as_str().unwrap_or_default().to_string(),
            receives: m["Attributes"]["ApproximateReceiveCount"]
                .as_str()
                .and_then(|c| c.parse().ok())
                .unwrap_or(1),
        })
    }
}

/// Whether `url` can be a queue's URL: http(s) with a path.
fn is_queue_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.path().len() > 1)
}

impl SqsSource {
    /// What is wrong with the settings, by key.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = self.aws.problems();
        if !is_queue_url(&self.queue_url) {
            out.push((
                "queue_url",
                format!(
                    "{:?}: the queue's URL, https://sqs.<region>.amazonaws.com/<account>/<name>",
                    self.queue_url
                ),
            ));
        }
        if let Some(d) = &self.dead_letter_queue_url
            && !is_queue_url(d)
        {
            out.push(("dead_letter_queue_url", format!("{d:?} is not a queue URL")));
        }
        out
    }

    /// The queue's name, the last part of its URL, for messages.
    fn queue_name(&self) -> &str {
        self.queue_url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(&self.queue_url)
    }

    /// Receives, appends and deletes batches until told to stop (`Ok`) or until a call fails.
    async fn follow(&self, client: &Client, ctx: &SourceContext) -> Result<(), Failure> {
        let attributes = client
            .json(
                "GetQueueAttributes",
                &json!({"QueueUrl": self.queue_url, "AttributeNames": ["VisibilityTimeout"]}),
            )
            .await
            .map_err(Failure::Queue)?;
        let visibility = attributes["Attributes"]["VisibilityTimeout"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::from_secs(30), Duration::from_secs);
        tracing::info!(source = ctx.id(), queue = %self.queue_url, ?visibility, "following SQS");
        ctx.link().working();
        let receive = json!({
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": MAX_BATCH,
            "WaitTimeSeconds": self.wait.as_secs().clamp(1, 20),
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
            "MessageAttributeNames": ["All"],
        });
        loop {
            let answer = tokio::select! {
                a = client.json_waiting("ReceiveMessage", &receive, self.wait) => a.map_err(Failure::Queue)?,
                () = ctx.stopped() => return Ok(()),
            };
            let received = Instant::now();
            let messages: Vec<Message> = answer["Messages"]
                .as_array()
                .map(|m| m.iter().filter_map(Message::from_json).collect())
                .unwrap_or_default();
            if messages.is_empty() {
                if ctx.is_stopping() {
                    return Ok(());
                }
                continue;
            }
            let (batch, dead) = self.read(ctx.id(), &messages);
            for (message, reason) in &dead {
                match self.send_dead(client, message, reason).await {
                    Ok(()) => {}
                    // It may take it later: the batch is tried again.
                    Err(e) if e.is_retryable() => return Err(Failure::Queue(e)),
                    // It never will (too large, a permission missing): tickflow's DLQ keeps the
                    // message, so the batch goes on without the copy.
                    Err(e) => {
                        tracing::warn!(source = ctx.id(), queue = %self.queue_url, message = %message.id, error = %e, "the dead-letter queue refused a copy; the message stays in tickflow's DLQ");
                    }
                }
            }
            self.keep_hidden(client, &messages, received, visibility)
                .await
                .map_err(Failure::Queue)?;
            if !batch.is_empty() {
                ctx.append(&batch).map_err(Failure::Log)?;
            }
            self.delete(client, ctx, &messages)
                .await
                .map_err(Failure::Queue)?;
            if ctx.is_stopping() {
                return Ok(());
            }
        }
    }

    /// The batch to append, and the messages to send to the dead-letter queue with why.
    fn read<'m>(
        &self,
        source: &str,
        messages: &'m [Message],
    ) -> (Batch, Vec<(&'m Message, String)>) {
        let now = UnixNanos::now();
        let mut batch = Batch::default();
        let mut dead = Vec::new();
        for m in messages {
            let message = Received {
                queue: self.queue_name(),
                id: &m.id,
                body: &m.body,
                receives: m.receives,
            };
            if let Err(problem) =
                message.read(&self.format, self.max_receives, source, now, &mut batch)
            {
                dead.push((m, problem));
            }
        }
        (batch, dead)
    }

    /// Copies a message to the dead-letter queue, if there is one, with the reason.
    async fn send_dead(&self, client: &Client, m: &Message, reason: &str) -> Result<(), Error> {
        self.send_dead_letter(client, &m.id, &m.body, reason).await
    }

    /// Copies the message `id` with `body` to the dead-letter queue, if there is one, with
    /// the reason in its `tickflow_reason` attribute.
    ///
    /// # Errors
    /// SQS refused the copy or cannot be reached; [`Error::is_retryable`] tells which.
    pub async fn send_dead_letter(
        &self,
        client: &Client,
        id: &str,
        body: &str,
        reason: &str,
    ) -> Result<(), Error> {
        let Some(dlq) = &self.dead_letter_queue_url else {
            return Ok(());
        };
        let reason: String = reason.chars().take(1000).collect();
        let mut request = json!({
            "QueueUrl": dlq,
            "MessageBody": if body.is_empty() { " " } else { body },
            "MessageAttributes": {
                "tickflow_reason": {"DataType": "String", "StringValue": reason},
                "tickflow_source_queue": {"DataType": "String", "StringValue": self.queue_url},
                "tickflow_message_id": {"DataType": "String", "StringValue": id},
            },
        });
        // A FIFO queue needs a group, and drops a copy sent again by its message id.
        if dlq.ends_with(".fifo") {
            request["MessageGroupId"] = json!("tickflow-dead-letters");
            request["MessageDeduplicationId"] = json!(id);
        }
        client.json("SendMessage", &request).await?;
        Ok(())
    }

    /// Extends the batch's visibility when half of it has gone by since it was received.
    async fn keep_hidden(
        &self,
        client: &Client,
        messages: &[Message],
        received: Instant,
        visibility: Duration,
    ) -> Result<(), Error> {
        if received.elapsed() < visibility / 2 {
            return Ok(());
        }
        let entries: Vec<Value> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                json!({"Id": i.to_string(), "ReceiptHandle": m.handle, "VisibilityTimeout": visibility.as_secs()})
            })
            .collect();
        client
            .json(
                "ChangeMessageVisibilityBatch",
                &json!({"QueueUrl": self.queue_url, "Entries": entries}),
            )
            .await?;
        Ok(())
    }

    /// Deletes the batch's messages; one SQS would not delete comes back and is dropped as a
    /// repeat.
    async fn delete(
        &self,
        client: &Client,
        ctx: &SourceContext,
        messages: &[Message],
    ) -> Result<(), Error> {
        let entries: Vec<Value> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| json!({"Id": i.to_string(), "ReceiptHandle": m.handle}))
            .collect();
        let answer = client
            .json(
                "DeleteMessageBatch",
                &json!({"QueueUrl": self.queue_url, "Entries": entries}),
            )
            .await?;
        for failed in answer["Failed"].as_array().into_iter().flatten() {
            tracing::warn!(source = ctx.id(), queue = %self.queue_url, entry = %failed, "SQS did not delete a message; it comes back and is dropped as a repeat");
        }
        Ok(())
    }
}

/// A message as received, from SQS or in a Lambda event.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The queue's name, for the DLQ's error.
    pub queue: &'a str,
    pub id: &'a str,
    pub body: &'a str,
    /// `ApproximateReceiveCount`: 1 the first time.
    pub receives: u32,
}

impl Received<'_> {
    /// Adds the message's ticks to `batch`. One that cannot be read, or that has been
    /// received more than `max_receives` times (a message that keeps coming back is poison,
    /// whatever it holds), is added as rejected instead.
    ///
    /// # Errors
    /// Why the message went to tickflow's DLQ, for the dead-letter queue's copy.
    pub fn read(
        &self,
        format: &tickflow_core::mapping::Format,
        max_receives: u32,
        source: &str,
        now: UnixNanos,
        batch: &mut Batch,
    ) -> Result<(), String> {
        let problem = if self.receives > max_receives {
            format!(
                "received {} times, more than max_receives = {max_receives}",
                self.receives
            )
        } else {
            match format.read_into(self.body, source, now, batch) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            }
        };
        let error = format!("{} message {}: {problem}", self.queue, self.id);
        batch.push_rejected(&Rejected {
            reason: RejectReason::Malformed,
            ts_recv: now,
            source,
            error: &error,
            payload: tickflow_core::codec::payload_prefix(self.body),
        });
        Err(problem)
    }
}

/// The URL of the queue named `name`, as `GetQueueUrl` answers.
///
/// # Errors
/// The queue does not exist or SQS cannot be reached.
pub async fn queue_url(client: &Client, name: &str) -> Result<String, Error> {
    let answer = client
        .json("GetQueueUrl", &json!({"QueueName": name}))
        .await?;
    answer["QueueUrl"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Service {
            status: 200,
            code: "UnreadableAnswer".into(),
            message: format!("GetQueueUrl answered {answer}"),
        })
}

/// Sends up to [`MAX_BATCH`] bodies in one `SendMessageBatch`, each one message.
///
/// # Errors
/// The call failed, or SQS refused some entries (their codes and messages).
pub async fn send_batch(client: &Client, queue_url: &str, bodies: &[&str]) -> Result<(), Error> {
    if bodies.len() > MAX_BATCH {
        return Err(Error::Config(format!(
            "{} messages: SQS takes at most {MAX_BATCH} a batch",
            bodies.len()
        )));
    }
    let entries: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"Id": i.to_string(), "MessageBody": b}))
        .collect();
    let answer = client
        .json(
            "SendMessageBatch",
            &json!({"QueueUrl": queue_url, "Entries": entries}),
        )
        .await?;
    match answer["Failed"].as_array() {
        Some(failed) if !failed.is_empty() => Err(Error::Service {
            status: 200,
            code: failed[0]["Code"].as_str().unwrap_or("Failed").to_string(),
            message: format!(
                "{} of {} messages refused: {}",
                failed.len(),
                bodies.len(),
                failed[0]
            ),
        }),
        _ => Ok(()),
    }
}
