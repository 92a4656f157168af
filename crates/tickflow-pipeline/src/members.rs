//! Several processes on one partitioned broker log (`[log] partitions = N`, NATS or Kafka).
//!
//! - **Routing.** Every process appends: a record goes to the partition its symbol hashes to
//!   ([`partition_of`]), so each symbol's order holds. Records without a symbol (rejected
//!   input) go by their source.
//! - **A partition is a pipeline.** Partition `p` is processed, checkpointed and followed by
//!   the sinks as a pipeline of its own ([`Single`]) under `<data_dir>/partitions/<p>/`, and
//!   written to the shared lake under `<table>/partition=NN/`. Sink ids get the suffix
//!   `-p<p>`, so each partition keeps its own position in the sink's store.
//! - **Ownership by lock.** A process owns a partition while it holds the lock on
//!   `partitions/<p>/claim`. The kernel releases it when the process dies, however it dies;
//!   another member then takes the partition, and its pipeline recovers from that
//!   partition's checkpoint (bars, dedupe, alert cooldowns) exactly as after a crash.
//! - **Fair shares.** Members register under `<data_dir>/members/` (a locked folder each)
//!   and each takes ceil(N / members) partitions. One holding more hands partitions back
//!   with a clean stop (drained, flushed) as others join.
//!
//! The data directory must be one every member reaches: one machine, or a shared file
//! system whose locks work across machines.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tickflow_brokers::kafka_log::KafkaLog;
use tickflow_brokers::nats_log::NatsLog;
use tickflow_core::codec::Batch;
use tickflow_core::metrics::Metrics;
use tickflow_core::source::Append;
use tickflow_lake::{Lake, Table};
use tickflow_model::UnixNanos;
use tokio::sync::watch;

use crate::config::{LogKind, SinkConfig};
use crate::live::QueryInputs;
use crate::runtime::Single;
use crate::sources::Sources;
use crate::{Error, Plan, Result};

/// How often a member looks at who is alive and takes or hands back partitions.
const ROUND: Duration = Duration::from_millis(250);
/// A member's folder older than this whose lock is free is removed.
const DEAD_MEMBER_AGE: Duration = Duration::from_secs(60);
/// After a partition's pipeline failed, how long before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The partition of `key` among `partitions`: FNV-1a, fixed for good, so every process
/// and every version routes a symbol to the same partition.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// The folder of partition `p`'s checkpoint, sinks' positions and log lock.
pub fn partition_dir(data_dir: &Path, p: u32) -> PathBuf {
    data_dir.join("partitions").join(p.to_string())
}

/// The plan partition `p`'s pipeline runs: the process's plan without sources or jobs, on
/// the partition's log, writing the lake of the data directory above.
fn partition_plan(plan: &Plan, p: u32) -> Plan {
    let mut unit = plan.clone();
    unit.data_dir = partition_dir(&plan.data_dir, p);
    unit.log = plan.log.for_partition(p);
    unit.sources.clear();
    unit.jobs.clear();
    if unit.lake.object.is_none() {
        unit.lake.dir = Some(
            plan.lake
                .dir
                .clone()
                .unwrap_or_else(|| plan.data_dir.join("lake")),
        );
    }
    for sink in &mut unit.sinks {
        sink.id = format!("{}-p{p}", sink.id);
        let own_dir = unit.data_dir.join("sinks").join(&sink.id);
        match &mut sink.config {
            SinkConfig::Csv(c) => c.dir = c.dir.join(tickflow_lake::partition_folder(p)),
            SinkConfig::Nats(n) => n.dir = own_dir,
            SinkConfig::Kafka(k) => k.dir = own_dir,
            SinkConfig::Postgres(_) | SinkConfig::Dynamodb(_) | SinkConfig::S3Json(_) => {}
        }
    }
    unit
}

/// One partition's log, for appending only.
enum Writer {
    Nats(Box<NatsLog>),
    Kafka(Box<KafkaLog>),
}

impl Writer {
    fn append(&self, records: &[&[u8]]) -> Result<Range<u64>> {
        match self {
            Self::Nats(log) => log
                .append_batch(records)
                .map_err(|e| crate::log_store::append_error(e.is_too_large(), &e)),
            Self::Kafka(log) => log
                .append_batch(records)
                .map_err(|e| crate::log_store::append_error(e.is_too_large(), &e)),
        }
    }

    fn is_empty(&self) -> bool {
        self.messages_behind(0) == 0
    }

