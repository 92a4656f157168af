//! Kafka on both sides of `tickflow run`: `tickflow produce --to kafka://…` sends while the
//! pipeline is SIGKILLed and restarted; every tick ends up in the lake exactly once, and the
//! Kafka sink publishes every trade back, each `tickflow-id` at least once and none lost.
//! Needs a broker on 127.0.0.1:9092 (or `TICKFLOW_TEST_KAFKA`); `./scripts/test` starts tansu.

use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Server, bin, config, http, live_trades, sql, sql_count, wait_exit, wait_for};

/// tansu 0.6.0, the broker the tests run, gives a batch of several records one offset: its
/// consumers would see only the first. Each record is sent as a batch of its own.
const ONE_RECORD_A_BATCH: &str = "batch.num.messages=1";

pub(crate) fn broker() -> Option<String> {
    let addr = std::env::var("TICKFLOW_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    if std::net::TcpStream::connect(&addr).is_ok() {
        return Some(addr);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "a Kafka broker is required under CI at {addr}: ./scripts/test starts tansu"
    );
    eprintln!("skipped: no Kafka broker at {addr}");
    None
}

#[test]
fn ticks_sent_to_kafka_while_the_pipeline_is_killed_are_stored_once() {
    let Some(brokers) = broker() else { return };
    let unique = format!(
        "{}-{}",
        std::process::id(),
        tickflow_model::UnixNanos::now().0
    );
    let topic = format!("ticks-{unique}");
    let producer = tickflow_brokers::kafka::Producer::new(&brokers, &BTreeMap::new()).unwrap();
    let one_a_batch = ONE_RECORD_A_BATCH.replace('=', "\" = \"");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(producer.ensure_topic(&topic, 3))
        .unwrap();
    // A group of its own: tansu 0.6 never drops a member that died without leaving (it keeps
    // no session timeout), so members killed in earlier runs would hold the partitions of a
    // shared group. A restart within the test is the same static member and takes them back.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 200\n\n[[sources]]\ntype = \"kafka\"\nid = \"market\"\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup = \"tickflow-{unique}\"\nbatch = 2000\n\n[[sinks]]\ntype = \"kafka\"\nid = \"bus\"\nbrokers = \"{brokers}\"\ntopic_prefix = \"out-{unique}\"\ntables = [\"trades\"]\ncreate_partitions = 2\noptions = {{ \"{one_a_batch}\" }}\n"
            ),
        ),
    )
    .unwrap();
    let total = 20_000u64;
    let server = Server::start(&cfg, &data);
    let mut producing = bin()
        .args(["produce", "--count", &total.to_string()])
        .args(["--batch-size", "250", "--retries", "50", "--rate", "10000"])
        .args(["--to", &format!("kafka://{brokers}/{topic}")])
        .args(["--kafka-option", ONE_RECORD_A_BATCH])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_for(&server, "some ticks stored", |s| {
        s["rows_durable"]["trades"].as_i64().unwrap_or(0) > 2_000
    });
    server.kill();
    // The producer goes on sending while no pipeline reads the topic.
    let status = wait_exit(&mut producing, "the producer");
    assert!(status.success(), "produce to Kafka failed: {status}");
    let server = Server::start(&cfg, &data);
    wait_for(&server, "every sent tick stored", |_| {
        live_trades(&server) >= total
    });
    wait_for(&server, "the Kafka sink caught up", |s| {
        s["sinks"]
            .as_array()
            .and_then(|a| a.first())
            .is_some_and(|k| k["lag_flushes"] == 0 && k["position"].as_u64().is_some())
            && s["log_lag"] == 0
    });
    server.stop();
    assert_eq!(
        sql_count(&data, "SELECT count(*) FROM trades") as u64,
        total
    );
    assert_eq!(
        sql_count(&data, "SELECT count(DISTINCT seq) FROM trades") as u64,
        total
    );
    // Every trade published back: each row's id at least once, keyed by its symbol.
    let out = tickflow_brokers::kafka::read_all(
        &brokers,
        &format!("out-{unique}.trades"),
        Duration::from_secs(120),
    )
    .unwrap();
    let ids: HashSet<&str> = out
        .iter()
        .map(|m| {
            assert!(
                m.payload.contains(&format!("\"symbol\":\"{}\"", m.key)),
                "{m:?}"
            );
            m.headers
                .iter()
                .find(|(k, _)| k == "tickflow-id")
                .map(|(_, v)| v.as_str())
                .unwrap()
        })
        .collect();
    let rows: HashSet<&str> = ids
        .iter()
        .map(|id| id.split_once(":trades:").unwrap().1)
        .collect();
    assert_eq!(rows.len() as u64, total, "every trade published back");
}

