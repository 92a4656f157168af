use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tickflow_core::Shutdown;
use tickflow_core::codec::{Batch, Decoder};
use tickflow_core::metrics::Metrics;
use tickflow_lake::{Lake, RecordBatch, Rows, Table};
use tickflow_model::{Bar, BarInterval, DailyMetric, Event, UnixNanos};
use tickflow_process::{ExprRule, Output, Processor, SpikeRule, ThresholdRule};
use tokio::sync::watch;

use crate::jobs::Jobs;
use crate::live::{self, Live, QueryInputs};
use crate::log_store::LogStore;
use crate::sinks::{SinkStatus, Sinks};
use crate::sources::{SourceStatus, Sources};
use crate::{Error, Plan, Result, checkpoint};

/// Records read from the log per batch.
const READ_BATCH: usize = 8192;
/// How long shutdown keeps processing what is already in the log.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// A point-in-time view of the running pipeline, for `/api/v1/status` and the status line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub uptime_secs: f64,
    pub log_start_offset: u64,
    pub log_next_offset: u64,
    pub processed_offset: u64,
    /// Left to process: records on the embedded log, messages on a broker log.
    pub log_lag: u64,
    pub ingested: BTreeMap<String, u64>,
    pub processed: u64,
    pub rows: BTreeMap<String, u64>,
    pub rows_durable: BTreeMap<String, u64>,
    pub rejected: u64,
    pub duplicates: u64,
    pub alerts: u64,
    pub flushes: u64,
    /// Compaction rounds run so far, including those held back by a sink's position.
    pub compactions: u64,
    pub published_flush: u64,
    pub latency_p50_seconds: Option<f64>,
    pub latency_p99_seconds: Option<f64>,
    /// Every configured source (HTTP ingest is counted in `ingested` under `http`).
    pub sources: Vec<SourceStatus>,
    /// Every sink behind the lake, with its position and lag.
    pub sinks: Vec<SinkStatus>,
    /// Every notifier, which follows the lake as a sink does.
    pub notifiers: Vec<SinkStatus>,
    /// Every scheduled job, with its next fire time and last run.
    pub jobs: Vec<crate::jobs::JobStatus>,
    /// Config reloads applied (`POST /api/v1/reload`, SIGHUP).
    pub reloads: u64,
    /// Set when a pipeline thread failed; the pipeline is then stopping.
    pub failure: Option<String>,
    /// Lake parts a read in this process found damaged (`tickflow verify` checks them all).
    pub damaged_parts: Vec<DamagedPart>,
    /// While writes to the lake fail and are retried: for how long, and the last error.
    pub lake_retrying: Option<LakeRetrying>,
    /// While appends to the log fail (its broker away, its disk reserve reached): ingest
    /// and sources are refused and send again.
    pub log_retrying: Option<LogRetrying>,
    /// On a partitioned log: the partitions and which this process owns. The figures above
    /// then add up the owned partitions (offsets and lag: the sum of each one's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<PartitionsStatus>,
}

/// Writes to the lake failing and being retried.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LakeRetrying {
    /// Since the first failed attempt of the flush being written.
    pub secs: u64,
    pub attempts: u32,
    pub error: String,
}

/// Appends to the log failing: the outage ends with the next append that succeeds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogRetrying {
    /// Since the first failure.
    pub secs: u64,
    /// Since the latest failure.
    pub last_secs: u64,
    pub attempts: u32,
    pub error: String,
}

impl LogRetrying {
    /// The outage `metrics` records, if one is going on.
    pub(crate) fn of(metrics: &Metrics) -> Option<Self> {
        metrics.log_failing.now().map(|f| Self {
            secs: f.secs,
            last_secs: f.last_secs,
            attempts: f.attempts,
            error: f.error,
        })
    }
}

/// A part whose bytes no longer match their checksum, and what the read found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedPart {
    pub path: String,
    pub reason: String,
}

impl DamagedPart {
    /// Every part found damaged so far in this process.
    fn found() -> Vec<Self> {
        tickflow_core::damage::found()
            .into_iter()
            .map(|(path, reason)| Self {
                path: path.display().to_string(),
                reason,
            })
            .collect()
    }
}

/// Which partitions of a partitioned log this process runs (`crate::members`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionsStatus {
    pub partitions: u32,
    pub owned: Vec<u32>,
    /// Processes sharing the log, this one included.
    pub members: usize,
    /// Why a partition's pipeline last failed or could not start (it is tried again).
    pub last_failure: Option<String>,
}

impl Status {
    /// A status with nothing counted, for a process that owns no partition yet.
    pub(crate) fn empty() -> Self {
        Self {
            uptime_secs: 0.0,
            log_start_offset: 0,
            log_next_offset: 0,
            processed_offset: 0,
            log_lag: 0,
            ingested: BTreeMap::new(),
            processed: 0,
            rows: BTreeMap::new(),
            rows_durable: BTreeMap::new(),
            rejected: 0,
            duplicates: 0,
            alerts: 0,
            flushes: 0,
            compactions: 0,
            published_flush: 0,
            latency_p50_seconds: None,
            latency_p99_seconds: None,
            sources: Vec::new(),
            sinks: Vec::new(),
            notifiers: Vec::new(),
            jobs: Vec::new(),
            reloads: 0,
            failure: None,
            damaged_parts: DamagedPart::found(),
            lake_retrying: None,
            log_retrying: None,
            partitions: None,
        }
    }

    /// Adds partition `p`'s pipeline: its offsets, lag and flushes add up; the counters
    /// are the process's (one set of metrics) and are taken as they are; its sinks and
    /// notifiers are listed.
    pub(crate) fn add_partition(&mut self, p: u32, s: Status) {
        self.log_start_offset += s.log_start_offset;
        self.log_next_offset += s.log_next_offset;
        self.processed_offset += s.processed_offset;
        self.log_lag += s.log_lag;
        self.published_flush += s.published_flush;
        self.processed = s.processed;
        self.rows = s.rows;
        self.rows_durable = s.rows_durable;
        self.rejected = s.rejected;
        self.duplicates = s.duplicates;
        self.alerts = s.alerts;
        self.flushes = s.flushes;
        self.compactions = s.compactions;
        self.damaged_parts = s.damaged_parts;
        if s.lake_retrying.is_some() {
            self.lake_retrying = s.lake_retrying;
        }
        self.latency_p50_seconds = s.latency_p50_seconds;
        self.latency_p99_seconds = s.latency_p99_seconds;
        self.sinks.extend(s.sinks);
        self.notifiers.extend(s.notifiers.into_iter().map(|mut n| {
            n.id = format!("{}-p{p}", n.id);
            n
        }));
        if let Some(f) = s.failure {
            self.failure.get_or_insert(format!("partition {p}: {f}"));
        }
    }
}

/// One flush handed from the processor to the flusher.
struct FlushJob {
    seq: u64,
    rows: Arc<Rows>,
    next_offset: u64,
    checkpoint: checkpoint::Staged,
    recv_times: Vec<i64>,
}

