//! Kafka as a source of ticks, through a consumer group (librdkafka, by `rdkafka`).
//!
//! Messages are read in batches and appended to the log; only once a batch is durable there
//! are its offsets committed (synchronously, per partition: the next offset to read). A crash
//! in between leaves the batch to be read again by whichever member owns the partition next,
//! and processing drops the repeats by natural key. Auto-commit is off, so no offset is ever
//! committed for a message that is not in the log.
//!
//! Each process is a static member of the group (`group.instance.id` from its host and data
//! directory, unless `options` sets one), so a process restarted after a crash gets its
//! partitions back at once; one that never comes back is dropped after `session.timeout.ms`
//! (10 s unless set).
//!
//! A message is read in the source's [`Format`]: tickflow's ingest format (one object, NDJSON
//! lines or a JSON array), the old `market_ticks` shape, or a field mapping. One that cannot
//! be read goes to the DLQ with the topic, partition, offset and reason, and its offset is
//! committed with its batch-mates': a poison message never stalls its partition. A broker
//! that goes away is retried by librdkafka. The errors it reports mark the source's link
//! failed (status, `/readyz`, `tickflow_reconnects_total`); while it is, the source asks the
//! brokers for the topic's metadata every [`PROBE_EVERY`] and clears the failure once they
//! answer, so the recovery shows on an idle topic too. A broker that holds the bytes without
//! answering (a partition) is taken for lost after `socket.timeout.ms`, 10 s unless set.

use std::collections::BTreeMap;
#[cfg(feature = "kafka")]
use std::time::Duration;

#[cfg(feature = "kafka")]
use rdkafka::config::ClientConfig;
#[cfg(feature = "kafka")]
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
#[cfg(feature = "kafka")]
use rdkafka::message::Message as _;
#[cfg(feature = "kafka")]
use rdkafka::{Offset, TopicPartitionList};
#[cfg(feature = "kafka")]
use tickflow_core::codec::{Batch, Rejected};
use tickflow_core::mapping::Format;
use tickflow_core::source::{Source, SourceContext, SourceError};
#[cfg(feature = "kafka")]
use tickflow_model::{RejectReason, UnixNanos};

/// How long a batch waits for more messages once it has one.
#[cfg(feature = "kafka")]
const LINGER: Duration = Duration::from_millis(5);

/// How often a source whose link failed asks the brokers for metadata, to see them back.
#[cfg(feature = "kafka")]
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long that request may take.
#[cfg(feature = "kafka")]
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A Kafka topic (or several) to consume ticks from.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSource {
    /// `bootstrap.servers`: `host:port[,host:port…]`.
    pub brokers: String,
    pub topics: Vec<String>,
    /// The consumer group; processes sharing it share the partitions.
    pub group: String,
    /// How messages are read.
    pub format: Format,
    /// The most messages appended at once.
    pub batch: usize,
    /// Any other librdkafka setting (`security.protocol`, `sasl.*`, `ssl.*`, …).
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .field("group", &self.group)
            .field("format", &self.format)
            .field("batch", &self.batch)
            .field("options", &option_names(&self.options))
            .finish()
    }
}

/// The names of librdkafka settings without their values, which may be passwords.
pub fn option_names(options: &BTreeMap<String, String>) -> Vec<&str> {
    options.keys().map(String::as_str).collect()
}

/// The librdkafka settings tickflow sets itself, which `options` may not override: the
/// offsets' and the acknowledgements' rules are what the guarantees rest on.
pub const OWN_SETTINGS: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "acks",
    "enable.idempotence",
];

/// Why a Kafka connector cannot run in this build.
pub const NOT_BUILT: &str =
    "this tickflow was built without Kafka: build it with `cargo build --release --features kafka`";

/// A client configuration with `options` applied first, so tickflow's own settings win.
#[cfg(feature = "kafka")]
pub fn client_config(brokers: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in options {
        config.set(k, v);
    }
    config.set("bootstrap.servers", brokers);
    config
}