/// The old pipeline, "Alpaca → Kafka topic market_ticks → consumer → TimescaleDB", with
/// tickflow as the consumer: the old producer's messages read as they are, every trade in
/// PostgreSQL with its exact price, minute bars beside them, and a message the old consumer
/// would have dropped kept in the DLQ with why.
#[test]
fn the_old_market_ticks_topic_flows_into_postgresql_exactly() {
    use crate::postgres::{fresh_schema, pg, pg_count, pg_sink, url};
    let Some(brokers) = broker() else { return };
    let Some(schema) = fresh_schema("market_ticks") else {
        return;
    };
    let unique = format!(
        "{}-{}",
        std::process::id(),
        tickflow_model::UnixNanos::now().0
    );
    let topic = format!("market_ticks-{unique}");
    let options = BTreeMap::from([("batch.num.messages".to_string(), "1".to_string())]);
    let producer = tickflow_brokers::kafka::Producer::new(&brokers, &options).unwrap();
    // As the old producer wrote them: ISO times with an offset, float prices, the derived
    // direction and the misspelt percentage.
    let start = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(30);
    let symbols = ["AAPL", "MSFT", "GOOG", "BLK"];
    let messages: Vec<(String, String)> = (0..200)
        .map(|i| {
            let symbol = symbols[i % 4];
            let at = start + jiff::SignedDuration::from_millis(250 * i as i64);
            let at = at.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string();
            let price = format!("{}.{:02}", 100 + i % 4 * 50, i % 100);
            (
                symbol.to_string(),
                format!(
                    "{{\"timestamp\": \"{at}\", \"symbol\": \"{symbol}\", \"price\": {price}, \"direction\": \"UP\", \"precentage\": 0.0123}}"
                ),
            )
        })
        .chain(std::iter::once((
            "AAPL".to_string(),
            "{\"timestamp\": \"yesterday\", \"symbol\": \"AAPL\", \"price\": 1}".to_string(),
        )))
        .collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            producer.ensure_topic(&topic, 3).await?;
            producer
                .send_all(
                    messages
                        .iter()
                        .map(|(key, payload)| tickflow_brokers::kafka::Record {
                            topic: &topic,
                            key,
                            payload: payload.as_bytes(),
                            headers: Vec::new(),
                        }),
                )
                .await
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 200\n\n[[sources]]\ntype = \"kafka\"\nid = \"market\"\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup = \"tickflow-{unique}\"\nformat = \"market_ticks\"\n{}",
                pg_sink(&schema, &url(), "[\"trades\", \"bars\"]")
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    wait_for(
        &server,
        "every message read and stored in PostgreSQL",
        |s| {
            s["rows_durable"]["trades"].as_u64() == Some(200)
                && s["rejected"].as_u64() == Some(1)
                && crate::support::caught_up(s)
        },
    );
    server.stop();
    assert_eq!(
        pg_count(&format!("SELECT count(*) FROM {schema}.trades")),
        200
    );
    let row = pg(&format!(
        "SELECT price::text, size::text FROM {schema}.trades WHERE symbol = 'MSFT' ORDER BY ts_event LIMIT 1"
    ))
    .unwrap();
    let (price, size): (String, String) = (row[0].get(0), row[0].get(1));
    assert_eq!(price.parse::<f64>().unwrap(), 150.01, "{price}");
    assert!(price.starts_with("150.01"), "exact digits: {price}");
    assert_eq!(size.parse::<f64>().unwrap(), 1.0, "{size}");
    assert!(
        pg_count(&format!(
            "SELECT count(*) FROM {schema}.bars WHERE symbol = 'BLK'"
        )) >= 1
    );
    let dlq = sql(&data, "SELECT reason, error FROM dlq");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["reason"], "malformed");
    assert!(
        dlq[0]["error"].as_str().unwrap().contains(&topic),
        "{dlq:?}"
    );
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tansu of the test's own on `port`, advertising `advertised` (where clients reach it:
/// a proxy, a TLS terminator); `None` outside CI when the tansu binary is not built.
fn tansu(port: u16, advertised: u16) -> Option<std::process::Child> {
    let tansu = std::env::var_os("TICKFLOW_TANSU")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::PathBuf::from(h).join(".cache/tickflow/tansu/bin/tansu"))
        })
        .filter(|p| p.exists());
    let Some(tansu) = tansu else {
        // With a broker of the caller's own (TICKFLOW_TEST_KAFKA) there is none to start.
        assert!(
            std::env::var("CI").as_deref() != Ok("true")
                || std::env::var_os("TICKFLOW_TEST_KAFKA").is_some(),
            "tansu is required under CI: ./scripts/test builds it"
        );
        eprintln!("skipped: no tansu binary");
        return None;
    };
    let mut child = std::process::Command::new(tansu)
        .args(["broker", "--storage-engine", "memory://tansu/"])
        .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
        .args([
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
        ])
        .args(["--cluster-id", "tickflow-cut"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("tansu did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child)
}

/// A tansu reached only over TLS: a terminator in front of it holds a certificate for
/// 127.0.0.1 from a CA of the test's own, and tansu advertises the terminator.
pub(crate) struct TlsBroker {
    child: std::process::Child,
    pub(crate) port: u16,
    _terminator: tokio::runtime::Runtime,
}

impl TlsBroker {
    /// `None` outside CI when the tansu binary is not built.
    pub(crate) fn start(cert: &str, key: &str) -> Option<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let plain = free_port();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let child = tansu(plain, port)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends its handshake here.
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(mut broker) = tokio::net::TcpStream::connect(("127.0.0.1", plain)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                });
            }
        });
        Some(Self {
            child,
            port,
            _terminator: rt,
        })
    }

    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tansu of the test's own, reached through a proxy that the test cuts: it advertises the
