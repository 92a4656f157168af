//! NATS JetStream as tickflow's own log (`[log] kind = "nats"`): the records the embedded log
//! would hold on local disk are kept in a stream on the server instead, so they outlive the
//! machine that received them.
//!
//! - **Records in chunks**, offsets from the stream's sequence ([`crate::chunked`]): any
//!   number of processes can append at once, and the backlog is reported in messages
//!   ([`NatsLog::messages_behind`]).
//! - **Acknowledged when stored.** An append returns once the server has stored every chunk
//!   (with the stream's replicas), which is when ingest acknowledges.
//! - **Read through a durable pull consumer** created at the message holding the processor's
//!   checkpointed offset; [`NatsLog::commit_offset`] acknowledges (ack policy `all`) the last
//!   chunk the checkpoint covers, so `nats consumer info` shows the processor's backlog. The
//!   checkpoint, written with the lake, stays the truth of where processing resumes.
//! - **Retention is the server's** (`max_age`, `max_bytes` from `[log]`), which deletes old
//!   messages whether or not they were processed. Messages deleted before they were read are
//!   reported, with how many.
//!
//! The methods block the calling thread; the client runs on a small runtime of its own, so
//! they may be called from anywhere (HTTP handlers and sources append from async tasks).
//! Only one thread reads ([`NatsLog::read`], [`NatsLog::wait_for`]).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::chunked::{self, Chunk, READ_AHEAD, Reader, Reading, offset, position_of};

/// Header naming the chunk format, so a later format can be told apart.
const FORMAT_HEADER: &str = "Tickflow-Log";
const FORMAT: &str = "1";
/// Room left under the server's payload limit for the headers.
const HEADER_ROOM: usize = 512;
/// Consumer ack wait: far past any flush interval, so the server never redelivers a chunk
/// that is merely waiting for its flush.
const ACK_WAIT: Duration = Duration::from_secs(600);

/// What acknowledges a chunk on the consumer.
type Reply = Option<async_nats::Subject>;

/// Where the log lives on the server.
#[derive(Debug, Clone)]
pub struct NatsLogConfig {
    pub url: String,
    /// The stream's name; created when missing, with `subject` as its only subject.
    pub stream: String,
    pub subject: String,
    /// The durable consumer the processor reads through.
    pub consumer: String,
    /// Copies of each message the server keeps (a cluster's replication factor).
    pub replicas: usize,
    /// Messages older than this are deleted by the server.
    pub max_age: Option<Duration>,
    /// The stream's size limit; the oldest messages go first.
    pub max_bytes: Option<u64>,
    /// Where processing stands (its checkpoint): a stream that ends before it was deleted
    /// or replaced, and is refused.
    pub checkpoint: u64,
}

/// A failure talking to the server, or a log that is not tickflow's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsLogError(pub String);

impl std::fmt::Display for NatsLogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NATS log: {}", self.0)
    }
}

impl std::error::Error for NatsLogError {}

impl NatsLogError {
    /// A record larger than one message may be: the append can never succeed.
    pub fn is_too_large(&self) -> bool {
        self.0.contains(chunked::TOO_LARGE)
    }
}

type Result<T, E = NatsLogError> = std::result::Result<T, E>;

fn err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> NatsLogError {
    move |e| NatsLogError(format!("{what}: {e}"))
}

/// The log on a JetStream stream; see the module docs.
pub struct NatsLog {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    /// Chunks carry the reply subject that acknowledges them.
    reading: Reading<Reply>,
}

impl std::fmt::Debug for NatsLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsLog")
            .field("url", &self.shared.config.url)
            .field("stream", &self.shared.config.stream)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: NatsLogConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    /// The last stream sequence known to be taken.
    last_sequence: AtomicU64,
    /// The first sequence still in the stream, as far as known.
    first_sequence: AtomicU64,
    max_payload: usize,
}

impl NatsLog {
    /// Connects, creates the stream when missing (and refuses one that holds other
    /// subjects), and finds the stream's end.
    ///
    /// # Errors
    /// The server cannot be reached, the stream is not tickflow's log, or it ends before
    /// the checkpoint.
    pub fn open(config: NatsLogConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tickflow-nats-log")
            .enable_all()
            .build()
            .map_err(err("starting the client's runtime"))?;
        let shared = rt.block_on(connect(config))?;
        let name = format!("NATS stream {}", shared.config.stream);
        Ok(Self {
            rt,
            shared: Arc::new(shared),
            reading: Reading::new(name),
        })
    }

