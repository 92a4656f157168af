//! Dependencies failing: each one tickflow writes to sits behind the fault proxy, which
//! refuses, resets, blackholes, slows and cuts connections in half in turn while ticks keep
//! arriving. Each time: ingest and the lake carry on, the follower that uses the dependency
//! is retried, counted in `/metrics` and shown in the status and `/readyz`, and once the
//! fault is healed it catches up with nothing lost or doubled (docs/reliability.md). The
//! lake itself on S3 goes through the same faults: ingest is acknowledged into the log all
//! along, and the lake catches up once healed.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;

use tickflow_core::contract::{Fault, Proxy, SmtpServer, mail_header};

use crate::notify::{Answer, Receiver};
use crate::postgres::{fresh_schema, pg_count, pg_sink, pg_trade_seqs};
use crate::streaming::{Dialect, Streaming};
use crate::support::{Server, config, http, lake_trade_seqs, run_ok, sink_counter, sql, wait_for};

/// The follower (sink or notifier) `id` in a status.
fn follower<'a>(s: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    ["sinks", "notifiers"]
        .iter()
        .filter_map(|group| s[group].as_array())
        .flatten()
        .find(|f| f["id"] == id)
        .unwrap_or(&serde_json::Value::Null)
}

fn errors(s: &serde_json::Value, id: &str) -> u64 {
    follower(s, id)["errors"].as_u64().unwrap_or(0)
}

/// Everything the lake committed is written by `id`.
fn caught_up(s: &serde_json::Value, id: &str) -> bool {
    s["log_lag"].as_u64() == Some(0)
        && follower(s, id)["lag_flushes"].as_u64() == Some(0)
        && follower(s, id)["position"].as_u64().is_some()
        && follower(s, id)["state"] == "ok"
}

/// `/readyz`'s check of follower `id`.
fn readiness(server: &Server, id: &str) -> serde_json::Value {
    readiness_where(server, |c| c["id"] == id)
}

/// The first of `/readyz`'s checks that `which` picks.
fn readiness_where(
    server: &Server,
    which: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let (_, body) = http("GET", &format!("{}/readyz", server.url), None);
    let r: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    r["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| which(c)).cloned())
        .unwrap_or_default()
}

/// Peak resident memory of the pipeline process, in MiB.
fn peak_rss_mib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        / 1024
}

