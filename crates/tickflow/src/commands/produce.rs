//! `tickflow produce`: the seed test-event producer. Sends `count` trades in NDJSON batches to
//! `POST /api/v1/ingest` over `connections` concurrent requests, paced to `rate`, padded to
//! `target_kb` per event; or writes the same events to a file, so other loaders (the
//! benchmarks' PostgreSQL consumers) can read exactly what tickflow was sent. `--from FILE`
//! replays such a file instead, so a load test spends nothing on making events.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use tickflow_sources::pacing::Pacer;
use tickflow_sources::rng::Rng;
use tokio::task::JoinSet;

use crate::cli::ProduceArgs;

pub(crate) fn produce(args: &ProduceArgs) -> anyhow::Result<ExitCode> {
    if args.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    if args.connections == 0 {
        anyhow::bail!("--connections must be at least 1");
    }
    if !(0.0..=1024.0).contains(&args.target_kb) {
        anyhow::bail!("--target-kb must be between 0 and 1024");
    }
    let symbols: Vec<String> = args
        .symbols
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if symbols.is_empty() {
        anyhow::bail!("--symbols lists no symbol");
    }
    let target = Target::parse(&args.to)?;
    let sending = !matches!(target, Target::File);
    if !sending && looks_like_host_port(&args.to) {
        anyhow::bail!(
            "--to {:?} looks like an address; write http://{} to send, or a file name to write",
            args.to,
            args.to
        )
    }
    if matches!(target, Target::Sqs(_)) && args.batch_size > tickflow_aws::sqs::MAX_BATCH as u64 {
        anyhow::bail!(
            "--batch-size {}: SQS takes at most {} messages a batch (each event is one message)",
            args.batch_size,
            tickflow_aws::sqs::MAX_BATCH
        );
    }
    let mut events = match &args.from {
        Some(path) if !sending => {
            anyhow::bail!(
                "--from {} replays to a pipeline or a queue: --to must be an http://, sqs://, nats:// or kafka:// address, not {:?}",
                path.display(),
                args.to
            )
        }
        Some(path) => Events::Replayed(Lines::open(path, args.count)?),
        None => Events::Generated(Ticks::new(args, symbols)),
    };
    if sending {
        send(args, &mut events, target)
    } else {
        write_file(args, &mut events)
    }
}

/// Where `--to` sends the events.
enum Target {
    /// A pipeline's HTTP ingest: one request per batch.
    Http,
    /// An SQS queue by name (`sqs://ticks`), found through the standard AWS environment:
    /// one message per event, `SendMessageBatch` per batch.
    Sqs(String),
    /// A NATS JetStream subject (`nats://host:port/subject`): one message per event, each
    /// batch's acknowledgements awaited together.
    Nats { url: String, subject: String },
    /// A Kafka topic (`kafka://host:port/topic`): one message per event, keyed by symbol so
    /// each symbol's events keep their order on one partition.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    Kafka { brokers: String, topic: String },
    /// A file of NDJSON lines.
    File,
}

impl Target {
    fn parse(to: &str) -> anyhow::Result<Self> {
        if to.starts_with("http://") || to.starts_with("https://") {
            return Ok(Self::Http);
        }
        if let Some(name) = to.strip_prefix("sqs://") {
            if name.is_empty() || name.contains('/') {
                anyhow::bail!(
                    "--to {to:?}: write sqs://<queue name>; the endpoint, region and keys come from the AWS environment (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, …)"
                );
            }
            return Ok(Self::Sqs(name.to_string()));
        }
        if let Some(rest) = to.strip_prefix("kafka://") {
            let Some((brokers, topic)) = rest
                .split_once('/')
                .filter(|(b, t)| !b.is_empty() && !t.is_empty() && !t.contains('/'))
            else {
                anyhow::bail!("--to {to:?}: write kafka://<host>:<port>[,<host>:<port>…]/<topic>");
            };
            if !tickflow_brokers::KAFKA_BUILT {
                anyhow::bail!("--to {to:?}: {}", tickflow_brokers::kafka::NOT_BUILT);
            }
            return Ok(Self::Kafka {
                brokers: brokers.to_string(),
                topic: topic.to_string(),
            });
        }
        if let Some(rest) = to.strip_prefix("nats://") {
            let Some((server, subject)) = rest
                .split_once('/')
                .filter(|(s, j)| !s.is_empty() && !j.is_empty())
            else {
                anyhow::bail!(
                    "--to {to:?}: write nats://<host>:<port>/<subject>, a subject a JetStream stream takes"
                );
            };
            return Ok(Self::Nats {
                url: format!("nats://{server}"),
                subject: subject.to_string(),
            });
        }
        Ok(Self::File)
    }
}