/// A static member id for this process in `group` (KIP-345), the same across its restarts:
/// the host and the source's state directory, which no other process shares. A restarted
/// process takes its partitions back at once instead of waiting for the group to notice the
/// old member is gone, which some brokers (tansu 0.6) never do.
#[cfg(feature = "kafka")]
fn instance_id(group: &str, ctx: &SourceContext) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let place = ctx
        .state_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let hash = tickflow_core::hash::stable_hash(&[host.as_bytes(), place.as_bytes()], &[]);
    format!("{group}-{host}-{:08x}", hash as u32)
}

/// Sets `key` unless `options` (already applied) did.
#[cfg(feature = "kafka")]
fn set_default(config: &mut ClientConfig, key: &str, value: &str) {
    if config.get(key).is_none() {
        config.set(key, value);
    }
}

#[cfg(not(feature = "kafka"))]
#[async_trait::async_trait]
impl Source for KafkaSource {
    async fn run(self: Box<Self>, _ctx: SourceContext) -> Result<(), SourceError> {
        Err(NOT_BUILT.into())
    }
}

#[cfg(feature = "kafka")]
#[async_trait::async_trait]
impl Source for KafkaSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let mut config = client_config(&self.brokers, &self.options);
        set_default(&mut config, "auto.offset.reset", "earliest");
        set_default(&mut config, "session.timeout.ms", "10000");
        set_default(&mut config, "socket.timeout.ms", "10000");
        set_default(
            &mut config,
            "group.instance.id",
            &instance_id(&self.group, &ctx),
        );
        let consumer: StreamConsumer = config
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()
            .map_err(|e| format!("creating the Kafka consumer for {}: {e}", self.brokers))?;
        // A synchronous commit waits on the group coordinator, up to `socket.timeout.ms`
        // when it does not answer: it runs off the async threads.
        let consumer = std::sync::Arc::new(consumer);
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| format!("subscribing to {topics:?}: {e}"))?;
        tracing::info!(source = ctx.id(), brokers = %self.brokers, ?topics, group = %self.group, "following Kafka");
        let mut batch = Batch::default();
        let mut offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The first message of a batch is waited for; the rest only briefly.
            let first = tokio::select! {
                m = consumer.recv() => m,
                _ = probe.tick(), if ctx.link().trouble().is_some() => {
                    self.probe(&consumer, &ctx).await;
                    continue;
                }
                () = ctx.stopped() => return Ok(()),
            };
            let mut next = Some(first);
            let mut taken = 0;
            let now = UnixNanos::now();
            // One deadline per batch: a steady stream still closes a batch every LINGER.
            let close = tokio::time::Instant::now() + LINGER;
            while let Some(received) = next.take() {
                match received {
                    Ok(m) => {
                        self.read(ctx.id(), &m, now, &mut batch);
                        offsets.insert((m.topic().to_string(), m.partition()), m.offset());
                        taken += 1;
                    }
                    Err(e) => {
                        metrics::counter!("tickflow_reconnects_total", "source" => ctx.id().to_string(), "reason" => "error").increment(1);
                        tracing::warn!(source = ctx.id(), error = %e, "Kafka consumer error; librdkafka retries");
                        ctx.link().failed(format!("{e}; reconnecting"));
                    }
                }
                if taken < self.batch {
                    next = tokio::time::timeout_at(close, consumer.recv()).await.ok();
                }
            }
            if offsets.is_empty() {
                continue;
            }
            if !batch.is_empty() {
                ctx.append(&batch)?;
                batch.clear();
            }
            let mut list = TopicPartitionList::new();
            for ((topic, partition), offset) in std::mem::take(&mut offsets) {
                list.add_partition_offset(&topic, partition, Offset::Offset(offset + 1))
                    .map_err(|e| format!("{topic}/{partition}: {e}"))?;
            }
            // A partition taken away meanwhile refuses the commit: its new owner reads the
            // batch again, and processing drops the repeats.
            let committing = std::sync::Arc::clone(&consumer);
            let committed =
                tokio::task::spawn_blocking(move || committing.commit(&list, CommitMode::Sync))
                    .await
                    .map_err(|e| format!("committing offsets: {e}"))?;
            if let Err(e) = committed {
                metrics::counter!("tickflow_source_errors_total", "source" => ctx.id().to_string())
                    .increment(1);
                tracing::warn!(source = ctx.id(), error = %e, "committing offsets failed; the batch may be read again");
            }
            if ctx.is_stopping() {
                return Ok(());
            }
        }
    }
}

