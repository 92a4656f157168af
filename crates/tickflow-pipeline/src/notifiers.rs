//! Notifiers. Each alert has two ways to its channel and is settled once: the moment the
//! processor raises it (the early path), and behind the lake, where each notifier follows the
//! lake's flushes on a position of its own exactly as a sink does (`sinks.rs` runs it) and
//! settles the alerts of each flush that its rules route to it: all but those a burst
//! coalesced, which its digest stands for. What the early path delivered, the flush path only
//! checks off; what the early path could not deliver at its one attempt (or had no room to
//! queue), the flush path retries. The processor reads only records durable in the log
//! (with `[log] fsync = true`, the default) and processes them deterministically, and a
//! reload of the rules waits for everything processed under the old ones to be committed;
//! so an alert delivered early is raised again, with the same id, after any crash, and
//! delivering it need not wait for the lake.
//!
//! On the flush path, per alert: one attempt per `write`; a failure worth retrying ends the
//! `write` with an error, and the sink runner tries the flush again after its capped
//! exponential backoff with jitter (shown in the status as `retrying`, counted in
//! `tickflow_sink_errors_total`), resuming at the first alert not yet settled. Each settled
//! alert is recorded before the next: in `delivered.json` on the flush path, in `early.txt`
//! on the early path; the flush is recorded in `position.json` once all its alerts are
//! settled. A restart therefore loses none and sends none again, except one whose success
//! came in the instant before a crash, or whose record failed (a full disk), or an early
//! attempt cut off by shutdown; every attempt carries the same idempotency key for
//! receivers that drop repeats. An alert that runs out of attempts, or meets a permanent
//! refusal, goes to the DLQ (reason `delivery_failed`, the alert as payload) through the log.
//! Every settled alert, delivered or not, also goes through the log into `alert_deliveries`,
//! which gives SQL's `alerts.delivered_to`. While a channel is down (its last alert ran out
//! of attempts) each further alert gets one attempt, until one gets through: a long outage
//! cannot pile up hours of retries.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tickflow_core::codec::{Batch, Rejected};
use tickflow_core::metrics::Metrics;
use tickflow_core::notify::{DeliveryError, Notifier, idempotency_key};
use tickflow_core::sink::{Flush, Sink, SinkError};
use tickflow_core::source::Append;
use tickflow_model::{Alert, AlertDelivery, AlertKind, DeliveryStatus, RejectReason, UnixNanos};
use tokio::sync::{Mutex, mpsc};

/// `delivered.json`: alerts of the flush in progress already settled.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Settled {
    flush: u64,
    alerts: BTreeSet<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Position {
    flush: u64,
}

/// Alerts queued for one notifier's early path; past this the rest wait for their flush.
const EARLY_QUEUE: usize = 1024;

/// How an alert's delivery ended: the attempts it took, the reason it was given up (none
/// when delivered), and the error of the attempt before the last, or of the last.
type Outcome = (u32, Option<String>, Option<String>);

/// An alert the early path settled, kept until the flush path meets it.
#[derive(Debug)]
struct Early {
    /// The flush it was raised into; 0 when read back from `early.txt`, since the replay
    /// after a restart may put it in another.
    flush: u64,
    /// Its event time: once the flush path would skip it as too old, it is forgotten.
    ts: i64,
    /// An outcome the log refused to record (the pipeline stopping): the flush path records it.
    unrecorded: Option<Outcome>,
}

/// A notifier's delivery state, shared by its two paths. Each holds it through an attempt, so
/// the two never try one alert at once.
#[derive(Debug, Default)]
struct State {
    /// The last flush whose alerts are all settled; none before the first is recorded.
    position: Option<u64>,
    /// The flush in progress.
    settled: Settled,
    /// Settled by the early path, by alert id.
    early: HashMap<String, Early>,
    /// Failed attempts so far of the alerts being retried (from this start on), with the
    /// last one's error.
    attempts: HashMap<String, (u32, String)>,
    /// Its last alert ran out of attempts.
    down: bool,
}

impl State {
    /// Whether an alert raised into flush `flush` is settled already, by either path.
    fn is_settled(&self, flush: u64, alert_id: &str) -> bool {
        self.position.is_some_and(|p| flush <= p)
            || (self.settled.flush == flush && self.settled.alerts.contains(alert_id))
            || self.early.contains_key(alert_id)
    }
}