/// proxy's port, so every client connection goes through it.
pub(crate) struct CutBroker {
    child: std::process::Child,
    pub(crate) proxy: tickflow_core::contract::Proxy,
}

impl CutBroker {
    /// `None` outside CI when the tansu binary is not built.
    pub(crate) fn start() -> Option<Self> {
        let port = free_port();
        let proxy = tickflow_core::contract::Proxy::start(&format!("127.0.0.1:{port}"));
        let child = tansu(port, proxy.port)?;
        Some(Self { child, proxy })
    }

    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }
}

impl Drop for CutBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The counter `name{…source="…"}` in a pipeline's `/metrics`, summed over its labels.
fn counter(server: &Server, name: &str, source: &str) -> u64 {
    let (_, body) = http("GET", &format!("{}/metrics", server.url), None);
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("source=\"{source}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn kafka_cut_away_is_retried_counted_and_shown_and_nothing_is_lost_or_doubled() {
    let Some(broker) = CutBroker::start() else {
        return;
    };
    let brokers = broker.address();
    let unique = format!(
        "{}-{}",
        std::process::id(),
        tickflow_model::UnixNanos::now().0
    );
    let topic = format!("cut-{unique}");
    let producer = tickflow_brokers::kafka::Producer::new(
        &brokers,
        &BTreeMap::from([("batch.num.messages".to_string(), "1".to_string())]),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(producer.ensure_topic(&topic, 2)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\n\n[[sources]]\ntype = \"kafka\"\nid = \"market\"\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup = \"g-{unique}\"\n\n[[sinks]]\ntype = \"kafka\"\nid = \"bus\"\nbrokers = \"{brokers}\"\ntopic_prefix = \"cut-out-{unique}\"\ntables = [\"trades\"]\ncreate_partitions = 1\noptions = {{ \"batch.num.messages\" = \"1\", \"message.timeout.ms\" = \"5000\" }}\n"
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let send = |first: usize, n: usize| {
        let lines: Vec<String> = (first..first + n)
            .map(|i| {
                format!(
                    "{{\"type\":\"trade\",\"symbol\":\"C{}\",\"ts_event\":{},\"price\":\"10.{i}\",\"size\":\"1\",\"seq\":{i}}}",
                    i % 5,
                    tickflow_model::UnixNanos::now().0
                )
            })
            .collect();
        rt.block_on(
            producer.send_all(lines.iter().map(|l| tickflow_brokers::kafka::Record {
                topic: &topic,
                key: "k",
                payload: l.as_bytes(),
                headers: Vec::new(),
            })),
        )
        .unwrap();
    };
    send(0, 300);
    wait_for(&server, "the first ticks stored and published", |s| {
        s["rows_durable"]["trades"].as_u64() == Some(300) && crate::support::caught_up(s)
    });

    broker.proxy.cut();
    // Ticks keep coming over HTTP while Kafka is away: the lake takes them, the sink retries.
    let out = bin()
        .args([
            "produce",
            "--count",
            "200",
            "--batch-size",
            "100",
            "--start-seq",
            "1000",
        ])
        .args(["--to", &server.url])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("200 acknowledged"));
    wait_for(&server, "the sink shows its failures", |s| {
        s["rows_durable"]["trades"].as_u64() == Some(500)
            && crate::support::sink(s)["state"] == "retrying"
            && crate::support::sink(s)["errors"].as_u64().unwrap_or(0) >= 1
    });
    let reconnects = counter(&server, "tickflow_reconnects_total", "market");
    assert!(reconnects >= 1, "the source's broker errors are counted");

    broker.proxy.restore();
    send(300, 300);
    wait_for(
        &server,
        "every tick stored and published after the cut",
        |s| {
            s["rows_durable"]["trades"].as_u64() == Some(800)
                && crate::support::caught_up(s)
                && crate::support::sink(s)["state"] == "ok"
        },
    );
    server.stop();
    assert_eq!(sql_count(&data, "SELECT count(*) FROM trades"), 800);
    assert_eq!(
        sql_count(&data, "SELECT count(DISTINCT seq) FROM trades"),
        800
    );
    let out = tickflow_brokers::kafka::read_all(
        &brokers,
        &format!("cut-out-{unique}.trades"),
        Duration::from_secs(60),
    )
    .unwrap();
    let rows: HashSet<String> = out
        .iter()
        .map(|m| {
            let id = &m
                .headers
                .iter()
                .find(|(k, _)| k == "tickflow-id")
                .unwrap()
                .1;
            id.split_once(":trades:").unwrap().1.to_string()
        })
        .collect();
    assert_eq!(rows.len(), 800, "every trade published once by key");
}

/// A broker without automatic topic creation (tansu, many managed clusters): `produce`
/// creates the topic it is told to send to.
#[test]
fn produce_creates_a_missing_topic() {
    let Some(brokers) = broker() else { return };
    let topic = format!(
        "tf-produce-new-{}-{}",
        std::process::id(),
        tickflow_model::UnixNanos::now().0
    );
    let out = bin()
        .args(["produce", "--count", "5", "--batch-size", "5"])
        .args(["--to", &format!("kafka://{brokers}/{topic}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("5 acknowledged, 0 failed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kafka over TLS (`security.protocol = "SSL"`), to a broker whose certificate a private CA
/// signed: with that CA named, the log on Kafka takes every acknowledged tick and processing
/// reads each back once; with another CA, the broker is refused and nothing is sent.
#[test]
fn kafka_over_tls_checks_the_brokers_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::tls::certificate(dir.path(), "broker");
    let Some(broker) = TlsBroker::start(&cert, &key) else {
        return;
    };
    let brokers = broker.address();
    std::fs::create_dir_all(dir.path().join("other")).unwrap();
    let (other_ca, _, _) = crate::tls::certificate(&dir.path().join("other"), "other");

    // Another CA: the handshake fails, and the delivery times out unsent.
    let refused = bin()
        .args(["produce", "--count", "5", "--batch-size", "5"])
        .args(["--to", &format!("kafka://{brokers}/tls-refused")])
        .args(["--kafka-option", "security.protocol=SSL"])
        .args(["--kafka-option", &format!("ssl.ca.location={other_ca}")])
        .args(["--kafka-option", "message.timeout.ms=3000"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(
        !refused.status.success() && !stdout.contains("5 acknowledged"),
        "{stdout}{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let log = crate::crash::kafka_log_section(&brokers, "tftls").replace(
        "options = { ",
        &format!("options = {{ \"security.protocol\" = \"SSL\", \"ssl.ca.location\" = \"{ca}\", "),
    );
    assert!(log.contains("ssl.ca.location"), "{log}");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!("\n[lake]\nflush_interval_ms = 100\n\n{log}"),
        ),
    )
    .unwrap();
    let check = bin()
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let server = Server::start(&cfg, &data);
    let out = crate::support::run_ok(&[
        "produce",
        "--count",
        "500",
        "--batch-size",
        "100",
        "--to",
        &server.url,
    ]);
    assert!(out.contains("500 acknowledged"), "{out}");
    wait_for(&server, "every tick read back over TLS", |s| {
        s["log_lag"].as_u64() == Some(0) && s["rows_durable"]["trades"].as_u64() == Some(500)
    });
    server.stop();
    assert_eq!(
        sql_count(&data, "SELECT count(DISTINCT seq) FROM trades"),
        500
    );
}
