//! Metric names and the counters behind them. The API renders them through
//! metrics-exporter-prometheus ([`Metrics::families`]); the latency histograms render here.
//!
//! Names follow DESIGN.md: `tickflow_` prefix, base units, `_total` for counters, and no
//! per-symbol labels. Hot paths hold an `Arc<AtomicU64>` from [`Labeled::get`] and add to
//! it once per batch, so counting costs nothing measurable.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tickflow_model::RejectReason;

pub const INGESTED_TOTAL: &str = "tickflow_ingested_total";
pub const SOURCE_EVENTS_TOTAL: &str = "tickflow_source_events_total";
pub const REJECTED_TOTAL: &str = "tickflow_rejected_total";
pub const DUPLICATES_TOTAL: &str = "tickflow_duplicates_total";
pub const LOG_LAG: &str = "tickflow_log_lag";
pub const LOG_APPENDED_TOTAL: &str = "tickflow_log_appended_total";
pub const LOG_APPEND_ERRORS_TOTAL: &str = "tickflow_log_append_errors_total";
pub const PROCESSED_TOTAL: &str = "tickflow_processed_total";
pub const PROCESS_LATENCY_SECONDS: &str = "tickflow_process_latency_seconds";
pub const LOG_LATENCY_SECONDS: &str = "tickflow_log_latency_seconds";
pub const QUERYABLE_LATENCY_SECONDS: &str = "tickflow_queryable_latency_seconds";
pub const ALERT_LATENCY_SECONDS: &str = "tickflow_alert_latency_seconds";
pub const FEED_LATENCY_SECONDS: &str = "tickflow_feed_latency_seconds";
pub const ALERT_DELIVERED_LATENCY_SECONDS: &str = "tickflow_alert_delivered_latency_seconds";
pub const SINK_BUFFER_ROWS: &str = "tickflow_sink_buffer_rows";
pub const SINK_BUFFER_LIMIT_ROWS: &str = "tickflow_sink_buffer_limit_rows";
pub const SINK_ERRORS_TOTAL: &str = "tickflow_sink_errors_total";
pub const SINK_ROWS_TOTAL: &str = "tickflow_sink_rows_total";
pub const SINK_DROPPED_FLUSHES_TOTAL: &str = "tickflow_sink_dropped_flushes_total";
pub const SINK_DROPPED_ROWS_TOTAL: &str = "tickflow_sink_dropped_rows_total";
pub const SINK_LAG_ROWS: &str = "tickflow_sink_lag_rows";
pub const SINK_LAG_FLUSHES: &str = "tickflow_sink_lag_flushes";
pub const ALERTS_TOTAL: &str = "tickflow_alerts_total";
pub const ALERT_DELIVERIES_TOTAL: &str = "tickflow_alert_deliveries_total";
pub const ROWS_WRITTEN_TOTAL: &str = "tickflow_lake_rows_written_total";
pub const LAKE_FILES_TOTAL: &str = "tickflow_lake_files_written_total";
pub const LAKE_FLUSHES_TOTAL: &str = "tickflow_lake_flushes_total";
pub const LAKE_COMPACTED_FILES_TOTAL: &str = "tickflow_lake_compacted_files_total";
pub const LAKE_COMPACTIONS_TOTAL: &str = "tickflow_lake_compactions_total";
pub const LAKE_DAMAGED_PARTS: &str = "tickflow_lake_damaged_parts";
pub const HTTP_REQUESTS_TOTAL: &str = "tickflow_http_requests_total";
pub const AUTH_FAILURES_TOTAL: &str = "tickflow_auth_failures_total";
pub const INGEST_REFUSED_TOTAL: &str = "tickflow_ingest_refused_total";
pub const CONNECTIONS_REFUSED_TOTAL: &str = "tickflow_connections_refused_total";
pub const CONNECTIONS_CLOSED_TOTAL: &str = "tickflow_connections_closed_total";
pub const JOB_RUNS_TOTAL: &str = "tickflow_job_runs_total";

/// Counters keyed by one label value, e.g. `source` or `rule`.
#[derive(Debug, Default)]
pub struct Labeled(Mutex<BTreeMap<String, Arc<AtomicU64>>>);

