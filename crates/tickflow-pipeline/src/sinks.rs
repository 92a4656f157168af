//! Sinks behind the lake, each on its own position (docs/CONNECTORS.md).
//!
//! The flusher publishes every committed flush to a [`Feed`]. Each sink runs on a thread of
//! its own with a single-threaded runtime, so a sink that blocks (a CSV fsync on a slow disk)
//! holds up no other: it opens its store, learns its position, and writes the flushes past it
//! in order, one [`Flush`] at a time. Recent flushes are shared from memory
//! (up to `lake.sink_buffer_rows` rows over all of them); a sink further behind reads them
//! back from the lake's files, so a sink that is down for an hour costs disk reads when it
//! returns, never memory, and never stalls the lake. Compaction does not merge flushes past
//! the slowest sink's position, so those files stay readable one flush at a time.
//!
//! A failed open or write is counted, shown in the status and retried with capped
//! exponential backoff and jitter; the same flush is handed again, and sinks make that
//! harmless.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tickflow_core::metrics::Metrics;

use crate::config::Overflow;
use tickflow_core::retry::backoff;
use tickflow_core::sink::{Flush, Sink};
use tickflow_lake::{Lake, Rows};
use tokio::sync::watch;

/// A sink to run, built from its plan.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) id: String,
    pub(crate) kind: &'static str,
    pub(crate) sink: Box<dyn Sink>,
    /// The cap of the doubling delay between attempts.
    pub(crate) retry_max: Duration,
    /// Whether it may skip flushes when far behind; notifiers never do.
    pub(crate) overflow: Overflow,
}

/// How long shutdown waits for sinks to write what the last flush published; the rest is
/// written from the lake after the next start.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// What one sink is doing, for `/api/v1/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkStatus {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `starting`, `ok` (caught up), `behind` (writing flushes past its position),
    /// `retrying` (its last attempt failed, until one succeeds), `failed` (stopped; see
    /// `last_error`), `stopped`.
    pub state: &'static str,
    /// The last flush it has written in full; none until its store has been opened.
    pub position: Option<u64>,
    /// Flushes the lake has committed that it has not written.
    pub lag_flushes: u64,
    /// Rows in those flushes, counted over flushes this process published.
    pub lag_rows: u64,
    /// Where its next flush comes from: `memory` while it is recent, else `lake`.
    pub reading_from: &'static str,
    pub rows_written: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// Recent flushes shared with the sinks, and the last one the lake committed.
#[derive(Debug)]
pub(crate) struct Feed {
    state: Mutex<FeedState>,
    published: watch::Sender<u64>,
    max_rows: usize,
    /// `tickflow_sink_buffer_rows` for this feed's group.
    held: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct FeedState {
    /// Consecutive flushes, oldest first.
    retained: VecDeque<Flush>,
    retained_rows: usize,
    /// Rows per flush published by this process, for lag in rows.
    sizes: BTreeMap<u64, u64>,
}

impl Feed {
    fn lock(&self) -> MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last flush the lake committed.
    fn published(&self) -> u64 {
        *self.published.borrow()
    }

    /// A committed flush, kept while memory allows; `floor` is the slowest sink's position.
    fn publish(&self, flush: Flush, floor: u64) {
        let seq = flush.seq;
        {
            let mut s = self.lock();
            s.sizes.insert(flush.seq, flush.rows.len() as u64);
            s.retained_rows += flush.rows.len();
            s.retained.push_back(flush);
            s.release(floor, self.max_rows);
            self.held.store(s.retained_rows as u64, Ordering::Relaxed);
        }
        self.published.send_replace(seq);
    }

    /// Flush `seq` if it is still in memory.
    fn get(&self, seq: u64) -> Option<Flush> {
        let s = self.lock();
        let first = s.retained.front()?.seq;
        let flush = s
            .retained
            .get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
        (flush.seq == seq).then(|| flush.clone())
    }

    fn lag_rows(&self, position: u64) -> u64 {
        self.rows_between(position, u64::MAX)
    }