    /// Messages this writer knows of from the one holding `next` on.
    fn messages_behind(&self, next: u64) -> u64 {
        match self {
            Self::Nats(log) => log.messages_behind(next),
            Self::Kafka(log) => log.messages_behind(next),
        }
    }
}

/// Appends to the partitioned log: each record to its symbol's partition.
struct Router {
    writers: Vec<Writer>,
    metrics: Arc<Metrics>,
    stopping: watch::Receiver<bool>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("partitions", &self.writers.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    fn open(plan: &Plan, metrics: Arc<Metrics>, stopping: watch::Receiver<bool>) -> Result<Self> {
        let writers = (0..plan.log.partitions)
            .map(|p| {
                let log = plan.log.for_partition(p);
                Ok(match &plan.log.kind {
                    LogKind::Nats(n) => {
                        Writer::Nats(Box::new(crate::log_store::open_nats(&log, n, 0)?))
                    }
                    LogKind::Kafka(k) => {
                        Writer::Kafka(Box::new(crate::log_store::open_kafka(&log, k, 0)?))
                    }
                    LogKind::Embedded => {
                        return Err(Error::BrokerLog(
                            "the embedded log has one partition".into(),
                        ));
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            writers,
            metrics,
            stopping,
        })
    }

    /// Appends `batch`; returns the offsets of its first partition's records (offsets of
    /// different partitions do not compare).
    ///
    /// # Errors
    /// A partition's append failed: none of the batch counts as acknowledged (what other
    /// partitions stored is deduplicated when the producer sends it again).
    fn append_batch(&self, source: &str, batch: &Batch) -> Result<Range<u64>> {
        if *self.stopping.borrow() {
            return Err(Error::ShuttingDown);
        }
        let n = u32::try_from(self.writers.len()).unwrap_or(1);
        let mut parts: Vec<Vec<&[u8]>> = vec![Vec::new(); self.writers.len()];
        for record in batch.records() {
            let key = tickflow_core::codec::symbol_of(record).unwrap_or(source.as_bytes());
            parts[partition_of(key, n) as usize].push(record);
        }
        // Each partition's outage is its own: a healthy partition does not hide a failing
        // one. A partition past a failing one is not tried, so its outage (if any) stays.
        let mut first = None;
        for (p, (writer, records)) in self.writers.iter().zip(&parts).enumerate() {
            if records.is_empty() {
                continue;
            }
            let p = u32::try_from(p).unwrap_or(u32::MAX);
            let offsets = crate::log_store::noted(&self.metrics, p, writer.append(records))?;
            first.get_or_insert(offsets);
        }
        let m = &self.metrics;
        m.log_latency
            .observe_since(UnixNanos::now().0, batch.recv_times().iter().copied());
        m.ingested.add(source, batch.len() as u64);
        m.log_appended
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(first.unwrap_or(0..0))
    }
}

impl Append for Router {
    fn append(
        &self,
        source: &str,
        batch: &Batch,
    ) -> std::result::Result<Range<u64>, tickflow_core::source::SourceError> {
        self.append_batch(source, batch)
            .map_err(crate::Error::into_source_error)
    }
}

/// A partition this process runs, and the lock that makes it this process's.
struct Owned {
    pipeline: Single,
    _claim: tickflow_log::DirLock,
}

/// What the members' loop and the API share.
struct Shared {
    plan: Plan,
    metrics: Arc<Metrics>,
    owned: Mutex<BTreeMap<u32, Owned>>,
    stop: AtomicBool,
    members: Mutex<usize>,
    /// Why a partition's pipeline last failed (it is then started again).
    last_failure: Mutex<Option<String>>,
}

impl Shared {
    fn owned(&self) -> MutexGuard<'_, BTreeMap<u32, Owned>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A process's share of a partitioned log: see the module docs.
pub(crate) struct Members {
    shared: Arc<Shared>,
    router: Arc<Router>,
    sources: Sources,
    stop_sources: watch::Sender<bool>,
    /// The whole lake, for queries over partitions other members own.
    lake: Lake,
    jobs: crate::jobs::Jobs,
    looper: Option<JoinHandle<()>>,
    started: Instant,
    _member: tickflow_log::DirLock,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members")
            .field("data_dir", &self.shared.plan.data_dir)
            .finish_non_exhaustive()
    }
}

impl Members {
    /// Registers this process, starts the sources against the partitioned log, and starts
    /// taking partitions.
    ///
    /// # Errors
    /// The data directory or the log cannot be opened.
    pub(crate) fn start(plan: Plan) -> Result<Self> {
        let data_dir = plan.data_dir.clone();
        let io = |context: String| move |source| Error::Io { context, source };
        std::fs::create_dir_all(data_dir.join("members"))
            .map_err(io(format!("creating {}", data_dir.display())))?;
        check_partition_count(&data_dir, plan.log.partitions)?;
        let name = format!("{}-{}", std::process::id(), UnixNanos::now().0);
        // Locked under a name the others skip, then shown: a member counting at that moment
        // never takes the lock from a newcomer.
        let hidden = data_dir.join("members").join(format!(".{name}"));
        let member = tickflow_log::lock_dir(&hidden)?;
        let me = data_dir.join("members").join(&name);
        std::fs::rename(&hidden, &me).map_err(io(format!("registering in {}", me.display())))?;
        let lake = crate::lake_location::open_for_pipeline(
            &data_dir,
            plan.lake.dir.as_deref(),
            plan.lake.object.as_ref(),
            false,
        )?;
        let metrics = Arc::new(Metrics::default());
        let jobs = crate::jobs::Jobs::open(&data_dir, Vec::new(), Arc::clone(&metrics)).map_err(
            |message| Error::Io {
                context: "reading the jobs' record".into(),
                source: std::io::Error::other(message),
            },
        )?;
        let stop_sources = watch::Sender::new(false);
        let router = Arc::new(Router::open(
            &plan,
            Arc::clone(&metrics),
            stop_sources.subscribe(),
        )?);
        let shared = Arc::new(Shared {
            plan,
            metrics: Arc::clone(&metrics),
            owned: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
            members: Mutex::new(1),
            last_failure: Mutex::new(None),
        });
        let log: Arc<dyn Append> = Arc::clone(&router) as _;
        let log_is_empty = router.writers.iter().all(Writer::is_empty);
        let sources = Sources::start(
            &shared.plan.sources,
            &data_dir,
            log_is_empty,
            &log,
            &metrics,
            &stop_sources,
        )
        .map_err(io("starting the sources".into()))?;
        let looper = {
            let shared = Arc::clone(&shared);
            let me = me.clone();
            std::thread::Builder::new()
                .name("tickflow-members".into())
                .spawn(move || run_members(&shared, &me))
                .map_err(io("spawning the members' thread".into()))?
        };
        Ok(Self {
            shared,
            router,
            sources,
            stop_sources,
            lake,
            jobs,
            looper: Some(looper),
            started: Instant::now(),
            _member: member,
        })
    }

    pub(crate) fn plan(&self) -> &Plan {
        &self.shared.plan
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    pub(crate) fn lake(&self) -> &Lake {
        &self.lake
    }

    pub(crate) fn jobs(&self) -> &crate::jobs::Jobs {
        &self.jobs
    }

    pub(crate) fn ingest_batch(&self, source: &str, batch: &Batch) -> Result<Range<u64>> {
        let offsets = self.router.append_batch(source, batch)?;
        self.shared
            .metrics
            .source_events
            .add(source, batch.len() as u64);
        Ok(offsets)
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stop_sources.borrow()
    }

    /// Partitions this process owns.
    pub(crate) fn owned(&self) -> Vec<u32> {
        self.shared.owned().keys().copied().collect()
    }

    /// Query inputs over every partition: the owned ones' files and rows in memory, and
    /// the files other members' partitions published (by their checkpoints).
    pub(crate) fn query_inputs(&self) -> Result<QueryInputs> {
        let owned = self.shared.owned();
        let mut inputs = QueryInputs::default();
        let mut by_table: BTreeMap<Table, Vec<PathBuf>> = BTreeMap::new();
        for o in owned.values() {
            let own = o.pipeline.query_inputs()?;
            for (table, files) in own.files {
                by_table.entry(table).or_default().extend(files);
            }
            inputs.live.extend(own.live);
            inputs.lake_generation += own.lake_generation;
        }
        for table in Table::ALL {
            by_table
                .entry(table)
                .or_default()
                .extend(self.others_files(table, &owned)?);
        }
        inputs.files = by_table.into_iter().collect();
        Ok(inputs)
    }

    /// [`Members::query_inputs`] of one table.
    pub(crate) fn table_inputs(
        &self,
        table: Table,
    ) -> Result<(Vec<PathBuf>, Vec<tickflow_lake::RecordBatch>)> {
        let owned = self.shared.owned();
        let (mut files, mut batches) = (Vec::new(), Vec::new());
        for o in owned.values() {
            let (f, b) = o.pipeline.table_inputs(table)?;
            files.extend(f);
            batches.extend(b);
        }
        files.extend(self.others_files(table, &owned)?);
        Ok((files, batches))
    }

    /// Published files of `table` in the partitions not in `owned`.
    fn others_files(&self, table: Table, owned: &BTreeMap<u32, Owned>) -> Result<Vec<PathBuf>> {
        let data_dir = &self.shared.plan.data_dir;
        let published: BTreeMap<u32, u64> = (0..self.shared.plan.log.partitions)
            .filter(|p| !owned.contains_key(p))
            .filter_map(|p| {
                crate::checkpoint::published_flush(&partition_dir(data_dir, p))
                    .transpose()
                    .map(|r| r.map(|seq| (p, seq)))
            })
            .collect::<Result<_>>()?;
        crate::live::partitions_files(&self.lake, table, &published)
    }

    pub(crate) fn lake_generation(&self) -> u64 {
        self.shared
            .owned()
            .values()
            .map(|o| o.pipeline.lake_generation())
            .sum()
    }

    pub(crate) fn failure(&self) -> Option<String> {
        None
    }

    /// [`crate::Pipeline::live_view`] of the owned partitions together.
    pub(crate) fn live_view(&self) -> crate::live::LiveView {
        let mut view = crate::live::LiveView::default();
        for o in self.shared.owned().values() {
            view.extend(o.pipeline.live_view());
        }
        view
    }

    pub(crate) fn status(&self) -> crate::runtime::Status {
        let owned = self.shared.owned();
        let mut status = crate::runtime::Status::empty();
        for (p, o) in owned.iter() {
            let mut s = o.pipeline.status();
            // What this process appended may not have reached the partition's reader yet.
            if let Some(writer) = self.router.writers.get(*p as usize) {
                s.log_lag = s.log_lag.max(writer.messages_behind(s.processed_offset));
            }
            status.add_partition(*p, s);
        }
        status.uptime_secs = self.started.elapsed().as_secs_f64();
        status.sources = self.sources.status();
        let m = &self.shared.metrics;
        status.ingested = m.ingested.snapshot().into_iter().collect();
        status.log_retrying = crate::runtime::LogRetrying::of(m);
        status.partitions = Some(crate::runtime::PartitionsStatus {
            partitions: self.shared.plan.log.partitions,
            owned: owned.keys().copied().collect(),
            members: *self
                .shared
                .members
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            last_failure: self
                .shared
                .last_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        });
        status
    }

    /// Stops the sources, then each owned partition cleanly (drained and flushed), and
    /// releases them.
    ///
    /// # Errors
    /// The first failure a partition's pipeline reported.
    pub(crate) fn shutdown(mut self) -> Result<()> {
        self.stop_sources.send_replace(true);
        self.sources.join();
        self.shared.stop.store(true, Ordering::Release);
        if let Some(looper) = self.looper.take() {
            let _ = looper.join();
        }
        let owned = std::mem::take(&mut *self.shared.owned());
        // All at once: each drains for up to its limit.
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let stopping: Vec<_> = owned
                .into_iter()
                .map(|(p, o)| {
                    scope.spawn(move || {
                        o.pipeline.shutdown().inspect_err(|e| {
                            tracing::error!(partition = p, error = %e, "partition stopped with an error");
                        })
                    })
                })
                .collect();
            stopping
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Thread("partition", "panicked".into())))
                })
                .collect()
        });
        results.into_iter().collect()
    }
}

