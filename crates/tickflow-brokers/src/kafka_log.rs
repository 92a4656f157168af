//! Kafka as tickflow's own log (`[log] kind = "kafka"`, with the `kafka` feature): the
//! records the embedded log would keep on local disk are kept in a topic instead, so they
//! outlive the machine that received them.
//!
//! - **Records in chunks** on one partition of the topic, offsets from the partition's
//!   ([`crate::chunked`]; a Kafka offset `k` is message position `k + 1`). Any number of
//!   processes can append at once; the backlog is reported in messages.
//! - **Acknowledged when stored**: an idempotent producer with `acks=all`; an append returns
//!   once every chunk is acknowledged, which is when ingest answers. A producer whose sends
//!   failed is replaced, as an idempotent producer fenced by the broker never recovers.
//! - **Read by assignment** from the message holding the checkpoint's offset, and committed
//!   to the consumer group `group` (the next offset after the chunks each flush put in the
//!   lake), so `kafka-consumer-groups --describe` shows the processor's lag. The checkpoint,
//!   written with the lake, stays the truth of where processing resumes.
//! - **Retention is the broker's** (`retention.ms`, `retention.bytes` of the topic), which
//!   deletes old messages whether or not they were processed; messages deleted before they
//!   were read are reported, with how many.
//! - **One partition per log**: a partitioned log (`[log] partitions`) is one [`KafkaLog`]
//!   per partition, each with a processor of its own; a topic whose partition count is not
//!   the configured one is refused, as symbols would move between partitions.
//!
//! The methods block the calling thread; the client runs on a small runtime of its own.
//! Only one thread reads ([`KafkaLog::read`], [`KafkaLog::wait_for`]).

use std::collections::BTreeMap;
use std::ops::Range;
#[cfg(feature = "kafka")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "kafka")]
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(feature = "kafka")]
use bytes::Bytes;
#[cfg(feature = "kafka")]
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
#[cfg(feature = "kafka")]
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
#[cfg(feature = "kafka")]
use rdkafka::producer::{FutureProducer, FutureRecord};
#[cfg(feature = "kafka")]
use rdkafka::{Offset, TopicPartitionList};

#[cfg(feature = "kafka")]
use crate::chunked::{self, Chunk, READ_AHEAD, Reader, Reading, offset, position_of};

/// Header naming the chunk format, so a later format can be told apart.
#[cfg(feature = "kafka")]
const FORMAT_HEADER: &str = "tickflow-log";
#[cfg(feature = "kafka")]
const FORMAT: &[u8] = b"1";
/// The largest chunk: under the brokers' default message limit of 1 MB, with room for the
/// record batch around it.
#[cfg(feature = "kafka")]
pub(crate) const MAX_CHUNK: usize = 900_000;
/// How long the brokers are waited for when opening.
#[cfg(feature = "kafka")]
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the log lives on the brokers.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaLogConfig {
    pub brokers: String,
    /// Created with `partitions` partitions when missing.
    pub topic: String,
    /// The topic's partitions: a topic with another count is refused.
    pub partitions: i32,
    /// The partition this log reads and appends to.
    pub partition: i32,
    /// The consumer group processing commits its position to.
    pub group: String,
    /// Copies of the partition, when the topic is created.
    pub replicas: i32,
    /// librdkafka settings besides tickflow's own (`kafka::OWN_SETTINGS`).
    pub options: BTreeMap<String, String>,
    /// Where processing stands (its checkpoint): a topic that ends before it was deleted
    /// or replaced, and is refused.
    pub checkpoint: u64,
}

impl std::fmt::Debug for KafkaLogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Options may hold SASL passwords: only their names are shown.
        f.debug_struct("KafkaLogConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("group", &self.group)
            .field("options", &crate::kafka::option_names(&self.options))
            .finish_non_exhaustive()
    }
}

/// A failure talking to the brokers, or a topic that cannot be the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaLogError(pub String);

impl std::fmt::Display for KafkaLogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kafka log: {}", self.0)
    }
}

impl std::error::Error for KafkaLogError {}

impl KafkaLogError {
    /// A record larger than one message may be: the append can never succeed.
    pub fn is_too_large(&self) -> bool {
        self.0.contains(crate::chunked::TOO_LARGE)
    }
}

type Result<T, E = KafkaLogError> = std::result::Result<T, E>;

#[cfg(feature = "kafka")]
fn err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> KafkaLogError {
    move |e| KafkaLogError(format!("{what}: {e}"))
}