#[cfg(feature = "kafka")]
impl KafkaSource {
    /// Clears the source's failed link if the brokers answer a metadata request (off the
    /// async threads: librdkafka waits for the answer).
    async fn probe(&self, consumer: &std::sync::Arc<StreamConsumer>, ctx: &SourceContext) {
        let asking = std::sync::Arc::clone(consumer);
        let topic = self.topics.first().cloned();
        let answered = tokio::task::spawn_blocking(move || {
            asking.fetch_metadata(topic.as_deref(), PROBE_TIMEOUT)
        })
        .await;
        if let Ok(Ok(_)) = answered {
            tracing::info!(source = ctx.id(), "the Kafka brokers answer again");
            ctx.link().working();
        }
    }

    /// Adds one message's events to `batch`, or the message as rejected with why.
    fn read(
        &self,
        source: &str,
        m: &rdkafka::message::BorrowedMessage<'_>,
        now: UnixNanos,
        batch: &mut Batch,
    ) {
        let payload = m.payload().unwrap_or_default();
        let problem = match std::str::from_utf8(payload) {
            Ok(text) => self.format.read_into(text, source, now, batch).err(),
            Err(e) => Some(format!("not UTF-8: {e}")),
        };
        if let Some(problem) = problem {
            let error = format!(
                "{} partition {} offset {}: {problem}",
                m.topic(),
                m.partition(),
                m.offset()
            );
            batch.push_rejected(&Rejected {
                reason: RejectReason::Malformed,
                ts_recv: now,
                source,
                error: &error,
                payload: tickflow_core::codec::payload_prefix(&String::from_utf8_lossy(payload)),
            });
        }
    }
}

/// Sends messages to Kafka and waits for the brokers' acknowledgements (`acks=all`):
/// `tickflow produce --to kafka://…`, the Kafka sink, and tests.
#[cfg(feature = "kafka")]
#[derive(Clone)]
pub struct Producer {
    producer: rdkafka::producer::FutureProducer,
    brokers: String,
    /// For the admin client: a secured cluster needs the same settings.
    options: BTreeMap<String, String>,
}

#[cfg(feature = "kafka")]
impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "kafka")]
/// Messages sent before their acknowledgements are awaited.
const IN_FLIGHT: usize = 1000;

/// One message to send: topic, key, payload and headers.
#[derive(Debug)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub key: &'a str,
    pub payload: &'a [u8],
    pub headers: Vec<(&'a str, &'a str)>,
}

#[cfg(feature = "kafka")]
impl Producer {
    /// A producer for the brokers `brokers` with `options`; idempotent, so librdkafka's own
    /// retries never write a message twice.
    ///
    /// # Errors
    /// librdkafka refused a setting.
    pub fn new(brokers: &str, options: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut config = client_config(brokers, options);
        set_default(&mut config, "linger.ms", "5");
        set_default(&mut config, "message.timeout.ms", "60000");
        let producer = config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()
            .map_err(|e| format!("creating the Kafka producer for {brokers}: {e}"))?;
        Ok(Self {
            producer,
            brokers: brokers.to_string(),
            options: options.clone(),
        })
    }

