//! The running pipeline as the binary and the API see it: one pipeline over the log, or on
//! a partitioned broker log this process's share of the partitions ([`crate::members`]).

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use tickflow_core::codec::Batch;
use tickflow_core::metrics::Metrics;
use tickflow_lake::{Lake, RecordBatch, Table};
use tickflow_model::Event;

use crate::jobs::Jobs;
use crate::live::QueryInputs;
use crate::members::Members;
use crate::runtime::{Single, Status};
use crate::{Plan, Result};

/// A running pipeline: see the crate docs. Dropping it without [`Pipeline::shutdown`] stops
/// nothing cleanly; always call `shutdown`.
#[derive(Debug)]
pub struct Pipeline(Kind);

#[derive(Debug)]
enum Kind {
    Single(Single),
    /// `[log] partitions` > 1.
    Members(Box<Members>),
}

/// What a partitioned pipeline does not do yet, said where it is asked for.
const NOT_PARTITIONED: &str = "not available on a partitioned log ([log] partitions > 1)";

impl Pipeline {
    /// Opens the log and lake under the plan's data directory, recovers from the last
    /// checkpoint, and starts the processor, the flusher and the sources. On a partitioned
    /// log, starts the sources and begins taking this process's share of the partitions.
    ///
    /// # Errors
    /// The data directory, log, lake or checkpoint cannot be opened or is damaged.
    pub fn start(plan: Plan) -> Result<Self> {
        if plan.log.partitions > 1 {
            return Ok(Self(Kind::Members(Box::new(Members::start(plan)?))));
        }
        Ok(Self(Kind::Single(Single::start(
            plan,
            Arc::new(Metrics::default()),
        )?)))
    }

    /// The lake this pipeline writes (all of it, on a partitioned log).
    pub fn lake(&self) -> &Lake {
        match &self.0 {
            Kind::Single(s) => s.lake(),
            Kind::Members(m) => m.lake(),
        }
    }

    /// The plan it runs.
    pub fn plan(&self) -> &Plan {
        match &self.0 {
            Kind::Single(s) => s.plan(),
            Kind::Members(m) => m.plan(),
        }
    }

