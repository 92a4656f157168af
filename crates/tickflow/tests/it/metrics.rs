//! `/metrics` read by a Prometheus text-format parser, after a known input.

use std::collections::HashMap;

use prometheus_parse::{Scrape, Value};

use crate::support::{Server, config, http};

/// Every sample of a scrape, keyed `name{label=value,…}` with labels sorted; histograms by
/// `name{le=…}` for each bucket.
fn scrape(url: &str) -> HashMap<String, f64> {
    let (code, body) = http("GET", &format!("{url}/metrics"), None);
    assert_eq!(code, 200, "{body}");
    let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{body}"));
    let mut out = HashMap::new();
    for sample in parsed.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let key = |extra: &str| {
            let mut all = labels.clone();
            if !extra.is_empty() {
                all.push(extra.to_string());
            }
            format!("{}{{{}}}", sample.metric, all.join(","))
        };
        match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => {
                out.insert(key(""), v);
            }
            Value::Histogram(buckets) => {
                for b in buckets {
                    out.insert(key(&format!("le={}", b.less_than)), b.count);
                }
            }
            Value::Summary(_) => {}
        }
    }
    out
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| {
        let mut keys: Vec<_> = m.keys().collect();
        keys.sort();
        panic!("{key} is not in /metrics: {keys:#?}")
    })
}

#[test]
fn metrics_parse_and_move_with_a_known_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let csv = dir.path().join("csv");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 50\nsink_buffer_rows = 1000\n\n[[sinks]]\ntype = \"csv\"\nid = \"copy\"\ndir = \"{}\"\n\n[[alerts.threshold]]\nname = \"above-500\"\nsymbol = \"NVDA\"\ncondition = \"price > 500\"\n\n[[notifiers]]\ntype = \"log\"\nid = \"ops\"\n",
                csv.display()
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let before = scrape(&server.url);
    assert_eq!(get(&before, "tickflow_processed_total{}"), 0.0);
    assert_eq!(
        get(&before, "tickflow_sink_buffer_limit_rows{group=sinks}"),
        1000.0
    );
    assert_eq!(
        get(&before, "tickflow_sink_buffer_limit_rows{group=notifiers}"),
        1000.0
    );

    // Four trades stamped five seconds before they are sent: one fires the alert, one is
    // refused for its price.
    let ts = tickflow_model::UnixNanos::now().0 - 5_000_000_000;
    let body: String = [("490", 1), ("510", 2), ("495", 3), ("-1", 4)]
        .iter()
        .map(|(price, id)| {
            format!(
                "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":{},\"price\":\"{price}\",\"size\":\"1\",\"trade_id\":\"{id}\"}}\n",
                ts + id
            )
        })
        .collect();
    let (code, reply) = http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(body.as_bytes()),
    );
    assert_eq!(code, 200, "{reply}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let m = loop {
        let m = scrape(&server.url);
        let done = m
            .get("tickflow_alert_delivered_latency_seconds_count{}")
            .is_some_and(|n| *n >= 1.0)
            && m.get("tickflow_sink_rows_total{sink=copy}")
                .is_some_and(|n| *n >= 3.0)
            && m.get("tickflow_processed_total{}")
                .is_some_and(|n| *n >= 5.0);
        if done {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the alert was not delivered nor the rows copied: {m:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(get(&m, "tickflow_ingested_total{source=http}"), 4.0);
    // The four events, and the notifier's record of its delivery, which goes through the log.
    assert_eq!(get(&m, "tickflow_log_appended_total{}"), 5.0);
    assert_eq!(get(&m, "tickflow_processed_total{}"), 5.0);
    assert_eq!(
        get(&m, "tickflow_rejected_total{reason=non_positive_price}"),
        1.0
    );
    assert_eq!(get(&m, "tickflow_rejected_total{reason=malformed}"), 0.0);
    assert_eq!(get(&m, "tickflow_alerts_total{rule=above-500}"), 1.0);
    assert_eq!(
        get(&m, "tickflow_alert_deliveries_total{channel=ops,status=ok}"),
        1.0
    );
    assert_eq!(
        get(&m, "tickflow_lake_rows_written_total{table=trades}"),
        3.0
    );
    // Each processed event once in the feed histogram, all between 5 and 10 s late.
    assert_eq!(get(&m, "tickflow_feed_latency_seconds_count{}"), 4.0);
    assert_eq!(get(&m, "tickflow_feed_latency_seconds{le=3}"), 0.0);
    assert_eq!(get(&m, "tickflow_feed_latency_seconds{le=10}"), 4.0);
    // The alert's delivery is measured from the tick's event time, so it is at least 5 s.
    assert_eq!(
        get(&m, "tickflow_alert_delivered_latency_seconds_count{}"),
        1.0
    );
    assert_eq!(
        get(&m, "tickflow_alert_delivered_latency_seconds{le=3}"),
        0.0
    );
    // Every record made durable in the log, the delivery's too; one alert raised.
    assert_eq!(get(&m, "tickflow_log_latency_seconds_count{}"), 5.0);
    assert_eq!(get(&m, "tickflow_alert_latency_seconds_count{}"), 1.0);
    let held = get(&m, "tickflow_sink_buffer_rows{group=sinks}");
    assert!((0.0..=1000.0).contains(&held), "{held}");
    server.stop();
}