/// A connected target, shared by the requests in flight.
enum Sender {
    Http {
        client: reqwest::Client,
        url: String,
        token: Option<String>,
    },
    Sqs {
        client: tickflow_aws::Client,
        queue_url: String,
    },
    Nats {
        publisher: tickflow_brokers::nats::Publisher,
        subject: String,
    },
    #[cfg(feature = "kafka")]
    Kafka {
        producer: tickflow_brokers::kafka::Producer,
        topic: String,
    },
}

impl Sender {
    async fn connect(args: &ProduceArgs, target: Target) -> anyhow::Result<Self> {
        Ok(match target {
            Target::Http | Target::File => Self::Http {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()?,
                url: ingest_url(&args.to, args.source.as_deref()),
                token: args.token.clone(),
            },
            Target::Sqs(name) => {
                let client = tickflow_aws::Client::new(
                    &tickflow_aws::AwsConfig::default(),
                    tickflow_aws::Service::Sqs,
                    Duration::from_secs(30),
                )?;
                let queue_url = tickflow_aws::sqs::queue_url(&client, &name)
                    .await
                    .with_context(|| format!("finding queue {name} at {}", client.url()))?;
                Self::Sqs { client, queue_url }
            }
            Target::Nats { url, subject } => Self::Nats {
                publisher: tickflow_brokers::nats::Publisher::connect(&url)
                    .await
                    .map_err(anyhow::Error::msg)?,
                subject,
            },
            #[cfg(feature = "kafka")]
            Target::Kafka { brokers, topic } => {
                let mut options = std::collections::BTreeMap::new();
                for option in &args.kafka_options {
                    let Some((key, value)) = option.split_once('=') else {
                        anyhow::bail!("--kafka-option {option:?}: write KEY=VALUE");
                    };
                    if tickflow_brokers::kafka::OWN_SETTINGS.contains(&key) {
                        anyhow::bail!("--kafka-option {key}: tickflow sets it itself");
                    }
                    options.insert(key.to_string(), value.to_string());
                }
                let producer = tickflow_brokers::kafka::Producer::new(&brokers, &options)
                    .map_err(anyhow::Error::msg)?;
                // As a broker with automatic topic creation would: tansu and many managed
                // clusters have it off.
                producer
                    .ensure_topic(&topic, 1)
                    .await
                    .map_err(|e| anyhow::anyhow!("creating Kafka topic {topic}: {e}"))?;
                Self::Kafka { producer, topic }
            }
            #[cfg(not(feature = "kafka"))]
            Target::Kafka { .. } => anyhow::bail!(tickflow_brokers::kafka::NOT_BUILT),
        })
    }

    /// Where the events go, for the summary.
    fn shown(&self) -> String {
        match self {
            Self::Http { url, .. } => url.clone(),
            Self::Sqs { queue_url, .. } => queue_url.clone(),
            Self::Nats { subject, .. } => format!("NATS subject {subject}"),
            #[cfg(feature = "kafka")]
            Self::Kafka { topic, .. } => format!("Kafka topic {topic}"),
        }
    }