impl Labeled {
    /// The counter for `label`, created at zero on first use. Keep it to count without locking.
    pub fn get(&self, label: &str) -> Arc<AtomicU64> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(label.to_string()).or_default())
    }

    /// Adds `n` to the counter for `label`.
    pub fn add(&self, label: &str, n: u64) {
        self.get(label).fetch_add(n, Ordering::Relaxed);
    }

    /// Current values, by label.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }

    /// Sum over labels.
    pub fn total(&self) -> u64 {
        self.snapshot().iter().map(|(_, v)| v).sum()
    }
}

/// Appends to the log failing now: since when, how many, the last error. Kept per
/// partition of the log (0 for a log of one), and a partition's outage is cleared only by
/// the next append to that partition that succeeds: in a partitioned log, one partition
/// taking appends must not hide another that refuses them. The status and `/readyz` show
/// an outage of the log's broker (or its disk reserve) while any partition's lasts.
#[derive(Debug, Default)]
pub struct Failing {
    state: Mutex<Vec<(u32, FailingState)>>,
    /// Whether `state` holds an outage: the appends that succeed read only this.
    active: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone)]
struct FailingState {
    since: std::time::Instant,
    last: std::time::Instant,
    attempts: u32,
    error: String,
}

/// What [`Failing::now`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingNow {
    /// Since the first failure of the oldest outage.
    pub secs: u64,
    /// Since the latest failure of any.
    pub last_secs: u64,
    /// Failures in all outages going on.
    pub attempts: u32,
    /// The latest failure's error.
    pub error: String,
}

impl Failing {
    /// Records a failure of an append to `partition`.
    pub fn fail(&self, partition: u32, error: &str) {
        let now = std::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.active.store(true, Ordering::Release);
        let i = match state.iter().position(|(p, _)| *p == partition) {
            Some(i) => i,
            None => {
                state.push((
                    partition,
                    FailingState {
                        since: now,
                        last: now,
                        attempts: 0,
                        error: String::new(),
                    },
                ));
                state.len() - 1
            }
        };
        let s = &mut state[i].1;
        s.last = now;
        s.attempts = s.attempts.saturating_add(1);
        error.clone_into(&mut s.error);
    }

    /// Ends `partition`'s outage, if it has one.
    pub fn clear(&self, partition: u32) {
        if self.active.load(Ordering::Acquire) {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.retain(|(p, _)| *p != partition);
            self.active.store(!state.is_empty(), Ordering::Release);
        }
    }

    /// The outages in progress, as one.
    pub fn now(&self) -> Option<FailingNow> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = state.iter().map(|(_, s)| s.since).min()?;
        let latest = state.iter().map(|(_, s)| s).max_by_key(|s| s.last)?;
        Some(FailingNow {
            secs: oldest.elapsed().as_secs(),
            last_secs: latest.last.elapsed().as_secs(),
            attempts: state.iter().map(|(_, s)| s.attempts).sum(),
            error: latest.error.clone(),
        })
    }
}

/// Upper bounds of the latency histograms, in nanoseconds: fine below 10 ms, where the
/// alert-latency target sits, and coarse up to a minute for backlogs.
pub const LATENCY_BUCKETS_NANOS: [u64; 25] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_000_000,
    3_000_000,
    5_000_000,
    7_500_000,
    10_000_000,
    15_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    750_000_000,
    1_000_000_000,
    1_500_000_000,
    2_000_000_000,
    3_000_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// Upper bound of bucket `i` in seconds; `None` for the last (+Inf) bucket.
fn bucket_secs(i: usize) -> Option<f64> {
    LATENCY_BUCKETS_NANOS.get(i).map(|&n| n as f64 / 1e9)
}

/// Index of the bucket holding `nanos`: the first whose bound is not below it.
fn bucket_of(nanos: u64) -> usize {
    LATENCY_BUCKETS_NANOS.partition_point(|&b| b < nanos)
}

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records `n` observations of the same duration.
    pub fn observe_n(&self, nanos: u64, n: u64) {
        self.buckets[bucket_of(nanos)].fetch_add(n, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(nanos.saturating_mul(n), Ordering::Relaxed);
    }

    /// Records many durations, counting locally first so the shared counters are touched
    /// once per bucket rather than once per value.
    pub fn observe_all(&self, nanos: impl Iterator<Item = u64>) {
        let mut counts = [0u64; LATENCY_BUCKETS_NANOS.len() + 1];
        let mut sum = 0u64;
        for n in nanos {
            counts[bucket_of(n)] += 1;
            sum = sum.saturating_add(n);
        }
        for (bucket, c) in self.buckets.iter().zip(counts) {
            if c > 0 {
                bucket.fetch_add(c, Ordering::Relaxed);
            }
        }
        self.sum_nanos.fetch_add(sum, Ordering::Relaxed);
    }

    /// Records `now - t` for every receive time `t` (nanoseconds), clamping clock steps to 0.
    pub fn observe_since(&self, now: i64, recv_times: impl Iterator<Item = i64>) {
        self.observe_all(recv_times.map(|t| now.saturating_sub(t).max(0) as u64));
    }

    /// Counts per bucket (the last is +Inf), not cumulative.
    pub fn counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Estimates the q-quantile in seconds by linear interpolation inside its bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile_from_counts(&self.counts(), q)
    }
}