/// What delivering to one notifier takes, on either path.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) id: String,
    pub(crate) notifier: Arc<dyn Notifier>,
    pub(crate) max_attempts: u32,
    pub(crate) log: Arc<dyn Append>,
    pub(crate) metrics: Arc<Metrics>,
}

/// The processor's way into a notifier's early path.
#[derive(Debug)]
pub(crate) struct EarlyLane {
    tx: mpsc::Sender<(u64, Alert)>,
    rules: Arc<RwLock<HashSet<String>>>,
    max_age: Duration,
}

impl EarlyLane {
    /// Queues the alerts routed here, raised into flush `flush`, without waiting: the
    /// processor never blocks on a channel.
    pub(crate) fn offer(&self, flush: u64, alerts: &[Alert], now: i64) {
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        for alert in alerts {
            let fresh = now.saturating_sub(alert.ts.0) <= self.max_age.as_nanos() as i64;
            if alert.kind.is_sent() && fresh && rules.contains(&alert.rule) {
                let _ = self.tx.try_send((flush, alert.clone()));
            }
        }
    }
}

/// A notifier run as a sink of alerts, with its early path; see the module docs.
#[derive(Debug)]
pub(crate) struct NotifySink {
    channel: Arc<Channel>,
    dir: PathBuf,
    /// Rules whose alerts come here; a reload replaces them.
    rules: Arc<RwLock<HashSet<String>>>,
    /// Alerts whose event time is older than this are not sent (a replay of old data, a
    /// simulator's history); they are counted as `skipped`.
    max_age: Duration,
    state: Arc<Mutex<State>>,
    /// Taken by the first `open`, which starts the early path on the sink's runtime.
    early: Option<mpsc::Receiver<(u64, Alert)>>,
}

fn io(path: &Path, e: std::io::Error) -> SinkError {
    format!("{}: {e}", path.display()).into()
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, SinkError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{} is damaged ({e}); it records the notifier's position",
                path.display()
            )
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

/// Replaces `path` atomically and durably with `value` as JSON.
fn put_json(path: &Path, value: &impl Serialize) -> Result<(), SinkError> {
    put_bytes(path, &serde_json::to_vec(value)?)
}

/// Replaces `path` atomically and durably with `text`.
fn put_bytes(path: &Path, text: &[u8]) -> Result<(), SinkError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| io(path, e))
}

/// `early.txt`: one line per alert the early path settled, `<event time> <alert id>`.
fn read_early(path: &Path) -> Result<HashMap<String, Early>, SinkError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(io(path, e)),
    };
    let mut early = HashMap::new();
    for line in text.lines() {
        // A line torn by a crash is the alert whose record did not finish: sent again.
        let Some((ts, id)) = line.split_once(' ') else {
            continue;
        };
        let Ok(ts) = ts.parse() else { continue };
        let entry = Early {
            flush: 0,
            ts,
            unrecorded: None,
        };
        early.insert(id.to_string(), entry);
    }
    Ok(early)
}

/// Replaces `early.txt` with what is left in `early`, or removes it when nothing is.
fn put_early(path: &Path, early: &HashMap<String, Early>) -> Result<(), SinkError> {
    if early.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path, e)),
            _ => Ok(()),
        };
    }
    let text: String = early
        .iter()
        .map(|(id, e)| format!("{} {id}\n", e.ts))
        .collect();
    put_bytes(path, text.as_bytes())
}

impl Channel {
    fn count(&self, status: &str) {
        self.metrics
            .alert_deliveries
            .add(&format!("{}/{status}", self.id), 1);
    }