    /// Rows in flushes `from + 1 ..= to` that this process published.
    fn rows_between(&self, from: u64, to: u64) -> u64 {
        if from >= to {
            return 0;
        }
        self.lock()
            .sizes
            .range(from + 1..=to)
            .map(|(_, n)| *n)
            .sum()
    }
}

impl FeedState {
    /// Drops flushes every sink has written, then the oldest while over `max_rows`.
    fn release(&mut self, floor: u64, max_rows: usize) {
        while let Some(front) = self.retained.front() {
            let written = front.seq <= floor;
            let over = self.retained_rows > max_rows;
            if !written && !over {
                break;
            }
            self.retained_rows -= front.rows.len();
            self.retained.pop_front();
        }
        self.sizes = self.sizes.split_off(&(floor + 1));
    }
}

/// Where each sink began: the lake's flush when the sink was first configured, kept in
/// `<data_dir>/checkpoint/sinks.json` (`notifiers.json` for notifiers). A sink whose store has no position yet (new, or down
/// since it was added) starts there, so nothing committed since it was configured is skipped.
fn start_positions(
    path: &std::path::Path,
    ids: &[&str],
    published: u64,
) -> std::io::Result<BTreeMap<String, u64>> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut starts: BTreeMap<String, u64> = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e),
    };
    let mut changed = false;
    for id in ids {
        starts.entry((*id).to_string()).or_insert_with(|| {
            changed = true;
            published
        });
    }
    if changed {
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &serde_json::to_vec_pretty(&starts)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(starts)
}

/// One sink's counters and state, shared between its task and the status.
#[derive(Debug)]
struct Handle {
    id: String,
    kind: &'static str,
    /// Set once it has stopped for good (`failed`): it no longer holds compaction back.
    gave_up: std::sync::atomic::AtomicBool,
    /// Where it starts if its store has no position.
    start: u64,
    /// Position + 1; 0 until the store is opened.
    position: AtomicU64,
    rows_written: AtomicU64,
    errors: AtomicU64,
    state: Mutex<(&'static str, &'static str, Option<String>)>,
}

impl Handle {
    fn position(&self) -> Option<u64> {
        self.position.load(Ordering::Acquire).checked_sub(1)
    }

    /// Its position, or where it will start while its store is not open yet; none once it
    /// has failed for good, so compaction and memory are not held for it.
    fn floor(&self) -> Option<u64> {
        if self.gave_up.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.position().unwrap_or(self.start))
    }

    /// Stops for good, with the reason in the status.
    fn give_up(&self, metrics: &Metrics, what: &str, e: &dyn std::fmt::Display) {
        self.failed(metrics, what, e, "failed");
        self.gave_up.store(true, Ordering::Relaxed);
    }

    /// Sets the state; `behind` leaves `retrying` until an attempt succeeds, so that the
    /// status and `/readyz` show a failing follower for as long as it fails.
    fn set(&self, state: &'static str, reading_from: Option<&'static str>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !(s.0 == "retrying" && state == "behind") {
            s.0 = state;
        }
        if let Some(r) = reading_from {
            s.1 = r;
        }
    }

    /// An attempt succeeded: no longer `retrying`.
    fn recovered(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 == "retrying" {
            s.0 = "behind";
        }
    }

    fn failed(
        &self,
        metrics: &Metrics,
        what: &str,
        e: &dyn std::fmt::Display,
        state: &'static str,
    ) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        metrics.sink_errors.add(&self.id, 1);
        tracing::warn!(sink = %self.id, error = %e, "{what} failed; retrying");
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = state;
        s.2 = Some(format!("{what}: {e}"));
    }
}

/// The running sinks; empty when the config names none.
#[derive(Debug)]
pub(crate) struct Sinks {
    feed: Arc<Feed>,
    handles: Vec<Arc<Handle>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Threads that did not stop within the drain limit: a process handing its partition
    /// over keeps the partition until they have.
    stuck: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stop: watch::Sender<bool>,
}