/// Quantile estimate from per-bucket counts laid out like [`Histogram::counts`].
pub fn quantile_from_counts(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut seen = 0.0;
    for (i, &c) in counts.iter().enumerate() {
        let next = seen + c as f64;
        if next >= rank && c > 0 {
            let lo = if i == 0 {
                0.0
            } else {
                bucket_secs(i - 1).unwrap_or(0.0)
            };
            let hi = bucket_secs(i).unwrap_or(lo * 2.0);
            return Some(lo + (hi - lo) * ((rank - seen) / c as f64));
        }
        seen = next;
    }
    None
}

/// Every counter the running pipeline keeps; one instance shared by all components.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events accepted into the log, by source id.
    pub ingested: Labeled,
    /// Events and rejected inputs a source appended, by source id.
    pub source_events: Labeled,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    pub duplicates: AtomicU64,
    pub log_appended: AtomicU64,
    /// Appends the log refused or did not confirm (a broker away, the disk reserve).
    pub log_append_errors: AtomicU64,
    /// The outage those errors make, while it lasts.
    pub log_failing: Failing,
    pub log_lag: AtomicU64,
    pub processed: AtomicU64,
    /// `ts_recv` → durable in the lake (and the checkpoint).
    pub latency: Histogram,
    /// `ts_recv` → durable in the log, i.e. acknowledged to the source.
    pub log_latency: Histogram,
    /// `ts_recv` → processed and visible to queries.
    pub queryable_latency: Histogram,
    /// `ts_recv` of the triggering tick → alert handed to every notifier.
    pub alert_latency: Histogram,
    /// `ts_event` → `ts_recv` of every processed event: how late the feed delivers.
    pub feed_latency: Histogram,
    /// `ts_event` of the triggering tick → a notifier confirmed delivery of the alert it
    /// fired: the figure a person waiting for the message lives with.
    pub alert_delivered_latency: Histogram,
    /// Failed sink opens, writes and lake reads, by sink id (the lake's own under `lake`).
    pub sink_errors: Labeled,
    /// Rows each sink has written, by sink id.
    pub sink_rows: Labeled,
    /// Flushes, and their rows, a sink skipped by its overflow policy, by sink id.
    pub sink_dropped_flushes: Labeled,
    pub sink_dropped_rows: Labeled,
    /// Gauges: rows and flushes the lake has committed that a sink has not written.
    pub sink_lag_rows: Labeled,
    pub sink_lag_flushes: Labeled,
    /// Gauges: rows of recent flushes held in memory for the sinks (`group` is `sinks` or
    /// `notifiers`), and the most they may hold before a slow one reads from the lake.
    pub sink_buffer_rows: Labeled,
    pub sink_buffer_limit_rows: Labeled,
    pub alerts: Labeled,
    pub alert_deliveries: Labeled,
    pub rows_written: Labeled,
    /// Rows produced by processing, by table, durable or not yet.
    pub rows_produced: Labeled,
    pub lake_files: AtomicU64,
    pub lake_flushes: AtomicU64,
    /// Small files merged away by compaction.
    pub lake_compacted_files: AtomicU64,
    /// Compaction rounds run, whether or not they found files to merge.
    pub lake_compactions: AtomicU64,
    pub http_requests: Labeled,
    /// Refused credentials, by `surface` (`api`, `ingest`, `pgwire`), and attempts refused
    /// unread because their address failed too often (`surface` `limited`).
    pub auth_failures: Labeled,
    /// Ingest requests refused before anything was written, by `reason`: `busy` (request
    /// bodies in flight at `[http] max_inflight_mb`), `disk_full` (the log's reserve),
    /// `log_unavailable` (the broker holding the log did not store the batch).
    pub ingest_refused: Labeled,
    /// Connections closed as they came because `max_connections` were open, by `surface`
    /// (`http`, `pgwire`).
    pub connections_refused: Labeled,
    /// Connections closed for breaking a limit once open, by `reason`: `pgwire_startup` (not
    /// signed in in time), `pgwire_idle`, `pgwire_oversized` (a message too large).
    pub connections_closed: Labeled,
    /// Scheduled job runs, by `job/outcome`.
    pub job_runs: Labeled,
}

