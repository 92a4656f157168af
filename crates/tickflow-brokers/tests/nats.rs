//! The NATS JetStream source against a real server: 127.0.0.1:4222, or the address in
//! `TICKFLOW_TEST_NATS`. Under CI the server must be there; elsewhere the test says it
//! skipped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, stream};
use tickflow_brokers::nats::{DEFAULT_URL, NatsSource};
use tickflow_core::contract::{Appended, check_source};
use tickflow_model::Event;

fn server() -> Option<String> {
    let url = std::env::var("TICKFLOW_TEST_NATS").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let addr = url.trim_start_matches("nats://");
    if std::net::TcpStream::connect(addr).is_ok() {
        return Some(url);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "NATS JetStream is required under CI at {url}"
    );
    eprintln!("skipped: no NATS server at {url}");
    None
}

fn publish(url: &str, stream_name: &str, subject: &str, payloads: &[&str]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let js = jetstream::new(async_nats::connect(url).await.unwrap());
        js.get_or_create_stream(stream::Config {
            name: stream_name.to_string(),
            subjects: vec![format!("{subject}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
        for payload in payloads {
            let ack = js
                .publish(format!("{subject}.ticks"), payload.to_string().into())
                .await
                .unwrap();
            ack.await.unwrap();
        }
    });
}

/// Runs the source a batch at a time until `records` events and rejects have come.
fn take(source: &NatsSource, records: usize) -> Appended {
    let mut all = Appended::default();
    while all.events.len() + all.rejected.len() < records {
        let got = check_source(Box::new(source.clone()), 1);
        all.events.extend(got.events);
        all.rejected.extend(got.rejected);
        all.batches += got.batches;
    }
    all
}

fn trade_ids(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Trade(t) => t.trade_id.as_deref().map(str::to_string),
            _ => None,
        })
        .collect()
}

#[test]
fn published_ticks_are_appended_once_and_a_bad_message_goes_to_the_dlq_without_blocking() {
    let Some(url) = server() else { return };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("TICKFLOW_TEST_{nanos}");
    let subject = format!("tickflow.test.{nanos}");
    let trade = |id: u32| {
        format!(
            "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":\"2026-12-04T15:00:0{id}Z\",\"price\":\"180.5\",\"size\":\"10\",\"trade_id\":\"{id}\"}}"
        )
    };
    let quote = "{\"type\":\"quote\",\"symbol\":\"BTC/USD\",\"ts_event\":\"2026-12-04T15:00:00Z\",\"bid\":\"97000\",\"bid_size\":\"1\",\"ask\":\"97001\",\"ask_size\":\"2\"}";
    let two = format!("{}\n{}\n", trade(1), trade(2));
    let array = format!("[{}]", trade(3));
    let bad = "{\"type\":\"trade\",\"symbol\":\"NVDA\",\"prcie\":\"1\"}";
    publish(&url, &name, &subject, &[&two, quote, bad, &array]);

    let source = NatsSource {
        url: url.clone(),
        stream: name.clone(),
        subjects: vec![format!("{subject}.>")],
        durable: "tickflow-test".to_string(),
        // Two messages a batch: the four take two runs, the second resuming the consumer.
        batch: 2,
        retry_max: Duration::from_secs(1),
        format: Default::default(),
    };
    let got = take(&source, 5);
    assert_eq!(trade_ids(&got.events), ["1", "2", "3"]);
    assert!(
        got.events
            .iter()
            .any(|e| matches!(e, Event::Quote(q) if q.symbol.as_str() == "BTC-USD")),
        "{:?}",
        got.events
    );
    let [(error, payload)] = &got.rejected[..] else {
        panic!("one message refused: {:?}", got.rejected)
    };
    assert!(error.contains(&format!("{subject}.ticks #3")), "{error}");
    assert!(error.contains("prcie"), "{error}");
    assert_eq!(payload, bad);
    assert!(got.batches >= 2, "resumed across runs: {}", got.batches);

    // What was acknowledged is not delivered again: the next run sees only the new tick.
    publish(&url, &name, &subject, &[&trade(4)]);
    let next = take(&source, 1);
    assert_eq!(trade_ids(&next.events), ["4"]);
    assert!(next.rejected.is_empty());
}

#[test]
fn a_server_cut_away_is_retried_and_nothing_is_lost_or_doubled() {
    let Some(url) = server() else { return };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("TICKFLOW_CUT_{nanos}");
    let subject = format!("tickflow.cut.{nanos}");
    let trade = |id: u32| {
        format!(
            "{{\"type\":\"trade\",\"symbol\":\"AAPL\",\"ts_event\":\"2026-12-04T15:00:0{id}Z\",\"price\":\"190\",\"size\":\"1\",\"trade_id\":\"{id}\"}}"
        )
    };
    publish(&url, &name, &subject, &[&trade(1)]);
    let proxy = tickflow_core::contract::Proxy::start(url.trim_start_matches("nats://"));
    let source = NatsSource {
        url: format!("nats://127.0.0.1:{}", proxy.port),
        stream: name.clone(),
        subjects: vec![format!("{subject}.>")],
        durable: "tickflow-cut".to_string(),
        batch: 10,
        retry_max: Duration::from_millis(200),
        format: Default::default(),
    };
    assert_eq!(trade_ids(&take(&source, 1).events), ["1"]);

    // The server goes away; what is published meanwhile waits in the stream.
    proxy.cut();
    let follower = {
        let source = source.clone();
        std::thread::spawn(move || take(&source, 1))
    };
    publish(&url, &name, &subject, &[&trade(2)]);
    // Long enough for a refused attempt or two; the outcome does not depend on it.
    std::thread::sleep(Duration::from_millis(300));
    proxy.restore();
    let after = follower.join().unwrap();
    assert_eq!(
        trade_ids(&after.events),
        ["2"],
        "the new tick once, the old one not again"
    );
}