/// Injects every fault in turn between the pipeline and the dependency follower `id` uses.
/// Before each, `produce(round)` sends more input and returns how many trades the lake must
/// then hold. Checks that the lake takes them all during the fault, that the follower fails
/// and says so everywhere (except on a slow link, which it must get through), and that it
/// catches up once healed. Returns the follower's errors per fault, for the report.
fn through_every_fault(
    server: &Server,
    proxy: &Proxy,
    id: &str,
    mut produce: impl FnMut(usize) -> u64,
) -> Vec<(Fault, u64)> {
    let mut seen = Vec::new();
    for (round, fault) in Fault::ALL.into_iter().enumerate() {
        let before = errors(&server.status(), id);
        proxy.inject(fault);
        let trades = produce(round);
        wait_for(server, "the lake takes every trade during the fault", |s| {
            s["log_lag"].as_u64() == Some(0) && s["rows_durable"]["trades"].as_u64() == Some(trades)
        });
        if fault.lets_through() {
            wait_for(server, "the follower gets through a slow link", |s| {
                caught_up(s, id)
            });
        } else {
            wait_for(server, "the follower fails and retries", |s| {
                errors(s, id) > before && follower(s, id)["state"] == "retrying"
            });
            let check = readiness(server, id);
            assert!(
                check["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("retrying")),
                "{fault:?}: /readyz does not show it: {check}"
            );
            assert!(
                sink_counter(server, "tickflow_sink_errors_total", id) > before,
                "{fault:?}: not counted"
            );
        }
        proxy.heal();
        wait_for(server, "the follower catches up once healed", |s| {
            caught_up(s, id)
        });
        seen.push((fault, errors(&server.status(), id) - before));
    }
    let peak = peak_rss_mib(server);
    eprintln!(
        "faults before {id}: {seen:?}; {} connections and reads hit; peak RSS {peak} MiB",
        proxy.injected()
    );
    // Bounded by `[lake] sink_buffer_rows`: a follower that fails keeps no backlog of its own.
    assert!(peak < 512, "peak RSS {peak} MiB");
    seen
}

/// Sends `count` trades from `start` through `tickflow produce`.
fn produce(server: &Server, count: u64, start: u64) {
    let out = run_ok(&[
        "produce",
        "--count",
        &count.to_string(),
        "--batch-size",
        "250",
        "--start-seq",
        &start.to_string(),
        "--to",
        &server.url,
    ]);
    assert!(out.contains(&format!("{count} acknowledged")), "{out}");
}

/// `per_round` trades before the faults and during each: returns the trades in all.
fn trades_through_every_fault(server: &Server, proxy: &Proxy, id: &str, per_round: u64) -> u64 {
    produce(server, per_round, 0);
    wait_for(server, "the sink writes the first rows", |s| {
        caught_up(s, id)
    });
    let errors = through_every_fault(server, proxy, id, |round| {
        let start = per_round * (round as u64 + 1);
        produce(server, per_round, start);
        start + per_round
    });
    assert!(
        errors.iter().filter(|(_, n)| *n > 0).count() >= 4,
        "{errors:?}"
    );
    per_round * (Fault::ALL.len() as u64 + 1)
}

#[test]
fn postgres_behind_every_fault_gets_every_row_once() {
    let Some(schema) = fresh_schema("faults") else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:5432");
    let through = format!("postgres://postgres@127.0.0.1:{}/test", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let sink = pg_sink(&schema, &through, "[\"trades\", \"alerts\"]")
        .replace("timeout_secs = 10", "timeout_secs = 5");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\nsink_buffer_rows = 1000\n\n[[alerts.threshold]]\nname = \"nvda-above-1\"\nsymbol = \"NVDA\"\ncondition = \"price > 1\"\n{sink}"
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let trades = trades_through_every_fault(&server, &proxy, "pg", 2000);
    server.stop();
    assert_eq!(trades, 12_000);
    assert_eq!(
        pg_trade_seqs(&schema),
        lake_trade_seqs(&data).into_iter().collect::<HashSet<u64>>(),
        "PostgreSQL holds exactly the lake's trades"
    );
    assert_eq!(
        pg_count(&format!("SELECT count(*) FROM {schema}.alerts")) as usize,
        sql(&data, "SELECT alert_id FROM alerts").len()
    );
}

#[test]
fn dynamodb_behind_every_fault_gets_every_trade_once() {
    let Some(aws) = crate::aws::moto() else {
        return;
    };
    let endpoint = aws.endpoint.clone().unwrap();
    let proxy = Proxy::start(endpoint.trim_start_matches("http://"));
    let tables = crate::aws::unique("tffault");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\nsink_buffer_rows = 1000\n\n[[sinks]]\ntype = \"dynamodb\"\nid = \"ddb\"\ntables = {{ trades = \"{tables}-trades\" }}\nstate_table = \"{tables}-state\"\nendpoint = \"http://127.0.0.1:{}\"\ntimeout_ms = 1000\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
                proxy.port
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let trades = trades_through_every_fault(&server, &proxy, "ddb", 300);
    server.stop();
    let ddb = tickflow_aws::Client::new(
        &aws,
        tickflow_aws::Service::DynamoDb,
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(
        crate::aws::dynamo_count(&ddb, &format!("{tables}-trades")),
        trades,
        "every trade once in DynamoDB"
    );
}

/// `n` trades of round `round`, each of its own symbol and above 100: each fires one alert.
fn alerting_trades(round: usize, n: u64) -> String {
    let now = tickflow_model::UnixNanos::now().0 as u64;
    (0..n)
        .map(|i| {
            format!(
                "{{\"type\":\"trade\",\"symbol\":\"R{round}S{i:02}\",\"ts_event\":{},\"price\":\"{}\",\"size\":\"1\"}}\n",
                now - (n - i) * 1_000_000,
                300 + i
            )
        })
        .collect()
}

/// A pipeline whose threshold alert fires on every trade above 100, with `notifier`.
fn alerting_config(data: &std::path::Path, notifier: &str) -> String {
    config(
        data,
        &format!(
            "\n[lake]\nflush_interval_ms = 100\n\n[[alerts.threshold]]\nname = \"above-100\"\ncondition = \"price > 100\"\ncooldown_secs = 0\n{notifier}"
        ),
    )
}

/// Sends 10 alerting trades per round through every fault; returns the alert ids stored.
fn alerts_through_every_fault(server: &Server, proxy: &Proxy, id: &str) -> Vec<String> {
    let ingest = |round: usize| {
        let (code, body) = http(
            "POST",
            &format!("{}/api/v1/ingest", server.url),
            Some(alerting_trades(round, 10).as_bytes()),
        );
        assert_eq!(code, 200, "{body}");
    };
    ingest(0);
    wait_for(server, "the first alerts delivered", |s| caught_up(s, id));
    through_every_fault(server, proxy, id, |round| {
        ingest(round + 1);
        10 * (round as u64 + 2)
    });
    let (code, body) = http(
        "POST",
        &format!("{}/api/v1/sql", server.url),
        Some(br#"{"sql":"SELECT alert_id FROM alerts"}"#),
    );
    assert_eq!(code, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<String> = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 60, "one alert per trade above 100");
    ids
}

/// Every alert arrived; a repeat (a delivery the notifier gave up on that had in fact gone
/// through, held by a blackhole) carries the alert's own key. Returns the repeats.
fn each_arrived(arrived: &HashMap<String, usize>, expected: &[String]) -> usize {
    let expected: HashSet<&String> = expected.iter().collect();
    let got: HashSet<&String> = arrived.keys().collect();
    assert_eq!(got, expected, "the alerts that arrived");
    arrived.values().map(|n| n - 1).sum()
}

#[test]
fn a_webhook_behind_every_fault_gets_every_alert() {
    let receiver = Receiver::start(TcpListener::bind("127.0.0.1:0").unwrap(), |_| {
        Answer::Accept
    });
    let proxy = Proxy::start(&format!("127.0.0.1:{}", receiver.port()));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let notifier = format!(
        "\n[[notifiers]]\ntype = \"webhook\"\nid = \"ops\"\nurl = \"http://127.0.0.1:{}/hook\"\ntimeout_ms = 1000\nmax_attempts = 1000\nretry_max_ms = 200\n",
        proxy.port
    );
    std::fs::write(&cfg, alerting_config(&data, &notifier)).unwrap();
    let server = Server::start(&cfg, &data);
    let ids = alerts_through_every_fault(&server, &proxy, "ops");
    server.stop();
    let keys: Vec<String> = ids.iter().map(|id| format!("{id}:ops")).collect();
    let repeats = each_arrived(&receiver.accepted(), &keys);
    eprintln!("webhook: 60 alerts, {repeats} repeated deliveries");
}

#[test]
fn a_mail_server_behind_every_fault_gets_every_alert() {
    let mail = tempfile::tempdir().unwrap();
    let Some(smtp) = SmtpServer::start(mail.path()) else {
        return;
    };
    let proxy = Proxy::start(&format!("127.0.0.1:{}", smtp.port));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let notifier = format!(
        "\n[[notifiers]]\ntype = \"email\"\nid = \"desk\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"alerts@example.com\"\nto = [\"desk@example.com\"]\ntimeout_ms = 1000\nmax_attempts = 1000\nretry_max_ms = 200\n",
        proxy.port
    );
    std::fs::write(&cfg, alerting_config(&data, &notifier)).unwrap();
    let server = Server::start(&cfg, &data);
    let ids = alerts_through_every_fault(&server, &proxy, "desk");
    server.stop();
    let mut arrived: HashMap<String, usize> = HashMap::new();
    for m in smtp.messages() {
        let id = mail_header(&m, "Message-ID").expect("a Message-ID");
        *arrived.entry(id.to_string()).or_default() += 1;
    }
    // The Message-ID is made from the alert's key, the same on every attempt.
    let keys: Vec<String> = ids
        .iter()
        .map(|id| tickflow_notify::email::message_id(&format!("{id}:desk")))
        .collect();
    let repeats = each_arrived(&arrived, &keys);
    eprintln!("mail: 60 alerts, {repeats} repeated deliveries");
}

/// The SNS notifier on moto behind every fault: every alert is published once healed; a
/// topic's subscribed queue, read past the proxy, shows what arrived.
#[test]
fn an_sns_topic_behind_every_fault_gets_every_alert() {
    let Some(aws) = crate::aws::moto() else {
        return;
    };
    let endpoint = aws.endpoint.clone().unwrap();
    let proxy = Proxy::start(endpoint.trim_start_matches("http://"));
    let wait = std::time::Duration::from_secs(30);
    let sqs = tickflow_aws::Client::new(&aws, tickflow_aws::Service::Sqs, wait).unwrap();
    let sns = tickflow_aws::Client::new(&aws, tickflow_aws::Service::Sns, wait).unwrap();
    let (topic, watch) = crate::aws::watched_topic(&sqs, &sns, "faults");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let notifier = format!(
        "\n[[notifiers]]\ntype = \"sns\"\nid = \"sns\"\ntopic_arn = \"{topic}\"\ntimeout_ms = 1000\nmax_attempts = 1000\nretry_max_ms = 200\nendpoint = \"http://127.0.0.1:{}\"\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
        proxy.port
    );
    std::fs::write(&cfg, alerting_config(&data, &notifier)).unwrap();
    let server = Server::start(&cfg, &data);
    let ids = alerts_through_every_fault(&server, &proxy, "sns");
    server.stop();
    let mut arrived: HashMap<String, usize> = HashMap::new();
    for m in crate::aws::drain(&sqs, &watch) {
        let envelope: serde_json::Value =
            serde_json::from_str(m["Body"].as_str().unwrap()).unwrap();
        let key = envelope["MessageAttributes"]["idempotency_key"]["Value"]
            .as_str()
            .unwrap()
            .to_string();
        *arrived.entry(key).or_default() += 1;
    }
    let keys: Vec<String> = ids.iter().map(|id| format!("{id}:sns")).collect();
    let repeats = each_arrived(&arrived, &keys);
    eprintln!("sns: 60 alerts, {repeats} repeated publishes");
}

/// The NATS source behind every fault, while trades keep being published to its stream
/// straight (not through the proxy): it fails, is retried and counted, the status and
/// `/readyz` say so, and once healed every trade is stored once.
/// When a source's input for a round is sent: while the fault lasts, or just before it is
/// injected (a broker that the test's own producer reaches through the same proxy).
#[derive(Clone, Copy, PartialEq, Eq)]
enum When {
    During,
    Before,
}

/// Injects every fault in turn between the source `id` and its upstream. Each round,
/// `publish(start)` sends `per_round` trades numbered from `start`. Checks that the source
/// fails and says so in the status, `/readyz` and `tickflow_reconnects_total` (except on a
/// slow link, which it must get through), that once healed it stores the round, and at the
/// end that the lake holds every trade once and that most faults were noticed.
fn source_through_every_fault(
    server: &Server,
    proxy: &Proxy,
    id: &str,
    per_round: u64,
    when: When,
    publish: impl Fn(u64),
) {
    publish(0);
    wait_for(server, "the first trades in the lake", |s| {
        s["rows_durable"]["trades"].as_u64() == Some(per_round)
    });
    let mut seen = Vec::new();
    for (round, fault) in Fault::ALL.into_iter().enumerate() {
        let before = reconnects(server, id);
        let start = per_round * (round as u64 + 1);
        if when == When::Before {
            publish(start);
        }
        proxy.inject(fault);
        if when == When::During {
            publish(start);
        }
        if !fault.lets_through() {
            wait_for(server, "the source fails and retries", |s| {
                source(s, id)["reconnecting"]["attempts"]
                    .as_u64()
                    .is_some_and(|n| n > 0)
            });
            let check = readiness_where(server, |c| c["id"] == id);
            assert!(
                check["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("reconnecting")),
                "{fault:?}: /readyz does not show it: {check}"
            );
            let after = reconnects(server, id);
            assert!(
                after.values().sum::<u64>() > before.values().sum::<u64>(),
                "{fault:?}: not counted: {after:?}"
            );
        }
        proxy.heal();
        let total = start + per_round;
        wait_for(server, "every trade in the lake once healed", |s| {
            s["log_lag"].as_u64() == Some(0)
                && s["rows_durable"]["trades"].as_u64() == Some(total)
                && source(s, id)["reconnecting"].is_null()
        });
        let after = reconnects(server, id);
        seen.push((
            fault,
            after.values().sum::<u64>() - before.values().sum::<u64>(),
        ));
    }
    let total = per_round * (Fault::ALL.len() as u64 + 1);
    let rows = crate::support::api_rows(
        &server.url,
        "SELECT count(*) AS n, count(DISTINCT seq) AS d FROM trades",
    );
    assert_eq!(rows[0]["n"].as_u64(), Some(total), "{rows}");
    assert_eq!(rows[0]["d"].as_u64(), Some(total), "{rows}");
    assert!(seen.iter().filter(|(_, n)| *n > 0).count() >= 4, "{seen:?}");
    eprintln!(
        "faults before the source {id}: reconnects per fault {seen:?}; {} duplicates dropped; {} connections and reads hit; peak RSS {} MiB",
        server.status()["duplicates"],
        proxy.injected(),
        peak_rss_mib(server)
    );
}

#[test]
fn a_nats_source_behind_every_fault_stores_every_trade_once() {
    let Some(url) = crate::nats::server() else {
        return;
    };
    let proxy = Proxy::start(url.trim_start_matches("nats://"));
    let unique = format!(
        "{}_{}",
        std::process::id(),
        tickflow_model::UnixNanos::now().0
    );
    let subject = format!("tffault.{unique}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\n\n[[sources]]\ntype = \"nats\"\nid = \"market\"\nurl = \"nats://127.0.0.1:{}\"\nstream = \"TFFAULT_{unique}\"\nsubjects = [\"{subject}.>\"]\nbatch = 100\nretry_max_secs = 1\n",
                proxy.port
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let per_round = 200;
    // The source makes the stream; the producer waits until it takes the subject.
    let publish = |start: u64| {
        let out = run_ok(&[
            "produce",
            "--count",
            &per_round.to_string(),
            "--batch-size",
            "50",
            "--retries",
            "50",
            "--start-seq",
            &start.to_string(),
            "--to",
            &format!("{url}/{subject}.ticks"),
        ]);
        assert!(out.contains(&format!("{per_round} acknowledged")), "{out}");
    };
    source_through_every_fault(&server, &proxy, "market", per_round, When::During, publish);
    server.stop();
}

#[test]
fn a_nats_sink_behind_every_fault_publishes_every_trade_once() {
    let Some(url) = crate::nats::server() else {
        return;
    };
    let proxy = Proxy::start(url.trim_start_matches("nats://"));
    let unique = format!(
        "{}{}",
        std::process::id(),
        tickflow_model::UnixNanos::now().0
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\nsink_buffer_rows = 1000\n\n[[sinks]]\ntype = \"nats\"\nid = \"bus\"\nurl = \"nats://127.0.0.1:{}\"\nsubject_prefix = \"fault{unique}\"\ntables = [\"trades\"]\nstream = \"FAULT_{unique}\"\n",
                proxy.port
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let trades = trades_through_every_fault(&server, &proxy, "bus", 500);
    server.stop();
    // Read back past the proxy. A flush published again after a fault carries the same
    // Nats-Msg-Id, which the stream's duplicate window drops.
    let stored = crate::aws::block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        let mut stream = js.get_stream(format!("FAULT_{unique}")).await.unwrap();
        stream.info().await.unwrap().state.messages
    });
    assert_eq!(stored, trades, "every trade once in the stream");
}

#[cfg(feature = "kafka")]
#[test]
fn a_kafka_sink_behind_every_fault_publishes_every_trade_once() {
    let Some(broker) = crate::kafka::CutBroker::start() else {
        return;
    };
    let brokers = broker.address();
    let unique = format!(
        "{}-{}",
        std::process::id(),
        tickflow_model::UnixNanos::now().0
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\nsink_buffer_rows = 1000\n\n[[sinks]]\ntype = \"kafka\"\nid = \"bus\"\nbrokers = \"{brokers}\"\ntopic_prefix = \"fault-{unique}\"\ntables = [\"trades\"]\ncreate_partitions = 1\noptions = {{ \"message.timeout.ms\" = \"5000\" }}\n"
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let trades = trades_through_every_fault(&server, &broker.proxy, "bus", 500);
    // tansu 0.6 reports a partition's end one batch short once a batch reached it twice (the
    // one a blackhole held, and the retry): the last batch stays unread until another
    // follows. A last trade of its own makes that batch one message, which it does count.
    produce(&server, 1, trades);
    let trades = trades + 1;
    wait_for(&server, "the last trade published", |s| {
        caught_up(s, "bus") && s["rows_durable"]["trades"].as_u64() == Some(trades)
    });
    server.stop();
    let out = tickflow_brokers::kafka::read_all(
        &brokers,
        &format!("fault-{unique}.trades"),
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let ids: HashSet<String> = out
        .iter()
        .filter_map(|m| {
            let id = &m.headers.iter().find(|(k, _)| k == "tickflow-id")?.1;
            Some(id.split_once(":trades:")?.1.to_string())
        })
        .collect();
    let seqs: HashSet<u64> = out
        .iter()
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(&m.payload).ok()?["seq"].as_u64())
        .collect();
    assert_eq!(
        (ids.len() as u64, seqs.len() as u64),
        (trades, trades),
        "every trade published, once by key; {} messages",
        out.len()
    );
    eprintln!(
        "kafka: {trades} trades, {} messages ({} repeated: a delivery that timed out in the client but had reached the broker)",
        out.len(),
        out.len() as u64 - trades
    );
}

#[test]
fn an_s3_json_sink_behind_every_fault_writes_every_trade_once() {
    let Some(aws) = crate::aws::moto() else {
        return;
    };
    let endpoint = aws.endpoint.clone().unwrap();
    let proxy = Proxy::start(endpoint.trim_start_matches("http://"));
    let bucket = tickflow_core::contract::s3_bucket("tf-fault").expect("moto_server answers");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    // A request to a blackholed store fails after timeout_ms, and the sink's own retries
    // take over (docs/storage.md).
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\nsink_buffer_rows = 1000\n\n[[sinks]]\ntype = \"s3_json\"\nid = \"athena\"\nurl = \"s3://{bucket}/processed\"\ntables = [\"trades\"]\nendpoint = \"http://127.0.0.1:{}\"\ntimeout_ms = 1000\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
                proxy.port
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let trades = trades_through_every_fault(&server, &proxy, "athena", 300);
    server.stop();
    let lines = crate::aws::s3_lines(&bucket, "processed/trades/");
    let seqs: HashSet<u64> = lines.iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(lines.len() as u64, trades, "each trade once in the JSON");
    assert_eq!(seqs.len() as u64, trades);
}

/// The lake itself on S3 behind every fault: ingest is acknowledged into the log all along;
/// the lake's writes fail, are retried, counted under `sink="lake"` and named by the
/// status and `/readyz`; once healed every trade is in the lake once.
#[test]
fn the_lake_on_s3_behind_every_fault_keeps_every_trade_once() {
    let Some(aws) = crate::aws::moto() else {
        return;
    };
    let endpoint = aws.endpoint.clone().unwrap();
    let proxy = Proxy::start(endpoint.trim_start_matches("http://"));
    let bucket = tickflow_core::contract::s3_bucket("tf-lakefault").expect("moto_server answers");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\nurl = \"s3://{bucket}/lake\"\nendpoint = \"http://127.0.0.1:{}\"\ntimeout_ms = 1000\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
                proxy.port
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let per_round = 500;
    produce(&server, per_round, 0);
    wait_for(&server, "the first trades in the lake", |s| {
        s["rows_durable"]["trades"].as_u64() == Some(per_round)
    });
    let lake_check = || readiness_where(&server, |c| c["check"] == "lake");
    let mut seen = Vec::new();
    for (round, fault) in Fault::ALL.into_iter().enumerate() {
        let before = sink_counter(&server, "tickflow_sink_errors_total", "lake");
        proxy.inject(fault);
        let start = per_round * (round as u64 + 1);
        // Acknowledged while the lake is away: the log holds it.
        produce(&server, per_round, start);
        let total = start + per_round;
        if !fault.lets_through() {
            wait_for(&server, "the lake's writes fail and are retried", |s| {
                s["lake_retrying"]["attempts"]
                    .as_u64()
                    .is_some_and(|n| n > 0)
            });
            // Within the grace the process stays ready, and says why it may not be.
            let check = lake_check();
            assert!(
                check["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("writes failing") && d.contains("retrying")),
                "{fault:?}: /readyz does not show it: {check}"
            );
            assert!(
                sink_counter(&server, "tickflow_sink_errors_total", "lake") > before,
                "{fault:?}: not counted"
            );
        }
        proxy.heal();
        wait_for(&server, "every trade in the lake once healed", |s| {
            s["log_lag"].as_u64() == Some(0)
                && s["rows_durable"]["trades"].as_u64() == Some(total)
                && s["lake_retrying"].is_null()
        });
        assert_eq!(lake_check()["ok"], true);
        seen.push((
            fault,
            sink_counter(&server, "tickflow_sink_errors_total", "lake") - before,
        ));
    }
    let total = per_round * (Fault::ALL.len() as u64 + 1);
    let rows = crate::support::api_rows(
        &server.url,
        "SELECT count(*) AS n, count(DISTINCT seq) AS d FROM trades",
    );
    let peak = peak_rss_mib(&server);
    server.stop();
    assert_eq!(rows[0]["n"].as_u64(), Some(total), "{rows}");
    assert_eq!(rows[0]["d"].as_u64(), Some(total), "{rows}");
    assert!(seen.iter().filter(|(_, n)| *n > 0).count() >= 4, "{seen:?}");
    eprintln!(
        "faults before the S3 lake: {seen:?}; {} connections and reads hit; peak RSS {peak} MiB",
        proxy.injected()
    );
}

/// The log itself on a broker behind every fault, while `tickflow produce` sends into HTTP
/// ingest: a batch the broker did not store is answered 503 with `Retry-After` and counted
/// (`reason="log_unavailable"`), the status and `/readyz`'s `log` check say so, and the
/// producer sends it again until it is stored. Once healed, every trade is in the lake
/// once: a batch the broker stored without confirming is dropped as a duplicate.
fn a_broker_log_behind_every_fault(log: &str, proxy: &Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!("\n[lake]\nflush_interval_ms = 100\n\n{log}"),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let per_round = 500;
    produce(&server, per_round, 0);
    wait_for(&server, "the first trades in the lake", |s| {
        s["rows_durable"]["trades"].as_u64() == Some(per_round)
    });
    let refused = || {
        crate::support::labelled_counter(
            &server,
            "tickflow_ingest_refused_total",
            "reason",
            "log_unavailable",
        )
    };
    let log_check = || readiness_where(&server, |c| c["check"] == "log");
    let mut seen = Vec::new();
    for (round, fault) in Fault::ALL.into_iter().enumerate() {
        let before = refused();
        proxy.inject(fault);
        let start = per_round * (round as u64 + 1);
        let mut producer = crate::support::bin()
            .args(["produce", "--count", &per_round.to_string()])
            .args(["--batch-size", "250", "--retries", "10000"])
            .args(["--start-seq", &start.to_string(), "--to", &server.url])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        if !fault.lets_through() {
            wait_for(&server, "ingest is refused while the log is away", |s| {
                s["log_retrying"]["attempts"]
                    .as_u64()
                    .is_some_and(|n| n > 0)
            });
            let check = log_check();
            assert_eq!(check["ok"], false, "{fault:?}: {check}");
            assert!(
                check["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("appends failing")),
                "{fault:?}: /readyz does not show it: {check}"
            );
            assert!(refused() > before, "{fault:?}: not counted");
        }
        proxy.heal();
        let status = crate::support::wait_exit(&mut producer, "the producer");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut producer.stdout.take().unwrap(), &mut out).unwrap();
        assert!(status.success(), "{fault:?}: {out}");
        assert!(out.contains(&format!("{per_round} acknowledged")), "{out}");
        let total = start + per_round;
        wait_for(&server, "every trade in the lake once healed", |s| {
            s["log_lag"].as_u64() == Some(0)
                && s["rows_durable"]["trades"].as_u64() == Some(total)
                && s["log_retrying"].is_null()
        });
        assert_eq!(log_check()["ok"], true);
        seen.push((fault, refused() - before));
    }
    let total = per_round * (Fault::ALL.len() as u64 + 1);
    let rows = crate::support::api_rows(
        &server.url,
        "SELECT count(*) AS n, count(DISTINCT seq) AS d FROM trades",
    );
    let status = server.status();
    let peak = peak_rss_mib(&server);
    server.stop();
    assert_eq!(rows[0]["n"].as_u64(), Some(total), "{rows}");
    assert_eq!(rows[0]["d"].as_u64(), Some(total), "{rows}");
    assert!(seen.iter().filter(|(_, n)| *n > 0).count() >= 4, "{seen:?}");
    eprintln!(
        "faults before the log's broker: refused per fault {seen:?}; {} duplicates dropped; {} connections and reads hit; peak RSS {peak} MiB",
        status["duplicates"],
        proxy.injected()
    );
}

#[test]
fn the_log_on_nats_behind_every_fault_acknowledges_only_what_it_stored() {
    let Some(url) = crate::nats::server() else {
        return;
    };
    let proxy = Proxy::start(url.trim_start_matches("nats://"));
    let log =
        crate::crash::nats_log_section(&format!("nats://127.0.0.1:{}", proxy.port), "tffault");
    a_broker_log_behind_every_fault(&log, &proxy);
}

#[cfg(feature = "kafka")]
#[test]
fn the_log_on_kafka_behind_every_fault_acknowledges_only_what_it_stored() {
    let Some(broker) = crate::kafka::CutBroker::start() else {
        return;
    };
    // A delivery not confirmed in 5 s fails the append (librdkafka's default is 30 s).
    let log = crate::crash::kafka_log_section(&broker.address(), "tffault").replace(
        "\"batch.num.messages\" = \"1\"",
        "\"batch.num.messages\" = \"1\", \"message.timeout.ms\" = \"5000\"",
    );
    assert!(log.contains("message.timeout.ms"), "{log}");
    a_broker_log_behind_every_fault(&log, &broker.proxy);
}

/// Sends `count` trades from `start` to the SQS queue `name` straight (not through the
/// proxy), one message each, as `tickflow produce` does.
fn produce_to_sqs(aws: &tickflow_aws::AwsConfig, name: &str, count: u64, start: u64) {
    let out = run_ok_with_env(
        &[
            "produce",
            "--count",
            &count.to_string(),
            "--batch-size",
            "10",
            "--start-seq",
            &start.to_string(),
            "--to",
            &format!("sqs://{name}"),
        ],
        &[
            ("AWS_ENDPOINT_URL", aws.endpoint.as_deref().unwrap()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    assert!(out.contains(&format!("{count} acknowledged")), "{out}");
}

fn run_ok_with_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = crate::support::bin()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The SQS source behind every fault, while trades keep arriving on the queue: it fails,
/// is retried and counted, the status and `/readyz` say so, and once healed every message
/// is stored once and deleted from the queue. A message received but not deleted before
/// the fault comes back after the visibility timeout (2 s here) and is dropped as a
/// duplicate.
#[test]
fn an_sqs_source_behind_every_fault_stores_every_message_once() {
    let Some(aws) = crate::aws::moto() else {
        return;
    };
    let endpoint = aws.endpoint.clone().unwrap();
    let proxy = Proxy::start(endpoint.trim_start_matches("http://"));
    let sqs = tickflow_aws::Client::new(
        &aws,
        tickflow_aws::Service::Sqs,
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    let name = crate::aws::unique("faults");
    let queue = crate::aws::call(
        &sqs,
        "CreateQueue",
        serde_json::json!({"QueueName": name, "Attributes": {"VisibilityTimeout": "2"}}),
    )["QueueUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\n\n[[sources]]\ntype = \"sqs\"\nid = \"queue\"\nqueue_url = \"{queue}\"\nwait_secs = 1\nretry_max_secs = 1\ntimeout_ms = 1000\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:{}\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
                proxy.port
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let per_round = 100;
    let publish = |start| produce_to_sqs(&aws, &name, per_round, start);
    source_through_every_fault(&server, &proxy, "queue", per_round, When::During, publish);
    // Every message deleted: none waiting, none in flight to come back.
    let left = || {
        let a = crate::aws::call(
            &sqs,
            "GetQueueAttributes",
            serde_json::json!({"QueueUrl": queue, "AttributeNames": ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]}),
        );
        [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        ]
        .map(|k| a["Attributes"][k].as_str().unwrap_or("?").to_string())
    };
    wait_for(&server, "every message deleted from the queue", |_| {
        left() == ["0", "0"]
    });
    server.stop();
}

/// The Kafka source behind every fault (the broker advertises the proxy, so every connection
/// goes through it): librdkafka's errors show as the source reconnecting, a metadata probe
/// clears that once the brokers answer, and a batch whose offsets were not committed before
/// a fault is read again and its repeats dropped. The group's session outlasts the
/// blackhole (30 s): tansu 0.6 gave a static member whose session expired during one no
/// partitions when it rejoined.
#[cfg(feature = "kafka")]
#[test]
fn a_kafka_source_behind_every_fault_stores_every_message_once() {
    let Some(broker) = crate::kafka::CutBroker::start() else {
        return;
    };
    let brokers = broker.address();
    let unique = format!(
        "{}-{}",
        std::process::id(),
        tickflow_model::UnixNanos::now().0
    );
    let topic = format!("fault-in-{unique}");
    let producer =
        tickflow_brokers::kafka::Producer::new(&brokers, &std::collections::BTreeMap::new())
            .unwrap();
    crate::aws::block_on(producer.ensure_topic(&topic, 2)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\n\n[[sources]]\ntype = \"kafka\"\nid = \"market\"\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup = \"g-{unique}\"\nbatch = 100\noptions = {{ \"session.timeout.ms\" = \"30000\" }}\n"
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let per_round = 200;
    let publish = |start: u64| {
        let out = run_ok(&[
            "produce",
            "--count",
            &per_round.to_string(),
            "--batch-size",
            "50",
            "--start-seq",
            &start.to_string(),
            "--to",
            &format!("kafka://{brokers}/{topic}"),
        ]);
        assert!(out.contains(&format!("{per_round} acknowledged")), "{out}");
    };
    source_through_every_fault(
        &server,
        &broker.proxy,
        "market",
        per_round,
        When::Before,
        publish,
    );
    server.stop();
}

/// A quote API on loopback: every GET is answered with a price of its own (`100.000001`,
/// `100.000002`…), so each poll's bar is told apart.
fn quote_api() -> u16 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let served = std::sync::Arc::clone(&served);
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let body = format!("{{\"price\": \"100.{n:06}\"}}");
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// The quote poller behind every fault: each failed poll is counted, the source shows as
/// reconnecting in the status and `/readyz` (a blackhole noticed by the request timeout,
/// the interval here), and once healed it polls again and says so. A poll missed is gone
/// (a quote API has no history), so what must hold is that no poll is stored twice.
#[test]
fn a_quote_poller_behind_every_fault_shows_it_and_polls_again_once_healed() {
    let api = quote_api();
    let proxy = Proxy::start(&format!("127.0.0.1:{api}"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\n\n[[sources]]\ntype = \"rest_poll\"\nid = \"quotes\"\nurl = \"http://127.0.0.1:{}/quote?symbol={{symbol}}\"\nsymbols = [\"IBM\"]\ninterval = \"1s\"\nformat = \"custom\"\nrequests_per_minute = 6000\n[sources.fields]\nprice = \"/price\"\n",
                proxy.port
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let bars = |s: &serde_json::Value| s["rows_durable"]["bars"].as_u64().unwrap_or(0);
    wait_for(&server, "the first polls stored", |s| bars(s) >= 2);
    let failures = |server: &Server| {
        let (_, body) = http("GET", &format!("{}/metrics", server.url), None);
        body.lines()
            .filter(|l| {
                l.starts_with("tickflow_poll_failures_total{") && l.contains("source=\"quotes\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let mut seen = Vec::new();
    for fault in Fault::ALL {
        let before = failures(&server);
        proxy.inject(fault);
        if !fault.lets_through() {
            wait_for(&server, "the poller fails and says so", |s| {
                source(s, "quotes")["reconnecting"]["attempts"]
                    .as_u64()
                    .is_some_and(|n| n > 0)
            });
            let check = readiness_where(&server, |c| c["id"] == "quotes");
            assert!(
                check["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("reconnecting")),
                "{fault:?}: /readyz does not show it: {check}"
            );
            assert!(failures(&server) > before, "{fault:?}: not counted");
        }
        let polled = bars(&server.status());
        proxy.heal();
        wait_for(&server, "polls stored again once healed", |s| {
            bars(s) >= polled + 2 && source(s, "quotes")["reconnecting"].is_null()
        });
        seen.push((fault, failures(&server) - before));
    }
    let rows = crate::support::api_rows(
        &server.url,
        "SELECT count(*) AS n, count(DISTINCT start) AS d, count(DISTINCT close) AS c FROM bars WHERE symbol = 'IBM'",
    );
    server.stop();
    let n = rows[0]["n"].as_u64().unwrap();
    assert!(n >= 12, "{rows}");
    assert_eq!(
        rows[0]["d"].as_u64(),
        Some(n),
        "one bar per poll's second: {rows}"
    );
    assert_eq!(
        rows[0]["c"].as_u64(),
        Some(n),
        "no answer stored twice: {rows}"
    );
    assert!(seen.iter().filter(|(_, n)| *n > 0).count() >= 4, "{seen:?}");
    eprintln!(
        "faults before the quote poller: failed polls per fault {seen:?}; {n} polls stored; {} connections and reads hit",
        proxy.injected()
    );
}

/// `tickflow_reconnects_total{source}` by reason.
fn reconnects(server: &Server, source: &str) -> HashMap<String, u64> {
    let (_, metrics) = http("GET", &format!("{}/metrics", server.url), None);
    let label = format!("source=\"{source}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("tickflow_reconnects_total{") && l.contains(&label))
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?;
            Some((reason.to_string(), l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

fn source<'a>(s: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    s["sources"]
        .as_array()
        .and_then(|all| all.iter().find(|x| x["id"] == id))
        .unwrap_or(&serde_json::Value::Null)
}

/// A pipeline whose source follows `dialect`'s local venue (its id the dialect's name), the
/// stream on `ws_port` and the history at `rest_url`, once trades 1 to `first` are in its
/// lake; with the directory it keeps its data in.
fn following(
    dialect: Dialect,
    venue: &Streaming,
    ws_port: u16,
    rest_url: &str,
    first: u64,
) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let id = format!("{dialect:?}").to_lowercase();
    let entry = match dialect {
        Dialect::Alpaca => {
            "type = \"alpaca\"\nkey = \"PKTEST\"\nsecret = \"s3cret\"\nchannels = [\"trades\"]\n"
        }
        Dialect::Coinbase => "type = \"coinbase\"\n",
        Dialect::Binance => "type = \"binance\"\n",
        Dialect::Polygon => "type = \"polygon\"\nkey = \"PKTEST\"\nchannels = [\"trades\"]\n",
    };
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\n\n[[sources]]\n{entry}id = \"{id}\"\nurl = \"ws://127.0.0.1:{ws_port}\"\nrest_url = \"{rest_url}\"\nsymbols = [\"{}\"]\nretry_max_secs = 1\nping_interval_secs = 1\n",
                dialect.symbol()
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    // A venue streams what happens after a subscription; the first trades wait for one.
    while venue.subscriptions() == 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    venue.publish_up_to(first);
    wait_for(&server, "the first trades in the lake", |s| {
        s["rows_durable"]["trades"].as_u64() == Some(first)
    });
    (dir, server)
}

/// A vendor's stream is a dependency too, read rather than written: behind each fault the
/// source notices (a blackhole by its pings going unanswered), reconnects with backoff, says
/// so in the status, `/readyz` and `/metrics`, and once healed repairs what it missed from
/// the vendor's history, so the lake holds every trade once.
fn a_stream_behind_every_fault_is_repaired(dialect: Dialect) {
    let venue = Streaming::start(dialect);
    let proxy = Proxy::start(&venue.ws_addr);
    let id = format!("{dialect:?}").to_lowercase();
    let per_round = 300;
    let (_dir, server) = following(dialect, &venue, proxy.port, &venue.rest_url, per_round);
    // A quiet link that answers its pings is kept: three pings, no reconnect.
    let (pings, subscriptions) = (venue.pings(), venue.subscriptions());
    wait_for(&server, "three pings on a quiet link", |_| {
        venue.pings() >= pings + 3
    });
    assert_eq!(
        venue.subscriptions(),
        subscriptions,
        "a healthy link was dropped"
    );
    assert!(
        reconnects(&server, &id).is_empty(),
        "{:?}",
        reconnects(&server, &id)
    );
    let mut seen = Vec::new();
    for (round, fault) in Fault::ALL.into_iter().enumerate() {
        let before = reconnects(&server, &id);
        proxy.inject(fault);
        // Published while the link is down: on a stream nobody reads, and in the history.
        let total = per_round * (round as u64 + 2);
        venue.publish_up_to(total);
        if !fault.lets_through() {
            wait_for(&server, "the source reconnects and says why", |s| {
                source(s, &id)["state"] == "reconnecting"
                    && source(s, &id)["reconnecting"]["attempts"]
                        .as_u64()
                        .is_some_and(|n| n >= 2)
            });
            let check = readiness(&server, &id);
            assert!(
                check["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("reconnecting")),
                "{fault:?}: /readyz does not show it: {check}"
            );
            let after = reconnects(&server, &id);
            assert!(
                after.values().sum::<u64>() > before.values().sum::<u64>(),
                "{fault:?}: not counted: {after:?}"
            );
        }
        proxy.heal();
        wait_for(&server, "every trade in the lake once healed", |s| {
            s["log_lag"].as_u64() == Some(0)
                && s["rows_durable"]["trades"].as_u64() == Some(total)
                && source(s, &id)["state"] == "running"
        });
        let after = reconnects(&server, &id);
        let by_reason: Vec<(String, u64)> = after
            .iter()
            .map(|(r, n)| (r.clone(), n - before.get(r).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        seen.push((fault, by_reason));
    }
    let total = per_round * (Fault::ALL.len() as u64 + 1);
    let rows = crate::support::api_rows(
        &server.url,
        "SELECT count(*) AS n, count(DISTINCT trade_id) AS d, min(trade_id::BIGINT) AS lo, max(trade_id::BIGINT) AS hi FROM trades",
    );
    let unsequenced = crate::support::api_rows(
        &server.url,
        "SELECT count(*) AS n FROM trades WHERE seq IS NULL",
    );
    let peak = peak_rss_mib(&server);
    server.stop();
    assert_eq!(rows[0]["n"].as_u64(), Some(total), "{rows}");
    assert_eq!(rows[0]["d"].as_u64(), Some(total), "{rows}");
    assert_eq!(rows[0]["lo"].as_u64(), Some(1), "{rows}");
    assert_eq!(rows[0]["hi"].as_u64(), Some(total), "{rows}");
    assert!(
        seen.iter().filter(|(_, r)| !r.is_empty()).count() >= 4,
        "{seen:?}"
    );
    // Only unanswered pings notice a blackhole.
    assert!(
        seen.iter().any(|(f, r)| *f == Fault::Blackhole
            && r.iter().any(|(reason, _)| reason == "timeout")),
        "{seen:?}"
    );
    if dialect == Dialect::Coinbase {
        // The stream's trades carry the feed's sequence, the history's none: the repaired
        // ones are those the stream missed.
        let repaired = unsequenced[0]["n"].as_u64().unwrap_or(0);
        assert!(repaired >= per_round, "{unsequenced}");
    }
    assert!(peak < 512, "peak RSS {peak} MiB");
    eprintln!(
        "faults before the {dialect:?} stream: reconnects by reason {seen:?}; {} connections and reads hit; peak RSS {peak} MiB",
        proxy.injected()
    );
}

#[test]
fn an_alpaca_stream_behind_every_fault_is_repaired_and_the_lake_holds_every_trade_once() {
    a_stream_behind_every_fault_is_repaired(Dialect::Alpaca);
}

#[test]
fn a_coinbase_stream_behind_every_fault_is_repaired_and_the_lake_holds_every_trade_once() {
    a_stream_behind_every_fault_is_repaired(Dialect::Coinbase);
}

#[test]
fn a_binance_stream_behind_every_fault_is_repaired_and_the_lake_holds_every_trade_once() {
    a_stream_behind_every_fault_is_repaired(Dialect::Binance);
}

/// A vendor's history that fails while the stream comes back holds the stream: the source
/// reconnects, saying why, until the history answers, then repairs the gap and goes on, so
/// nothing the stream missed is lost and nothing streamed after it is late.
#[test]
fn a_stream_waits_for_its_failing_history_and_loses_nothing() {
    let dialect = Dialect::Alpaca;
    let venue = Streaming::start(dialect);
    let stream = Proxy::start(&venue.ws_addr);
    let history = Proxy::start(venue.rest_url.trim_start_matches("http://"));
    let (_dir, server) = following(
        dialect,
        &venue,
        stream.port,
        &format!("http://127.0.0.1:{}", history.port),
        300,
    );

    // The link drops and the history goes with it; trades 301 to 600 are missed.
    stream.inject(Fault::Refuse);
    history.inject(Fault::Refuse);
    venue.publish_up_to(600);
    wait_for(&server, "the source reconnects", |s| {
        source(s, "alpaca")["state"] == "reconnecting"
    });
    // The stream is back, the history is not: each connection is dropped after its repair
    // fails, and the trades it streams (601 on) wait with the gap.
    stream.heal();
    let subscribed = venue.subscriptions();
    wait_for(&server, "two repairs fail and hold the stream", |_| {
        reconnects(&server, "alpaca")
            .get("repair")
            .is_some_and(|n| *n >= 2)
            && venue.subscriptions() >= subscribed + 2
    });
    venue.publish_up_to(900);
    wait_for(
        &server,
        "the status says the repair holds the stream",
        |s| {
            source(s, "alpaca")["reconnecting"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("gap repair failed"))
        },
    );
    let check = readiness(&server, "alpaca");
    assert!(
        check["detail"]
            .as_str()
            .is_some_and(|d| d.contains("gap repair failed")),
        "/readyz does not show it: {check}"
    );
    let (_, body) = http("GET", &format!("{}/api/v1/gaps", server.url), None);
    let gaps: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        gaps.as_array()
            .unwrap()
            .iter()
            .any(|g| g["state"] == "detected"
                && g["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("holding the stream"))),
        "{gaps:#}"
    );
    let held = crate::support::api_rows(&server.url, "SELECT count(*) AS n FROM trades");
    assert_eq!(
        held[0]["n"].as_u64(),
        Some(300),
        "nothing streamed past the gap: {held}"
    );

    history.heal();
    wait_for(
        &server,
        "every trade in the lake once the history is back",
        |s| {
            s["log_lag"].as_u64() == Some(0)
                && s["rows_durable"]["trades"].as_u64() == Some(900)
                && source(s, "alpaca")["state"] == "running"
        },
    );
    let rows = crate::support::api_rows(
        &server.url,
        "SELECT count(*) AS n, count(DISTINCT trade_id) AS d, min(trade_id::BIGINT) AS lo, max(trade_id::BIGINT) AS hi FROM trades",
    );
    let late = crate::support::api_rows(
        &server.url,
        "SELECT count(*) AS n FROM dlq WHERE reason = 'late'",
    );
    let (_, body) = http("GET", &format!("{}/api/v1/gaps", server.url), None);
    let repairs = reconnects(&server, "alpaca");
    server.stop();
    assert_eq!(rows[0]["n"].as_u64(), Some(900), "{rows}");
    assert_eq!(rows[0]["d"].as_u64(), Some(900), "{rows}");
    assert_eq!(rows[0]["lo"].as_u64(), Some(1), "{rows}");
    assert_eq!(rows[0]["hi"].as_u64(), Some(900), "{rows}");
    assert_eq!(late[0]["n"].as_u64(), Some(0), "{late}");
    let gaps: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        gaps.as_array()
            .unwrap()
            .iter()
            .all(|g| g["state"] == "filled"),
        "every gap filled in the end: {gaps:#}"
    );
    eprintln!(
        "a failing history held the stream: reconnects by reason {repairs:?}; {} connections to the history refused",
        history.injected()
    );
}

/// Polygon's history has no trades, so what its stream misses behind a fault is lost; the
/// promise is then that nothing is lost silently: every trade the lake lacks lies in a gap
/// recorded `unfillable`, opened at the last trade passed on.
#[test]
fn a_polygon_stream_behind_every_fault_records_every_trade_it_lost_in_a_gap() {
    let dialect = Dialect::Polygon;
    let venue = Streaming::start(dialect);
    let proxy = Proxy::start(&venue.ws_addr);
    let per_round = 300;
    let (_dir, server) = following(dialect, &venue, proxy.port, &venue.rest_url, per_round);
    let unfillable = |server: &Server| -> Vec<serde_json::Value> {
        let (_, body) = http("GET", &format!("{}/api/v1/gaps", server.url), None);
        let gaps: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        gaps.as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["state"] == "unfillable")
            .cloned()
            .collect()
    };
    // The newest trade the lake holds: a round on a link that lets it through is stored
    // once its last trade is.
    let newest = |server: &Server| {
        crate::support::api_rows(
            &server.url,
            "SELECT max(trade_id::BIGINT) AS hi FROM trades",
        )[0]["hi"]
            .as_u64()
    };
    let mut whole = vec![1..=per_round];
    let mut seen = Vec::new();
    for (round, fault) in Fault::ALL.into_iter().enumerate() {
        let before = reconnects(&server, "polygon");
        proxy.inject(fault);
        let total = per_round * (round as u64 + 2);
        venue.publish_up_to(total);
        if fault.lets_through() {
            whole.push(total - per_round + 1..=total);
            wait_for(&server, "a slow link gets every trade through", |s| {
                s["log_lag"].as_u64() == Some(0) && newest(&server) == Some(total)
            });
        } else {
            wait_for(&server, "the source reconnects and says why", |s| {
                source(s, "polygon")["state"] == "reconnecting"
            });
        }
        proxy.heal();
        let healed = tickflow_model::UnixNanos::now();
        if !fault.lets_through() {
            // Once subscribed again, the gap is recorded: no history of trades to fill it. A
            // gap opened at the same trade as one before is that gap, longer.
            wait_for(&server, "the gap recorded once reconnected", |s| {
                source(s, "polygon")["state"] == "running"
                    && unfillable(&server).iter().any(|g| {
                        tickflow_model::UnixNanos::parse(g["recorded_at"].as_str().unwrap_or(""))
                            .is_ok_and(|at| at > healed)
                    })
            });
        }
        let after = reconnects(&server, "polygon");
        seen.push((
            fault,
            after
                .iter()
                .map(|(r, n)| (r.clone(), n - before.get(r).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect::<Vec<_>>(),
        ));
    }
    // A healthy link again: the last round streams whole.
    let subscribed = venue.subscriptions();
    let total = per_round * (Fault::ALL.len() as u64 + 2);
    venue.publish_up_to(total);
    whole.push(total - per_round + 1..=total);
    wait_for(&server, "the last round in the lake", |s| {
        s["log_lag"].as_u64() == Some(0) && newest(&server) == Some(total)
    });
    // What the lake holds, as SQL sees it once it has caught up with the status.
    let counted = |server: &Server| {
        let rows = crate::support::api_rows(
            &server.url,
            "SELECT count(*) AS n, count(DISTINCT trade_id) AS d FROM trades",
        );
        (rows[0]["n"].as_u64(), rows[0]["d"].as_u64())
    };
    wait_for(&server, "SQL counts what the lake holds", |s| {
        s["log_lag"].as_u64() == Some(0)
            && counted(&server).0 == s["rows_durable"]["trades"].as_u64()
    });
    let status = server.status();
    let stored = status["rows_durable"]["trades"].as_u64().unwrap();
    let sql_saw = counted(&server);
    if sql_saw != (Some(stored), Some(stored)) {
        // Tells a lake holding a trade twice from a query that missed rows.
        let twice = crate::support::api_rows(
            &server.url,
            "SELECT trade_id, count(*) AS c FROM trades GROUP BY trade_id HAVING count(*) > 1 ORDER BY trade_id LIMIT 10",
        );
        panic!(
            "each stored trade once: SQL saw (rows, distinct ids) {sql_saw:?}, the status {stored} rows; ids held twice: {twice}; published flush {}, compactions {}",
            status["published_flush"], status["compactions"]
        );
    }
    let ids: HashSet<u64> = crate::support::api_rows(&server.url, "SELECT trade_id FROM trades")
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["trade_id"].as_str()?.parse().ok())
        .collect();
    let gaps = unfillable(&server);
    let peak = peak_rss_mib(&server);
    server.stop();
    assert_eq!(
        venue.subscriptions(),
        subscribed,
        "the last round on one link"
    );
    assert_eq!(ids.len() as u64, stored, "each stored trade once");
    for round in whole {
        assert!(
            round.clone().all(|id| ids.contains(&id)),
            "{round:?} not whole"
        );
    }
    let span = |g: &serde_json::Value, end: &str| {
        tickflow_model::UnixNanos::parse(g[end].as_str().unwrap()).unwrap()
    };
    for g in &gaps {
        assert_eq!(g["kind"], "trades", "{g}");
        assert!(
            g["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no trades")),
            "{g}"
        );
        // Opened at the last trade passed on.
        assert!(
            ids.iter()
                .any(|id| crate::streaming::when(*id) == span(g, "from")),
            "{g}"
        );
    }
    let lost: Vec<u64> = (1..=total).filter(|id| !ids.contains(id)).collect();
    assert_eq!(lost.len() as u64, total - stored);
    let uncovered: Vec<u64> = lost
        .iter()
        .copied()
        .filter(|id| {
            !gaps
                .iter()
                .any(|g| (span(g, "from")..=span(g, "to")).contains(&crate::streaming::when(*id)))
        })
        .collect();
    assert!(
        uncovered.is_empty(),
        "lost outside any gap: {uncovered:?} {gaps:#?}"
    );
    assert!(!gaps.is_empty(), "{gaps:#?}");
    assert!(peak < 512, "peak RSS {peak} MiB");
    eprintln!(
        "faults before the Polygon stream: reconnects by reason {seen:?}; {} trades stored, {} lost, each in one of {} unfillable gaps; peak RSS {peak} MiB",
        stored,
        lost.len(),
        gaps.len()
    );
}

/// A repair holds the stream, not the link: a venue that drops a connection whose ping goes
/// unanswered (Binance, scaled down to a second) keeps the one whose repair takes longer
/// than that, because the source reads on, answering pings, while it repairs.
#[test]
fn a_repair_longer_than_the_venues_pong_limit_keeps_the_link() {
    let dialect = Dialect::Binance;
    let venue = Streaming::start_strict(dialect);
    let proxy = Proxy::start(&venue.ws_addr);
    let (_dir, server) = following(dialect, &venue, proxy.port, &venue.rest_url, 300);
    // Trades 301 to 600 happen while the link is cut; the next connection repairs them
    // over two history answers of 600 ms each, while the venue pings every 100 ms.
    proxy.inject(Fault::Reset);
    venue.publish_up_to(600);
    wait_for(&server, "the source reconnects", |s| {
        source(s, "binance")["state"] == "reconnecting"
    });
    proxy.heal();
    wait_for(&server, "the gap repaired", |s| {
        s["log_lag"].as_u64() == Some(0)
            && s["rows_durable"]["trades"].as_u64() == Some(600)
            && source(s, "binance")["state"] == "running"
    });
    let subscribed = venue.subscriptions();
    venue.publish_up_to(900);
    wait_for(&server, "the link the repair kept streams on", |s| {
        s["log_lag"].as_u64() == Some(0) && s["rows_durable"]["trades"].as_u64() == Some(900)
    });
    let rows = crate::support::api_rows(
        &server.url,
        "SELECT count(*) AS n, count(DISTINCT trade_id) AS d FROM trades",
    );
    server.stop();
    assert_eq!(
        venue.unanswered(),
        0,
        "the venue dropped a link whose pings went unanswered during the repair"
    );
    assert_eq!(
        venue.subscriptions(),
        subscribed,
        "no reconnect after the repair"
    );
    assert_eq!(rows[0]["n"].as_u64(), Some(900), "{rows}");
    assert_eq!(rows[0]["d"].as_u64(), Some(900), "{rows}");
}