impl Sinks {
    /// Starts a thread per sink; `published` is the last flush the lake committed, and
    /// `starts` the file that keeps where each began. `group` (`sinks`, `notifiers`) labels
    /// the memory gauges.
    pub(crate) fn start(
        group: &str,
        starts: &std::path::Path,
        built: Vec<Built>,
        buffer_rows: usize,
        published: u64,
        lake: &Arc<Lake>,
        metrics: &Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (stop, _) = watch::channel(false);
        let feed = Arc::new(Feed {
            state: Mutex::new(FeedState::default()),
            published: watch::Sender::new(published),
            max_rows: buffer_rows,
            // A group without sinks shows no gauges.
            held: if built.is_empty() {
                Arc::default()
            } else {
                metrics
                    .sink_buffer_limit_rows
                    .get(group)
                    .store(buffer_rows as u64, Ordering::Relaxed);
                metrics.sink_buffer_rows.get(group)
            },
        });
        let mut sinks = Self {
            feed,
            handles: Vec::new(),
            threads: Mutex::new(Vec::new()),
            stuck: Mutex::new(Vec::new()),
            stop,
        };
        if built.is_empty() {
            return Ok(sinks);
        }
        let ids: Vec<&str> = built.iter().map(|b| b.id.as_str()).collect();
        let starts = start_positions(starts, &ids, published)?;
        for plan in built {
            let handle = Arc::new(Handle {
                id: plan.id.clone(),
                kind: plan.kind,
                gave_up: std::sync::atomic::AtomicBool::new(false),
                start: starts.get(&plan.id).copied().unwrap_or(published),
                position: AtomicU64::new(0),
                rows_written: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                state: Mutex::new(("starting", "memory", None)),
            });
            let task = Task {
                sink: plan.sink,
                retry_max: plan.retry_max,
                overflow: plan.overflow,
                keep_until: None,
                last_drop_log: None,
                handle: Arc::clone(&handle),
                feed: Arc::clone(&sinks.feed),
                lake: Arc::clone(lake),
                metrics: Arc::clone(metrics),
                stop: sinks.stop.subscribe(),
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let thread = std::thread::Builder::new()
                .name(format!("tickflow-sink-{}", plan.id))
                .spawn(move || runtime.block_on(task.run()))?;
            sinks
                .threads
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .push(thread);
            sinks.handles.push(handle);
        }
        Ok(sinks)
    }

    /// Whether any sink runs: if not, flushes are not kept for them.
    pub(crate) fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The slowest sink's position (or start, while its store is not open); sinks that
    /// failed for good are left out; `u64::MAX` without sinks.
    pub(crate) fn floor(&self) -> u64 {
        self.handles
            .iter()
            .filter_map(|h| h.floor())
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Each sink's position (or start, while its store is not open), by id; sinks that failed
    /// for good are left out.
    pub(crate) fn floors(&self) -> Vec<(String, u64)> {
        self.handles
            .iter()
            .filter_map(|h| h.floor().map(|f| (h.id.clone(), f)))
            .collect()
    }

    /// Hands a committed flush to every sink.
    pub(crate) fn publish(&self, seq: u64, rows: &Arc<Rows>) {
        if self.is_empty() {
            return;
        }
        self.feed.publish(
            Flush {
                seq,
                rows: Arc::clone(rows),
            },
            self.floor(),
        );
    }

    /// Whether every sink that is about to has written flush `seq`: one that is retrying, has
    /// stopped, or is more than one flush behind (catching up) is not waited for.
    pub(crate) fn reached(&self, seq: u64) -> bool {
        self.handles.iter().all(|h| {
            let state = h.state.lock().unwrap_or_else(|e| e.into_inner()).0;
            let position = h.position();
            matches!(state, "retrying" | "failed" | "stopped")
                || position >= Some(seq)
                || position.is_some_and(|p| p.saturating_add(1) < seq)
        })
    }

    /// Whether every follower has written flush `seq`, waiting for those that retry.
    ///
    /// # Errors
    /// One has stopped for good (`failed` or `stopped`): its id, state and last error.
    pub(crate) fn all_reached(&self, seq: u64) -> Result<bool, String> {
        for h in &self.handles {
            if h.position() >= Some(seq) {
                continue;
            }
            let (state, _, last_error) = h.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if matches!(state, "failed" | "stopped") {
                return Err(format!(
                    "{} {} is {state}: {}",
                    h.kind,
                    h.id,
                    last_error.as_deref().unwrap_or("no error recorded")
                ));
            }
            return Ok(false);
        }
        Ok(true)
    }

    /// The last flush compaction may merge: none past a sink's position.
    pub(crate) fn compaction_limit(&self, committed: u64) -> u64 {
        committed.min(self.floor())
    }

    pub(crate) fn status(&self) -> Vec<SinkStatus> {
        let published = self.feed.published();
        self.handles
            .iter()
            .map(|h| {
                let position = h.position();
                let at = position.unwrap_or(h.start);
                let (state, reading_from, last_error) =
                    h.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
                SinkStatus {
                    id: h.id.clone(),
                    kind: h.kind,
                    state,
                    position,
                    lag_flushes: published.saturating_sub(at),
                    lag_rows: self.feed.lag_rows(at),
                    reading_from,
                    rows_written: h.rows_written.load(Ordering::Relaxed),
                    errors: h.errors.load(Ordering::Relaxed),
                    last_error,
                }
            })
            .collect()
    }

    /// Lets each sink write up to the last published flush (within [`DRAIN_LIMIT`]), then
    /// stops them. A sink that is failing stops at once; it resumes from its position.
    pub(crate) fn shutdown(&self) {
        self.signal_stop();
        self.wait(std::time::Instant::now() + DRAIN_LIMIT);
    }

    /// Whether every thread has ended, those left behind by [`Sinks::wait`] included.
    pub(crate) fn stopped(&self) -> bool {
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
            && self
                .stuck
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .all(std::thread::JoinHandle::is_finished)
    }

    /// Asks every sink to stop once it has written the last published flush.
    pub(crate) fn signal_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Waits for the sinks until `deadline`; see [`Sinks::shutdown`].
    pub(crate) fn wait(&self, deadline: std::time::Instant) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        while threads.iter().any(|t| !t.is_finished()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut left = self.stuck.lock().unwrap_or_else(|e| e.into_inner());
        for thread in threads {
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                // A write blocked in its store (a hung mount): left behind, it ends with the
                // process, and the sink resumes from its durable position on the next start.
                left.push(thread);
            }
        }
        let stuck = left.len();
        if stuck > 0 {
            tracing::warn!(
                sinks = stuck,
                "sinks did not finish within {DRAIN_LIMIT:?}; they resume from their positions on the next start"
            );
        }
    }
}

/// The cap of a sink's backoff (a notifier sets its own).
pub(crate) const SINK_RETRY_MAX: Duration = Duration::from_secs(30);

/// One sink's loop.
struct Task {
    sink: Box<dyn Sink>,
    retry_max: Duration,
    overflow: Overflow,
    /// `drop_newest`: the flush it writes up to before skipping what came in meanwhile.
    keep_until: Option<u64>,
    last_drop_log: Option<std::time::Instant>,
    handle: Arc<Handle>,
    feed: Arc<Feed>,
    lake: Arc<Lake>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
}

impl Task {
    /// Sleeps `delay` unless asked to stop first; true when stopping.
    async fn pause(&mut self, delay: Duration) -> bool {
        if *self.stop.borrow() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = self.stop.changed() => true,
        }
    }