/// The log on a Kafka topic; see the module docs.
#[cfg(feature = "kafka")]
pub struct KafkaLog {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    /// Chunks carry their Kafka offset, which commits them.
    reading: Reading<i64>,
}

/// Without the `kafka` feature: [`KafkaLog::open`] says how to build it.
#[cfg(not(feature = "kafka"))]
#[derive(Debug)]
pub enum KafkaLog {}

#[cfg(feature = "kafka")]
struct Shared {
    config: KafkaLogConfig,
    producer: Mutex<FutureProducer>,
    consumer: StreamConsumer,
    /// The position (Kafka offset + 1) of the last message known to be in the topic.
    last_position: AtomicU64,
    first_position: AtomicU64,
    /// Whether [`watch_end`] runs (for the reader only).
    watching: std::sync::atomic::AtomicBool,
}

#[cfg(feature = "kafka")]
impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

#[cfg(not(feature = "kafka"))]
impl KafkaLog {
    /// # Errors
    /// Always: this build has no Kafka client.
    pub fn open(_config: KafkaLogConfig) -> Result<Self> {
        Err(KafkaLogError(crate::kafka::NOT_BUILT.into()))
    }

    pub fn append_batch(&self, _records: &[&[u8]]) -> Result<Range<u64>> {
        match *self {}
    }

    pub fn next_offset(&self) -> u64 {
        match *self {}
    }

    pub fn start_offset(&self) -> u64 {
        match *self {}
    }

    pub fn messages_behind(&self, _next: u64) -> u64 {
        match *self {}
    }

    /// # Errors
    /// Never: there is no such log in this build.
    pub fn read(
        &self,
        _from: u64,
        _max: usize,
        _out: &mut impl tickflow_log::RecordSink,
    ) -> Result<()> {
        match *self {}
    }

    pub fn wait_for(&self, _from: u64, _timeout: Duration) {
        match *self {}
    }

    pub fn commit_offset(&self, _next: u64) {
        match *self {}
    }
}

#[cfg(feature = "kafka")]
fn producer(config: &KafkaLogConfig) -> Result<FutureProducer> {
    let mut client = crate::kafka::client_config(&config.brokers, &config.options);
    if client.get("linger.ms").is_none() {
        client.set("linger.ms", "2");
    }
    // An append waits for this long at most: well inside an HTTP client's usual 30 s, so a
    // producer sees the 503 and its Retry-After rather than its own timeout.
    if client.get("message.timeout.ms").is_none() {
        client.set("message.timeout.ms", "15000");
    }
    client
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .map_err(err("creating the producer"))
}

#[cfg(feature = "kafka")]
impl KafkaLog {
    /// Connects, creates the topic with the configured partitions when missing (and refuses
    /// one with another count), and finds the partition's end.
    ///
    /// # Errors
    /// The brokers cannot be reached, the topic cannot be the log, or it ends before the
    /// checkpoint.
    pub fn open(config: KafkaLogConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tickflow-kafka-log")
            .enable_all()
            .build()
            .map_err(err("starting the client's runtime"))?;
        let shared = rt.block_on(connect(config))?;
        let name = format!(
            "Kafka topic {} partition {}",
            shared.config.topic, shared.config.partition
        );
        Ok(Self {
            rt,
            shared: Arc::new(shared),
            reading: Reading::new(name),
        })
    }

