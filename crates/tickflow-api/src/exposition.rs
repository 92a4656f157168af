//! `/metrics`: the pipeline's counters and gauges rendered by metrics-exporter-prometheus,
//! followed by its latency histograms.
//!
//! The pipeline keeps its counts in atomics it also reads for `/api/v1/status`, so the two
//! always agree and counting costs the hot paths one relaxed add. At each scrape their
//! current values go to a recorder of this server's own (not the process-wide one, so
//! pipelines in one process never mix), whose handle renders them. Histograms stay bucketed
//! in the pipeline: see [`tickflow_core::metrics::Metrics::render_histograms`].
//!
//! The server a process starts first also becomes the process's `metrics` recorder, so a
//! connector may count with `metrics::counter!("tickflow_reconnects_total", "source" => id)`
//! and find it in `/metrics` beside the pipeline's own.

use std::sync::Arc;

use metrics::{Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tickflow_core::metrics::{Family, Kind, Metrics};

/// Where every family is registered; metrics of a server of its own.
#[derive(Clone)]
pub(crate) struct Exporter {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

static METADATA: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

impl Exporter {
    pub(crate) fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Self {
            recorder: Arc::new(recorder),
            handle,
        }
    }

    /// Makes this the process's recorder for the `metrics` macros, unless one already is.
    pub(crate) fn install_global(&self) -> bool {
        metrics::set_global_recorder(Arc::clone(&self.recorder)).is_ok()
    }

    /// Every family of `metrics` as it stands now, then its histograms.
    pub(crate) fn render(&self, metrics: &Metrics) -> String {
        for family in metrics.families() {
            self.record(&family);
        }
        let mut out = self.handle.render();
        out.push_str(&metrics.render_histograms());
        out
    }

    /// Sets a gauge of this server's own (not the pipeline's), shown by the next render.
    pub(crate) fn gauge(&self, name: &'static str, help: &'static str, value: f64) {
        self.recorder.describe_gauge(
            KeyName::from_const_str(name),
            None,
            SharedString::const_str(help),
        );
        self.recorder
            .register_gauge(&Key::from_static_name(name), &METADATA)
            .set(value);
    }

    fn record(&self, family: &Family) {
        let name = KeyName::from_const_str(family.name);
        let help = SharedString::const_str(family.help);
        match family.kind {
            Kind::Counter => self.recorder.describe_counter(name, None, help),
            Kind::Gauge => self.recorder.describe_gauge(name, None, help),
        }
        for (labels, value) in &family.samples {
            let labels: Vec<Label> = labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.clone()))
                .collect();
            let key = Key::from_parts(family.name, labels);
            match family.kind {
                Kind::Counter => self
                    .recorder
                    .register_counter(&key, &METADATA)
                    .absolute(*value),
                Kind::Gauge => self
                    .recorder
                    .register_gauge(&key, &METADATA)
                    .set(*value as f64),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tickflow_model::RejectReason;

    use super::*;

    #[test]
    fn renders_each_family_with_its_labels_help_and_kind() {
        let m = Metrics::default();
        m.ingested.add("http", 3);
        m.reject(RejectReason::Late, 2);
        m.sink_rows.add("csv", 7);
        m.sink_lag_rows.get("csv").store(30_000, Ordering::Relaxed);
        m.alert_deliveries.add("ops/ok", 20);
        m.latency.observe_n(4_000_000, 4);
        let exporter = Exporter::new();
        let text = exporter.render(&m);
        for line in [
            "# TYPE tickflow_ingested_total counter",
            "# HELP tickflow_ingested_total Events accepted into the durable log.",
            "tickflow_ingested_total{source=\"http\"} 3",
            "tickflow_rejected_total{reason=\"late\"} 2",
            "tickflow_rejected_total{reason=\"crossed_quote\"} 0",
            "tickflow_sink_rows_total{sink=\"csv\"} 7",
            "# TYPE tickflow_sink_lag_rows gauge",
            "tickflow_sink_lag_rows{sink=\"csv\"} 30000",
            "tickflow_alert_deliveries_total{channel=\"ops\",status=\"ok\"} 20",
            "tickflow_log_lag{consumer=\"processor\"} 0",
            "tickflow_lake_compactions_total 0",
            "tickflow_process_latency_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
        }
        // A scrape shows the counts as they are now, gauges going down too.
        m.ingested.add("http", 2);
        m.sink_lag_rows.get("csv").store(0, Ordering::Relaxed);
        let text = exporter.render(&m);
        assert!(
            text.contains("tickflow_ingested_total{source=\"http\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("tickflow_sink_lag_rows{sink=\"csv\"} 0\n"),
            "{text}"
        );
    }

    /// The only test here that installs a recorder for the whole process.
    #[test]
    fn connectors_counting_with_the_metrics_macros_show_up_too() {
        let exporter = Exporter::new();
        assert!(exporter.install_global());
        assert!(!Exporter::new().install_global(), "the first one stays");
        metrics::counter!("tickflow_reconnects_total", "source" => "alpaca", "reason" => "timeout")
            .increment(2);
        let text = exporter.render(&Metrics::default());
        assert!(
            text.contains("tickflow_reconnects_total{source=\"alpaca\",reason=\"timeout\"} 2\n"),
            "{text}"
        );
    }
}
