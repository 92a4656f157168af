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

/// Which log a data directory's checkpoint counts in: the kind and the stream or topic.
fn identity(plan: &LogPlan) -> String {
    match &plan.kind {
        LogKind::Embedded => "embedded".into(),
        LogKind::Nats(_) => {
            let (stream, subject) = nats_names(plan);
            format!("nats stream {stream} subject {subject}")
        }
        LogKind::Kafka(k) => match plan.partition {
            Some(p) => format!(
                "kafka topic {} partition {p} of {}",
                k.topic, plan.partitions
            ),
            None => format!("kafka topic {}", k.topic),
        },
    }
}

/// The stream and subject of the NATS log `plan` reads: partition `p` of a partitioned log
/// is a stream of its own, `<stream>-<p>` on `<subject>.<p>`.
fn nats_names(plan: &LogPlan) -> (String, String) {
    match (&plan.kind, plan.partition) {
        (LogKind::Nats(n), Some(p)) => (format!("{}-{p}", n.stream), format!("{}.{p}", n.subject)),
        (LogKind::Nats(n), None) => (n.stream.clone(), n.subject.clone()),
        _ => (String::new(), String::new()),
    }
}

/// Opens the NATS log of `plan` (its partition's, if it names one) where processing stands
/// at `checkpoint`.
pub(crate) fn open_nats(
    plan: &LogPlan,
    nats: &crate::config::NatsLogPlan,
    checkpoint: u64,
) -> Result<NatsLog> {
    let (stream, subject) = nats_names(plan);
    NatsLog::open(NatsLogConfig {
        url: nats.url.clone(),
        stream,
        subject,
        consumer: nats.consumer.clone(),
        replicas: nats.replicas,
        max_age: plan.retention_age,
        max_bytes: plan.retention_bytes,
        checkpoint,
    })
    .map_err(nats_error)
}

/// Opens the Kafka log of `plan`: its partition of the topic.
pub(crate) fn open_kafka(
    plan: &LogPlan,
    kafka: &crate::config::KafkaLogPlan,
    checkpoint: u64,
) -> Result<KafkaLog> {
    KafkaLog::open(KafkaLogConfig {
        brokers: kafka.brokers.clone(),
        topic: kafka.topic.clone(),
        partitions: i32::try_from(plan.partitions).unwrap_or(1),
        partition: plan.partition.map_or(0, |p| i32::try_from(p).unwrap_or(0)),
        group: kafka.group.clone(),
        options: kafka.options.clone(),
        replicas: kafka.replicas,
        checkpoint,
    })
    .map_err(kafka_error)
}

/// Refuses a log other than the one the checkpoint's offsets belong to: read there, they
/// would skip records or wait for ones that never come. Records the log on first use.
/// Data directories from before the record used the embedded log.
pub(crate) fn check_identity(data_dir: &Path, plan: &LogPlan, has_checkpoint: bool) -> Result<()> {
    let path = crate::checkpoint::dir(data_dir).join("log.txt");
    let want = identity(plan);
    let recorded = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            has_checkpoint.then(|| "embedded".to_string())
        }
        Err(source) => {
            return Err(Error::Io {
                context: format!("reading {}", path.display()),
                source,
            });
        }
    };
    match recorded {
        Some(had) if had != want => Err(Error::Checkpoint {
            path: path.clone(),
            message: format!(
                "this data directory's processing follows the {had} log, and [log] now names the {want} one: its offsets mean nothing there. Set [log] back, or start the new log with a new data directory"
            ),
        }),
        Some(_) => Ok(()),
        None => {
            let write = || -> std::io::Result<()> {
                std::fs::create_dir_all(crate::checkpoint::dir(data_dir))?;
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, format!("{want}\n"))?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &path)
            };
            write().map_err(|source| Error::Io {
                context: format!("writing {}", path.display()),
                source,
            })
        }
    }
}

/// A broker log's failed append: [`Error::LogUnavailable`] (the sender tries again), or for
/// a record too large for one message ever, [`Error::BrokerLog`], which no retry helps.
pub(crate) fn append_error(too_large: bool, e: &dyn std::fmt::Display) -> Error {
    if too_large {
        Error::BrokerLog(e.to_string())
    } else {
        Error::LogUnavailable(e.to_string())
    }
}