    /// Runs `work` on the client's runtime and waits for it, from any thread.
    fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().ok()
    }

    /// Appends records; returns their offsets once the server has stored all of them.
    ///
    /// # Errors
    /// The server refused or did not confirm a chunk: none of the batch counts as appended
    /// (some of it may be stored, and is then read as any record is).
    pub fn append_batch(&self, records: &[&[u8]]) -> Result<Range<u64>> {
        let chunks = chunked::pack(records, self.shared.max_payload).map_err(NatsLogError)?;
        let shared = Arc::clone(&self.shared);
        self.run(async move { shared.publish(chunks).await })
            .unwrap_or_else(|| Err(NatsLogError("the client stopped".into())))
    }

    /// An offset above every record known to be in the stream: the next message's first.
    pub fn next_offset(&self) -> u64 {
        offset(self.shared.last_sequence.load(Ordering::Acquire) + 1, 0)
    }

    /// The first offset still in the stream, as far as this process knows.
    pub fn start_offset(&self) -> u64 {
        offset(self.shared.first_sequence.load(Ordering::Acquire), 0)
    }

    /// Messages in the stream at or after the one holding `next`: the backlog of a reader
    /// there, in messages (each an ingest batch or part of one).
    pub fn messages_behind(&self, next: u64) -> u64 {
        chunked::messages_behind(next, self.shared.last_sequence.load(Ordering::Acquire))
    }

    /// Reads up to `max` records from offset `from` on into `out` (emptied first), without
    /// waiting: what has arrived from the server. Reading elsewhere than where the last
    /// read ended starts the consumer again at `from`.
    ///
    /// # Errors
    /// The consumer could not be created at `from`.
    pub fn read(
        &self,
        from: u64,
        max: usize,
        out: &mut impl tickflow_log::RecordSink,
    ) -> Result<()> {
        self.reading.read(from, max, out, |reader| {
            self.restart(reader, from);
            Ok(())
        })
    }

    /// Waits up to `timeout` for something to read at `from` (call [`NatsLog::read`] after).
    pub fn wait_for(&self, from: u64, timeout: Duration) {
        self.reading.wait(from, timeout, &self.rt);
    }

    /// Acknowledges every chunk below `next` on the durable consumer: the processor's
    /// checkpoint has them. Only for the consumer's view of the backlog, so a failure is
    /// logged, not returned.
    pub fn commit_offset(&self, next: u64) {
        if let Some(reply) = self.reading.take_through(next).flatten() {
            let client = self.shared.client.clone();
            self.rt.spawn(async move {
                if let Err(e) = client.publish(reply, Bytes::from_static(b"+ACK")).await {
                    tracing::warn!(error = %e, "could not acknowledge processed chunks on the NATS log's consumer");
                }
            });
        }
    }

    /// Starts the consumer at the chunk holding `from`.
    fn restart(&self, reader: &mut Reader<Reply>, from: u64) {
        let first = self.shared.first_sequence.load(Ordering::Acquire);
        let sequence = position_of(from).max(first).max(1);
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let task = self
            .rt
            .spawn(follow(Arc::clone(&self.shared), sequence, tx));
        reader.start(from, rx, task);
        tracing::info!(from, sequence, stream = %self.shared.config.stream, consumer = %self.shared.config.consumer, "reading the NATS log");
    }
}

async fn connect(config: NatsLogConfig) -> Result<Shared> {
    let client = async_nats::connect(&config.url)
        .await
        .map_err(|e| NatsLogError(format!("connecting to {}: {e}", config.url)))?;
    let js = jetstream::new(client.clone());
    let max_age = config.max_age.unwrap_or_default();
    let max_bytes = config
        .max_bytes
        .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![config.subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            max_age,
            max_bytes,
            ..Default::default()
        })
        .await
        .map_err(|e| NatsLogError(format!("opening stream {}: {e}", config.stream)))?;
    let info = stream
        .info()
        .await
        .map_err(err("reading the stream"))?
        .clone();
    if info.config.subjects != [config.subject.clone()] {
        return Err(NatsLogError(format!(
            "stream {} takes subjects {:?}, not only {}: it is not this tickflow log; name another stream in [log] stream",
            config.stream, info.config.subjects, config.subject
        )));
    }
    // Interest or work-queue retention drops messages no consumer is there to take, and the
    // durable is made again at each start.
    if info.config.retention != stream::RetentionPolicy::Limits {
        return Err(NatsLogError(format!(
            "stream {} has {:?} retention; the log needs Limits (messages kept until max_age or max_bytes), or it may drop acknowledged ticks: name another stream in [log] stream",
            config.stream, info.config.retention
        )));
    }
    if info.config.storage != stream::StorageType::File {
        tracing::warn!(stream = %config.stream, "the log's stream is kept in memory: a NATS server restart loses it");
    }
    if info.config.num_replicas != config.replicas {
        tracing::warn!(stream = %config.stream, has = info.config.num_replicas, configured = config.replicas, "the stream's replicas differ from [log] replicas, which applies only when tickflow creates it");
    }
    // Retention set in [log] follows the config at every start; unset, the stream keeps
    // what it has.
    let wanted_age = config.max_age.map_or(info.config.max_age, |_| max_age);
    let wanted_bytes = config
        .max_bytes
        .map_or(info.config.max_bytes, |_| max_bytes);
    if info.config.max_age != wanted_age || info.config.max_bytes != wanted_bytes {
        let mut updated = info.config.clone();
        updated.max_age = wanted_age;
        updated.max_bytes = wanted_bytes;
        js.update_stream(updated)
            .await
            .map_err(err("applying [log] retention to the stream"))?;
        tracing::info!(stream = %config.stream, max_age = ?wanted_age, max_bytes = wanted_bytes, "stream retention updated");
    }
    let state = stream
        .info()
        .await
        .map_err(err("reading the stream"))?
        .state
        .clone();
    let end = offset(state.last_sequence + 1, 0);
    if config.checkpoint > end {
        return Err(NatsLogError(format!(
            "processing is at offset {} (message {}) but stream {} ends at message {}: the stream was deleted or replaced. Restore it, or start with a new data directory",
            config.checkpoint,
            position_of(config.checkpoint),
            config.stream,
            state.last_sequence
        )));
    }
    let max_payload = client.server_info().max_payload;
    Ok(Shared {
        config,
        client,
        js,
        stream,
        last_sequence: AtomicU64::new(state.last_sequence),
        first_sequence: AtomicU64::new(state.first_sequence.max(1)),
        max_payload: max_payload.saturating_sub(HEADER_ROOM).max(1024),
    })
}