    /// One attempt at an alert: `Ok((n, None, error))` delivered at attempt `n` (with the
    /// error of the retry before it, if any), `Ok((n, Some(reason), _))` given up (to the
    /// DLQ), `Err` to be tried again after the runner's backoff.
    async fn attempt(&self, state: &mut State, alert: &Alert) -> Result<Outcome, SinkError> {
        let key = idempotency_key(alert, &self.id);
        match self.notifier.deliver(alert, &key).await {
            Ok(()) => {
                self.count("ok");
                if alert.kind == AlertKind::Fired {
                    let m = &self.metrics;
                    m.alert_delivered_latency
                        .observe_since(UnixNanos::now().0, std::iter::once(alert.ts.0));
                }
                state.down = false;
                let (n, last) = state.attempts.remove(&alert.alert_id).unwrap_or_default();
                Ok((n + 1, None, (n > 0).then_some(last)))
            }
            Err(DeliveryError::Permanent(e)) => {
                self.count("failed");
                let n = state.attempts.remove(&alert.alert_id).unwrap_or_default().0 + 1;
                let reason = format!("refused after {n} attempt(s): {e}");
                Ok((n, Some(reason), Some(e.to_string())))
            }
            Err(DeliveryError::Retry(e)) => {
                self.count("retry");
                let tried = state.attempts.entry(alert.alert_id.clone()).or_default();
                tried.0 += 1;
                tried.1 = e.to_string();
                let n = tried.0;
                if n >= self.max_attempts || state.down {
                    state.attempts.remove(&alert.alert_id);
                    self.count("failed");
                    state.down = true;
                    let reason = format!("{n} attempt(s) failed, the last: {e}");
                    return Ok((n, Some(reason), Some(e.to_string())));
                }
                Err(format!("alert {} (attempt {n}): {e}", alert.alert_id).into())
            }
        }
    }

    /// Records how the alert's delivery ended, through the log, durably, before it counts
    /// as settled: a row of `alert_deliveries`, and for one given up (`failed` with its
    /// reason) the alert in the DLQ as well.
    fn settle(&self, alert: &Alert, (attempts, failed, error): Outcome) -> Result<(), SinkError> {
        let failed = failed.as_deref();
        let now = UnixNanos::now();
        let mut batch = Batch::default();
        if let Some(reason) = failed {
            let payload = serde_json::to_string(alert)?;
            let error = format!("notifier {}: {reason}", self.id);
            batch.push_rejected(&Rejected {
                reason: RejectReason::DeliveryFailed,
                ts_recv: now,
                source: &self.id,
                error: &error,
                payload: &payload,
            });
        }
        batch.push_delivery(&AlertDelivery {
            alert_id: alert.alert_id.clone(),
            notifier: self.id.clone(),
            ts: now,
            status: if failed.is_some() {
                DeliveryStatus::Failed
            } else {
                DeliveryStatus::Delivered
            },
            attempts,
            error,
        });
        self.log.append(&self.id, &batch)?;
        if let Some(reason) = failed {
            tracing::error!(notifier = %self.id, alert_id = %alert.alert_id, reason, "alert not delivered; in the DLQ as delivery_failed");
        }
        Ok(())
    }
}

impl NotifySink {
    /// The notifier's sink and the lane the processor offers it alerts through.
    pub(crate) fn new(
        channel: Channel,
        dir: PathBuf,
        rules: Arc<RwLock<HashSet<String>>>,
        max_age: Duration,
    ) -> (Self, EarlyLane) {
        let (tx, rx) = mpsc::channel(EARLY_QUEUE);
        let lane = EarlyLane {
            tx,
            rules: Arc::clone(&rules),
            max_age,
        };
        let sink = Self {
            channel: Arc::new(channel),
            dir,
            rules,
            max_age,
            state: Arc::default(),
            early: Some(rx),
        };
        (sink, lane)
    }
}

/// The early path: one attempt per alert as it is raised, recorded in `early.txt`. A failure
/// worth retrying is left to the flush path, which goes on from the attempts made here.
async fn run_early(
    channel: Arc<Channel>,
    state: Arc<Mutex<State>>,
    (path, max_age): (PathBuf, Duration),
    mut rx: mpsc::Receiver<(u64, Alert)>,
) {
    while let Some((flush, alert)) = rx.recv().await {
        let mut state = state.lock().await;
        // Checked again as it leaves the queue: the flush path forgets a restart's early
        // entries by the same age.
        let age = UnixNanos::now().0.saturating_sub(alert.ts.0);
        if state.is_settled(flush, &alert.alert_id) || age > max_age.as_nanos() as i64 {
            continue;
        }
        let Ok(outcome) = channel.attempt(&mut state, &alert).await else {
            continue;
        };
        // Only an outcome in the log goes to `early.txt`: one the log refused (the pipeline
        // stopping) is recorded by its flush, or after a restart is tried again.
        let unrecorded = match channel.settle(&alert, outcome.clone()) {
            Ok(()) => {
                let line = format!("{} {}\n", alert.ts.0, alert.alert_id);
                let appended = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| {
                        f.write_all(line.as_bytes())?;
                        f.sync_data()
                    });
                if let Err(e) = appended {
                    tracing::warn!(notifier = %channel.id, path = %path.display(), error = %e, "recording an early delivery failed; a restart before its flush sends it again");
                }
                None
            }
            Err(e) => {
                tracing::warn!(notifier = %channel.id, alert_id = %alert.alert_id, error = %e, "recording an early delivery failed; its flush records it");
                Some(outcome)
            }
        };
        let entry = Early {
            flush,
            ts: alert.ts.0,
            unrecorded,
        };
        state.early.insert(alert.alert_id, entry);
    }
}