impl Metrics {
    /// Counts rejects for `reason`.
    pub fn reject(&self, reason: RejectReason, n: u64) {
        let i = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.rejected[i].fetch_add(n, Ordering::Relaxed);
    }

    /// Rejects counted so far for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        let i = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.rejected[i].load(Ordering::Relaxed)
    }

    /// Rejects over all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Every counter and gauge family with its current values, for the exporter behind
    /// `/metrics` (metrics-exporter-prometheus, in the API crate) to render. The status reads
    /// the same atomics, so both always agree.
    pub fn families(&self) -> Vec<Family> {
        let labeled = |name, label, help, values: Vec<(String, u64)>| Family {
            name,
            kind: if name.ends_with("_total") {
                Kind::Counter
            } else {
                Kind::Gauge
            },
            help,
            samples: values
                .into_iter()
                .map(|(k, v)| (vec![(label, k)], v))
                .collect(),
        };
        let plain = |name, help, value: &AtomicU64| Family {
            name,
            kind: Kind::Counter,
            help,
            samples: vec![(Vec::new(), value.load(Ordering::Relaxed))],
        };
        let rejects = RejectReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), self.rejected(*r)))
            .collect();
        let deliveries = Family {
            name: ALERT_DELIVERIES_TOTAL,
            kind: Kind::Counter,
            help: "Alert deliveries by channel and status.",
            samples: self
                .alert_deliveries
                .snapshot()
                .into_iter()
                .map(|(k, v)| {
                    let (channel, status) = k.split_once('/').unwrap_or((&k, "ok"));
                    let labels = vec![
                        ("channel", channel.to_string()),
                        ("status", status.to_string()),
                    ];
                    (labels, v)
                })
                .collect(),
        };
        let jobs = Family {
            name: JOB_RUNS_TOTAL,
            kind: Kind::Counter,
            help: "Scheduled job runs by job and outcome (ok, failed).",
            samples: self
                .job_runs
                .snapshot()
                .into_iter()
                .map(|(k, v)| {
                    // A job's name may hold '/'; the outcome never does.
                    let (job, outcome) = k.rsplit_once('/').unwrap_or((&k, "ok"));
                    let labels = vec![("job", job.to_string()), ("outcome", outcome.to_string())];
                    (labels, v)
                })
                .collect(),
        };
        vec![
            jobs,
            labeled(
                INGESTED_TOTAL,
                "source",
                "Events accepted into the durable log.",
                self.ingested.snapshot(),
            ),
            labeled(
                SOURCE_EVENTS_TOTAL,
                "source",
                "Events and unreadable inputs a source appended to the log.",
                self.source_events.snapshot(),
            ),
            labeled(REJECTED_TOTAL, "reason", "Events sent to the DLQ.", rejects),
            labeled(
                SINK_ERRORS_TOTAL,
                "sink",
                "Failed sink opens, writes and lake reads (retried).",
                self.sink_errors.snapshot(),
            ),
            labeled(
                SINK_ROWS_TOTAL,
                "sink",
                "Rows a sink has written durably.",
                self.sink_rows.snapshot(),
            ),
            labeled(
                SINK_DROPPED_FLUSHES_TOTAL,
                "sink",
                "Flushes a sink skipped by its overflow policy (drop_oldest, drop_newest).",
                self.sink_dropped_flushes.snapshot(),
            ),
            labeled(
                SINK_DROPPED_ROWS_TOTAL,
                "sink",
                "Rows in the flushes a sink skipped, counted over flushes this process published.",
                self.sink_dropped_rows.snapshot(),
            ),
            labeled(
                SINK_LAG_ROWS,
                "sink",
                "Rows the lake has committed that a sink has not yet written.",
                self.sink_lag_rows.snapshot(),
            ),
            labeled(
                SINK_LAG_FLUSHES,
                "sink",
                "Lake flushes a sink has not yet written.",
                self.sink_lag_flushes.snapshot(),
            ),
            labeled(
                SINK_BUFFER_ROWS,
                "group",
                "Rows of recent flushes held in memory for sinks or notifiers.",
                self.sink_buffer_rows.snapshot(),
            ),
            labeled(
                SINK_BUFFER_LIMIT_ROWS,
                "group",
                "Most rows held in memory for sinks or notifiers; past it a slow one reads the lake.",
                self.sink_buffer_limit_rows.snapshot(),
            ),
            labeled(
                ALERTS_TOTAL,
                "rule",
                "Alerts fired.",
                self.alerts.snapshot(),
            ),
            deliveries,
            labeled(
                ROWS_WRITTEN_TOTAL,
                "table",
                "Rows durably written to the lake.",
                self.rows_written.snapshot(),
            ),
            labeled(
                AUTH_FAILURES_TOTAL,
                "surface",
                "Refused credentials by surface (api, ingest, pgwire); limited: refused unread after too many failures.",
                self.auth_failures.snapshot(),
            ),
            labeled(
                INGEST_REFUSED_TOTAL,
                "reason",
                "Ingest requests refused unacknowledged: busy (memory budget), disk_full (log reserve), log_unavailable (the log's broker did not store them).",
                self.ingest_refused.snapshot(),
            ),
            labeled(
                CONNECTIONS_REFUSED_TOTAL,
                "surface",
                "Connections closed on arrival because max_connections were open (http, pgwire).",
                self.connections_refused.snapshot(),
            ),
            labeled(
                CONNECTIONS_CLOSED_TOTAL,
                "reason",
                "Open connections closed for a limit: pgwire_startup (not signed in in time), pgwire_idle, pgwire_oversized.",
                self.connections_closed.snapshot(),
            ),
            labeled(
                HTTP_REQUESTS_TOTAL,
                "status",
                "HTTP requests answered.",
                self.http_requests.snapshot(),
            ),
            plain(
                DUPLICATES_TOTAL,
                "Events dropped as duplicates of a natural key already seen.",
                &self.duplicates,
            ),
            plain(
                LOG_APPENDED_TOTAL,
                "Records appended to the durable log.",
                &self.log_appended,
            ),
            plain(
                LOG_APPEND_ERRORS_TOTAL,
                "Appends the log refused or did not confirm (its broker away, its disk reserve).",
                &self.log_append_errors,
            ),
            plain(PROCESSED_TOTAL, "Log records processed.", &self.processed),
            plain(LAKE_FILES_TOTAL, "Parquet files written.", &self.lake_files),
            plain(
                LAKE_FLUSHES_TOTAL,
                "Lake flushes committed.",
                &self.lake_flushes,
            ),
            plain(
                LAKE_COMPACTED_FILES_TOTAL,
                "Small Parquet files merged into larger ones by compaction.",
                &self.lake_compacted_files,
            ),
            plain(
                LAKE_COMPACTIONS_TOTAL,
                "Compaction rounds run, including those that found nothing to merge.",
                &self.lake_compactions,
            ),
            Family {
                name: LAKE_DAMAGED_PARTS,
                kind: Kind::Gauge,
                help: "Parquet parts found damaged (checksum mismatch) by any read in this process.",
                samples: vec![(Vec::new(), crate::damage::count() as u64)],
            },
            labeled(
                LOG_LAG,
                "consumer",
                "Left to process: records on the embedded log, messages (ingest batches) on a broker log.",
                vec![(
                    "processor".to_string(),
                    self.log_lag.load(Ordering::Relaxed),
                )],
            ),
        ]
    }

    /// The latency histograms in the Prometheus text format. They are bucketed here, at a
    /// cost of one increment per event: an exporter's histograms keep every sample until
    /// they are next rendered, which at millions of ticks a second is hundreds of megabytes.
    pub fn render_histograms(&self) -> String {
        let mut out = String::with_capacity(4096);
        for (name, help, h) in [
            (
                PROCESS_LATENCY_SECONDS,
                "Time from ts_recv to durable in the lake.",
                &self.latency,
            ),
            (
                LOG_LATENCY_SECONDS,
                "Time from ts_recv to durable in the log (acknowledged).",
                &self.log_latency,
            ),
            (
                QUERYABLE_LATENCY_SECONDS,
                "Time from ts_recv to processed and visible to queries.",
                &self.queryable_latency,
            ),
            (
                ALERT_LATENCY_SECONDS,
                "Time from the triggering tick's ts_recv to the alert handed to notifiers.",
                &self.alert_latency,
            ),
            (
                FEED_LATENCY_SECONDS,
                "Time from an event's ts_event (the venue's clock) to its ts_recv (tickflow's).",
                &self.feed_latency,
            ),
            (
                ALERT_DELIVERED_LATENCY_SECONDS,
                "Time from the triggering tick's ts_event to a notifier confirming the alert's delivery.",
                &self.alert_delivered_latency,
            ),
        ] {
            render_histogram(&mut out, name, help, h);
        }
        out
    }
}

