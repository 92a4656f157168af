//! Twenty SIGKILLs at random moments of a busy pipeline: ingest, processing, lake flushes
//! every 100 ms, compaction every second, a PostgreSQL and a CSV sink, and alerts delivered
//! to a webhook that refuses every third request. After each kill the pipeline restarts on
//! its own data directory without repair; at the end every acknowledged trade is stored
//! once in the lake and in each sink, the 1-minute bars (in the lake and in PostgreSQL)
//! equal bars recomputed from the stored trades, and every alert reached the webhook
//! (docs/reliability.md). The same on the NATS and Kafka logs, and with the other
//! followers: DynamoDB, S3 JSON, NATS, SNS and e-mail.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::notify::{Answer, Receiver};
use crate::postgres::{fresh_schema, pg_sink, pg_trade_seqs, url as pg_url};
use crate::support::{Server, api_rows, config, http, sql};

/// Kills in the loop.
const CYCLES: usize = 20;
/// Symbols the producer spreads its trades over.
const SYMBOLS: u64 = 8;
/// Trades per request.
const BATCH: u64 = 100;

/// A small deterministic generator, so a failing run repeats with the same kills.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Trades `first..first + BATCH`: each symbol's price crosses 100 once in 100 trades, so the
/// threshold fires again and again; `seq` is the trade's identity. Trade `seq` happens
/// `seq` × 10 ms after `base`, so a run's trades span a dozen minutes: many closed bars.
fn batch(first: u64, base: u64) -> String {
    (first..first + BATCH)
        .map(|seq| {
            let price = if (seq / SYMBOLS).is_multiple_of(100) { "101.5" } else { "99.25" };
            format!(
                "{{\"type\":\"trade\",\"symbol\":\"S{}\",\"ts_event\":{},\"price\":\"{price}\",\"size\":\"{}\",\"seq\":{seq}}}\n",
                seq % SYMBOLS,
                base + seq * 10_000_000,
                1 + seq % 7
            )
        })
        .collect()
}

/// Half an hour ago: the trades of a run (under 100,000, 10 ms apart) stay in the past,
/// where validation takes them (it refuses a tick more than 5 minutes ahead).
fn base() -> u64 {
    tickflow_model::UnixNanos::now().0 as u64 - 30 * 60 * 1_000_000_000
}