    /// Counts and shows a failure, then waits out the next delay; true when stopping.
    async fn retry_after(
        &mut self,
        delays: &mut backon::ExponentialBackoff,
        what: &str,
        e: &(dyn std::fmt::Display + Sync),
    ) -> bool {
        self.handle.failed(&self.metrics, what, e, "retrying");
        let delay = delays.next().unwrap_or(Duration::from_secs(30));
        self.pause(delay).await
    }

    /// Opens the store, retrying; `None` once stopping.
    async fn open(&mut self) -> Option<Option<u64>> {
        let mut delays = backoff(self.retry_max);
        loop {
            match self.sink.open().await {
                Ok(position) => return Some(position),
                Err(e) => {
                    if self.retry_after(&mut delays, "opening", &e).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Writes a flush, retrying; `None` once stopping.
    /// Under a dropping policy, the flush to skip to (its rows and those before it are not
    /// written); `None` to write the next flush.
    fn skip_to(&mut self, position: u64, published: u64) -> Option<u64> {
        let lag = published.saturating_sub(position);
        match self.overflow {
            Overflow::Block => None,
            Overflow::DropOldest { max_lag_flushes } => {
                (lag > max_lag_flushes).then(|| published - max_lag_flushes)
            }
            Overflow::DropNewest { max_lag_flushes } => match self.keep_until {
                None => {
                    if lag > max_lag_flushes {
                        self.keep_until = Some(position + max_lag_flushes);
                    }
                    None
                }
                Some(until) if position >= until => {
                    self.keep_until = None;
                    (published > position).then_some(published)
                }
                Some(_) => None,
            },
        }
    }

    /// Skips flushes `position + 1 ..= to`: one empty flush at `to` moves the sink's
    /// position past them. Counted, and logged at most once a minute per sink.
    async fn skip(&mut self, position: u64, to: u64) -> Option<()> {
        self.write(&Flush::empty(to)).await?;
        let id = &self.handle.id;
        let rows = self.feed.rows_between(position, to);
        self.metrics.sink_dropped_flushes.add(id, to - position);
        self.metrics.sink_dropped_rows.add(id, rows);
        let now = std::time::Instant::now();
        if self
            .last_drop_log
            .is_none_or(|t| now - t >= Duration::from_secs(60))
        {
            self.last_drop_log = Some(now);
            tracing::warn!(sink = %id, flushes = to - position, rows, policy = ?self.overflow, "sink far behind: flushes skipped by its overflow policy (tickflow_sink_dropped_rows_total)");
        }
        Some(())
    }

    async fn write(&mut self, flush: &Flush) -> Option<()> {
        let mut delays = backoff(self.retry_max);
        loop {
            match self.sink.write(flush).await {
                Ok(()) => return Some(()),
                Err(e) => {
                    let what = format!("writing flush {}", flush.seq);
                    if self.retry_after(&mut delays, &what, &e).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn run(mut self) {
        let id = self.handle.id.clone();
        let Some(opened) = self.open().await else {
            self.handle.set("stopped", None);
            return;
        };
        let mut position = match opened {
            Some(p) => p,
            None => {
                // A new store starts where the sink was first configured, recorded in the
                // store at once.
                let start = self.handle.start;
                let flush = Flush::empty(start);
                if self.write(&flush).await.is_none() {
                    self.handle.set("stopped", None);
                    return;
                }
                start
            }
        };
        if position > self.feed.published() {
            // Its store records flushes this lake never made (a new data directory beside an
            // old sink directory): writing on would skip rows without a word.
            let e = format!(
                "the store says flush {position} is written, but the lake has committed only {}: is this sink's store from another data directory?",
                self.feed.published()
            );
            self.handle.give_up(&self.metrics, "opening", &e);
            tracing::error!(sink = %id, error = %e, "sink stopped");
            return;
        }
        self.handle.recovered();
        tracing::info!(sink = %id, position, "sink opened");
        self.handle.position.store(position + 1, Ordering::Release);
        let mut published_rx = self.feed.published.subscribe();
        let mut delays = backoff(self.retry_max);
        loop {
            let published = *published_rx.borrow_and_update();
            self.gauges(position, published);
            if position >= published {
                self.handle.set("ok", None);
                // Caught up: a backlog kept by `drop_newest` is written, nothing is owed.
                self.keep_until = None;
                if *self.stop.borrow() {
                    break;
                }
                tokio::select! {
                    r = published_rx.changed() => if r.is_err() { break },
                    // A closed channel (the pipeline is gone) is a stop too.
                    r = self.stop.changed() => if r.is_err() { break },
                }
                continue;
            }
            if let Some(to) = self.skip_to(position, published) {
                if self.skip(position, to).await.is_none() {
                    break;
                }
                self.handle.recovered();
                position = to;
                self.handle.position.store(position + 1, Ordering::Release);
                continue;
            }
            let flush = match self.feed.get(position + 1) {
                Some(flush) => {
                    self.handle.set("behind", Some("memory"));
                    flush
                }
                None => {
                    self.handle.set("behind", Some("lake"));
                    let lake = Arc::clone(&self.lake);
                    let read =
                        tokio::task::spawn_blocking(move || lake.read_flushes(position, published))
                            .await;
                    match read {
                        Ok(Ok((seq, rows))) => Flush {
                            seq,
                            rows: Arc::new(rows),
                        },
                        Ok(Err(e @ tickflow_lake::Error::Compacted { .. })) => {
                            // Only a sink whose position predates compaction (one left out
                            // of the config for a while) gets here; it cannot be served
                            // flush by flush any more.
                            self.handle.give_up(&self.metrics, "reading the lake", &e);
                            tracing::error!(sink = %id, position, error = %e, "sink stopped: its position is behind the lake's compaction; see docs/CONNECTORS.md");
                            return;
                        }
                        Ok(Err(e)) => {
                            if self.retry_after(&mut delays, "reading the lake", &e).await {
                                break;
                            }
                            continue;
                        }
                        Err(e) => {
                            self.handle
                                .failed(&self.metrics, "reading the lake", &e, "retrying");
                            break;
                        }
                    }
                }
            };
            if self.write(&flush).await.is_none() {
                break;
            }
            self.handle.recovered();
            position = flush.seq;
            // `ok` before the position says caught up, so a status never shows no lag and
            // `behind` together.
            if position >= self.feed.published() {
                self.handle.set("ok", None);
            }
            self.handle.position.store(position + 1, Ordering::Release);
            let n = flush.rows.len() as u64;
            self.handle.rows_written.fetch_add(n, Ordering::Relaxed);
            self.metrics.sink_rows.add(&id, n);
        }
        self.gauges(position, self.feed.published());
        self.handle.set("stopped", None);
    }

    fn gauges(&self, position: u64, published: u64) {
        let m = &self.metrics;
        m.sink_lag_flushes
            .get(&self.handle.id)
            .store(published.saturating_sub(position), Ordering::Relaxed);
        m.sink_lag_rows
            .get(&self.handle.id)
            .store(self.feed.lag_rows(position), Ordering::Relaxed);
    }
}