#[test]
fn a_batch_a_dead_process_fetched_comes_again_first_not_after_the_ack_wait() {
    let Some(url) = server() else { return };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("TICKFLOW_DEAD_{nanos}");
    let subject = format!("tickflow.dead.{nanos}");
    let trade = |id: u32| {
        format!(
            "{{\"type\":\"trade\",\"symbol\":\"MSFT\",\"ts_event\":\"2026-12-04T15:00:0{id}Z\",\"price\":\"420\",\"size\":\"1\",\"trade_id\":\"{id}\"}}"
        )
    };
    let ticks: Vec<String> = (0..8).map(trade).collect();
    let refs: Vec<&str> = ticks.iter().map(String::as_str).collect();
    publish(&url, &name, &subject, &refs);
    let source = NatsSource {
        url: url.clone(),
        stream: name.clone(),
        subjects: vec![format!("{subject}.>")],
        durable: "tickflow-dead".to_string(),
        batch: 100,
        retry_max: Duration::from_secs(1),
        format: Default::default(),
    };
    // A first run takes the first tick and acknowledges it, creating the durable consumer.
    let first = NatsSource {
        batch: 1,
        ..source.clone()
    };
    assert_eq!(trade_ids(&check_source(Box::new(first), 1).events), ["0"]);
    // A process that fetches the next three and dies before acknowledging them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use futures_util::StreamExt;
        let js = jetstream::new(async_nats::connect(&url).await.unwrap());
        let stream = js.get_stream(&name).await.unwrap();
        let consumer: jetstream::consumer::PullConsumer =
            stream.get_consumer("tickflow-dead").await.unwrap();
        let mut batch = consumer.fetch().max_messages(3).messages().await.unwrap();
        let mut n = 0;
        while let Some(m) = batch.next().await {
            m.unwrap();
            n += 1;
        }
        assert_eq!(n, 3);
    });
    // The next run gets them at once, ahead of the rest, in order: under the ack wait alone
    // (30 s) its batch would hold only the later four.
    let got = check_source(Box::new(source), 1);
    assert_eq!(
        trade_ids(&got.events),
        ["1", "2", "3", "4", "5", "6", "7"],
        "{:?}",
        got.events
    );
}

/// Messages per table under `prefix`, as the stream counts them by subject.
async fn published(url: &str, stream: &str, prefix: &str) -> tickflow_core::contract::Counts {
    use futures_util::TryStreamExt;
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let mut counts = tickflow_core::contract::Counts::new();
    let Ok(stream) = js.get_stream(stream).await else {
        return counts;
    };
    let mut subjects = stream
        .info_with_subjects(format!("{prefix}.>"))
        .await
        .unwrap();
    while let Some((subject, n)) = subjects.try_next().await.unwrap() {
        let table = subject.split('.').nth(1).unwrap().to_string();
        *counts.entry(table).or_default() += n as u64;
    }
    counts
}

#[test]
fn the_nats_sink_keeps_the_sink_contract_by_the_streams_duplicate_window() {
    use tickflow_brokers::nats_sink::{NatsSink, NatsSinkConfig, TABLES};
    let Some(url) = server() else { return };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let (stream, prefix) = (format!("TICKFLOW_OUT_{nanos}"), format!("out{nanos}"));
    let dir = std::env::temp_dir().join(format!("tickflow-nats-sink-{nanos}"));
    let config = NatsSinkConfig {
        url: url.clone(),
        subject_prefix: prefix.clone(),
        tables: TABLES.iter().map(|t| (*t).to_string()).collect(),
        stream: Some(stream.clone()),
        dir: dir.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(tickflow_core::contract::check_sink(
        || NatsSink::new("out", config.clone()),
        async || published(&url, &stream, &prefix).await,
        &TABLES,
    ));
    // Subjects name the table and the symbol; bodies are the rows as JSON.
    rt.block_on(async {
        let js = jetstream::new(async_nats::connect(&url).await.unwrap());
        let s = js.get_stream(&stream).await.unwrap();
        let first = s.get_raw_message(1).await.unwrap();
        let subject = first.subject.to_string();
        assert!(subject.starts_with(&format!("{prefix}.")), "{subject}");
        let symbol = subject.rsplit('.').next().unwrap();
        let body = String::from_utf8(first.payload.to_vec()).unwrap();
        assert!(body.starts_with('{') && body.ends_with('}'), "{body}");
        assert!(
            body.contains(&format!("\"symbol\":\"{symbol}\"")),
            "{subject}: {body}"
        );
        let id = first
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .unwrap_or_default();
        assert!(id.starts_with(&format!("out:1:trades:{symbol}:")), "{id}");
    });
    let _ = std::fs::remove_dir_all(dir);
}