/// Counts a failed append to `partition` (0 for a log of one) and keeps the outage it makes
/// (status, `/readyz`), or ends that partition's outage once an append to it succeeds.
pub(crate) fn noted<T>(
    metrics: &tickflow_core::metrics::Metrics,
    partition: u32,
    appended: Result<T>,
) -> Result<T> {
    match &appended {
        Ok(_) => metrics.log_failing.clear(partition),
        Err(e @ (Error::LogUnavailable(_) | Error::Log(tickflow_log::Error::DiskFull { .. }))) => {
            metrics
                .log_append_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics.log_failing.fail(partition, &e.to_string());
        }
        // Shutting down, or a failure no retry helps (the pipeline stops, or the sender is
        // told why): not an outage of the log.
        Err(_) => {}
    }
    appended
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
            LogKind::Embedded => {
                let config = LogConfig {
                    dir: data_dir.join("log"),
                    segment_bytes: plan.segment_bytes,
                    retention_bytes: plan.retention_bytes,
                    retention_age: plan.retention_age,
                    fsync: plan.fsync,
                    min_free_bytes: plan.min_free_bytes,
                };
                match Log::open(config.clone()) {
                    Err(tickflow_log::Error::BadOffsetFile { path, reason })
                        if path.file_name() == Some(format!("{CONSUMER}.offset").as_ref()) =>
                    {
                        // The checkpoint, not this file, says where processing stands: the
                        // file only keeps retention from deleting unread records. Write it
                        // again from the checkpoint.
                        tracing::warn!(file = %path.display(), reason, checkpoint, "damaged consumer offset file; rewriting it from the checkpoint");
                        std::fs::remove_file(&path).map_err(|source| Error::Io {
                            context: format!("removing {}", path.display()),
                            source,
                        })?;
                        let log = Log::open(config)?;
                        log.commit_offset(CONSUMER, checkpoint)?;
                        Ok(Self::Embedded(log))
                    }
                    opened => Ok(Self::Embedded(opened?)),
                }
            }
            LogKind::Nats(nats) => {
                let lock = tickflow_log::lock_dir(&data_dir.join("log"))?;
                Ok(Self::Nats {
                    log: Box::new(open_nats(plan, nats, checkpoint)?),
                    _lock: lock,
                })
            }
            LogKind::Kafka(kafka) => {
                let lock = tickflow_log::lock_dir(&data_dir.join("log"))?;
                Ok(Self::Kafka {
                    log: Box::new(open_kafka(plan, kafka, checkpoint)?),
                    _lock: lock,
                })
            }
        }
    }

    /// # Errors
    /// The embedded log's own; a broker's failure is [`Error::LogUnavailable`], which the
    /// sender may try again, unless a record can never fit a message ([`append_error`]).
    pub(crate) fn append_batch(&self, records: &[&[u8]]) -> Result<Range<u64>> {
        match self {
            Self::Embedded(log) => Ok(log.append_batch(records)?),
            Self::Nats { log, .. } => log
                .append_batch(records)
                .map_err(|e| append_error(e.is_too_large(), &e)),
            Self::Kafka { log, .. } => log
                .append_batch(records)
                .map_err(|e| append_error(e.is_too_large(), &e)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NatsLogPlan;

    fn plan(kind: LogKind) -> LogPlan {
        LogPlan {
            kind,
            partitions: 1,
            partition: None,
            segment_bytes: 1 << 20,
            retention_age: None,
            retention_bytes: None,
            fsync: true,
            min_free_bytes: 0,
        }
    }

    #[test]
    fn a_data_directory_keeps_the_log_its_offsets_count_in() {
        let dir = tempfile::tempdir().unwrap();
        let nats = plan(LogKind::Nats(NatsLogPlan {
            url: "nats://127.0.0.1:4222".into(),
            stream: "LOG".into(),
            subject: "tickflow.log".into(),
            consumer: "p".into(),
            replicas: 1,
        }));
        // A data directory from before the record, with a checkpoint: the embedded log.
        let e = check_identity(dir.path(), &nats, true).unwrap_err();
        assert!(
            e.to_string().contains("follows the embedded log, and [log] now names the nats stream LOG subject tickflow.log one"),
            "{e}"
        );
        check_identity(dir.path(), &plan(LogKind::Embedded), true).unwrap();
        // A new one takes the log it is first given, and keeps to it.
        let fresh = tempfile::tempdir().unwrap();
        check_identity(fresh.path(), &nats, false).unwrap();
        check_identity(fresh.path(), &nats, true).unwrap();
        let e = check_identity(fresh.path(), &plan(LogKind::Embedded), true).unwrap_err();
        assert!(e.to_string().contains("follows the nats stream LOG"), "{e}");
    }
}