    /// Appends records; returns their offsets once the brokers have acknowledged every
    /// chunk.
    ///
    /// # Errors
    /// A chunk was refused or not acknowledged in time: none of the batch counts as
    /// appended (some of it may be stored, and is then read as any record is).
    pub fn append_batch(&self, records: &[&[u8]]) -> Result<Range<u64>> {
        let chunks = chunked::pack(records, MAX_CHUNK).map_err(KafkaLogError)?;
        let shared = Arc::clone(&self.shared);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(shared.send(chunks).await);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(KafkaLogError("the client stopped".into())))
    }

    /// An offset above every record known to be in the topic: the next message's first.
    pub fn next_offset(&self) -> u64 {
        offset(self.shared.last_position.load(Ordering::Acquire) + 1, 0)
    }

    /// The first offset still in the topic, as far as this process knows.
    pub fn start_offset(&self) -> u64 {
        offset(self.shared.first_position.load(Ordering::Acquire), 0)
    }

    /// Messages in the topic at or after the one holding `next`.
    pub fn messages_behind(&self, next: u64) -> u64 {
        chunked::messages_behind(next, self.shared.last_position.load(Ordering::Acquire))
    }

    /// Reads up to `max` records from offset `from` on into `out` (emptied first), without
    /// waiting. Reading elsewhere than where the last read ended assigns the partition
    /// again at `from`.
    ///
    /// # Errors
    /// The partition could not be assigned.
    pub fn read(
        &self,
        from: u64,
        max: usize,
        out: &mut impl tickflow_log::RecordSink,
    ) -> Result<()> {
        self.reading
            .read(from, max, out, |reader| self.restart(reader, from))
    }

    /// Waits up to `timeout` for something to read at `from` (call [`KafkaLog::read`] after).
    pub fn wait_for(&self, from: u64, timeout: Duration) {
        self.reading.wait(from, timeout, &self.rt);
    }

    /// Commits to the group the offset after every chunk below `next`: the processor's
    /// checkpoint has them. Only for the group's view of the lag, so a failure is logged,
    /// not returned.
    pub fn commit_offset(&self, next: u64) {
        let Some(kafka_offset) = self.reading.take_through(next) else {
            return;
        };
        let mut list = TopicPartitionList::new();
        let added = list.add_partition_offset(
            &self.shared.config.topic,
            self.shared.config.partition,
            Offset::Offset(kafka_offset + 1),
        );
        if let Err(e) = added.and_then(|()| self.shared.consumer.commit(&list, CommitMode::Async)) {
            tracing::warn!(error = %e, topic = %self.shared.config.topic, "could not commit the Kafka log's position to its group");
        }
    }

    /// Assigns the partition at the message holding `from`.
    fn restart(&self, reader: &mut Reader<i64>, from: u64) -> Result<()> {
        let first = self.shared.first_position.load(Ordering::Acquire);
        let position = position_of(from).max(first).max(1);
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(
            &self.shared.config.topic,
            self.shared.config.partition,
            Offset::Offset(i64::try_from(position - 1).unwrap_or(i64::MAX)),
        )
        .map_err(err("assigning the partition"))?;
        self.shared
            .consumer
            .assign(&list)
            .map_err(err("assigning the partition"))?;
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let start = i64::try_from(position - 1).unwrap_or(i64::MAX);
        let task = self.rt.spawn(follow(Arc::clone(&self.shared), start, tx));
        if !self.shared.watching.swap(true, Ordering::AcqRel) {
            self.rt.spawn(watch_end(Arc::clone(&self.shared)));
        }
        reader.start(from, rx, task);
        tracing::info!(from, kafka_offset = position - 1, topic = %self.shared.config.topic, "reading the Kafka log");
        Ok(())
    }
}