/// Posts batches until `stop` or a refused connection; records the seqs of each batch the
/// server acknowledged.
fn produce(url: String, next: Arc<Mutex<u64>>, acked: Arc<Mutex<Vec<u64>>>, stop: Arc<AtomicBool>) {
    let base = base();
    while !stop.load(Ordering::SeqCst) {
        let first = {
            let mut next = next.lock().unwrap();
            let first = *next;
            *next += BATCH;
            first
        };
        let (code, _) = http(
            "POST",
            &format!("{url}/api/v1/ingest"),
            Some(batch(first, base).as_bytes()),
        );
        match code {
            200 => acked.lock().unwrap().extend(first..first + BATCH),
            0 => return, // the server is gone
            _ => {}      // not acknowledged: not counted (a 5xx while it stops)
        }
        // A steady feed rather than a flood: the kills, not the volume, are under test.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn twenty_sigkills_at_random_moments_lose_and_double_nothing() {
    twenty_kills("", "crash_loop", false);
}

#[test]
fn twenty_sigkills_with_the_log_on_nats_lose_and_double_nothing() {
    let Some(url) = crate::nats::server() else {
        return;
    };
    twenty_kills(
        &crate::crash::nats_log_section(&url, "tfloop"),
        "crash_loop_nats",
        false,
    );
}

#[cfg(feature = "kafka")]
#[test]
fn twenty_sigkills_with_the_log_on_kafka_lose_and_double_nothing() {
    let Some(brokers) = crate::kafka::broker() else {
        return;
    };
    twenty_kills(
        &crate::crash::kafka_log_section(&brokers, "tfloop"),
        "crash_loop_kafka",
        true,
    );
}

/// The same twenty kills with the other followers: DynamoDB, S3 JSON (moto) and a NATS sink
/// for the trades, SNS (moto) and e-mail (aiosmtpd) for the alerts. Each sink holds every
/// stored trade once, and every fired alert reached both notifiers (a repeat carries its
/// alert's key).
#[test]
fn twenty_sigkills_with_the_aws_nats_and_mail_followers_lose_and_double_nothing() {
    let Some(aws) = crate::aws::moto() else {
        return;
    };
    let Some(nats) = crate::nats::server() else {
        return;
    };
    let mail = tempfile::tempdir().unwrap();
    let Some(smtp) = tickflow_core::contract::SmtpServer::start(mail.path()) else {
        return;
    };
    let endpoint = aws.endpoint.clone().unwrap();
    let unique = crate::aws::unique("loop");
    let stream = format!("LOOP_{}", unique.replace('-', "_"));
    let bucket = tickflow_core::contract::s3_bucket("tf-loop").expect("moto_server answers");
    let wait = std::time::Duration::from_secs(30);
    let sqs = tickflow_aws::Client::new(&aws, tickflow_aws::Service::Sqs, wait).unwrap();
    let sns = tickflow_aws::Client::new(&aws, tickflow_aws::Service::Sns, wait).unwrap();
    let (topic, watch) = crate::aws::watched_topic(&sqs, &sns, "loop");
    let keys = format!(
        "endpoint = \"{endpoint}\"\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\ncompact_interval_secs = 1\ncompact_target_mb = 1\n\n\
                 [[sinks]]\ntype = \"dynamodb\"\nid = \"ddb\"\ntables = {{ trades = \"{unique}-trades\" }}\nstate_table = \"{unique}-state\"\n{keys}\n\
                 [[sinks]]\ntype = \"s3_json\"\nid = \"athena\"\nurl = \"s3://{bucket}/processed\"\ntables = [\"trades\"]\n{keys}\n\
                 [[sinks]]\ntype = \"nats\"\nid = \"bus\"\nurl = \"{nats}\"\nsubject_prefix = \"{stream}\"\ntables = [\"trades\"]\nstream = \"{stream}\"\n\n\
                 [[alerts.threshold]]\nname = \"above-100\"\ncondition = \"price > 100\"\ncooldown_secs = 0\n\n\
                 [[notifiers]]\ntype = \"sns\"\nid = \"sns\"\ntopic_arn = \"{topic}\"\n{keys}\n\
                 [[notifiers]]\ntype = \"email\"\nid = \"desk\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"alerts@example.com\"\nto = [\"desk@example.com\"]\ntimeout_ms = 1000\nmax_attempts = 1000\nretry_max_ms = 200\nmax_age_secs = 86400\n",
                smtp.port
            ),
        ),
    )
    .unwrap();
    let (acked, sent, server) = kill_loop(&cfg, &data, false);
    let compared_bars = bars_match_trades(&server);
    server.stop();
    let lake = lake_holds_each_acknowledged_trade_once(&data, &acked, sent);

    // DynamoDB keeps one item per natural key: every trade, none more.
    let ddb = tickflow_aws::Client::new(&aws, tickflow_aws::Service::DynamoDb, wait).unwrap();
    assert_eq!(
        crate::aws::dynamo_count(&ddb, &format!("{unique}-trades")),
        lake.len() as u64,
        "DynamoDB differs from the lake"
    );
    // The S3 JSON: each trade once.
    let lines = crate::aws::s3_lines(&bucket, "processed/trades/");
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    let s3: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(s3.len(), seqs.len(), "a trade is in the S3 JSON twice");
    assert_eq!(s3, lake, "the S3 JSON differs from the lake");
    // The NATS stream: a flush published again after a kill carries the same message ids,
    // which the stream's duplicate window drops.
    let published = crate::aws::block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&nats).await.unwrap());
        let mut stream = js.get_stream(&stream).await.unwrap();
        stream.info().await.unwrap().state.messages
    });
    assert_eq!(published, lake.len() as u64, "trades in the NATS stream");

    // Every fired alert reached SNS and the mail server.
    let alerts: Vec<String> = sql(&data, "SELECT alert_id FROM alerts WHERE kind = 'fired'")
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!alerts.is_empty());
    let on_sns: Vec<String> = crate::aws::drain(&sqs, &watch)
        .iter()
        .map(|m| {
            let envelope: serde_json::Value =
                serde_json::from_str(m["Body"].as_str().unwrap()).unwrap();
            envelope["MessageAttributes"]["idempotency_key"]["Value"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let sns_keys: HashSet<&String> = on_sns.iter().collect();
    let missing: Vec<&String> = alerts
        .iter()
        .filter(|id| !sns_keys.contains(&format!("{id}:sns")))
        .take(3)
        .collect();
    assert!(missing.is_empty(), "never published to SNS: {missing:?}");
    let mut mailed: HashMap<String, usize> = HashMap::new();
    for m in smtp.messages() {
        let id = tickflow_core::contract::mail_header(&m, "Message-ID").expect("a Message-ID");
        *mailed.entry(id.to_string()).or_default() += 1;
    }
    let missing: Vec<&String> = alerts
        .iter()
        .filter(|id| {
            !mailed.contains_key(&tickflow_notify::email::message_id(&format!("{id}:desk")))
        })
        .take(3)
        .collect();
    assert!(missing.is_empty(), "never mailed: {missing:?}");
    println!(
        "crash loop (aws, nats, mail): {CYCLES} kills, {} acknowledged, {} stored, lost 0, doubled 0 in the lake, DynamoDB, S3 JSON and NATS; {compared_bars} bars equal to their trades; {} alerts; SNS {} publishes ({} repeated); mail {} messages ({} repeated)",
        acked.len(),
        lake.len(),
        alerts.len(),
        on_sns.len(),
        on_sns.len() - sns_keys.len(),
        mailed.values().sum::<usize>(),
        mailed.values().sum::<usize>() - mailed.len(),
    );
}

/// The loop, with `log` as the `[log]` section (empty: the embedded log); `name` names its
/// PostgreSQL schema; `lone_last_trade` for tansu (below).
fn twenty_kills(log: &str, name: &str, lone_last_trade: bool) {
    let Some(schema) = fresh_schema(name) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("csv");
    // Every third delivery fails: retries are under way at most kills.
    let receiver = Receiver::start(TcpListener::bind("127.0.0.1:0").unwrap(), |n| {
        if n % 3 == 2 {
            Answer::Fail
        } else {
            Answer::Accept
        }
    });
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n{log}\n[lake]\nflush_interval_ms = 100\ncompact_interval_secs = 1\ncompact_target_mb = 1\n\n[[sinks]]\ntype = \"csv\"\nid = \"copy\"\ndir = \"{}\"\ntables = [\"trades\"]\n{}\n[[alerts.threshold]]\nname = \"above-100\"\ncondition = \"price > 100\"\ncooldown_secs = 0\n\n[[notifiers]]\ntype = \"webhook\"\nid = \"ops\"\nurl = \"{}\"\ntimeout_ms = 1000\nmax_attempts = 1000\nretry_max_ms = 100\nmax_age_secs = 86400\n",
                csv.display(),
                pg_sink(&schema, &pg_url(), "[\"trades\", \"bars\"]"),
                receiver.url()
            ),
        ),
    )
    .unwrap();
    let (acked, sent, server) = kill_loop(&cfg, &data, lone_last_trade);
    let compared_bars = bars_match_trades(&server);
    server.stop();
    let lake = lake_holds_each_acknowledged_trade_once(&data, &acked, sent);
    // Each sink holds what the lake holds, once.
    assert_eq!(
        pg_trade_seqs(&schema),
        lake,
        "PostgreSQL differs from the lake"
    );
    // PostgreSQL's bars of every final minute equal bars recomputed from its own trades. A
    // sink gets a bar once it is final: its minute and the lateness allowance (2 s) are
    // behind every symbol's newest trade. (The lake's check above also sees open bars.)
    let pg_bars = crate::postgres::pg(&format!(
        "WITH t AS (SELECT symbol, date_trunc('minute', ts_event) AS start, max(price) AS high, \
         min(price) AS low, sum(size) AS volume, count(*) AS n FROM {schema}.trades GROUP BY 1, 2), \
         watermark AS (SELECT min(newest) AS at FROM (SELECT max(ts_event) AS newest FROM {schema}.trades GROUP BY symbol) s), \
         b AS (SELECT symbol, start, high, low, volume, trade_count FROM {schema}.bars WHERE interval = '1m') \
         SELECT count(*) FILTER (WHERE t.symbol IS NULL OR b.symbol IS NULL OR t.high <> b.high \
         OR t.low <> b.low OR t.volume <> b.volume OR t.n <> b.trade_count), count(*) \
         FROM t FULL OUTER JOIN b ON t.symbol = b.symbol AND t.start = b.start \
         WHERE coalesce(t.start, b.start) + interval '1 minute 2 seconds' <= (SELECT at FROM watermark)"
    ))
    .unwrap();
    let (differ, compared): (i64, i64) = (pg_bars[0].get(0), pg_bars[0].get(1));
    assert_eq!(
        differ, 0,
        "PostgreSQL's bars differ from its trades ({compared} compared)"
    );
    let mut csv_seqs = Vec::new();
    for file in std::fs::read_dir(csv.join("trades")).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_none_or(|e| e != "csv") {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let at = header.iter().position(|c| *c == "seq").unwrap();
        csv_seqs.extend(lines.map(|l| l.split(',').nth(at).unwrap().parse::<u64>().unwrap()));
    }
    let csv_set: HashSet<u64> = csv_seqs.iter().copied().collect();
    assert_eq!(
        csv_set.len(),
        csv_seqs.len(),
        "a trade is in the CSV copy twice"
    );
    assert_eq!(csv_set, lake, "the CSV copy differs from the lake");
    // Every alert reached the webhook; a repeat carries the same idempotency key.
    let alerts = sql(&data, "SELECT alert_id FROM alerts WHERE kind = 'fired'");
    assert!(!alerts.is_empty());
    let accepted: HashMap<String, usize> = receiver.accepted();
    let missing: Vec<String> = alerts
        .iter()
        .map(|a| format!("{}:ops", a["alert_id"].as_str().unwrap()))
        .filter(|key| !accepted.contains_key(key))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} alerts never delivered, e.g. {:?}; deliveries: {:?}",
        missing.len(),
        alerts.len(),
        &missing[..missing.len().min(3)],
        sql(
            &data,
            &format!(
                "SELECT status, attempts, error FROM alert_deliveries WHERE alert_id = '{}'",
                missing.first().map_or("", |k| k.trim_end_matches(":ops"))
            )
        )
    );
    let repeats: usize = accepted.values().map(|n| n - 1).sum();
    println!(
        "crash loop ({name}): {CYCLES} kills, {} acknowledged, {} stored, lost 0, doubled 0, {compared_bars} lake bars and {compared} PostgreSQL bars equal to their trades, {} alerts, {} webhook requests, {repeats} repeated deliveries",
        acked.len(),
        lake.len(),
        alerts.len(),
        receiver.requests()
    );
}