    /// Sends one batch of NDJSON lines, retrying what may succeed later up to `retries`
    /// times.
    async fn send(&self, body: Vec<u8>, retries: u32) -> Result<(), String> {
        match self {
            Self::Http { client, url, token } => {
                post(client, url, token.as_deref(), body, retries).await
            }
            Self::Sqs { client, queue_url } => {
                let text = String::from_utf8(body).map_err(|e| e.to_string())?;
                let lines: Vec<&str> = text.lines().collect();
                let mut tries = 0;
                loop {
                    match tickflow_aws::sqs::send_batch(client, queue_url, &lines).await {
                        Ok(()) => return Ok(()),
                        Err(e) if e.is_retryable() && tries < retries => tries += 1,
                        Err(e) => return Err(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
            }
            Self::Nats { publisher, subject } => {
                let body = bytes::Bytes::from(body);
                let mut tries = 0;
                loop {
                    let messages: Vec<bytes::Bytes> = body
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .map(|l| body.slice_ref(l))
                        .collect();
                    match publisher.publish_all(subject, messages).await {
                        Ok(()) => return Ok(()),
                        Err(e) if tries < retries => {
                            tries += 1;
                            tracing::warn!(error = %e, "publishing failed; trying again");
                        }
                        Err(e) => return Err(e),
                    }
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
            }
            #[cfg(feature = "kafka")]
            Self::Kafka { producer, topic } => {
                let text = String::from_utf8(body).map_err(|e| e.to_string())?;
                let mut tries = 0;
                loop {
                    let mut records = Vec::new();
                    for line in text.lines().filter(|l| !l.is_empty()) {
                        records.push(tickflow_brokers::kafka::Record {
                            topic,
                            key: symbol_of(line),
                            payload: line.as_bytes(),
                            headers: Vec::new(),
                        });
                    }
                    // librdkafka retries on its own until `message.timeout.ms`; a batch that
                    // still fails is sent again whole.
                    match producer.send_all(records).await {
                        Ok(()) => return Ok(()),
                        Err(e) if tries < retries => {
                            tries += 1;
                            tracing::warn!(error = %e, "sending failed; trying again");
                        }
                        Err(e) => return Err(e),
                    }
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
            }
        }
    }
}

/// The `symbol` of an ingest line, for the message key; empty when the line has none.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
fn symbol_of(line: &str) -> &str {
    line.split_once("\"symbol\":")
        .and_then(|(_, rest)| rest.trim_start().strip_prefix('"'))
        .and_then(|rest| rest.split_once('"'))
        .map_or("", |(symbol, _)| symbol)
}

/// `127.0.0.1:8750` or `localhost:8750`: an address missing its scheme, not a file name.
fn looks_like_host_port(to: &str) -> bool {
    to.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains('/')
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Where the events come from.
enum Events {
    Generated(Ticks),
    Replayed(Lines),
}

impl Events {
    /// Events not yet produced, as far as known.
    fn remaining(&self) -> u64 {
        match self {
            Self::Generated(t) => t.remaining(),
            Self::Replayed(l) => l.left,
        }
    }

    /// The next batch of at most `max` events as NDJSON: the number of its first event, its
    /// length and the body; `None` once every event is out.
    fn next_batch(&mut self, max: u64) -> anyhow::Result<Option<(u64, u64, Vec<u8>)>> {
        Ok(match self {
            Self::Generated(t) => t
                .next_batch(max)
                .map(|(first, n, body)| (first, n, body.into_bytes())),
            Self::Replayed(l) => l.next_batch(max)?,
        })
    }
}

/// The lines of an NDJSON file, read a batch at a time; blank lines are skipped.
struct Lines {
    reader: BufReader<File>,
    path: PathBuf,
    /// Position of the next event in the file, counting non-blank lines from 0.
    next: u64,
    /// Events still to send (`u64::MAX` for the whole file).
    left: u64,
}

impl Lines {
    fn open(path: &Path, count: Option<u64>) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            reader: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            next: 0,
            left: count.unwrap_or(u64::MAX),
        })
    }

    fn next_batch(&mut self, max: u64) -> anyhow::Result<Option<(u64, u64, Vec<u8>)>> {
        let want = max.min(self.left);
        let first = self.next;
        let mut body = Vec::with_capacity(usize::try_from(want.min(100_000)).unwrap_or(0) * 160);
        let mut n = 0;
        while n < want {
            let start = body.len();
            let read = self
                .reader
                .read_until(b'\n', &mut body)
                .with_context(|| format!("reading {}", self.path.display()))?;
            if read == 0 {
                break;
            }
            if body[start..].iter().all(u8::is_ascii_whitespace) {
                body.truncate(start);
                continue;
            }
            if body.last() != Some(&b'\n') {
                body.push(b'\n');
            }
            n += 1;
        }
        self.next += n;
        // The file is done: nothing is left, whatever --count asked for.
        self.left = if n < want { 0 } else { self.left - n };
        Ok((n > 0).then_some((first, n, body)))
    }
}

/// The deterministic tick stream: a random walk per symbol, cycling through the symbols.
struct Ticks {
    symbols: Vec<String>,
    prices: Vec<f64>,
    rng: Rng,
    pad: String,
    seq: u64,
    end: u64,
}

impl Ticks {
    fn new(args: &ProduceArgs, symbols: Vec<String>) -> Self {
        let pad_bytes = (args.target_kb * 1024.0) as usize;
        // The event without padding is about 150 bytes; the pad brings it to the target.
        let pad = if pad_bytes > 0 {
            "x".repeat(pad_bytes.saturating_sub(150).max(1))
        } else {
            String::new()
        };
        Self {
            prices: vec![100.0; symbols.len()],
            symbols,
            rng: Rng::new(args.seed),
            pad,
            seq: args.start_seq,
            end: args.start_seq.saturating_add(args.count.unwrap_or(0)),
        }
    }

    /// Events not yet produced.
    fn remaining(&self) -> u64 {
        self.end - self.seq
    }

    /// The next batch of at most `max` events as NDJSON, with the seq of its first event and
    /// its length; `None` once every event is out.
    fn next_batch(&mut self, max: u64) -> Option<(u64, u64, String)> {
        let n = max.min(self.end - self.seq);
        if n == 0 {
            return None;
        }
        let first = self.seq;
        let mut body = String::with_capacity(n as usize * (160 + self.pad.len()));
        // One clock read per batch; the events of a batch are a nanosecond apart, so each
        // still has its own time and the batch carries when it was made.
        let stamped = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        for k in 0..n {
            let ts = stamped + k;
            let seq = self.seq;
            let i = (seq % self.symbols.len() as u64) as usize;
            self.prices[i] = (self.prices[i] * (1.0 + self.rng.normal() * 0.0005)).max(0.01);
            // Whole cents written as integers: formatting floats would cost the producer more
            // than the server spends parsing the line, on the same two cores.
            let cents = (self.prices[i] * 100.0).round() as u64;
            let size = 1 + self.rng.below(500);
            body.push_str(r#"{"type":"trade","symbol":""#);
            body.push_str(&self.symbols[i]);
            body.push_str(r#"","ts_event":"#);
            push_u64(&mut body, ts);
            body.push_str(r#","price":""#);
            push_u64(&mut body, cents / 100);
            body.push('.');
            body.push(char::from(b'0' + (cents / 10 % 10) as u8));
            body.push(char::from(b'0' + (cents % 10) as u8));
            body.push_str(r#"","size":""#);
            push_u64(&mut body, size);
            body.push_str(r#"","trade_id":""#);
            push_u64(&mut body, seq);
            body.push_str(r#"","seq":"#);
            push_u64(&mut body, seq);
            if !self.pad.is_empty() {
                let _ = write!(body, r#","attrs":{{"pad":"{}"}}"#, self.pad);
            }
            body.push_str("}\n");
            self.seq += 1;
        }
        Some((first, n, body))
    }
}

/// Appends the decimal digits of `v`.
fn push_u64(out: &mut String, v: u64) {
    out.push_str(itoa::Buffer::new().format(v));
}

fn write_file(args: &ProduceArgs, events: &mut Events) -> anyhow::Result<ExitCode> {
    let path = &args.to;
    let file = File::create(path).with_context(|| format!("creating {path}"))?;
    let mut out = std::io::BufWriter::new(file);
    let mut written = 0;
    while let Some((_, n, body)) = events.next_batch(args.batch_size)? {
        out.write_all(&body)
            .with_context(|| format!("writing {path}"))?;
        written += n;
    }
    out.flush().with_context(|| format!("writing {path}"))?;
    println!("wrote {written} events to {path}");
    Ok(ExitCode::SUCCESS)
}

/// What became of one request.
struct Sent {
    first: u64,
    n: u64,
    outcome: Result<(), String>,
}

fn send(args: &ProduceArgs, events: &mut Events, target: Target) -> anyhow::Result<ExitCode> {
    let mut ack_log = match &args.ack_log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => None,
    };
    let rt = super::runtime()?;
    let sender = std::sync::Arc::new(rt.block_on(Sender::connect(args, target))?);
    let mut pacer = Pacer::new(args.rate);
    let started = Instant::now();
    let bar = super::progress(events.remaining(), "events");
    let (mut acked, mut failed, mut requests) = (0u64, 0u64, 0u64);
    let mut last_error = None;
    rt.block_on(async {
        let mut in_flight = JoinSet::new();
        let mut done = false;
        while !done || !in_flight.is_empty() {
            // Keep `connections` requests in flight while events remain.
            while !done && in_flight.len() < args.connections {
                // Pace first, then stamp: events carry the time they are sent.
                tokio::time::sleep(pacer.delay_for(events.remaining().min(args.batch_size))).await;
                let Some((first, n, body)) = events.next_batch(args.batch_size)? else {
                    done = true;
                    break;
                };
                requests += 1;
                let (sender, retries) = (std::sync::Arc::clone(&sender), args.retries);
                in_flight.spawn(async move {
                    let outcome = sender.send(body, retries).await;
                    Sent { first, n, outcome }
                });
            }
            let Some(joined) = in_flight.join_next().await else {
                continue;
            };
            let sent = joined.context("a request task failed")?;
            bar.inc(sent.n);
            match sent.outcome {
                Ok(()) => {
                    acked += sent.n;
                    if let Some(f) = ack_log.as_mut() {
                        // One write per line: a reader never sees half of one.
                        let line = format!("{} {}\n", sent.first, sent.first + sent.n - 1);
                        f.write_all(line.as_bytes())?;
                        f.flush()?;
                    }
                }
                Err(message) => {
                    failed += sent.n;
                    last_error = Some(message);
                }
            }
        }
        anyhow::Ok(())
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent {} events in {requests} requests to {}: {acked} acknowledged, {failed} failed, {:.0} events/s",
        acked + failed,
        sender.shown(),
        acked as f64 / secs.max(1e-9)
    );
    if let Some(e) = last_error {
        eprintln!("last error: {e}");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The ingest endpoint under `base`: the open one, or the HTTP source `source`'s.
pub(crate) fn ingest_url(base: &str, source: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    match source {
        None | Some("http") => format!("{base}/api/v1/ingest"),
        Some(id) => format!("{base}/api/v1/ingest/{id}"),
    }
}

/// The longest `Retry-After` honoured, so a wrong header cannot park the producer.
const MAX_RETRY_AFTER_SECS: u64 = 30;

/// Posts one body (with the source's bearer token, if any), retrying connection errors,
/// 429 and 5xx up to `retries` times with backoff, or after the `Retry-After` the server
/// asked for.
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Vec<u8>,
    retries: u32,
) -> Result<(), String> {
    // Shared, not copied, between retries.
    let body = bytes::Bytes::from(body);
    let mut tries = 0;
    loop {
        let mut request = client
            .post(url)
            .header("content-type", "application/x-ndjson")
            .body(body.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let sent = request.send().await;
        let (retryable, message, asked) = match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                let status = r.status();
                let asked = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|secs| Duration::from_secs(secs.min(MAX_RETRY_AFTER_SECS)));
                let text = r.text().await.unwrap_or_default();
                (
                    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS,
                    format!("{status}: {}", text.trim()),
                    asked,
                )
            }
            Err(e) => (true, e.to_string(), None),
        };
        if !retryable || tries >= retries {
            return Err(message);
        }
        tries += 1;
        // The server's `Retry-After` when it gave one (busy, disk reserve, log away).
        let backoff = Duration::from_millis(200 * u64::from(tries))
            .min(Duration::from_secs(MAX_RETRY_AFTER_SECS));
        tokio::time::sleep(asked.map_or(backoff, |a| a.max(backoff))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::push_u64;

    #[test]
    fn writes_decimal_digits() {
        let mut out = String::new();
        for v in [0, 7, 10, 1_763_800_000_123_456_789, u64::MAX] {
            out.clear();
            push_u64(&mut out, v);
            assert_eq!(out, v.to_string());
        }
    }
}
