//! The log the pipeline appends to and processes from: the embedded one under the data
//! directory, a NATS JetStream stream or a Kafka topic (`[log] kind`). The processor reads
//! each the same way; on a broker, offsets are the messages' positions with the record's
//! place inside (`tickflow_brokers::chunked`), and the lag counts messages.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use tickflow_brokers::kafka_log::{KafkaLog, KafkaLogConfig};
use tickflow_brokers::nats_log::{NatsLog, NatsLogConfig};
use tickflow_log::{Log, LogConfig, Records};

use crate::config::{LogKind, LogPlan};
use crate::{Error, Result};

/// The consumer name under which the processor's offset is stored in the embedded log.
const CONSUMER: &str = "processor";

pub(crate) enum LogStore {
    Embedded(Log),
    Nats {
        log: Box<NatsLog>,
        /// The data directory is still this process's alone.
        _lock: tickflow_log::DirLock,
    },
    Kafka {
        log: Box<KafkaLog>,
        _lock: tickflow_log::DirLock,
    },
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded(_) => f.write_str("LogStore::Embedded"),
            Self::Nats { log, .. } => f.debug_tuple("LogStore::Nats").field(log).finish(),
            Self::Kafka { log, .. } => f.debug_tuple("LogStore::Kafka").field(log).finish(),
        }
    }
}

fn nats_error(e: tickflow_brokers::nats_log::NatsLogError) -> Error {
    Error::BrokerLog(e.to_string())
}

fn kafka_error(e: tickflow_brokers::kafka_log::KafkaLogError) -> Error {
    Error::BrokerLog(e.to_string())
}

impl LogStore {
    /// Opens the log `plan` names; `checkpoint` is where processing stands, which a broker
    /// log must reach.
    pub(crate) fn open(data_dir: &Path, plan: &LogPlan, checkpoint: u64) -> Result<Self> {
        match &plan.kind {
            LogKind::Embedded => Ok(Self::Embedded(Log::open(LogConfig {
                dir: data_dir.join("log"),
                segment_bytes: plan.segment_bytes,
                retention_bytes: plan.retention_bytes,
                retention_age: plan.retention_age,
                fsync: plan.fsync,
            })?)),
            LogKind::Nats(nats) => {
                let lock = tickflow_log::lock_dir(&data_dir.join("log"))?;
                let log = NatsLog::open(NatsLogConfig {
                    url: nats.url.clone(),
                    stream: nats.stream.clone(),
                    subject: nats.subject.clone(),
                    consumer: nats.consumer.clone(),
                    replicas: nats.replicas,
                    max_age: plan.retention_age,
                    max_bytes: plan.retention_bytes,
                    checkpoint,
                })
                .map_err(nats_error)?;
                Ok(Self::Nats {
                    log: Box::new(log),
                    _lock: lock,
                })
            }
            LogKind::Kafka(kafka) => {
                let lock = tickflow_log::lock_dir(&data_dir.join("log"))?;
                let log = KafkaLog::open(KafkaLogConfig {
                    brokers: kafka.brokers.clone(),
                    topic: kafka.topic.clone(),
                    group: kafka.group.clone(),
                    options: kafka.options.clone(),
                    checkpoint,
                })
                .map_err(|e| Error::BrokerLog(e.to_string()))?;
                Ok(Self::Kafka {
                    log: Box::new(log),
                    _lock: lock,
                })
            }
        }
    }

    pub(crate) fn append_batch(&self, records: &[&[u8]]) -> Result<Range<u64>> {
        match self {
            Self::Embedded(log) => Ok(log.append_batch(records)?),
            Self::Nats { log, .. } => log.append_batch(records).map_err(nats_error),
            Self::Kafka { log, .. } => log.append_batch(records).map_err(kafka_error),
        }
    }

    pub(crate) fn read(&self, from: u64, max: usize, out: &mut Records) -> Result<()> {
        match self {
            Self::Embedded(log) => Ok(log.read(from, max, out)?),
            Self::Nats { log, .. } => log.read(from, max, out).map_err(nats_error),
            Self::Kafka { log, .. } => log.read(from, max, out).map_err(kafka_error),
        }
    }

    pub(crate) fn wait_for(&self, from: u64, timeout: Duration) {
        match self {
            Self::Embedded(log) => {
                log.wait_for(from, timeout);
            }
            Self::Nats { log, .. } => log.wait_for(from, timeout),
            Self::Kafka { log, .. } => log.wait_for(from, timeout),
        }
    }

    pub(crate) fn next_offset(&self) -> u64 {
        match self {
            Self::Embedded(log) => log.next_offset(),
            Self::Nats { log, .. } => log.next_offset(),
            Self::Kafka { log, .. } => log.next_offset(),
        }
    }

    /// What is left to process from `next`: records on the embedded log, messages (each an
    /// ingest batch or part of one) on a broker.
    pub(crate) fn lag(&self, next: u64) -> u64 {
        match self {
            Self::Embedded(log) => log.next_offset().saturating_sub(next),
            Self::Nats { log, .. } => log.messages_behind(next),
            Self::Kafka { log, .. } => log.messages_behind(next),
        }
    }

    /// Whether nothing was ever appended.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Self::Embedded(log) => log.next_offset() == 0,
            Self::Nats { log, .. } => log.messages_behind(0) == 0,
            Self::Kafka { log, .. } => log.messages_behind(0) == 0,
        }
    }

    pub(crate) fn start_offset(&self) -> u64 {
        match self {
            Self::Embedded(log) => log.start_offset(),
            Self::Nats { log, .. } => log.start_offset(),
            Self::Kafka { log, .. } => log.start_offset(),
        }
    }

    /// Records that processing has everything below `next` in the lake and checkpoint.
    pub(crate) fn commit(&self, next: u64) -> Result<()> {
        match self {
            Self::Embedded(log) => Ok(log.commit_offset(CONSUMER, next)?),
            Self::Nats { log, .. } => {
                log.commit_offset(next);
                Ok(())
            }
            Self::Kafka { log, .. } => {
                log.commit_offset(next);
                Ok(())
            }
        }
    }

    /// Deletes what the embedded log's retention allows; a broker enforces its own.
    pub(crate) fn enforce_retention(&self) -> Result<()> {
        if let Self::Embedded(log) = self {
            let r = log.enforce_retention()?;
            tracing::debug!(?r, "log retention");
        }
        Ok(())
    }
}