/// Twenty kills of the pipeline of `cfg` at random moments while a producer streams, then a
/// last start that catches up: every follower at the lake's last flush. Returns the trades
/// acknowledged, how many were sent, and the running pipeline.
fn kill_loop(
    cfg: &std::path::Path,
    data: &std::path::Path,
    lone_last_trade: bool,
) -> (HashSet<u64>, u64, Server) {
    let mut rng = Rng(0x5eed_c0de);
    let next = Arc::new(Mutex::new(0u64));
    let acked = Arc::new(Mutex::new(Vec::new()));
    for cycle in 0..CYCLES {
        let server = Server::start(cfg, data);
        let stop = Arc::new(AtomicBool::new(false));
        let producer = {
            let (url, next, acked, stop) = (
                server.url.clone(),
                Arc::clone(&next),
                Arc::clone(&acked),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || produce(url, next, acked, stop))
        };
        // Kills land after a random number of lake flushes (every fifth cycle after a
        // compaction round too), then after a random number of acknowledged batches more,
        // while the producer, the flusher, the sinks and the notifier are all at work.
        let flushes = 1 + rng.below(8);
        let compacted = u64::from(cycle % 5 == 4);
        let mut polls = 0;
        loop {
            let s = server.status();
            if s["flushes"].as_u64().unwrap_or(0) >= flushes
                && s["compactions"].as_u64().unwrap_or(0) >= compacted
            {
                break;
            }
            polls += 1;
            assert!(polls < 3_000, "no flush: {s}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let target = acked.lock().unwrap().len() as u64 + BATCH * rng.below(10);
        let mut polls = 0;
        while (acked.lock().unwrap().len() as u64) < target {
            polls += 1;
            assert!(polls < 30_000, "the producer made no progress");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        server.kill();
        stop.store(true, Ordering::SeqCst);
        producer.join().unwrap();
    }
    // A last start: catch up on everything, then stop cleanly.
    let server = Server::start(cfg, data);
    // One trade more, alone in its batch. tansu 0.6 reports a partition's end one batch
    // short once a batch reached it twice (a produce retried under load), so its last
    // batch stays unread until another follows; a batch of one it counts. The embedded
    // and NATS logs need nothing of the kind, and do not get it.
    if lone_last_trade {
        let seq = {
            let mut next = next.lock().unwrap();
            *next += 1;
            *next - 1
        };
        let line = batch(seq, base()).lines().next().unwrap().to_string();
        let (code, body) = http(
            "POST",
            &format!("{}/api/v1/ingest", server.url),
            Some(line.as_bytes()),
        );
        assert_eq!(code, 200, "{body}");
        acked.lock().unwrap().push(seq);
    }
    let mut polls = 0;
    loop {
        let s = server.status();
        // Everything processed, every row produced written to the lake, and every sink and
        // notifier at the lake's last flush.
        let all_written = s["log_lag"].as_u64() == Some(0)
            && s["rows"] == s["rows_durable"]
            && s["published_flush"].as_u64().unwrap_or(0) > 0
            && s["sinks"]
                .as_array()
                .is_some_and(|sinks| sinks.iter().all(|k| k["lag_flushes"].as_u64() == Some(0)))
            && s["notifiers"]
                .as_array()
                .is_some_and(|n| n.iter().all(|k| k["lag_flushes"].as_u64() == Some(0)));
        if all_written {
            break;
        }
        polls += 1;
        assert!(polls < 6_000, "did not catch up: {s}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let acked: HashSet<u64> = acked.lock().unwrap().iter().copied().collect();
    let sent = *next.lock().unwrap();
    (acked, sent, server)
}

/// The 1-minute bars in the lake equal bars recomputed from its trades, and nothing went to the
/// DLQ; returns how many bars were compared.
fn bars_match_trades(server: &Server) -> u64 {
    // The bars of every minute but each symbol's newest (it may still be open), as stored and
    // as recomputed from the stored trades: no row may differ or be missing on either side.
    let mismatched = api_rows(
        &server.url,
        "WITH t AS (SELECT symbol, date_trunc('minute', ts_event) AS start, max(price) AS high, \
         min(price) AS low, sum(size) AS volume, count(*) AS n FROM trades GROUP BY 1, 2), \
         newest AS (SELECT symbol, max(start) AS start FROM t GROUP BY symbol), \
         b AS (SELECT symbol, start, high, low, volume, trade_count FROM bars WHERE \"interval\" = '1m') \
         SELECT count(*) FILTER (WHERE t.symbol IS NULL OR b.symbol IS NULL OR t.high <> b.high \
         OR t.low <> b.low OR t.volume <> b.volume OR t.n <> b.trade_count) AS n, count(*) AS compared \
         FROM t FULL OUTER JOIN b ON t.symbol = b.symbol AND t.start = b.start \
         WHERE coalesce(t.start, b.start) < (SELECT min(start) FROM newest)",
    );
    assert_eq!(mismatched[0]["n"], 0, "bars differ from the stored trades");
    let compared = mismatched[0]["compared"].as_u64().unwrap();
    assert!(compared > 0, "no closed bar to compare");
    assert_eq!(
        api_rows(&server.url, "SELECT count(*) AS n FROM dlq")[0]["n"],
        0
    );
    compared
}

/// Every acknowledged trade once in the lake, read by a process of its own from the files
/// alone, and nothing nobody sent; returns the seqs it holds.
fn lake_holds_each_acknowledged_trade_once(
    data: &std::path::Path,
    acked: &HashSet<u64>,
    sent: u64,
) -> HashSet<u64> {
    assert!(
        acked.len() as u64 >= BATCH * CYCLES as u64 / 2,
        "{}",
        acked.len()
    );
    // The lake, read by a process of its own from the files alone.
    let stored: Vec<u64> = sql(data, "SELECT seq FROM trades")
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    let lake: HashSet<u64> = stored.iter().copied().collect();
    assert_eq!(lake.len(), stored.len(), "a trade is in the lake twice");
    let lost: Vec<&u64> = acked.difference(&lake).take(5).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(lake.iter().all(|s| *s < sent), "a trade nobody sent");
    lake
}