    /// Shared counters, for `/metrics`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        match &self.0 {
            Kind::Single(s) => s.metrics(),
            Kind::Members(m) => m.metrics(),
        }
    }

    /// Appends events durably; returns their log offsets once they are stored (on a
    /// partitioned log, those of the first partition they went to).
    ///
    /// # Errors
    /// [`crate::Error::ShuttingDown`] once shutdown began; a log error if the append failed
    /// (then nothing of the batch is acknowledged).
    pub fn ingest(&self, source: &str, events: &[Event]) -> Result<Range<u64>> {
        match &self.0 {
            Kind::Single(s) => s.ingest(source, events),
            Kind::Members(m) => {
                let mut batch = Batch::default();
                for event in events {
                    batch.push(event);
                }
                m.ingest_batch(source, &batch)
            }
        }
    }

    /// Appends events already encoded (HTTP ingest parses straight into a [`Batch`]); as
    /// [`Pipeline::ingest`] otherwise.
    ///
    /// # Errors
    /// As [`Pipeline::ingest`].
    pub fn ingest_batch(&self, source: &str, batch: &Batch) -> Result<Range<u64>> {
        match &self.0 {
            Kind::Single(s) => s.ingest_batch(source, batch),
            Kind::Members(m) => m.ingest_batch(source, batch),
        }
    }

    /// Whether shutdown has begun (or a thread failed).
    pub fn is_stopping(&self) -> bool {
        match &self.0 {
            Kind::Single(s) => s.is_stopping(),
            Kind::Members(m) => m.is_stopping(),
        }
    }

    /// Files and in-memory rows for one consistent query.
    ///
    /// # Errors
    /// The lake cannot be listed or a row cannot be converted.
    pub fn query_inputs(&self) -> Result<QueryInputs> {
        match &self.0 {
            Kind::Single(s) => s.query_inputs(),
            Kind::Members(m) => m.query_inputs(),
        }
    }

    /// [`Pipeline::query_inputs`] of one table: its published files and its rows in
    /// memory, each row in exactly one.
    ///
    /// # Errors
    /// The lake cannot be listed or a row cannot be converted.
    pub fn table_inputs(&self, table: Table) -> Result<(Vec<PathBuf>, Vec<RecordBatch>)> {
        match &self.0 {
            Kind::Single(s) => s.table_inputs(table),
            Kind::Members(m) => m.table_inputs(table),
        }
    }

    /// Changes before compaction deletes lake files: a query whose inputs were taken at
    /// another generation may have missed a file, and is run again on new inputs.
    pub fn lake_generation(&self) -> u64 {
        match &self.0 {
            Kind::Single(s) => s.lake_generation(),
            Kind::Members(m) => m.lake_generation(),
        }
    }

    /// Remembers the config file this pipeline was started from, so it can be reloaded.
    pub fn set_config_path(&self, path: PathBuf) {
        if let Kind::Single(s) = &self.0 {
            s.set_config_path(path);
        }
    }

    /// Reads the config file again and applies its alert rules; see [`Single::reload`].
    ///
    /// # Errors
    /// No config file is known, the new config is wrong, or the log is partitioned.
    pub fn reload(&self) -> std::result::Result<Vec<&'static str>, crate::ConfigError> {
        match &self.0 {
            Kind::Single(s) => s.reload(),
            Kind::Members(m) => Err(crate::ConfigError {
                file: m.plan().data_dir.clone(),
                problems: vec![crate::Problem {
                    line: None,
                    key: "log.partitions".into(),
                    message: format!(
                        "reloading rules is {NOT_PARTITIONED}: restart the processes one at a time"
                    ),
                }],
            }),
        }
    }

    /// The scheduled jobs (none on a partitioned log).
    pub fn jobs(&self) -> &Jobs {
        match &self.0 {
            Kind::Single(s) => s.jobs(),
            Kind::Members(m) => m.jobs(),
        }
    }

    /// Runs a compaction round between flushes and waits for it; see [`Single::compact_now`].
    ///
    /// # Errors
    /// The pipeline stopped before the round ran, or the log is partitioned.
    pub async fn compact_now(&self) -> std::result::Result<String, String> {
        match &self.0 {
            Kind::Single(s) => s.compact_now().await,
            Kind::Members(_) => Err(format!(
                "a compaction job is {NOT_PARTITIONED}; each partition compacts on [lake] compact_interval_secs"
            )),
        }
    }

    /// Why a pipeline thread failed, once one has: the pipeline is then stopping. (A
    /// partition's failure stops only that partition, which is started again.)
    pub fn failure(&self) -> Option<String> {
        match &self.0 {
            Kind::Single(s) => s.failure(),
            Kind::Members(m) => m.failure(),
        }
    }

    /// The flush that put every event below log offset `end` in the lake, once one has
    /// (Lambda mode; never on a partitioned log).
    pub fn flush_covering(&self, end: u64) -> Option<u64> {
        match &self.0 {
            Kind::Single(s) => s.flush_covering(end),
            Kind::Members(_) => None,
        }
    }

    /// Whether every sink and notifier has written flush `seq`.
    ///
    /// # Errors
    /// A pipeline thread failed, or a follower stopped for good: it never will.
    pub fn followers_reached(&self, seq: u64) -> std::result::Result<bool, String> {
        match &self.0 {
            Kind::Single(s) => s.followers_reached(seq),
            Kind::Members(_) => Err(format!("waiting for sinks is {NOT_PARTITIONED}")),
        }
    }

    /// Every gap the sources recorded, each in its latest state.
    pub fn gaps(&self) -> Vec<tickflow_sources::gaps::Gap> {
        tickflow_sources::gaps::read_all(&self.plan().data_dir)
    }

    /// Current counters and offsets.
    pub fn status(&self) -> Status {
        match &self.0 {
            Kind::Single(s) => s.status(),
            Kind::Members(m) => m.status(),
        }
    }

    /// What `GET /api/v1/stream` shows: the open bars, and the final bars and alerts since
    /// the previous call. The processor keeps those only while this is called (every few
    /// seconds at least), and hands each over once, so one caller (the API's stream hub)
    /// takes them for every client.
    pub fn live_view(&self) -> crate::live::LiveView {
        match &self.0 {
            Kind::Single(s) => s.live_view(),
            Kind::Members(m) => m.live_view(),
        }
    }

    /// Partitions of a partitioned log this process owns now; empty otherwise.
    pub fn owned_partitions(&self) -> Vec<u32> {
        match &self.0 {
            Kind::Single(_) => Vec::new(),
            Kind::Members(m) => m.owned(),
        }
    }

    /// Stops cleanly: sources stop, the processor drains everything already in the log, the
    /// lake and checkpoint are flushed, and the threads are joined.
    ///
    /// # Errors
    /// The first failure any thread reported.
    pub fn shutdown(self) -> Result<()> {
        match self.0 {
            Kind::Single(s) => s.shutdown(),
            Kind::Members(m) => m.shutdown(),
        }
    }
}