impl Shared {
    /// Publishes `chunks` (all sent before any acknowledgement is awaited) and returns the
    /// offsets from the first record of the first to after the last of the last.
    async fn publish(&self, chunks: Vec<(Bytes, u64)>) -> Result<Range<u64>> {
        let mut acks = Vec::with_capacity(chunks.len());
        for (payload, count) in chunks {
            let message = jetstream::message::PublishMessage::build()
                .payload(payload)
                .header(FORMAT_HEADER, FORMAT);
            let ack = self
                .js
                .send_publish(self.config.subject.clone(), message)
                .await
                .map_err(err("publishing"))?;
            acks.push((ack, count));
        }
        let mut range: Option<Range<u64>> = None;
        for (ack, count) in acks {
            let stored = ack.await.map_err(err("the server did not store a chunk"))?;
            self.last_sequence
                .fetch_max(stored.sequence, Ordering::AcqRel);
            range = Some(chunked::cover(range, stored.sequence, count));
        }
        Ok(range.unwrap_or(0..0))
    }
}

/// Feeds chunks from `sequence` on into `tx` through the durable consumer, starting it
/// again after the last chunk received whenever the server or the connection fails.
async fn follow(
    shared: Arc<Shared>,
    mut sequence: u64,
    tx: tokio::sync::mpsc::Sender<Chunk<Reply>>,
) {
    let mut delays = tickflow_core::retry::backoff(Duration::from_secs(5));
    loop {
        match follow_once(&shared, &mut sequence, &tx).await {
            Ok(()) => return,
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, sequence, ?delay, stream = %shared.config.stream, "reading the NATS log failed; starting the consumer again");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn follow_once(
    shared: &Shared,
    sequence: &mut u64,
    tx: &tokio::sync::mpsc::Sender<Chunk<Reply>>,
) -> Result<()> {
    let name = &shared.config.consumer;
    // The durable is the processor's alone: it is made again where the checkpoint says.
    let _ = shared.stream.delete_consumer(name).await;
    let consumer: consumer::PullConsumer = shared
        .stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: *sequence,
            },
            ack_policy: consumer::AckPolicy::All,
            ack_wait: ACK_WAIT,
            max_ack_pending: -1,
            ..Default::default()
        })
        .await
        .map_err(err("creating the consumer"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(READ_AHEAD)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(err("reading"))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(err("reading"))?;
        let info = message.info().map_err(err("reading a chunk's metadata"))?;
        let stream_sequence = info.stream_sequence;
        if stream_sequence < *sequence {
            // Redelivered: already handed on.
            continue;
        }
        let format = message
            .headers
            .as_ref()
            .and_then(|h| h.get(FORMAT_HEADER))
            .map(|v| v.as_str().to_string());
        if format.as_deref() != Some(FORMAT) {
            tracing::error!(
                sequence = stream_sequence,
                ?format,
                "a message that is not a tickflow log chunk (format {FORMAT}) is skipped"
            );
            *sequence = stream_sequence + 1;
            continue;
        }
        // Messages still pending for the consumer count toward the end, so the lag includes
        // what other processes appended and was not delivered yet.
        shared
            .last_sequence
            .fetch_max(stream_sequence + info.pending, Ordering::AcqRel);
        let chunk = Chunk {
            position: stream_sequence,
            payload: message.message.payload.clone(),
            token: message.message.reply.clone(),
        };
        if tx.send(chunk).await.is_err() {
            return Ok(());
        }
        *sequence = stream_sequence + 1;
    }
    Err(NatsLogError("the consumer's messages ended".into()))
}