struct Inner {
    plan: Plan,
    log: LogStore,
    lake: Arc<Lake>,
    metrics: Arc<Metrics>,
    sinks: Sinks,
    /// Set once, right after `Inner` exists: notifiers append to the DLQ through it.
    notifiers: std::sync::OnceLock<Sinks>,
    /// Each notifier's early path: the processor hands it alerts as they are raised.
    early: std::sync::OnceLock<Vec<crate::notifiers::EarlyLane>>,
    /// Recorded positions of followers no longer in the config: compaction waits for them
    /// until their entries are removed (`checkpoint/followers.json`).
    retired: std::collections::BTreeMap<String, u64>,
    live: Mutex<Live>,
    /// Signalled when the flusher has finished a flush (`Live::in_flight` fell) or stopped.
    flush_done: std::sync::Condvar,
    /// The flusher thread has returned: nobody waits for it any more.
    flusher_gone: AtomicBool,
    /// Raised first on shutdown: sources stop (those that wait on it wake) and ingest
    /// refuses new events.
    stop_sources: watch::Sender<bool>,
    /// Raised once sources are done: the processor drains the log, flushes and exits.
    stop_processing: Shutdown,
    /// Set when a partition is handed to another process: the processor flushes what it
    /// has and stops without draining; the new owner reads on from the checkpoint.
    hand_over: AtomicBool,
    /// Compaction rounds `compaction` jobs asked for, and the last request a round served.
    compact_requested: std::sync::atomic::AtomicU64,
    compact_served: std::sync::atomic::AtomicU64,
    /// Alert rules a reload hands to the processor thread, which takes them between batches.
    new_rules: Mutex<Option<NewRules>>,
    has_new_rules: AtomicBool,
    /// Each notifier's rules, by notifier id; a reload replaces them.
    routes: BTreeMap<String, Arc<std::sync::RwLock<HashSet<String>>>>,
    /// The config file `run` started from, for `POST /api/v1/reload` and SIGHUP.
    config_path: std::sync::OnceLock<PathBuf>,
    reloads: std::sync::atomic::AtomicU64,
    /// The scheduled jobs and their runs.
    jobs: Jobs,
    processed_offset: std::sync::atomic::AtomicU64,
    started: Instant,
    failure: Mutex<Option<String>>,
    /// While the lake's writes fail: since when, the attempts and the last error.
    lake_failing: Mutex<Option<LakeFailing>>,
}

/// A lake write being retried.
#[derive(Debug, Clone)]
struct LakeFailing {
    since: Instant,
    attempts: u32,
    error: String,
}

impl Inner {
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, what: &str, e: &Error) {
        tracing::error!(thread = what, error = %e, "pipeline thread failed; stopping");
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| format!("{what}: {e}"));
        self.stop_sources.send_replace(true);
        self.stop_processing.trigger();
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("data_dir", &self.plan.data_dir)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Lets sinks and notifiers write what the last flush published, then stops them.
    fn shutdown_followers(&self) {
        // Both at once, under one deadline.
        let deadline = Instant::now() + crate::sinks::DRAIN_LIMIT;
        self.sinks.signal_stop();
        if let Some(n) = self.notifiers.get() {
            n.signal_stop();
        }
        self.sinks.wait(deadline);
        if let Some(n) = self.notifiers.get() {
            n.wait(deadline);
        }
        self.record_followers_floor();
    }

    /// Keeps every follower's position for compaction, offline included.
    fn record_followers_floor(&self) {
        let mut floors = self.retired.clone();
        floors.extend(self.sinks.floors());
        if let Some(n) = self.notifiers.get() {
            floors.extend(n.floors());
        }
        if let Err(e) = checkpoint::write_follower_floors(&self.plan.data_dir, &floors) {
            tracing::warn!(error = %e, "could not record the sinks' positions for offline compaction");
        }
    }
}

/// Starts a notifier per plan, each followed as a sink of alerts (`notifiers.rs`).
fn start_notifiers(inner: &Arc<Inner>, published: u64) -> Result<()> {
    let late = LateAppend::default();
    let _ = late.0.set(Arc::downgrade(inner));
    let log: Arc<dyn tickflow_core::source::Append> = Arc::new(late);
    let mut built = Vec::new();
    let mut lanes = Vec::new();
    for plan in &inner.plan.notifiers {
        let notifier = plan.config.build(&plan.id).map_err(|e| Error::Io {
            context: format!("starting notifier {}", plan.id),
            source: std::io::Error::other(e.to_string()),
        })?;
        let channel = crate::notifiers::Channel {
            id: plan.id.clone(),
            notifier,
            max_attempts: plan.max_attempts,
            log: Arc::clone(&log),
            metrics: Arc::clone(&inner.metrics),
        };
        let (sink, lane) = crate::notifiers::NotifySink::new(
            channel,
            inner.plan.data_dir.join("notifiers").join(&plan.id),
            inner
                .routes
                .get(&plan.id)
                .map(Arc::clone)
                .unwrap_or_default(),
            plan.max_age,
        );
        lanes.push(lane);
        built.push(crate::sinks::Built {
            id: plan.id.clone(),
            kind: plan.config.type_name(),
            sink: Box::new(sink),
            retry_max: plan.retry_max,
            // An alert is never skipped: a notifier far behind still sends every one.
            overflow: crate::config::Overflow::Block,
        });
    }
    let notifiers = Sinks::start(
        "notifiers",
        &checkpoint::dir(&inner.plan.data_dir).join("notifiers.json"),
        built,
        inner.plan.lake.sink_buffer_rows,
        published,
        &inner.lake,
        &inner.metrics,
    )
    .map_err(|source| Error::Io {
        context: "starting the notifiers".into(),
        source,
    })?;
    let _ = inner.notifiers.set(notifiers);
    let _ = inner.early.set(lanes);
    Ok(())
}

impl tickflow_core::source::Append for Inner {
    fn append(
        &self,
        source: &str,
        batch: &Batch,
    ) -> std::result::Result<Range<u64>, tickflow_core::source::SourceError> {
        append(self, source, batch).map_err(Error::into_source_error)
    }
}

/// The log for sinks and notifiers, which start before the pipeline they append to exists:
/// rows a sink's store refuses go to the DLQ through it, and a notifier's deliveries. Weak, so
/// followers do not keep the pipeline alive; open through shutdown until they are joined.
#[derive(Debug, Default)]
struct LateAppend(std::sync::OnceLock<std::sync::Weak<Inner>>);

impl tickflow_core::source::Append for LateAppend {
    fn append(
        &self,
        source: &str,
        batch: &Batch,
    ) -> std::result::Result<Range<u64>, tickflow_core::source::SourceError> {
        match self.0.get().and_then(std::sync::Weak::upgrade) {
            Some(inner) => append_while_open(&inner, source, batch).map_err(Into::into),
            None => Err("the pipeline is not running".into()),
        }
    }
}

/// A running pipeline over one log (or one partition of a partitioned log): see the crate
/// docs. Dropping it without [`Single::shutdown`] stops nothing cleanly; always call
/// `shutdown`.
pub(crate) struct Single {
    inner: Arc<Inner>,
    sources: Sources,
    threads: Vec<(&'static str, JoinHandle<()>)>,
}

impl std::fmt::Debug for Single {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Single")
            .field("data_dir", &self.inner.plan.data_dir)
            .finish_non_exhaustive()
    }
}