/// Refuses a partition count other than the one the data directory's log was split by:
/// symbols would move to other partitions, away from their processing state.
fn check_partition_count(data_dir: &Path, partitions: u32) -> Result<()> {
    let path = data_dir.join("partitions").join("count.txt");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim() == partitions.to_string() => Ok(()),
        Ok(text) => Err(Error::Checkpoint {
            path,
            message: format!(
                "this data directory's log is split into {} partitions and [log] partitions says {partitions}: each symbol's state is in its partition. Set it back, or start a new data directory and log",
                text.trim()
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::checkpoint::write_durably(&path, format!("{partitions}\n").as_bytes()).map_err(
                |source| Error::Io {
                    context: format!("writing {}", path.display()),
                    source,
                },
            )
        }
        Err(source) => Err(Error::Io {
            context: format!("reading {}", path.display()),
            source,
        }),
    }
}

/// Members alive now, this one included; folders of dead ones long gone are removed.
fn count_members(data_dir: &Path, me: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(data_dir.join("members")) else {
        return 1;
    };
    let mut alive = 1;
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if path == me || hidden || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        match tickflow_log::lock_dir(&path) {
            Err(tickflow_log::Error::Locked { .. }) => alive += 1,
            Err(_) => {}
            Ok(lock) => {
                drop(lock);
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > DEAD_MEMBER_AGE);
                if old {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
    }
    alive
}

/// The members' loop: takes free partitions up to this process's share, hands back what is
/// over it, and restarts partitions whose pipeline failed.
fn run_members(shared: &Shared, me: &Path) {
    let plan = &shared.plan;
    let n = plan.log.partitions;
    // Members starting together try different partitions first.
    let first = std::process::id() % n;
    let mut failed_at: BTreeMap<u32, Instant> = BTreeMap::new();
    // Partitions stopped whose sinks or notifiers are still writing: their claim is kept
    // until those threads end, so no new owner writes beside them.
    let mut lingering: Vec<(u32, Owned)> = Vec::new();
    while !shared.stop.load(Ordering::Acquire) {
        lingering.retain(|(p, o)| {
            let stuck = !o.pipeline.followers_stopped();
            if !stuck {
                tracing::info!(partition = p, "the partition's sinks stopped; released");
            }
            stuck
        });
        let members = count_members(&plan.data_dir, me);
        *shared.members.lock().unwrap_or_else(|e| e.into_inner()) = members;
        let share = n.div_ceil(u32::try_from(members).unwrap_or(u32::MAX).max(1)) as usize;
        // A failed partition is stopped and released, and tried again later.
        let failed: Vec<u32> = shared
            .owned()
            .iter()
            .filter(|(_, o)| o.pipeline.failure().is_some())
            .map(|(p, _)| *p)
            .collect();
        for p in failed {
            // Taken out first: the map stays free for status while the partition stops.
            let removed = shared.owned().remove(&p);
            if let Some(mut o) = removed {
                let why = o.pipeline.failure().unwrap_or_default();
                tracing::error!(partition = p, error = %why, "partition failed; released, and tried again");
                *shared
                    .last_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(format!("partition {p}: {why}"));
                let _ = o.pipeline.stop();
                failed_at.insert(p, Instant::now());
                lingering.push((p, o));
            }
        }
        let held = shared.owned().len();
        if held > share {
            // One at a time: the others see it free on their next round.
            let last = shared.owned().keys().next_back().copied();
            let removed = last.and_then(|p| shared.owned().remove(&p).map(|o| (p, o)));
            if let Some((p, mut o)) = removed {
                tracing::info!(partition = p, members, share, "handing a partition back");
                if let Err(e) = o.pipeline.hand_over() {
                    tracing::error!(partition = p, error = %e, "partition stopped with an error");
                }
                lingering.push((p, o));
            }
        } else if held < share {
            for i in 0..n {
                let p = (first + i) % n;
                if shared.owned().len() >= share || shared.stop.load(Ordering::Acquire) {
                    break;
                }
                if shared.owned().contains_key(&p)
                    || lingering.iter().any(|(q, _)| *q == p)
                    || failed_at.get(&p).is_some_and(|t| t.elapsed() < RETRY_AFTER)
                {
                    continue;
                }
                let dir = partition_dir(&plan.data_dir, p);
                let Ok(claim) = tickflow_log::lock_dir(&dir.join("claim")) else {
                    continue;
                };
                match Single::start(partition_plan(plan, p), Arc::clone(&shared.metrics)) {
                    Ok(pipeline) => {
                        tracing::info!(partition = p, members, share, "took a partition");
                        shared.owned().insert(
                            p,
                            Owned {
                                pipeline,
                                _claim: claim,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::error!(partition = p, error = %e, "could not start a partition; tried again");
                        *shared
                            .last_failure
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) =
                            Some(format!("partition {p}: {e}"));
                        failed_at.insert(p, Instant::now());
                    }
                }
            }
        }
        std::thread::sleep(ROUND);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symbol_always_goes_to_the_same_partition() {
        // Fixed values: changing the hash would move symbols between partitions of logs
        // already written.
        let got: Vec<u32> = ["AAPL", "NVDA", "BTC-USD", "ETH-USD", "MSFT", "TSLA"]
            .iter()
            .map(|s| partition_of(s.as_bytes(), 4))
            .collect();
        assert_eq!(got, [3, 2, 1, 1, 3, 3]);
        assert_eq!(partition_of(b"AAPL", 1), 0);
        let spread = (0..1000)
            .map(|i| partition_of(format!("S{i}").as_bytes(), 4))
            .fold([0; 4], |mut n, p| {
                n[p as usize] += 1;
                n
            });
        assert!(spread.iter().all(|n| (200..300).contains(n)), "{spread:?}");
    }
}