/// Whether a family only counts up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric family's current values: each sample is its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub samples: Vec<(Vec<(&'static str, String)>, u64)>,
}

fn render_histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, c) in h.counts().iter().enumerate() {
        cumulative += c;
        match bucket_secs(i) {
            Some(le) => {
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `name` with exactly `labels`, if present.
    fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        m.families()
            .into_iter()
            .find(|f| f.name == name)?
            .samples
            .into_iter()
            .find(|(l, _)| {
                l.len() == labels.len()
                    && l.iter()
                        .zip(labels)
                        .all(|((k, v), (k2, v2))| k == k2 && v == v2)
            })
            .map(|(_, v)| v)
    }

    #[test]
    fn a_partition_that_takes_appends_does_not_clear_another_that_refuses_them() {
        let f = Failing::default();
        assert!(f.now().is_none());
        f.fail(1, "partition 1: broker away");
        f.clear(0);
        f.clear(2);
        let now = f.now().expect("partition 1 still failing");
        assert_eq!(
            (now.attempts, now.error.as_str()),
            (1, "partition 1: broker away")
        );
        f.fail(2, "partition 2: timed out");
        f.fail(1, "partition 1: refused");
        let now = f.now().unwrap();
        assert_eq!(
            (now.attempts, now.error.as_str()),
            (3, "partition 1: refused")
        );
        f.clear(1);
        assert_eq!(f.now().unwrap().attempts, 1);
        f.clear(2);
        assert!(f.now().is_none());
    }

    #[test]
    fn counts_by_label_and_renders_histograms() {
        let m = Metrics::default();
        m.ingested.add("http", 3);
        m.reject(RejectReason::Late, 2);
        m.latency.observe_n(4_000_000, 4); // 4 ms, into the 5 ms bucket
        m.alert_latency
            .observe_since(10_000_000, [9_000_000i64, 11_000_000].into_iter());
        assert_eq!(value(&m, INGESTED_TOTAL, &[("source", "http")]), Some(3));
        assert_eq!(value(&m, REJECTED_TOTAL, &[("reason", "late")]), Some(2));
        assert_eq!(
            value(&m, REJECTED_TOTAL, &[("reason", "crossed_quote")]),
            Some(0),
            "every reason, zeros too"
        );
        let text = m.render_histograms();
        assert!(text.contains("tickflow_process_latency_seconds_bucket{le=\"0.003\"} 0"));
        assert!(text.contains("tickflow_process_latency_seconds_bucket{le=\"0.005\"} 4"));
        assert!(text.contains("tickflow_process_latency_seconds_count 4"));
        let p50 = m.latency.quantile(0.5).unwrap();
        assert!((0.003..=0.005).contains(&p50), "{p50}");
        // 1 ms ago lands in the 1 ms bucket; a receive time in the future counts as 0.
        assert!(text.contains("tickflow_alert_latency_seconds_bucket{le=\"0.00005\"} 1"));
        assert!(text.contains("tickflow_alert_latency_seconds_bucket{le=\"0.001\"} 2"));
        assert!(text.contains("tickflow_log_latency_seconds_count 0"));
        m.sink_rows.add("csv", 7);
        m.sink_lag_rows.get("csv").store(3, Ordering::Relaxed);
        m.alert_deliveries.add("ops/retry", 2);
        assert_eq!(value(&m, SINK_ROWS_TOTAL, &[("sink", "csv")]), Some(7));
        assert_eq!(value(&m, SINK_LAG_ROWS, &[("sink", "csv")]), Some(3));
        assert_eq!(
            value(
                &m,
                ALERT_DELIVERIES_TOTAL,
                &[("channel", "ops"), ("status", "retry")]
            ),
            Some(2)
        );
        let kinds: Vec<(&str, Kind)> = m.families().iter().map(|f| (f.name, f.kind)).collect();
        assert!(kinds.contains(&(SINK_LAG_ROWS, Kind::Gauge)));
        assert!(kinds.contains(&(LOG_LAG, Kind::Gauge)));
        assert!(kinds.contains(&(SINK_ROWS_TOTAL, Kind::Counter)));
    }
}
