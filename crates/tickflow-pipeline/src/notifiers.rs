//! Notifiers behind the lake: each notifier follows the lake's flushes on a position of its
//! own, exactly as a sink does (`sinks.rs` runs it), and delivers the alerts of each flush
//! that its rules route to it: all but those a burst coalesced, which its digest stands for.
//!
//! Per alert: one attempt per `write`; a failure worth retrying ends the `write` with an
//! error, and the sink runner tries the flush again after its capped exponential backoff
//! with jitter (shown in the status as `retrying`, counted in `tickflow_sink_errors_total`),
//! resuming at the first alert not yet settled. Each delivered (or given-up) alert is
//! recorded in `delivered.json` before the next, and the flush in `position.json` once all
//! its alerts are settled, so a restart loses none and sends none again, except one whose
//! success came in the instant before a crash; every attempt carries the same idempotency
//! key for receivers that drop repeats. An alert that runs out of attempts, or meets a
//! permanent refusal, goes to the DLQ (reason `delivery_failed`, the alert as payload)
//! through the log. Every settled alert, delivered or not, also goes through the log into
//! `alert_deliveries`, which gives SQL's `alerts.delivered_to`. While a channel is down (its last alert ran out of attempts) each further
//! alert gets one attempt, until one gets through: a long outage cannot pile up hours of
//! retries.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tickflow_core::codec::{Batch, Rejected};
use tickflow_core::metrics::Metrics;
use tickflow_core::notify::{DeliveryError, Notifier, idempotency_key};
use tickflow_core::sink::{Flush, Sink, SinkError};
use tickflow_core::source::Append;
use tickflow_model::{Alert, AlertDelivery, DeliveryStatus, RejectReason, UnixNanos};

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

/// A notifier run as a sink of alerts; see the module docs.
#[derive(Debug)]
pub(crate) struct NotifySink {
    pub(crate) id: String,
    pub(crate) notifier: Arc<dyn Notifier>,
    pub(crate) dir: PathBuf,
    /// Rules whose alerts come here; a reload replaces them.
    pub(crate) rules: Arc<std::sync::RwLock<HashSet<String>>>,
    pub(crate) max_attempts: u32,
    pub(crate) log: Arc<dyn Append>,
    pub(crate) metrics: Arc<Metrics>,
    /// Failed attempts so far of the alerts being retried (from this start on), with the
    /// last one's error.
    pub(crate) attempts: HashMap<String, (u32, String)>,
    /// Alerts whose event time is older than this are not sent (a replay of old data, a
    /// simulator's history); they are counted as `skipped`.
    pub(crate) max_age: Duration,
    /// Its last alert ran out of attempts.
    pub(crate) down: bool,
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
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(value)?;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| io(path, e))
}

impl NotifySink {
    fn count(&self, status: &str) {
        self.metrics
            .alert_deliveries
            .add(&format!("{}/{status}", self.id), 1);
    }

    /// One attempt at an alert: `Ok(n, None, error)` delivered at attempt `n` (with the
    /// error of the retry before it, if any), `Ok((n, Some(reason), _))` given up (to the
    /// DLQ), `Err` to be tried again after the runner's backoff.
    async fn attempt(
        &mut self,
        alert: &Alert,
    ) -> Result<(u32, Option<String>, Option<String>), SinkError> {
        let key = idempotency_key(alert, &self.id);
        match self.notifier.deliver(alert, &key).await {
            Ok(()) => {
                self.count("ok");
                self.down = false;
                let (n, last) = self.attempts.remove(&alert.alert_id).unwrap_or_default();
                Ok((n + 1, None, (n > 0).then_some(last)))
            }
            Err(DeliveryError::Permanent(e)) => {
                self.count("failed");
                let n = self.attempts.remove(&alert.alert_id).unwrap_or_default().0 + 1;
                let reason = format!("refused after {n} attempt(s): {e}");
                Ok((n, Some(reason), Some(e.to_string())))
            }
            Err(DeliveryError::Retry(e)) => {
                self.count("retry");
                let tried = self.attempts.entry(alert.alert_id.clone()).or_default();
                tried.0 += 1;
                tried.1 = e.to_string();
                let n = tried.0;
                if n >= self.max_attempts || self.down {
                    self.attempts.remove(&alert.alert_id);
                    self.count("failed");
                    self.down = true;
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
    fn settle(
        &self,
        alert: &Alert,
        (attempts, failed, error): (u32, Option<String>, Option<String>),
    ) -> Result<(), SinkError> {
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

#[async_trait::async_trait]
impl Sink for NotifySink {
    async fn open(&mut self) -> Result<Option<u64>, SinkError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        Ok(read_json::<Position>(&self.dir.join("position.json"))?.map(|p| p.flush))
    }

    async fn write(&mut self, flush: &Flush) -> Result<(), SinkError> {
        let position_path = self.dir.join("position.json");
        let settled_path = self.dir.join("delivered.json");
        if read_json::<Position>(&position_path)?.is_some_and(|p| p.flush >= flush.seq) {
            return Ok(());
        }
        let mut settled = read_json::<Settled>(&settled_path)?
            .filter(|s| s.flush == flush.seq)
            .unwrap_or(Settled {
                flush: flush.seq,
                alerts: BTreeSet::new(),
            });
        let now = UnixNanos::now().0;
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner()).clone();
        for alert in &flush.rows.alerts {
            if !alert.kind.is_sent()
                || !rules.contains(&alert.rule)
                || settled.alerts.contains(&alert.alert_id)
            {
                continue;
            }
            if now.saturating_sub(alert.ts.0) > self.max_age.as_nanos() as i64 {
                self.count("skipped");
                continue;
            }
            let outcome = self.attempt(alert).await?;
            self.settle(alert, outcome)?;
            settled.alerts.insert(alert.alert_id.clone());
            put_json(&settled_path, &settled)?;
        }
        put_json(&position_path, &Position { flush: flush.seq })?;
        let _ = std::fs::remove_file(&settled_path);
        Ok(())
    }
}