#[cfg(feature = "kafka")]
async fn connect(config: KafkaLogConfig) -> Result<Shared> {
    let admin =
        crate::kafka::Producer::new(&config.brokers, &config.options).map_err(KafkaLogError)?;
    admin
        .ensure_topic_replicated(&config.topic, config.partitions, config.replicas)
        .await
        .map_err(KafkaLogError)?;
    let mut client = crate::kafka::client_config(&config.brokers, &config.options);
    let consumer: StreamConsumer = client
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // An offset out of range (deleted by retention) goes to the oldest message kept,
        // never past everything to the end.
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(err("creating the consumer"))?;
    // A topic just created may have no leader yet: asked again for a while.
    let mut partitions = 0;
    for _ in 0..40 {
        let metadata = consumer
            .fetch_metadata(Some(&config.topic), OPEN_TIMEOUT)
            .map_err(err("reading the topic's metadata"))?;
        let topic = metadata.topics().iter().find(|t| t.name() == config.topic);
        if let Some(e) = topic.and_then(rdkafka::metadata::MetadataTopic::error) {
            let code = rdkafka::types::RDKafkaErrorCode::from(e);
            if code != rdkafka::types::RDKafkaErrorCode::LeaderNotAvailable {
                return Err(KafkaLogError(format!("topic {}: {code}", config.topic)));
            }
        }
        partitions = topic.map_or(0, |t| t.partitions().len());
        if partitions > 0 && topic.is_some_and(|t| t.partitions().iter().all(|p| p.leader() >= 0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if partitions != usize::try_from(config.partitions).unwrap_or(0) {
        return Err(KafkaLogError(format!(
            "topic {} has {partitions} partitions and [log] partitions says {}: records of one symbol would land in another partition than before (name another topic in [log] topic, or set partitions to match)",
            config.topic, config.partitions
        )));
    }
    let (low, high) = consumer
        .fetch_watermarks(&config.topic, config.partition, OPEN_TIMEOUT)
        .map_err(err("reading the topic's end"))?;
    let last = u64::try_from(high).unwrap_or(0);
    let end = offset(last + 1, 0);
    if config.checkpoint > end {
        return Err(KafkaLogError(format!(
            "processing is at offset {} (message {}) but topic {} ends at message {last}: the topic was deleted or replaced. Restore it, or start with a new data directory",
            config.checkpoint,
            position_of(config.checkpoint),
            config.topic
        )));
    }
    let producer = producer(&config)?;
    Ok(Shared {
        config,
        producer: Mutex::new(producer),
        consumer,
        last_position: AtomicU64::new(last),
        first_position: AtomicU64::new(u64::try_from(low).unwrap_or(0) + 1),
        watching: std::sync::atomic::AtomicBool::new(false),
    })
}

#[cfg(feature = "kafka")]
impl Shared {
    /// Sends `chunks` (all queued before any acknowledgement is awaited) and returns the
    /// offsets from the first record of the first to after the last of the last.
    async fn send(&self, chunks: Vec<(Bytes, u64)>) -> Result<Range<u64>> {
        let producer = self
            .producer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut deliveries = Vec::with_capacity(chunks.len());
        for (payload, count) in &chunks {
            let record = FutureRecord::<(), [u8]>::to(&self.config.topic)
                .partition(self.config.partition)
                .payload(payload.as_ref())
                .headers(OwnedHeaders::new().insert(Header {
                    key: FORMAT_HEADER,
                    value: Some(FORMAT),
                }));
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push((delivery, *count)),
                Err((e, _)) => return Err(self.failed("queueing a chunk", &e)),
            }
        }
        let mut range = None;
        for (delivery, count) in deliveries {
            match delivery.await {
                Ok(Ok(d)) => {
                    let position = u64::try_from(d.offset).unwrap_or(0) + 1;
                    self.last_position.fetch_max(position, Ordering::AcqRel);
                    range = Some(chunked::cover(range, position, count));
                }
                Ok(Err((e, _))) => return Err(self.failed("storing a chunk", &e)),
                Err(_) => return Err(KafkaLogError("the producer stopped".into())),
            }
        }
        Ok(range.unwrap_or(0..0))
    }

    /// Replaces the producer after a failed send (a full queue is not a failure of it), and
    /// says what failed.
    fn failed(&self, what: &str, e: &rdkafka::error::KafkaError) -> KafkaLogError {
        let full = e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull);
        match if full {
            None
        } else {
            Some(producer(&self.config))
        } {
            None => {}
            Some(Ok(fresh)) => *self.producer.lock().unwrap_or_else(|e| e.into_inner()) = fresh,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "could not replace the Kafka log's producer")
            }
        }
        KafkaLogError(format!("{what} on {}: {e}", self.config.topic))
    }
}

/// How often the reader asks for the partition's end.
#[cfg(feature = "kafka")]
const WATCH_END_EVERY: Duration = Duration::from_millis(500);

/// Keeps the partition's end current while this log is read, so the lag counts what other
/// processes appended and the consumer has not fetched yet.
#[cfg(feature = "kafka")]
async fn watch_end(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(WATCH_END_EVERY).await;
        let s = Arc::clone(&shared);
        let end = tokio::task::spawn_blocking(move || {
            s.consumer
                .fetch_watermarks(&s.config.topic, s.config.partition, WATCH_END_EVERY * 4)
        })
        .await;
        if let Ok(Ok((_, high))) = end {
            // The last message's position is its offset + 1: the high watermark.
            shared
                .last_position
                .fetch_max(u64::try_from(high).unwrap_or(0), Ordering::AcqRel);
        }
    }
}

/// Feeds the assigned partition's chunks into `tx`. librdkafka reconnects by itself; errors
/// it reports are logged and reading goes on.
#[cfg(feature = "kafka")]
async fn follow(shared: Arc<Shared>, start: i64, tx: tokio::sync::mpsc::Sender<Chunk<i64>>) {
    loop {
        let message = match shared.consumer.recv().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, topic = %shared.config.topic, "reading the Kafka log failed; librdkafka retries");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let kafka_offset = message.offset();
        if kafka_offset < start {
            // Fetched for an assignment before this one.
            continue;
        }
        let position = u64::try_from(kafka_offset).unwrap_or(0) + 1;
        shared.last_position.fetch_max(position, Ordering::AcqRel);
        let format = message.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == FORMAT_HEADER)
                .and_then(|h| h.value)
        });
        if format != Some(FORMAT) {
            tracing::error!(
                kafka_offset,
                "a message that is not a tickflow log chunk (format 1) is skipped"
            );
            continue;
        }
        let chunk = Chunk {
            position,
            payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
            token: kafka_offset,
        };
        drop(message);
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}
