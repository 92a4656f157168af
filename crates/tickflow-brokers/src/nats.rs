//! NATS JetStream as a source: a durable pull consumer on a stream, whose messages hold
//! ticks in tickflow's ingest format (one JSON object, NDJSON lines or a JSON array per
//! message, as `POST /api/v1/ingest` takes them), or in another shape through a field
//! mapping ([`tickflow_core::mapping`]).
//!
//! Each fetched batch is appended to the log, and only once it is durable are its messages
//! acknowledged (explicitly, each one, the last waiting for the server's confirmation). A
//! crash in between leaves them pending on the durable consumer; the next start resets the
//! consumer to just after its acknowledged floor, so they come again at once and in order,
//! and processing drops the repeats by natural key, so no tick is stored twice. A message that cannot be read goes to the
//! DLQ as `malformed`, with the subject and stream sequence in the error and the message as
//! the payload, and is acknowledged with its batch: a poison message never blocks the stream.
//! The stream and the consumer are created when missing; a lost connection is retried with
//! capped backoff, and the durable consumer resumes where it left off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use tickflow_core::codec::{Batch, Rejected};
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_model::{RejectReason, UnixNanos};

/// The local server's address, as `nats-server` listens by default.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// How long one fetch waits for its batch to fill before handing over what it has.
const FETCH_WAIT: Duration = Duration::from_millis(200);
/// How often the client pings the server: a link that holds every byte (a partition) is
/// taken for lost once two pings go unanswered, not after the default two minutes.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// Shows a lost connection in the status, `/readyz` and `tickflow_reconnects_total` while
/// the client reconnects, and clears it once it has. `lost` is whether this client lost its
/// connection: the first connect's event, which comes late, must not clear a failure the
/// source has met since (a stream it cannot open).
fn connection_event(ctx: &SourceContext, lost: &AtomicBool, event: &async_nats::Event) {
    match event {
        async_nats::Event::Disconnected => {
            lost.store(true, Ordering::Release);
            metrics::counter!("tickflow_reconnects_total", "source" => ctx.id().to_string(), "reason" => "error")
                .increment(1);
            tracing::warn!(
                source = ctx.id(),
                "lost the connection to the NATS server; reconnecting"
            );
            ctx.link()
                .failed("lost the connection to the NATS server; reconnecting".into());
        }
        async_nats::Event::Connected if lost.swap(false, Ordering::AcqRel) => {
            ctx.link().working();
        }
        _ => {}
    }
}

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
    /// How messages are read: tickflow's ingest format unless a mapping says otherwise.
    pub format: tickflow_core::mapping::Format,
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
                    metrics::counter!("tickflow_reconnects_total", "source" => ctx.id().to_string(), "reason" => "error")
                        .increment(1);
                    tracing::warn!(source = ctx.id(), url = %self.url, stream = %self.stream, error = %e, ?delay, "NATS JetStream failed; reconnecting");
                    ctx.link().failed(e);
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
        // The client reconnects by itself after a lost connection, and a fetch meanwhile just
        // comes back empty: its events are what show the outage.
        let events = ctx.clone();
        let lost = Arc::new(AtomicBool::new(false));
        let client = async_nats::ConnectOptions::new()
            .ping_interval(PING_INTERVAL)
            .event_callback(move |event| {
                let (ctx, lost) = (events.clone(), Arc::clone(&lost));
                async move { connection_event(&ctx, &lost, &event) }
            })
            .connect(&self.url)
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
        let config = |deliver_policy, old: Option<&consumer::Config>| {
            let mut c = consumer::pull::Config {
                durable_name: Some(self.durable.clone()),
                // Explicit, not All: an ack of a later message under All would also ack the
                // batch a killed process fetched and never stored.
                ack_policy: consumer::AckPolicy::Explicit,
                deliver_policy,
                // Room for two batches unacknowledged: at the server's default of 1,000, a
                // fetch of more would wait out its expiry for messages it may not be given.
                max_ack_pending: (self.batch as i64).saturating_mul(2).max(1000),
                ..Default::default()
            };
            // A reset keeps what an operator may have set on the durable.
            if let Some(old) = old {
                c.filter_subject.clone_from(&old.filter_subject);
                c.ack_wait = old.ack_wait;
                c.max_ack_pending = old.max_ack_pending.max(c.max_ack_pending);
                c.max_deliver = old.max_deliver;
            }
            c
        };
        // Where a reset notes the sequence to start from before deleting the durable, so a
        // crash in between recreates it there rather than at the stream's beginning.
        let marker = ctx
            .state_dir()
            .map(|d| d.join(format!("nats-reset-{}.txt", self.durable)));
        let noted = marker
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.trim().parse::<u64>().ok());
        let first = match noted {
            Some(start_sequence) => consumer::DeliverPolicy::ByStartSequence { start_sequence },
            None => consumer::DeliverPolicy::All,
        };
        let mut consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(&self.durable, config(first, None))
            .await
            .map_err(broker("opening the consumer"))?;
        // Messages handed to a process that died are redelivered only after the ack wait,
        // behind newer ones, and would then be late. The durable is this source's alone: it
        // starts again right after its acknowledged floor, so they come first, now. A durable
        // made with another ack policy, or too little room for a batch, is reset the same way.
        let info = consumer
            .info()
            .await
            .map_err(broker("reading the consumer"))?
            .clone();
        let room = (self.batch as i64).saturating_mul(2);
        let outdated = info.config.ack_policy != consumer::AckPolicy::Explicit
            || (info.config.max_ack_pending >= 0 && info.config.max_ack_pending < room);
        if info.num_ack_pending > 0 || outdated {
            let start_sequence = info.ack_floor.stream_sequence + 1;
            tracing::info!(source = ctx.id(), durable = %self.durable, pending = info.num_ack_pending, start_sequence, "taking back messages a stopped process fetched but never acknowledged");
            if let Some(path) = &marker {
                note(path, start_sequence).map_err(broker("noting the reset"))?;
            }
            stream
                .delete_consumer(&self.durable)
                .await
                .map_err(broker("resetting the consumer"))?;
            consumer = stream
                .create_consumer(config(
                    consumer::DeliverPolicy::ByStartSequence { start_sequence },
                    Some(&info.config),
                ))
                .await
                .map_err(broker("resetting the consumer"))?;
        }
        if let Some(path) = &marker {
            // Done with, or never written.
            let _ = std::fs::remove_file(path);
        }
        tracing::info!(source = ctx.id(), url = %self.url, stream = %self.stream, durable = %self.durable, "following NATS JetStream");
        ctx.link().working();
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
            let mut fetched = Vec::new();
            while let Some(message) = messages.next().await {
                let message = message.map_err(broker("reading a message"))?;
                read(&self.format, ctx.id(), &message, &mut batch);
                fetched.push(message);
            }
            let Some(last) = fetched.pop() else {
                if ctx.is_stopping() {
                    return Ok(());
                }
                continue;
            };
            if !batch.is_empty() {
                ctx.append(&batch).map_err(Failure::Log)?;
            }
            // Acks go out in order on one connection: once the last one is confirmed, the
            // server has the others too. One that is lost brings its message again, and
            // processing drops the repeat.
            for message in &fetched {
                message.ack().await.map_err(broker("acknowledging"))?;
            }
            last.double_ack().await.map_err(broker("acknowledging"))?;
            if ctx.is_stopping() {
                return Ok(());
            }
        }
    }
}