    /// Sends every record and returns once the brokers have acknowledged each, a window at
    /// a time.
    ///
    /// # Errors
    /// A message the brokers refused or did not take within `message.timeout.ms`.
    pub async fn send_all<'a>(
        &self,
        records: impl IntoIterator<Item = Record<'a>>,
    ) -> Result<(), String> {
        use rdkafka::message::{Header, OwnedHeaders};
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let sends = records.by_ref().take(IN_FLIGHT).map(|r| {
                let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
                for (key, value) in &r.headers {
                    headers = headers.insert(Header {
                        key,
                        value: Some(*value),
                    });
                }
                let record = rdkafka::producer::FutureRecord::to(r.topic)
                    .key(r.key)
                    .payload(r.payload)
                    .headers(headers);
                let topic = r.topic;
                async move {
                    self.producer
                        .send(
                            record,
                            rdkafka::util::Timeout::After(Duration::from_secs(60)),
                        )
                        .await
                        .map(|_| ())
                        .map_err(|(e, _)| format!("sending to {topic} on {}: {e}", self.brokers))
                }
            });
            for result in futures_util::future::join_all(sends).await {
                result?;
            }
        }
        Ok(())
    }

    /// Creates `topic` with `partitions` when it does not exist (a broker without automatic
    /// topic creation, such as tansu, needs it).
    ///
    /// # Errors
    /// The brokers refused for another reason than the topic existing.
    pub async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), String> {
        self.ensure_topic_replicated(topic, partitions, 1).await
    }

    /// [`Producer::ensure_topic`] with `replicas` copies of each partition.
    ///
    /// # Errors
    /// As [`Producer::ensure_topic`].
    pub async fn ensure_topic_replicated(
        &self,
        topic: &str,
        partitions: i32,
        replicas: i32,
    ) -> Result<(), String> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> = client_config(&self.brokers, &self.options)
            .create()
            .map_err(|e| format!("creating a Kafka admin client: {e}"))?;
        let results = admin
            .create_topics(
                &[NewTopic::new(
                    topic,
                    partitions,
                    TopicReplication::Fixed(replicas),
                )],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .map_err(|e| format!("creating topic {topic}: {e}"))?;
        for r in results {
            match r {
                Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(format!("creating topic {name}: {code}")),
            }
        }
        Ok(())
    }
}

/// One message as [`read_all`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub payload: String,
    pub headers: Vec<(String, String)>,
}

/// Every message of `topic` from its start to the end it has now, partition by partition:
/// what a consumer of the Kafka sink sees (tests, and checking a topic by hand).
///
/// # Errors
/// The brokers cannot be reached or do not know the topic.
#[cfg(feature = "kafka")]
pub fn read_all(brokers: &str, topic: &str, timeout: Duration) -> Result<Vec<Read>, String> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::message::Headers as _;
    let consumer: BaseConsumer = client_config(brokers, &BTreeMap::new())
        .set(
            "group.id",
            format!("tickflow-reader-{}", UnixNanos::now().0),
        )
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("creating a Kafka consumer: {e}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("{topic}: {e}"))?;
    let mut ends = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .map_err(|e| format!("{topic}/{}: {e}", p.id()))?;
            if high > low {
                ends.insert(p.id(), high);
                list.add_partition_offset(topic, p.id(), Offset::Offset(low))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    consumer.assign(&list).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    let mut at: BTreeMap<i32, i64> = BTreeMap::new();
    while ends
        .iter()
        .any(|(p, end)| at.get(p).is_none_or(|o| o + 1 < *end))
    {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{topic}: read {} messages before the time ran out",
                out.len()
            ));
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.map_err(|e| format!("{topic}: {e}"))?;
        at.insert(m.partition(), m.offset());
        let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).to_string();
        out.push(Read {
            partition: m.partition(),
            offset: m.offset(),
            key: text(m.key()),
            payload: text(m.payload()),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), text(h.value)))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(out)
}