#[async_trait::async_trait]
impl Sink for NotifySink {
    async fn open(&mut self) -> Result<Option<u64>, SinkError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let position = read_json::<Position>(&self.dir.join("position.json"))?.map(|p| p.flush);
        let settled = read_json::<Settled>(&self.dir.join("delivered.json"))?.unwrap_or_default();
        let early = read_early(&self.dir.join("early.txt"))?;
        {
            let mut state = self.state.lock().await;
            state.position = position;
            state.settled = settled;
            state.early = early;
        }
        if let Some(rx) = self.early.take() {
            tokio::spawn(run_early(
                Arc::clone(&self.channel),
                Arc::clone(&self.state),
                (self.dir.join("early.txt"), self.max_age),
                rx,
            ));
        }
        Ok(position)
    }

    async fn write(&mut self, flush: &Flush) -> Result<(), SinkError> {
        let settled_path = self.dir.join("delivered.json");
        if self.state.lock().await.position >= Some(flush.seq) {
            return Ok(());
        }
        let now = UnixNanos::now().0;
        let max_age = self.max_age.as_nanos() as i64;
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner()).clone();
        for alert in &flush.rows.alerts {
            if !alert.kind.is_sent() || !rules.contains(&alert.rule) {
                continue;
            }
            let mut state = self.state.lock().await;
            if state.settled.flush != flush.seq {
                state.settled = Settled {
                    flush: flush.seq,
                    alerts: BTreeSet::new(),
                };
            }
            if state.settled.alerts.contains(&alert.alert_id) {
                continue;
            }
            if let Some(early) = state.early.get_mut(&alert.alert_id) {
                // Met: forgotten once this flush is done, whichever run sent it.
                early.flush = flush.seq;
                if let Some(outcome) = early.unrecorded.clone() {
                    self.channel.settle(alert, outcome)?;
                    early.unrecorded = None;
                }
                continue;
            }
            if now.saturating_sub(alert.ts.0) > max_age {
                // Settled in memory only, so the early path leaves it too; a restart skips
                // it again.
                self.channel.count("skipped");
                state.settled.alerts.insert(alert.alert_id.clone());
                continue;
            }
            let outcome = self.channel.attempt(&mut state, alert).await?;
            if let Err(e) = self.channel.settle(alert, outcome.clone()) {
                // Sent, not recorded: kept as the early path keeps one, so the retry
                // records it instead of sending it again.
                let entry = Early {
                    flush: flush.seq,
                    ts: alert.ts.0,
                    unrecorded: Some(outcome),
                };
                state.early.insert(alert.alert_id.clone(), entry);
                return Err(e);
            }
            state.settled.alerts.insert(alert.alert_id.clone());
            put_json(&settled_path, &state.settled)?;
        }
        let mut state = self.state.lock().await;
        put_json(
            &self.dir.join("position.json"),
            &Position { flush: flush.seq },
        )?;
        state.position = Some(flush.seq);
        let _ = std::fs::remove_file(&settled_path);
        // What the early path settled for this flush or before is met now (or was routed
        // away by a reload); what came from an earlier run, once too old to be sent.
        let before = state.early.len();
        state.early.retain(|_, e| {
            e.unrecorded.is_some()
                || match e.flush {
                    0 => now.saturating_sub(e.ts) <= max_age,
                    f => f > flush.seq,
                }
        });
        if state.early.len() != before {
            put_early(&self.dir.join("early.txt"), &state.early)?;
        }
        Ok(())
    }
}