impl Single {
    /// Opens the log and lake under the plan's data directory, recovers from the last
    /// checkpoint, and starts the processor, the flusher and any simulator. Counters go to
    /// `metrics` (shared by the partitions a process owns).
    ///
    /// # Errors
    /// The data directory, log, lake or checkpoint cannot be opened or is damaged.
    pub(crate) fn start(plan: Plan, metrics: Arc<Metrics>) -> Result<Self> {
        let data_dir = plan.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| Error::Io {
            context: format!("creating {}", data_dir.display()),
            source,
        })?;
        let recorded = checkpoint::read(&data_dir)?;
        let at = recorded.as_ref().map_or(0, |c| c.next_offset);
        crate::log_store::check_identity(&data_dir, &plan.log, at > 0)?;
        let log = LogStore::open(&data_dir, &plan.log, at)?;
        // Only once the log's lock is held: another process may be staging there.
        checkpoint::discard_staged(&data_dir)?;
        if at > 0 && log.is_empty() {
            return Err(Error::Checkpoint {
                path: checkpoint::path(&data_dir),
                message: format!(
                    "processing is at log offset {at} but the log is empty: it was deleted or replaced (was [log] kind changed?). Put the log back, or start with a new data directory"
                ),
            });
        }
        let has_history = recorded.as_ref().is_some_and(|c| c.flush_seq > 0);
        let lake = crate::lake_location::open_for_pipeline(
            &data_dir,
            plan.lake.dir.as_deref(),
            plan.lake.object.as_ref(),
            has_history,
        )?
        .with_symbol_buckets(plan.lake.symbol_buckets);
        let lake = match plan.log.partition {
            Some(p) => lake.with_partition(p),
            None => lake,
        };
        let ckpt = match recorded {
            Some(c) => c,
            // Without a checkpoint the only legitimate leftovers are from flush 1 (a crash before
            // the first checkpoint); a later flush means a checkpoint existed and was lost.
            None if Table::ALL.iter().any(|t| {
                lake.files(*t, u64::MAX).map(|f| f.len()).unwrap_or(0)
                    > lake.files(*t, 1).map(|f| f.len()).unwrap_or(0)
            }) =>
            {
                return Err(Error::Checkpoint {
                    path: checkpoint::path(&data_dir),
                    message: "missing, but the lake holds data: starting over would delete or double it; restore the checkpoint or use a new data directory".into(),
                });
            }
            None => checkpoint::Checkpoint::default(),
        };
        let removed = lake.recover(ckpt.flush_seq)?;
        let next = ckpt.next_offset.max(log.start_offset());
        if next > ckpt.next_offset && ckpt.next_offset > 0 {
            tracing::error!(
                from = ckpt.next_offset,
                to = next,
                "the log's retention deleted records before they were processed; they are lost"
            );
        }
        tracing::info!(data_dir = %data_dir.display(), next_offset = next, log_end = log.next_offset(), flush_seq = ckpt.flush_seq, removed_files = removed, "recovered");
        let mut processor = Processor::with_state(plan.processing.clone(), ckpt.state);
        // The lake now holds exactly what the checkpointed state produced.
        warm_up(&lake, ckpt.flush_seq, &Rows::default(), &mut processor);
        let live = Live {
            published_seq: ckpt.flush_seq,
            committed_offset: next,
            open_bars: processor.open_bars(),
            ..Default::default()
        };
        let lake = Arc::new(lake);
        let jobs =
            Jobs::open(&data_dir, plan.jobs.clone(), Arc::clone(&metrics)).map_err(|message| {
                Error::Io {
                    context: "reading the jobs' record".into(),
                    source: std::io::Error::other(message),
                }
            })?;
        let mut retired = checkpoint::follower_floors(&data_dir)?;
        retired.retain(|id, _| {
            !plan.sinks.iter().any(|s| s.id == *id) && !plan.notifiers.iter().any(|n| n.id == *id)
        });
        for (id, floor) in &retired {
            tracing::warn!(follower = %id, floor, "a sink or notifier no longer in the config holds compaction at this flush; remove its entry from checkpoint/followers.json to release it");
        }
        let late_log = Arc::new(LateAppend::default());
        let dlq: Arc<dyn tickflow_core::source::Append> = Arc::clone(&late_log) as _;
        let built = plan
            .sinks
            .iter()
            .map(|p| crate::sinks::Built {
                id: p.id.clone(),
                kind: p.config.type_name(),
                sink: p.config.build(&p.id, &dlq),
                retry_max: crate::sinks::SINK_RETRY_MAX,
                overflow: p.overflow,
            })
            .collect();
        let sinks = Sinks::start(
            "sinks",
            &checkpoint::dir(&data_dir).join("sinks.json"),
            built,
            plan.lake.sink_buffer_rows,
            ckpt.flush_seq,
            &lake,
            &metrics,
        )
        .map_err(|source| Error::Io {
            context: "starting the sinks' runtime".into(),
            source,
        })?;
        let routes = plan
            .notifiers
            .iter()
            .map(|n| {
                (
                    n.id.clone(),
                    Arc::new(std::sync::RwLock::new(n.rules.clone())),
                )
            })
            .collect();
        let inner = Arc::new(Inner {
            plan,
            log,
            lake,
            metrics,
            sinks,
            notifiers: std::sync::OnceLock::new(),
            early: std::sync::OnceLock::new(),
            retired,
            live: Mutex::new(live),
            flush_done: std::sync::Condvar::new(),
            flusher_gone: AtomicBool::new(false),
            stop_sources: watch::Sender::new(false),
            stop_processing: Shutdown::new(),
            hand_over: AtomicBool::new(false),
            compact_requested: std::sync::atomic::AtomicU64::new(0),
            compact_served: std::sync::atomic::AtomicU64::new(0),
            new_rules: Mutex::new(None),
            has_new_rules: AtomicBool::new(false),
            routes,
            config_path: std::sync::OnceLock::new(),
            reloads: std::sync::atomic::AtomicU64::new(0),
            jobs,
            processed_offset: std::sync::atomic::AtomicU64::new(next),
            started: Instant::now(),
            failure: Mutex::new(None),
            lake_failing: Mutex::new(None),
        });
        let _ = late_log.0.set(Arc::downgrade(&inner));
        if let Err(e) = start_notifiers(&inner, ckpt.flush_seq) {
            inner.sinks.shutdown();
            return Err(e);
        }
        // Before the first compaction can run: sinks not yet open count at their start.
        inner.record_followers_floor();
        let (tx, rx) = sync_channel::<FlushJob>(2);
        let mut threads = Vec::new();
        let spawn =
            |name: &'static str, f: Box<dyn FnOnce() -> Result<()> + Send>, inner: Arc<Inner>| {
                std::thread::Builder::new()
                    .name(format!("tickflow-{name}"))
                    .spawn(move || {
                        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => inner.fail(name, &e),
                            Err(_) => inner.fail(name, &Error::Thread(name, "panicked".into())),
                        }
                    })
                    .map(|h| (name, h))
                    .map_err(|source| Error::Io {
                        context: format!("spawning {name} thread"),
                        source,
                    })
            };
        let i = Arc::clone(&inner);
        threads.push(spawn(
            "flusher",
            Box::new(move || {
                let done = run_flusher(&i, rx);
                i.flusher_gone.store(true, Ordering::Release);
                i.flush_done.notify_all();
                done
            }),
            Arc::clone(&inner),
        )?);
        let i = Arc::clone(&inner);
        threads.push(spawn(
            "processor",
            Box::new(move || run_processor(&i, processor, next, ckpt.flush_seq, tx)),
            Arc::clone(&inner),
        )?);
        if !inner.plan.stale_feeds.is_empty() || !inner.plan.gap_rules.is_empty() {
            let i = Arc::clone(&inner);
            threads.push(spawn(
                "feed-watch",
                Box::new(move || run_feed_watch(&i)),
                Arc::clone(&inner),
            )?);
        }
        let log: Arc<dyn tickflow_core::source::Append> = Arc::clone(&inner) as _;
        let sources = Sources::start(
            &inner.plan.sources,
            &inner.plan.data_dir,
            inner.log.is_empty(),
            &log,
            &inner.metrics,
            &inner.stop_sources,
        )
        .map_err(|source| Error::Io {
            context: "starting the sources".into(),
            source,
        })?;
        Ok(Self {
            inner,
            sources,
            threads,
        })
    }

    /// The lake this pipeline writes.
    pub(crate) fn lake(&self) -> &Lake {
        &self.inner.lake
    }

    /// The plan it runs.
    pub(crate) fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    /// Shared counters, for `/metrics`.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Appends events durably; returns their log offsets once they are on disk.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] once shutdown began; a log error if the append failed (then
    /// nothing of the batch is acknowledged).
    pub(crate) fn ingest(&self, source: &str, events: &[Event]) -> Result<Range<u64>> {
        append_events(&self.inner, source, events, &mut Batch::default())
    }

    /// Appends events already encoded (HTTP ingest parses straight into a [`Batch`]); as
    /// [`Pipeline::ingest`] otherwise.
    ///
    /// # Errors
    /// As [`Pipeline::ingest`].
    pub(crate) fn ingest_batch(&self, source: &str, batch: &Batch) -> Result<Range<u64>> {
        let offsets = append(&self.inner, source, batch)?;
        self.inner
            .metrics
            .source_events
            .add(source, batch.len() as u64);
        Ok(offsets)
    }

    /// Whether shutdown has begun (or a thread failed).
    pub(crate) fn is_stopping(&self) -> bool {
        *self.inner.stop_sources.borrow()
    }

    /// Files and in-memory rows for one consistent query.
    ///
    /// # Errors
    /// The lake cannot be listed or a row cannot be converted.
    pub(crate) fn query_inputs(&self) -> Result<QueryInputs> {
        loop {
            // Compaction may delete files between reading the published flush and listing;
            // an unchanged generation around both means it did not.
            let generation = self.lake_generation();
            let (seq, batches) = {
                let mut live = self.inner.live();
                live.open_bars_read = true;
                (live.published_seq, live.batches()?)
            };
            let files = live::files(&self.inner.lake, seq)?;
            if self.lake_generation() == generation {
                return Ok(QueryInputs {
                    files,
                    live: batches,
                    lake_generation: generation,
                });
            }
        }
    }

    /// [`Pipeline::live_view`].
    pub(crate) fn live_view(&self) -> live::LiveView {
        self.inner.live().view()
    }

    /// [`Pipeline::query_inputs`] of one table: its published files and its rows in
    /// memory, each row in exactly one (what a long-lived session's scan of it reads).
    ///
    /// # Errors
    /// The lake cannot be listed or a row cannot be converted.
    pub(crate) fn table_inputs(&self, table: Table) -> Result<(Vec<PathBuf>, Vec<RecordBatch>)> {
        loop {
            let generation = self.lake_generation();
            let (seq, batches) = {
                let mut live = self.inner.live();
                if table == Table::Bars {
                    live.open_bars_read = true;
                }
                (live.published_seq, live.batches_of(&[table])?)
            };
            let files = self.inner.lake.files(table, seq)?;
            if self.lake_generation() == generation {
                return Ok((files, batches.into_iter().map(|(_, b)| b).collect()));
            }
        }
    }

    /// Changes before compaction deletes lake files: a query whose inputs were taken at
    /// another generation may have missed a file, and is run again on new inputs.
    pub(crate) fn lake_generation(&self) -> u64 {
        self.inner.lake.generation()
    }

    /// Current counters and offsets.
    /// Every gap the sources recorded, each in its latest state (`tickflow_sources::gaps`).
    /// Remembers the config file this pipeline was started from, so it can be reloaded.
    pub(crate) fn set_config_path(&self, path: PathBuf) {
        let _ = self.inner.config_path.set(path);
    }

    /// Reads the config file again and applies its alert rules and their routing to the
    /// notifiers, with no restart: the processor takes them between two batches, and each
    /// rule that keeps its name keeps its state. Returns the sections that differ from the
    /// running config but need a restart to take effect.
    ///
    /// # Errors
    /// No config file is known, or the new config is wrong: the same problems, with file,
    /// line and key, as `tickflow check`; nothing is changed then.
    pub(crate) fn reload(&self) -> std::result::Result<Vec<&'static str>, crate::ConfigError> {
        let Some(path) = self.inner.config_path.get() else {
            return Err(crate::ConfigError {
                file: PathBuf::from("<none>"),
                problems: vec![crate::Problem {
                    line: None,
                    key: String::new(),
                    message: "this pipeline was not started from a config file (tickflow demo); restart it to change its rules".into(),
                }],
            });
        };
        let plan = crate::config::load(path)?;
        let running = &self.inner.plan;
        let mut restart = Vec::new();
        let differs =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        for (name, changed) in [
            ("data_dir", running.data_dir != plan.data_dir),
            ("http", differs(&running.http, &plan.http)),
            ("pgwire", running.pgwire != plan.pgwire),
            ("query", differs(&running.query, &plan.query)),
            ("log", differs(&running.log, &plan.log)),
            ("lake", differs(&running.lake, &plan.lake)),
            ("sources", differs(&running.sources, &plan.sources)),
            ("sinks", differs(&running.sinks, &plan.sinks)),
            ("jobs", differs(&running.jobs, &plan.jobs)),
            // Watched by their own thread, started with the pipeline.
            (
                "alerts.stale_feed",
                differs(&running.stale_feeds, &plan.stale_feeds),
            ),
            ("alerts.gap", differs(&running.gap_rules, &plan.gap_rules)),
            (
                "notifiers",
                differs(
                    &running
                        .notifiers
                        .iter()
                        .map(|n| (&n.id, &n.config))
                        .collect::<Vec<_>>(),
                    &plan
                        .notifiers
                        .iter()
                        .map(|n| (&n.id, &n.config))
                        .collect::<Vec<_>>(),
                ),
            ),
            (
                "processing",
                running.processing.lateness_nanos != plan.processing.lateness_nanos
                    || differs(&running.processing.limits, &plan.processing.limits),
            ),
        ] {
            if changed {
                restart.push(name);
            }
        }
        for n in &plan.notifiers {
            if let Some(route) = self.inner.routes.get(&n.id) {
                *route.write().unwrap_or_else(|e| e.into_inner()) = n.rules.clone();
            }
        }
        *self
            .inner
            .new_rules
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((
            plan.processing.thresholds.clone(),
            plan.processing.spikes.clone(),
            plan.processing.exprs.clone(),
        ));
        self.inner.has_new_rules.store(true, Ordering::Release);
        self.inner.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            config = %path.display(),
            thresholds = plan.processing.thresholds.len(),
            spikes = plan.processing.spikes.len(),
            expression_rules = plan.processing.exprs.len(),
            needs_restart = ?restart,
            "alert rules reloaded"
        );
        Ok(restart)
    }

    /// The scheduled jobs: their status, and the scheduler the binary runs with a
    /// [`crate::jobs::JobRunner`].
    pub(crate) fn jobs(&self) -> &Jobs {
        &self.inner.jobs
    }

    /// Runs a compaction round of the lake (with `[lake] retention_days`) between flushes,
    /// and waits for it: what a `compaction` job does.
    ///
    /// # Errors
    /// The pipeline stopped before the round ran.
    pub(crate) async fn compact_now(&self) -> std::result::Result<String, String> {
        let m = &self.inner.metrics;
        let files = m.lake_compacted_files.load(Ordering::Acquire);
        let errors = m.sink_errors.get("compaction").load(Ordering::Acquire);
        let retention_errors = m.sink_errors.get("retention").load(Ordering::Acquire);
        // Served only by a round that starts after this request.
        let request = self.inner.compact_requested.fetch_add(1, Ordering::AcqRel) + 1;
        let started = Instant::now();
        while self.inner.compact_served.load(Ordering::Acquire) < request {
            if self.inner.stop_processing.is_triggered() {
                return Err("the pipeline stopped before the round ran".into());
            }
            if started.elapsed() > COMPACT_JOB_LIMIT {
                return Err(format!(
                    "no compaction round ran within {} s: the lake's writer is busy or failing (tickflow_sink_errors_total{{sink=\"lake\"}})",
                    COMPACT_JOB_LIMIT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let merged = m.lake_compacted_files.load(Ordering::Acquire) - files;
        if m.sink_errors.get("compaction").load(Ordering::Acquire) > errors {
            return Err(
                "the compaction round failed and left the files as they were (see the log)".into(),
            );
        }
        if m.sink_errors.get("retention").load(Ordering::Acquire) > retention_errors {
            return Err(
                "the round's retention failed; it is tried again next round (see the log)".into(),
            );
        }
        Ok(format!(
            "compaction round done: {merged} small file(s) merged"
        ))
    }

    /// Why a pipeline thread failed, once one has: the pipeline is then stopping.
    pub(crate) fn failure(&self) -> Option<String> {
        self.inner
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The flush that put every event below log offset `end` in the lake, once one has.
    /// Callers that answer upstream only after the sinks have their events (Lambda mode)
    /// wait for it, then for [`Pipeline::followers_reached`].
    pub(crate) fn flush_covering(&self, end: u64) -> Option<u64> {
        let live = self.inner.live();
        (live.committed_offset >= end).then_some(live.published_seq)
    }

    /// Whether every sink and notifier has written flush `seq` (`Ok(true)`) or not yet
    /// (`Ok(false)`).
    ///
    /// # Errors
    /// A pipeline thread failed, or a follower stopped for good: it never will.
    pub(crate) fn followers_reached(&self, seq: u64) -> std::result::Result<bool, String> {
        if let Some(f) = self.failure() {
            return Err(f);
        }
        let notifiers = self.inner.notifiers.get();
        Ok(self.inner.sinks.all_reached(seq)?
            && notifiers.map_or(Ok(true), |n| n.all_reached(seq))?)
    }

    pub(crate) fn status(&self) -> Status {
        let m = &self.inner.metrics;
        let log_next = self.inner.log.next_offset();
        let processed_offset = self.inner.processed_offset.load(Ordering::Relaxed);
        Status {
            uptime_secs: self.inner.started.elapsed().as_secs_f64(),
            log_start_offset: self.inner.log.start_offset(),
            log_next_offset: log_next,
            processed_offset,
            log_lag: self.inner.log.lag(processed_offset),
            ingested: m.ingested.snapshot().into_iter().collect(),
            processed: m.processed.load(Ordering::Relaxed),
            rows: m.rows_produced.snapshot().into_iter().collect(),
            rows_durable: m.rows_written.snapshot().into_iter().collect(),
            rejected: m.rejected_total(),
            duplicates: m.duplicates.load(Ordering::Relaxed),
            alerts: m.alerts.total(),
            flushes: m.lake_flushes.load(Ordering::Relaxed),
            compactions: m.lake_compactions.load(Ordering::Relaxed),
            published_flush: self.inner.live().published_seq,
            latency_p50_seconds: m.latency.quantile(0.5),
            latency_p99_seconds: m.latency.quantile(0.99),
            sources: self.sources.status(),
            sinks: self.inner.sinks.status(),
            notifiers: self
                .inner
                .notifiers
                .get()
                .map(Sinks::status)
                .unwrap_or_default(),
            jobs: self.inner.jobs.status(),
            reloads: self.inner.reloads.load(Ordering::Relaxed),
            failure: self
                .inner
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            damaged_parts: DamagedPart::found(),
            lake_retrying: self
                .inner
                .lake_failing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|f| LakeRetrying {
                    secs: f.since.elapsed().as_secs(),
                    attempts: f.attempts,
                    error: f.error.clone(),
                }),
            log_retrying: LogRetrying::of(m),
            partitions: None,
        }
    }

    /// Stops for another process to take the log (a partition) over: what was processed is
    /// flushed and checkpointed, the rest is left in the log for the new owner.
    ///
    /// # Errors
    /// As [`Single::shutdown`].
    pub(crate) fn hand_over(&mut self) -> Result<()> {
        self.inner.hand_over.store(true, Ordering::Release);
        self.stop()
    }

    /// Whether every sink and notifier thread has ended: until then the data directory is
    /// not free for another process, even after [`Single::stop`] returned.
    pub(crate) fn followers_stopped(&self) -> bool {
        self.inner.sinks.stopped() && self.inner.notifiers.get().is_none_or(Sinks::stopped)
    }

    /// Stops cleanly: sources stop, the processor drains everything already in the log, the
    /// lake and checkpoint are flushed, and the threads are joined.
    ///
    /// # Errors
    /// The first failure any thread reported.
    pub(crate) fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    /// [`Single::shutdown`] keeping the pipeline, to see its followers end.
    ///
    /// # Errors
    /// As [`Single::shutdown`].
    pub(crate) fn stop(&mut self) -> Result<()> {
        self.inner.stop_sources.send_replace(true);
        self.sources.join();
        let threads = std::mem::take(&mut self.threads);
        self.inner.stop_processing.trigger();
        for (name, h) in threads {
            if h.join().is_err() {
                self.inner.shutdown_followers();
                return Err(Error::Thread(name, "panicked".into()));
            }
        }
        // The flusher has published its last flush: sinks write it, within a bound.
        self.inner.shutdown_followers();
        match self
            .inner
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            Some(f) => Err(Error::Thread("pipeline", f)),
            None => Ok(()),
        }
    }
}

fn append(inner: &Inner, source: &str, batch: &Batch) -> Result<Range<u64>> {
    if *inner.stop_sources.borrow() {
        return Err(Error::ShuttingDown);
    }
    append_while_open(inner, source, batch)
}

/// Appends without refusing once shutdown began: followers record what they did with the
/// last flushes (deliveries, refused rows) until they are joined, and the next start
/// processes those records.
fn append_while_open(inner: &Inner, source: &str, batch: &Batch) -> Result<Range<u64>> {
    let records: Vec<&[u8]> = batch.records().collect();
    let partition = inner.plan.log.partition.unwrap_or(0);
    let offsets =
        crate::log_store::noted(&inner.metrics, partition, inner.log.append_batch(&records))?;
    inner
        .metrics
        .log_latency
        .observe_since(UnixNanos::now().0, batch.recv_times().iter().copied());
    inner.metrics.ingested.add(source, batch.len() as u64);
    inner
        .metrics
        .log_appended
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    Ok(offsets)
}

/// Encodes `events` into `batch` (emptied first) and appends them.
fn append_events(
    inner: &Inner,
    source: &str,
    events: &[Event],
    batch: &mut Batch,
) -> Result<Range<u64>> {
    batch.clear();
    for event in events {
        batch.push(event);
    }
    append(inner, source, batch)
}

/// Alerts in the process's log: one line each while they are about live data; alerts on
/// history (an event time more than a minute old: a backfill, a replay, the demo's 90 days)
/// are counted by rule and summed up in one line every ten seconds, so pushing history
/// leaves the terminal readable. Every alert is in the `alerts` table either way.
#[derive(Debug)]
struct AlertLog {
    held: BTreeMap<String, u64>,
    since: Instant,
}

impl AlertLog {
    /// Event times older than this are history.
    const HISTORY: i64 = 60 * 1_000_000_000;
    const SUMMARY_EVERY: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Self {
            held: BTreeMap::new(),
            since: Instant::now(),
        }
    }

    fn log(&mut self, a: &tickflow_model::Alert, now: UnixNanos) {
        if now.0 - a.ts.0 > Self::HISTORY {
            *self.held.entry(a.rule.clone()).or_default() += 1;
        } else {
            tracing::info!(rule = %a.rule, symbol = %a.symbol, value = %a.value, severity = %a.severity, alert_id = %a.alert_id, "{}", a.message);
        }
    }

    /// Writes the summary line once it is due.
    fn summarize_if_due(&mut self) {
        if self.since.elapsed() >= Self::SUMMARY_EVERY {
            self.summarize();
        }
    }

    fn summarize(&mut self) {
        self.since = Instant::now();
        if self.held.is_empty() {
            return;
        }
        let total: u64 = self.held.values().sum();
        let by_rule = std::mem::take(&mut self.held)
            .into_iter()
            .map(|(rule, n)| format!("{rule} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::info!(alerts = total, by_rule = %by_rule, "alerts on history (event time over a minute old), summed up; the alerts table has each");
    }
}

impl Drop for AlertLog {
    fn drop(&mut self) {
        self.summarize();
    }
}

fn count_output(metrics: &Metrics, out: &Output, alert_log: &mut AlertLog, now: UnixNanos) {
    for (table, n) in [
        ("trades", out.rows.trades.len()),
        ("quotes", out.rows.quotes.len()),
        ("bars", out.rows.bars.len()),
        ("daily_metrics", out.rows.daily_metrics.len()),
        ("alerts", out.rows.alerts.len()),
        ("dlq", out.rows.dlq.len()),
        ("alert_deliveries", out.rows.alert_deliveries.len()),
    ] {
        if n > 0 {
            metrics.rows_produced.add(table, n as u64);
        }
    }
    for d in &out.rows.dlq {
        metrics.reject(d.reason, 1);
    }
    for a in &out.rows.alerts {
        metrics.alerts.add(&a.rule, 1);
        alert_log.log(a, now);
    }
    alert_log.summarize_if_due();
    metrics
        .duplicates
        .fetch_add(out.duplicates, Ordering::Relaxed);
}

/// Watches the sources for silence and gaps once a second ([`crate::feed_watch`]) and
/// appends the alerts due to the log, until the sources stop.
fn run_feed_watch(inner: &Inner) -> Result<()> {
    let mut stale = crate::feed_watch::StaleWatch::new(inner.plan.stale_feeds.clone());
    let mut gaps = crate::feed_watch::GapWatch::new(inner.plan.gap_rules.clone());
    let mut batch = Batch::default();
    loop {
        for _ in 0..4 {
            if *inner.stop_sources.borrow() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let counts: std::collections::HashMap<String, u64> =
            inner.metrics.source_events.snapshot().into_iter().collect();
        let sources: Vec<(String, u64)> = inner
            .plan
            .sources
            .iter()
            .map(|s| (s.id.clone(), counts.get(&s.id).copied().unwrap_or(0)))
            .collect();
        let now = UnixNanos::now();
        let mut alerts = stale.check(now, &sources);
        if !gaps.is_empty() {
            let ledger = tickflow_sources::gaps::read_all(&inner.plan.data_dir);
            alerts.extend(gaps.check(now, &ledger));
        }
        if alerts.is_empty() {
            continue;
        }
        batch.clear();
        for a in &alerts {
            batch.push_alert(a);
        }
        match append(inner, "feed-watch", &batch) {
            Ok(_) | Err(Error::ShuttingDown) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Rules read by a reload, for the processor to take between batches.
type NewRules = (Vec<ThresholdRule>, Vec<SpikeRule>, Vec<ExprRule>);

/// Puts the recent final bars and daily rows the expression rules' indicators read in
/// front of their windows: from the lake's flushes up to `published`, newest day first until
/// every symbol has enough, and `unpublished` rows produced since. A lake that cannot be
/// read leaves the windows to fill from live bars, and says so.
fn warm_up(lake: &Lake, published: u64, unpublished: &Rows, processor: &mut Processor) {
    const DAY: i64 = 86_400_000_000_000;
    // The furthest back to look for n bars: an equity trades about a fifth of the calendar,
    // so seven times their span, and ten days for holidays; at most a century.
    let days = |n: usize, nanos: i64| -> i32 {
        let span = (n as i64).saturating_mul(nanos).saturating_mul(7) / DAY;
        span.saturating_add(10).min(36_500) as i32
    };
    let rules = processor.rules();
    let intervals: Vec<(BarInterval, usize)> = BarInterval::ALL
        .into_iter()
        .map(|i| (i, rules.lookback(Some(i))))
        .filter(|(_, n)| *n > 0)
        .collect();
    let daily = rules.lookback(None);
    if intervals.is_empty() && daily == 0 {
        return;
    }
    let read = || -> Result<(Vec<Bar>, Vec<DailyMetric>)> {
        let mut bars: Vec<Bar> = Vec::new();
        if let Some(span) = intervals.iter().map(|(i, n)| days(*n, i.nanos())).max() {
            let need = |i: BarInterval| intervals.iter().find(|(j, _)| *j == i).map(|(_, n)| *n);
            let mut held: std::collections::HashMap<(tickflow_model::Symbol, BarInterval), usize> =
                std::collections::HashMap::new();
            let mut symbols: std::collections::HashSet<tickflow_model::Symbol> =
                std::collections::HashSet::new();
            lake.read_back(Table::Bars, published, span, |rows| {
                for bar in rows.bars {
                    if bar.is_final && need(bar.interval).is_some() {
                        symbols.insert(bar.symbol.clone());
                        *held.entry((bar.symbol.clone(), bar.interval)).or_default() += 1;
                        bars.push(bar);
                    }
                }
                // Enough when every symbol seen has every interval the rules read, each
                // as long as they need.
                !symbols.is_empty()
                    && symbols.iter().all(|s| {
                        intervals
                            .iter()
                            .all(|(i, want)| held.get(&(s.clone(), *i)).is_some_and(|n| n >= want))
                    })
            })?;
            let wanted = |b: &&Bar| b.is_final && need(b.interval).is_some();
            bars.extend(unpublished.bars.iter().filter(wanted).cloned());
        }
        let mut metrics: Vec<DailyMetric> = Vec::new();
        if daily > 0 {
            let mut held: std::collections::HashMap<tickflow_model::Symbol, usize> =
                std::collections::HashMap::new();
            lake.read_back(Table::DailyMetrics, published, days(daily, DAY), |rows| {
                for m in rows.daily_metrics {
                    *held.entry(m.symbol.clone()).or_default() += 1;
                    metrics.push(m);
                }
                // One more than the window: the oldest row's % change needs the close
                // before it.
                !held.is_empty() && held.values().all(|n| *n > daily)
            })?;
            metrics.extend_from_slice(&unpublished.daily_metrics);
        }
        Ok((bars, metrics))
    };
    let started = Instant::now();
    match read() {
        Ok((bars, metrics)) => {
            processor.warm(&bars, &metrics);
            tracing::info!(
                bars = bars.len(),
                daily_metrics = metrics.len(),
                secs = started.elapsed().as_secs_f64(),
                "indicator windows warmed up from stored history"
            );
        }
        Err(e) => tracing::warn!(
            error = %e,
            "could not read stored bars to warm up indicators; rules that read them stay quiet until their windows fill from live bars"
        ),
    }
}

fn run_processor(
    inner: &Inner,
    mut processor: Processor,
    mut next: u64,
    flush_seq: u64,
    tx: SyncSender<FlushJob>,
) -> Result<()> {
    let mut decoder = Decoder::new();
    let mut records = tickflow_log::Records::default();
    let mut out = Output::default();
    let mut recv_times: Vec<i64> = Vec::new();
    let mut alert_recv_times: Vec<i64> = Vec::new();
    // How late each event of the batch arrived (`ts_recv - ts_event`), for the feed histogram.
    let mut feed_delays: Vec<u64> = Vec::new();
    let mut alert_log = AlertLog::new();
    let mut pending_rows = 0usize;
    let mut flushed_offset = next;
    let mut last_flush = Instant::now();
    let mut last_open_bars = Instant::now();
    let flush_every = inner.plan.lake.flush_interval;
    let flush_rows = inner.plan.lake.flush_rows;
    // The flush the rows being processed go into is the one after it.
    let flush_seq = std::cell::Cell::new(flush_seq);
    let flush = |processor: &Processor, next: u64, recv_times: &mut Vec<i64>| -> Result<()> {
        flush_seq.set(flush_seq.get() + 1);
        let flush_seq = flush_seq.get();
        let (rows, next_recv_times) = {
            let mut live = inner.live();
            // One flush at a time past this point: the flusher's buffer comes back as the
            // next one, so two buffers (about 150 bytes a row) are all there are unless
            // sinks or notifiers still hold a flush. A processor ahead of the flusher waits
            // here; the log holds what comes meanwhile.
            while live.in_flight >= live::MAX_IN_FLIGHT
                && !inner.flusher_gone.load(Ordering::Acquire)
            {
                live = inner
                    .flush_done
                    .wait_timeout(live, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            live.in_flight += 1;
            let (next_pending, next_recv_times) = live.spare.pop().unwrap_or_else(|| {
                let rows = Rows::with_capacity_of(&live.pending);
                (rows, Vec::with_capacity(recv_times.len()))
            });
            let rows = Arc::new(std::mem::replace(&mut live.pending, next_pending));
            live.flushing.push((flush_seq, Arc::clone(&rows)));
            live.open_bars = processor.open_bars();
            (rows, next_recv_times)
        };
        let checkpoint =
            checkpoint::stage(&inner.plan.data_dir, next, flush_seq, processor.state())?;
        let job = FlushJob {
            seq: flush_seq,
            rows,
            next_offset: next,
            checkpoint,
            recv_times: std::mem::replace(recv_times, next_recv_times),
        };
        tx.send(job)
            .map_err(|_| Error::Thread("flusher", "stopped".into()))
    };
    let mut drain_deadline: Option<Instant> = None;
    let mut followed_up = false;
    loop {
        if inner.stop_processing.is_triggered() {
            // Drain what is in the log, but not forever: what is left stays durable in the log
            // and is processed after the next start.
            let deadline = *drain_deadline.get_or_insert_with(|| {
                let limit = if inner.hand_over.load(Ordering::Acquire) {
                    Duration::ZERO
                } else {
                    DRAIN_LIMIT
                };
                Instant::now() + limit
            });
            if Instant::now() >= deadline {
                if inner.hand_over.load(Ordering::Acquire) {
                    tracing::info!(
                        left = inner.log.lag(next),
                        "handing the partition over; its new owner processes the rest"
                    );
                } else {
                    // A broker log may also hold what never arrives here (its server is down).
                    tracing::warn!(
                        left = inner.log.lag(next),
                        "stopping before the log is drained; the rest is processed on the next start"
                    );
                }
                if next > flushed_offset {
                    flush(&processor, next, &mut recv_times)?;
                }
                return Ok(());
            }
        }
        if inner.has_new_rules.swap(false, Ordering::AcqRel)
            && let Some((thresholds, spikes, exprs)) = inner
                .new_rules
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
        {
            // What was processed under the old rules is committed first, so a replay after a
            // crash never evaluates it under the new ones: an alert sent early is raised
            // again as it was.
            if next > flushed_offset {
                flush(&processor, next, &mut recv_times)?;
                flushed_offset = next;
                pending_rows = 0;
                last_flush = Instant::now();
            }
            wait_until_published(inner, flush_seq.get());
            let before = processor.rules().clone();
            processor.set_rules(thresholds, spikes, exprs);
            // New or longer indicator windows start from what is stored and what is on its
            // way there; rules whose windows are held already need nothing read.
            if processor.rules().need_more_history_than(&before) {
                let (published, unpublished) = {
                    let live = inner.live();
                    let mut rows = Rows::default();
                    for (_, flushing) in &live.flushing {
                        rows.bars.extend_from_slice(&flushing.bars);
                        rows.daily_metrics
                            .extend_from_slice(&flushing.daily_metrics);
                    }
                    rows.bars.extend_from_slice(&live.pending.bars);
                    rows.daily_metrics
                        .extend_from_slice(&live.pending.daily_metrics);
                    (live.published_seq, rows)
                };
                warm_up(&inner.lake, published, &unpublished, &mut processor);
            }
        }
        inner.log.read(next, READ_BATCH, &mut records)?;
        if records.is_empty() {
            let draining = inner.stop_processing.is_triggered();
            let due = last_flush.elapsed() >= flush_every || draining;
            if next > flushed_offset && due {
                flush(&processor, next, &mut recv_times)?;
                flushed_offset = next;
                pending_rows = 0;
                last_flush = Instant::now();
            }
            if draining && inner.log.lag(next) == 0 {
                // Notifiers record their deliveries of the last flush in the log: one more
                // round takes those records in, so a clean stop leaves none of them for the
                // next start.
                if !followed_up {
                    followed_up = true;
                    let deadline = drain_deadline.unwrap_or_else(Instant::now);
                    if notifiers_reached(inner, flush_seq.get(), deadline)
                        && inner.log.lag(next) > 0
                    {
                        continue;
                    }
                }
                return Ok(());
            }
            alert_log.summarize_if_due();
            inner.log.wait_for(next, Duration::from_millis(20));
            continue;
        }
        let now = UnixNanos::now();
        let n = records.len() as u64;
        let batch_start = recv_times.len();
        for (offset, bytes) in records.iter() {
            if let Some(r) = tickflow_core::codec::rejected(bytes) {
                Processor::reject_input(
                    offset, r.reason, r.source, r.error, r.payload, now, &mut out,
                );
                next = offset + 1;
                continue;
            }
            if let Some(d) = tickflow_core::codec::delivery(bytes) {
                out.rows.alert_deliveries.push(d);
                next = offset + 1;
                continue;
            }
            if let Some(a) = tickflow_core::codec::alert(bytes) {
                out.rows.alerts.push(a);
                next = offset + 1;
                continue;
            }
            match decoder.decode(bytes) {
                Ok(event) => {
                    let ts_recv = event.ts_recv().0;
                    recv_times.push(ts_recv);
                    feed_delays.push(ts_recv.saturating_sub(event.ts_event().0).max(0) as u64);
                    let alerts_before = out.rows.alerts.len();
                    processor.process(Some(offset), event, now, &mut out);
                    if out.rows.alerts.len() > alerts_before {
                        alert_recv_times.push(ts_recv);
                    }
                }
                Err(e) => Processor::reject_malformed(offset, bytes, &e.to_string(), now, &mut out),
            }
            next = offset + 1;
        }
        if !out.rows.alerts.is_empty() {
            for lane in inner.early.get().into_iter().flatten() {
                lane.offer(flush_seq.get() + 1, &out.rows.alerts, now.0);
            }
        }
        let m = &inner.metrics;
        m.processed.fetch_add(n, Ordering::Relaxed);
        count_output(m, &out, &mut alert_log, now);
        m.alert_latency
            .observe_since(UnixNanos::now().0, alert_recv_times.drain(..));
        m.feed_latency.observe_all(feed_delays.drain(..));
        inner.processed_offset.store(next, Ordering::Relaxed);
        m.log_lag.store(inner.log.lag(next), Ordering::Relaxed);
        pending_rows += out.rows.len();
        out.duplicates = 0;
        {
            let mut live = inner.live();
            if live.watched() {
                live.keep_recent(&out.rows);
            }
            // Moves the rows and keeps `out`'s buffers for the next batch.
            live.pending.append(&mut out.rows);
            m.queryable_latency.observe_since(
                UnixNanos::now().0,
                recv_times[batch_start..].iter().copied(),
            );
            if live.open_bars_read && last_open_bars.elapsed() >= Duration::from_millis(250) {
                live.open_bars = processor.open_bars();
                live.open_bars_read = false;
                last_open_bars = Instant::now();
            }
        }
        if pending_rows >= flush_rows || last_flush.elapsed() >= flush_every {
            flush(&processor, next, &mut recv_times)?;
            flushed_offset = next;
            pending_rows = 0;
            last_flush = Instant::now();
        }
    }
}

/// Waits until the notifiers have handled flush `seq` (those that are retrying, or catching
/// up from further back, are not waited for), at most until `deadline`; whether they did.
fn notifiers_reached(inner: &Inner, seq: u64, deadline: Instant) -> bool {
    let Some(notifiers) = inner.notifiers.get().filter(|n| !n.is_empty()) else {
        return false;
    };
    wait_until_published(inner, seq);
    while !notifiers.reached(seq) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Waits for the flusher to commit flush `seq`, or to fail.
fn wait_until_published(inner: &Inner, seq: u64) {
    while inner.live().published_seq < seq
        && inner
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How long a `compaction` job waits for the flusher to run its round.
const COMPACT_JOB_LIMIT: Duration = Duration::from_secs(600);

fn run_flusher(inner: &Inner, rx: Receiver<FlushJob>) -> Result<()> {
    let data_dir = &inner.plan.data_dir;
    let m = &inner.metrics;
    let mut last_retention = Instant::now();
    let mut last_compaction = Instant::now();
    // The last committed flush; compaction merges nothing after it.
    let mut committed = inner.live().published_seq;
    loop {
        // Compaction runs here, between flushes, so it never races a write to the lake; an
        // idle pipeline still compacts on schedule.
        // A scheduled `compaction` job's request is looked at least every second.
        let wait = inner
            .plan
            .lake
            .compact_every
            .map_or(Duration::from_secs(1), |every| {
                every.saturating_sub(last_compaction.elapsed())
            })
            .min(Duration::from_secs(1));
        let job = match rx.recv_timeout(wait) {
            Ok(job) => job,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                compact_if_wanted(inner, committed, &mut last_compaction);
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut attempt = 0u32;
        let report = loop {
            match inner.lake.write(&job.rows, job.seq) {
                Ok(r) => {
                    if attempt > 0 {
                        tracing::info!(
                            sink = "lake",
                            attempts = attempt + 1,
                            "lake write succeeded after failures"
                        );
                        *inner.lake_failing.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    break r;
                }
                Err(e) => {
                    m.sink_errors.add("lake", 1);
                    attempt += 1;
                    {
                        let mut failing =
                            inner.lake_failing.lock().unwrap_or_else(|e| e.into_inner());
                        let since = failing.as_ref().map_or_else(Instant::now, |f| f.since);
                        *failing = Some(LakeFailing {
                            since,
                            attempts: attempt,
                            error: e.to_string(),
                        });
                    }
                    tracing::warn!(sink = "lake", error = %e, attempt, "lake write failed; retrying");
                    if inner.stop_processing.is_triggered() && attempt >= 5 {
                        return Err(e.into());
                    }
                    std::thread::sleep(Duration::from_millis(100 * u64::from(attempt.min(50))));
                }
            }
        };
        job.checkpoint.commit(data_dir)?;
        inner.log.commit(job.next_offset)?;
        {
            let mut live = inner.live();
            live.published_seq = job.seq;
            live.committed_offset = job.next_offset;
            live.flushing.retain(|(s, _)| *s != job.seq);
        }
        inner.sinks.publish(job.seq, &job.rows);
        if let Some(n) = inner.notifiers.get().filter(|n| !n.is_empty()) {
            // Notifiers read alerts alone: they keep those, and the flush's ticks go back
            // to the processor.
            let alerts = Rows {
                alerts: job.rows.alerts.clone(),
                ..Rows::default()
            };
            n.publish(job.seq, &Arc::new(alerts));
        }
        m.latency
            .observe_since(UnixNanos::now().0, job.recv_times.iter().copied());
        // Readers copy rows out under the lock, so the flush's buffer is ours alone now,
        // unless sinks keep it for a while.
        let recycled = Arc::try_unwrap(job.rows).ok().map(|mut rows| {
            let mut recv_times = job.recv_times;
            rows.clear();
            recv_times.clear();
            (rows, recv_times)
        });
        {
            let mut live = inner.live();
            if let Some(spare) = recycled
                && live.spare.len() < live::MAX_SPARE
            {
                live.spare.push(spare);
            }
            live.in_flight = live.in_flight.saturating_sub(1);
        }
        inner.flush_done.notify_all();
        for (table, n) in &report.rows {
            m.rows_written.add(table, *n as u64);
        }
        m.lake_files
            .fetch_add(report.files as u64, Ordering::Relaxed);
        m.lake_flushes.fetch_add(1, Ordering::Relaxed);
        if last_retention.elapsed() >= Duration::from_secs(60) {
            inner.log.enforce_retention()?;
            last_retention = Instant::now();
        }
        committed = job.seq;
        compact_if_wanted(inner, committed, &mut last_compaction);
    }
    Ok(())
}

/// A compaction round when `[lake] compact_interval_secs` has passed since the last one or a
/// `compaction` job asked for one; the round serves every request made before it began. A
/// stopping pipeline does not start a merge: shutdown should not wait for one.
fn compact_if_wanted(inner: &Inner, committed: u64, last_compaction: &mut Instant) {
    let due = inner
        .plan
        .lake
        .compact_every
        .is_some_and(|every| last_compaction.elapsed() >= every);
    let asked = inner.compact_requested.load(Ordering::Acquire);
    let waiting = asked > inner.compact_served.load(Ordering::Acquire);
    if (due || waiting) && !inner.stop_processing.is_triggered() {
        compact(inner, committed);
        inner.compact_served.fetch_max(asked, Ordering::AcqRel);
        *last_compaction = Instant::now();
    }
}

/// Merges small lake files of committed flushes that every sink has written. A failure is
/// logged and counted, and the files stay as they were: compaction only ever makes queries
/// faster.
/// The round is counted once it has ended, so whoever sees the count also sees its files.
fn compact(inner: &Inner, committed_seq: u64) {
    compact_round(inner, committed_seq);
    inner
        .metrics
        .lake_compactions
        .fetch_add(1, Ordering::Relaxed);
}

fn compact_round(inner: &Inner, committed_seq: u64) {
    let mut committed_seq = inner.sinks.compaction_limit(committed_seq);
    if let Some(n) = inner.notifiers.get() {
        committed_seq = n.compaction_limit(committed_seq);
    }
    if let Some(retired) = inner.retired.values().min() {
        committed_seq = committed_seq.min(*retired);
    }
    if committed_seq == 0 {
        return;
    }
    let started = Instant::now();
    let today = UnixNanos::now().date();
    match inner
        .lake
        .compact(committed_seq, today, inner.plan.lake.compact)
    {
        Ok(r) if r.outputs > 0 => {
            inner
                .metrics
                .lake_compacted_files
                .fetch_add(r.inputs as u64, Ordering::Relaxed);
            tracing::info!(
                merged = r.inputs,
                into = r.outputs,
                rows = r.rows,
                secs = started.elapsed().as_secs_f64(),
                "lake compaction"
            );
        }
        Ok(_) => {}
        Err(e) => {
            inner.metrics.sink_errors.add("compaction", 1);
            tracing::warn!(error = %e, "lake compaction failed; files left as they were");
        }
    }
    if let Some(days) = inner.plan.lake.retention_days {
        // Ticks only: bars, daily metrics and alerts are small, and reports and indicator
        // warm-up read their history.
        let before = tickflow_model::Date(today.0 - days as i32);
        let ticks = [Table::Trades, Table::Quotes];
        if let Err(e) = inner.lake.expire(&ticks, before, committed_seq) {
            inner.metrics.sink_errors.add("retention", 1);
            tracing::warn!(error = %e, "lake retention failed; it is tried again next round");
        }
    }
}
