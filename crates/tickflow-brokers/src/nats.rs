//! NATS JetStream as a source: a durable pull consumer on a stream, whose messages hold
//! ticks in tickflow's ingest format (one JSON object, NDJSON lines or a JSON array per
//! message, as `POST /api/v1/ingest` takes them).
//!
//! Each fetched batch is appended to the log, and only once it is durable there is the
//! batch acknowledged (its last message, with `AckPolicy::All`, waiting for the server's
//! confirmation). A crash in between redelivers the batch, and processing drops the repeats
//! by natural key (or, once past the lateness budget, sends them to the DLQ as late), so no
//! tick is stored twice. A message that cannot be read goes to the
//! DLQ as `malformed`, with the subject and stream sequence in the error and the message as
//! the payload, and is acknowledged with its batch: a poison message never blocks the stream.
//! The stream and the consumer are created when missing; a lost connection is retried with
//! capped backoff, and the durable consumer resumes where it left off.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use tickflow_core::codec::{Batch, Rejected};
use tickflow_core::ingest;
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_model::{RejectReason, UnixNanos};

/// The local server's address, as `nats-server` listens by default.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// How long one fetch waits for its batch to fill before handing over what it has.
const FETCH_WAIT: Duration = Duration::from_millis(200);

/// A JetStream stream followed by a durable consumer; see the module docs.
#[derive(Clone, Debug)]
pub struct NatsSource {
    pub url: String,
    /// The stream's name; created with `subjects` when it does not exist.
    pub stream: String,
    pub subjects: Vec<String>,
    /// The durable consumer's name: where the source resumes after a restart.
    pub durable: String,
    /// The most messages appended (and acknowledged) together.
    pub batch: usize,
    /// The longest wait between reconnects.
    pub retry_max: Duration,
}

#[async_trait::async_trait]
impl Source for NatsSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let mut delays = tickflow_core::retry::backoff(self.retry_max);
        while !ctx.is_stopping() {
            match self.follow(&ctx).await {
                Ok(()) => return Ok(()),
                // The log refusing a batch is not the broker's fault: the source stops.
                Err(Failure::Log(e)) => return Err(e),
                Err(Failure::Broker(e)) => {
                    let delay = delays.next().unwrap_or(self.retry_max);
                    tracing::warn!(source = ctx.id(), url = %self.url, stream = %self.stream, error = %e, ?delay, "NATS JetStream failed; reconnecting");
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

/// Why following the stream stopped.
enum Failure {
    Broker(String),
    Log(SourceError),
}

/// A broker error saying what was being done.
fn broker<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Failure {
    move |e| Failure::Broker(format!("{what}: {e}"))
}

impl NatsSource {
    /// Connects, makes sure of the stream and the consumer, and appends batches until told
    /// to stop (`Ok`) or until the broker fails.
    async fn follow(&self, ctx: &SourceContext) -> Result<(), Failure> {
        let client = async_nats::connect(&self.url)
            .await
            .map_err(broker("connecting"))?;
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: self.subjects.clone(),
                ..Default::default()
            })
            .await
            .map_err(broker("opening the stream"))?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &self.durable,
                consumer::pull::Config {
                    durable_name: Some(self.durable.clone()),
                    ack_policy: consumer::AckPolicy::All,
                    ..Default::default()
                },
            )
            .await
            .map_err(broker("opening the consumer"))?;
        tracing::info!(source = ctx.id(), url = %self.url, stream = %self.stream, durable = %self.durable, "following NATS JetStream");
        loop {
            let fetch = consumer
                .batch()
                .max_messages(self.batch)
                .expires(FETCH_WAIT)
                .messages();
            let mut messages = tokio::select! {
                m = fetch => m.map_err(broker("fetching"))?,
                () = ctx.stopped() => return Ok(()),
            };
            let mut batch = Batch::default();
            let mut last = None;
            while let Some(message) = messages.next().await {
                let message = message.map_err(broker("reading a message"))?;
                read(ctx.id(), &message, &mut batch);
                last = Some(message);
            }
            let Some(last) = last else {
                if ctx.is_stopping() {
                    return Ok(());
                }
                continue;
            };
            if !batch.is_empty() {
                ctx.append(&batch).map_err(Failure::Log)?;
            }
            last.double_ack().await.map_err(broker("acknowledging"))?;
            if ctx.is_stopping() {
                return Ok(());
            }
        }
    }
}

/// Appends a message's events to `batch`, or the message itself as rejected.
fn read(source: &str, message: &jetstream::Message, batch: &mut Batch) {
    let now = UnixNanos::now();
    let payload = &message.message.payload;
    let parsed = match std::str::from_utf8(payload) {
        Ok(text) => ingest::parse_body_into(text, source, now, batch).map_err(|e| e.to_string()),
        Err(e) => Err(format!("not UTF-8: {e}")),
    };
    if let Err(e) = parsed {
        let sequence = message
            .info()
            .map_or(String::new(), |i| format!(" #{}", i.stream_sequence));
        let error = format!("{}{sequence}: {e}", message.message.subject);
        batch.push_rejected(&Rejected {
            reason: RejectReason::Malformed,
            ts_recv: now,
            source,
            error: &error,
            payload: &String::from_utf8_lossy(payload),
        });
    }
}