/// Writes `sequence` to `path` durably.
fn note(path: &std::path::Path, sequence: u64) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::File::create(path)?;
    writeln!(f, "{sequence}")?;
    f.sync_all()
}

/// Appends a message's events to `batch`, or the message itself as rejected.
fn read(
    format: &tickflow_core::mapping::Format,
    source: &str,
    message: &jetstream::Message,
    batch: &mut Batch,
) {
    let now = UnixNanos::now();
    let payload = &message.message.payload;
    let parsed = match std::str::from_utf8(payload) {
        Ok(text) => format.read_into(text, source, now, batch),
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
            payload: tickflow_core::codec::payload_prefix(&String::from_utf8_lossy(payload)),
        });
    }
}

/// Publishes messages to a JetStream subject and waits for the stream's acknowledgements:
/// `tickflow produce --to nats://…`, and tests.
#[derive(Debug, Clone)]
pub struct Publisher {
    js: jetstream::Context,
}

impl Publisher {
    /// Connects to the server at `url` (`nats://host:port`).
    ///
    /// # Errors
    /// The server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, String> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| format!("connecting to {url}: {e}"))?;
        Ok(Self {
            js: jetstream::new(client),
        })
    }

    /// Publishes each payload as one message on `subject`, all sent before any
    /// acknowledgement is awaited; returns once the stream has stored every one.
    ///
    /// # Errors
    /// A publish the server refused or never acknowledged (no stream takes the subject).
    pub async fn publish_all(
        &self,
        subject: &str,
        payloads: impl IntoIterator<Item = bytes::Bytes>,
    ) -> Result<(), String> {
        // A window of acknowledgements at a time: the client holds only so many open.
        let mut acks = Vec::new();
        let mut payloads = payloads.into_iter().peekable();
        while payloads.peek().is_some() {
            for payload in payloads.by_ref().take(1000) {
                let ack = self
                    .js
                    .publish(subject.to_string(), payload)
                    .await
                    .map_err(|e| format!("publishing to {subject}: {e}"))?;
                acks.push(ack);
            }
            for ack in acks.drain(..) {
                ack.await
                    .map_err(|e| format!("{subject}: no stream stored it: {e}"))?;
            }
        }
        Ok(())
    }
}
