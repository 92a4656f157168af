//! Kafka as a sink: every row of the kept tables published as a JSON line (the SQL tables'
//! columns, exact decimals, RFC 3339 times) on the topic `<prefix>.<table>`, keyed by symbol
//! so each symbol's rows stay in order on one partition: `tickflow.bars`, `tickflow.alerts`.
//!
//! Each message carries the header `tickflow-id: <sink id>:<flush>:<table>:<symbol>:<row
//! key>`, the same however the flush was read back, and `tickflow-table`. The producer is
//! idempotent, so librdkafka's own retries never write a message twice; the sink waits for
//! every message of a flush to be acknowledged by all in-sync replicas, then records the
//! flush in `<dir>/position`, fsynced, and a flush at or before it is not sent again. A
//! flush written again after a crash between the acknowledgements and the position
//! publishes its rows again: consumers that must not see a row twice drop repeats by
//! `tickflow-id`. Within a flush, only the last version of a row
//! (a bar that changed twice) is sent.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tickflow_core::rows_json::{self, Style, Times};
use tickflow_core::sink::{Flush, Sink, SinkError};

#[cfg(feature = "kafka")]
use crate::kafka::{Producer, Record};

/// The tables the sink can publish.
pub const TABLES: [&str; 5] = rows_json::TABLES;

#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
const STYLE: Style = Style {
    times: Times::Rfc3339,
    final_bars_only: false,
};

/// A Kafka sink's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSinkConfig {
    pub brokers: String,
    /// Topics are `<prefix>.<table>`.
    pub topic_prefix: String,
    pub tables: Vec<String>,
    /// Partitions of each topic the sink creates when it is missing; none: topics must exist.
    pub create_partitions: Option<i32>,
    pub options: BTreeMap<String, String>,
    /// Where the position is kept.
    pub dir: PathBuf,
}

impl std::fmt::Debug for KafkaSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSinkConfig")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("tables", &self.tables)
            .field("create_partitions", &self.create_partitions)
            .field("options", &crate::kafka::option_names(&self.options))
            .field("dir", &self.dir)
            .finish()
    }
}

/// Publishes rows to Kafka; see the module docs.
#[derive(Debug)]
pub struct KafkaSink {
    id: String,
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    config: KafkaSinkConfig,
    #[cfg(feature = "kafka")]
    producer: Option<Producer>,
    /// The last flush written in full: one handed again is not sent twice.
    #[cfg(feature = "kafka")]
    position: Option<u64>,
}

impl KafkaSink {
    pub fn new(id: &str, config: KafkaSinkConfig) -> Self {
        Self {
            id: id.to_string(),
            config,
            #[cfg(feature = "kafka")]
            producer: None,
            #[cfg(feature = "kafka")]
            position: None,
        }
    }

    #[cfg(feature = "kafka")]
    fn position_path(&self) -> PathBuf {
        self.config.dir.join("position")
    }
}

#[cfg(not(feature = "kafka"))]
#[async_trait::async_trait]
impl Sink for KafkaSink {
    async fn open(&mut self) -> Result<Option<u64>, SinkError> {
        Err(format!("sink {}: {}", self.id, crate::kafka::NOT_BUILT).into())
    }

    async fn write(&mut self, _flush: &Flush) -> Result<(), SinkError> {
        Err(crate::kafka::NOT_BUILT.into())
    }
}

#[cfg(feature = "kafka")]
#[async_trait::async_trait]
impl Sink for KafkaSink {
    async fn open(&mut self) -> Result<Option<u64>, SinkError> {
        let producer = Producer::new(&self.config.brokers, &self.config.options)?;
        if let Some(partitions) = self.config.create_partitions {
            for table in &self.config.tables {
                let topic = format!("{}.{table}", self.config.topic_prefix);
                producer.ensure_topic(&topic, partitions).await?;
            }
        }
        self.producer = Some(producer);
        std::fs::create_dir_all(&self.config.dir)
            .map_err(|e| format!("{}: {e}", self.config.dir.display()))?;
        let path = self.position_path();
        self.position = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                text.trim()
                    .parse()
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{}: {e}", path.display()).into()),
        };
        Ok(self.position)
    }

    async fn write(&mut self, flush: &Flush) -> Result<(), SinkError> {
        // A producer whose sends failed is replaced: after its messages timed out, an
        // idempotent producer may be fenced for good (tansu 0.6 does), and a new one starts
        // clean. The flush is sent whole again either way.
        if self.producer.is_none() {
            self.producer = Some(Producer::new(&self.config.brokers, &self.config.options)?);
        }
        let Some(producer) = &self.producer else {
            return Err("the Kafka sink is not open".into());
        };
        if self.position >= Some(flush.seq) {
            return Ok(());
        }
        // Ids carry the first flush of the write, as the NATS sink's do: a run read again
        // after a crash repeats the ids an earlier, shorter run sent.
        let first = self.position.map_or(flush.seq, |p| p + 1);
        // (topic, table, symbol, id, payload); the last version of a row wins.
        let mut messages: Vec<(String, String, String, String, String)> = Vec::new();
        let mut by_id: std::collections::HashMap<String, usize> = Default::default();
        for table in &self.config.tables {
            let topic = format!("{}.{table}", self.config.topic_prefix);
            rows_json::each(table, &flush.rows, STYLE, &mut |line| {
                let id = format!("{}:{first}:{table}:{}:{}", self.id, line.symbol, line.key);
                let message = (
                    topic.clone(),
                    table.clone(),
                    line.symbol.to_string(),
                    id.clone(),
                    line.text.to_string(),
                );
                match by_id.get(&id) {
                    Some(&at) => messages[at] = message,
                    None => {
                        by_id.insert(id, messages.len());
                        messages.push(message);
                    }
                }
            });
        }
        let mut records = Vec::with_capacity(messages.len());
        for (topic, table, symbol, id, payload) in &messages {
            records.push(Record {
                topic,
                key: symbol,
                payload: payload.as_bytes(),
                headers: vec![("tickflow-table", table), ("tickflow-id", id)],
            });
        }
        if let Err(e) = producer.send_all(records).await {
            self.producer = None;
            return Err(e.into());
        }
        let path = self.position_path();
        let tmp = path.with_extension("tmp");
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{}", flush.seq)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.config.dir)?.sync_all()
        })();
        written.map_err(|e| format!("{}: {e}", path.display()))?;
        self.position = Some(flush.seq);
        Ok(())
    }
}
