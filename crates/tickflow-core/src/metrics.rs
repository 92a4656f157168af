//! Metric names and the counters behind them, rendered in the Prometheus text format.
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
pub const REJECTED_TOTAL: &str = "tickflow_rejected_total";
pub const DUPLICATES_TOTAL: &str = "tickflow_duplicates_total";
pub const LOG_LAG: &str = "tickflow_log_lag";
pub const LOG_APPENDED_TOTAL: &str = "tickflow_log_appended_total";
pub const PROCESSED_TOTAL: &str = "tickflow_processed_total";
pub const PROCESS_LATENCY_SECONDS: &str = "tickflow_process_latency_seconds";
pub const SINK_ERRORS_TOTAL: &str = "tickflow_sink_errors_total";
pub const ALERTS_TOTAL: &str = "tickflow_alerts_total";
pub const ALERT_DELIVERIES_TOTAL: &str = "tickflow_alert_deliveries_total";
pub const ROWS_WRITTEN_TOTAL: &str = "tickflow_lake_rows_written_total";
pub const LAKE_FILES_TOTAL: &str = "tickflow_lake_files_written_total";
pub const LAKE_FLUSHES_TOTAL: &str = "tickflow_lake_flushes_total";
pub const HTTP_REQUESTS_TOTAL: &str = "tickflow_http_requests_total";

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

/// Upper bounds of the latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
    5.0, 10.0, 30.0, 60.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records `n` observations of the same duration.
    pub fn observe_n(&self, nanos: u64, n: u64) {
        let secs = nanos as f64 / 1e9;
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(nanos.saturating_mul(n), Ordering::Relaxed);
    }

    /// Records many durations, counting locally first so the shared counters are touched
    /// once per bucket rather than once per value.
    pub fn observe_all(&self, nanos: impl Iterator<Item = u64>) {
        let mut counts = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut sum = 0u64;
        for n in nanos {
            let secs = n as f64 / 1e9;
            counts[LATENCY_BUCKETS
                .iter()
                .position(|&b| secs <= b)
                .unwrap_or(LATENCY_BUCKETS.len())] += 1;
            sum = sum.saturating_add(n);
        }
        for (bucket, c) in self.buckets.iter().zip(counts) {
            if c > 0 {
                bucket.fetch_add(c, Ordering::Relaxed);
            }
        }
        self.sum_nanos.fetch_add(sum, Ordering::Relaxed);
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
            let lo = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
            let hi = LATENCY_BUCKETS.get(i).copied().unwrap_or(lo * 2.0);
            return Some(lo + (hi - lo) * ((rank - seen) / c as f64));
        }
        seen = next;
    }
    None
}

/// Every counter the running pipeline keeps; one instance shared by all components.
#[derive(Debug, Default)]
pub struct Metrics {
    pub ingested: Labeled,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    pub duplicates: AtomicU64,
    pub log_appended: AtomicU64,
    pub log_lag: AtomicU64,
    pub processed: AtomicU64,
    pub latency: Histogram,
    pub sink_errors: Labeled,
    pub alerts: Labeled,
    pub alert_deliveries: Labeled,
    pub rows_written: Labeled,
    /// Rows produced by processing, by table, durable or not yet.
    pub rows_produced: Labeled,
    pub lake_files: AtomicU64,
    pub lake_flushes: AtomicU64,
    pub http_requests: Labeled,
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

    /// The Prometheus text exposition of every metric.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let labeled =
            |out: &mut String, name: &str, label: &str, help: &str, values: Vec<(String, u64)>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (k, v) in values {
                    let _ = writeln!(
                        out,
                        "{name}{{{label}=\"{}\"}} {v}",
                        k.replace('\\', "\\\\").replace('"', "\\\"")
                    );
                }
            };
        labeled(
            &mut out,
            INGESTED_TOTAL,
            "source",
            "Events accepted into the durable log.",
            self.ingested.snapshot(),
        );
        let rejects = RejectReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), self.rejected(*r)))
            .collect();
        labeled(
            &mut out,
            REJECTED_TOTAL,
            "reason",
            "Events sent to the DLQ.",
            rejects,
        );
        labeled(
            &mut out,
            SINK_ERRORS_TOTAL,
            "sink",
            "Failed sink writes (retried).",
            self.sink_errors.snapshot(),
        );
        labeled(
            &mut out,
            ALERTS_TOTAL,
            "rule",
            "Alerts fired.",
            self.alerts.snapshot(),
        );
        labeled(
            &mut out,
            ROWS_WRITTEN_TOTAL,
            "table",
            "Rows durably written to the lake.",
            self.rows_written.snapshot(),
        );
        labeled(
            &mut out,
            HTTP_REQUESTS_TOTAL,
            "status",
            "HTTP requests answered.",
            self.http_requests.snapshot(),
        );
        let _ = writeln!(
            out,
            "# HELP {ALERT_DELIVERIES_TOTAL} Alert deliveries by channel and status.\n# TYPE {ALERT_DELIVERIES_TOTAL} counter"
        );
        for (k, v) in self.alert_deliveries.snapshot() {
            let (channel, status) = k.split_once('/').unwrap_or((&k, "ok"));
            let _ = writeln!(
                out,
                "{ALERT_DELIVERIES_TOTAL}{{channel=\"{channel}\",status=\"{status}\"}} {v}"
            );
        }
        let plain = [
            (
                DUPLICATES_TOTAL,
                "counter",
                "Events dropped as duplicates of a natural key already seen.",
                &self.duplicates,
            ),
            (
                LOG_APPENDED_TOTAL,
                "counter",
                "Records appended to the durable log.",
                &self.log_appended,
            ),
            (
                PROCESSED_TOTAL,
                "counter",
                "Log records processed.",
                &self.processed,
            ),
            (
                LAKE_FILES_TOTAL,
                "counter",
                "Parquet files written.",
                &self.lake_files,
            ),
            (
                LAKE_FLUSHES_TOTAL,
                "counter",
                "Lake flushes committed.",
                &self.lake_flushes,
            ),
        ];
        for (name, kind, help, value) in plain {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP {LOG_LAG} Records appended but not yet processed.\n# TYPE {LOG_LAG} gauge\n{LOG_LAG}{{consumer=\"processor\"}} {}",
            self.log_lag.load(Ordering::Relaxed)
        );
        let name = PROCESS_LATENCY_SECONDS;
        let _ = writeln!(
            out,
            "# HELP {name} Time from ts_recv to durable in the lake.\n# TYPE {name} histogram"
        );
        let counts = self.latency.counts();
        let mut cumulative = 0;
        for (i, c) in counts.iter().enumerate() {
            cumulative += c;
            match LATENCY_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.latency.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.ingested.add("http", 3);
        m.reject(RejectReason::Late, 2);
        m.latency.observe_n(3_000_000, 4); // 3 ms, into the 5 ms bucket
        let text = m.render_prometheus();
        assert!(
            text.contains("tickflow_ingested_total{source=\"http\"} 3"),
            "{text}"
        );
        assert!(text.contains("tickflow_rejected_total{reason=\"late\"} 2"));
        assert!(text.contains("tickflow_rejected_total{reason=\"crossed_quote\"} 0"));
        assert!(text.contains("tickflow_process_latency_seconds_bucket{le=\"0.002\"} 0"));
        assert!(text.contains("tickflow_process_latency_seconds_bucket{le=\"0.005\"} 4"));
        assert!(text.contains("tickflow_process_latency_seconds_count 4"));
        let p50 = m.latency.quantile(0.5).unwrap();
        assert!((0.002..=0.005).contains(&p50), "{p50}");
    }
}
