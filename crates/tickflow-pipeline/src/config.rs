//! Configuration in three steps: raw TOML ([`RawConfig`], serde) → validated [`Plan`] (every
//! problem collected, each with file, line and key) → running [`crate::Pipeline`].
//!
//! `${VAR}` and `${VAR:-default}` are replaced from the environment before parsing, and
//! `${file:PATH}` by the first line of a file only its owner may read, so secrets stay out of
//! the config. Unknown keys are errors: a typo must not silently become a default.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tickflow_model::{BarInterval, Severity, Symbol};
use tickflow_process::validate::Limits;
use tickflow_process::{
    Condition, Days, Expr, ExprRule, Firing, Hysteresis, ProcessorConfig, SpikeRule, ThresholdRule,
    Watch,
};
use tickflow_sources::{SimSymbol, SimulatorConfig};

use crate::error::{ConfigError, Problem};

/// The demo configuration, embedded so `tickflow demo` needs no file.
pub const DEMO_TOML: &str = include_str!("../../../config/demo.toml");

/// The file's sections, each read on its own (see [`parse`]) so a problem in one does not
/// hide the problems of the others.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub data_dir: Option<String>,
    pub http: RawHttp,
    pub pgwire: RawPgwire,
    pub query: RawQuery,
    pub log: RawLog,
    pub processing: RawProcessing,
    pub lake: RawLake,
    pub sources: Vec<RawSource>,
    pub sinks: Vec<RawSink>,
    pub notifiers: Vec<RawNotifier>,
    pub alerts: RawAlerts,
    pub jobs: Vec<crate::jobs::RawJob>,
    pub health: RawHealth,
    pub tls: RawTls,
}

/// `[tls]`: the HTTP API and the Postgres wire served over TLS.
#[derive(Debug, Default, Deserialize)]
pub struct RawTls {
    /// PEM: the server's certificate, then the rest of its chain.
    pub cert_file: Option<String>,
    /// PEM: its private key; only its owner may read the file.
    pub key_file: Option<String>,
}

/// Validated `[tls]`: both files are there and the key's is private. Their contents are
/// read at start (`tickflow_api::tls`), and by `check`.
#[derive(Clone, Debug)]
pub struct TlsPlan {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[health]`: what `GET /readyz` requires.
#[derive(Debug, Default, Deserialize)]
pub struct RawHealth {
    pub source_silence_secs: Option<i64>,
    pub calendar: Option<String>,
    pub sink_lag_flushes: Option<i64>,
    pub sources: Option<Vec<String>>,
}

/// Validated `[health]` settings ([`crate::health`]).
#[derive(Clone, Debug)]
pub struct HealthPlan {
    /// A required source silent this long (in its market's hours) is not ready.
    pub source_silence: Duration,
    pub hours: crate::feed_watch::Hours,
    /// A sink or notifier further behind the lake than this many flushes is not ready.
    pub sink_lag_flushes: u64,
    /// The sources that must be fresh; `None`: every source that fetches data itself (all
    /// but HTTP ingest, which waits to be sent, and replays, which end).
    pub sources: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHttp {
    pub bind: Option<String>,
    pub port: Option<i64>,
    pub max_body_mb: Option<i64>,
    /// Ingest request bodies in flight at once; past it, 503 with `Retry-After`.
    pub max_inflight_mb: Option<i64>,
    /// Connections served at once; past it new ones are closed on arrival.
    pub max_connections: Option<i64>,
    /// Connections one client address may hold at once.
    pub max_connections_per_address: Option<i64>,
    /// Time a client has to send a request's headers; also how long an idle connection stays.
    pub header_timeout_secs: Option<i64>,
    /// Time an ingest body has to arrive in full once its headers have; past it, 408.
    pub body_timeout_secs: Option<i64>,
    /// Bearer token for queries and administration (everything but ingest and health);
    /// `token_file` reads it from a file only its owner may read.
    pub token: Option<String>,
    pub token_file: Option<String>,
    /// Bearer token of every HTTP ingest endpoint that has none of its own.
    pub ingest_token: Option<String>,
    pub ingest_token_file: Option<String>,
}

/// `[query]`: limits and switches of the SQL engine behind HTTP and the Postgres wire.
#[derive(Debug, Default, Deserialize)]
pub struct RawQuery {
    pub timeout_secs: Option<i64>,
    pub memory_mb: Option<i64>,
    pub disable: Option<Vec<String>>,
}

/// The query engine's own planning rules, by their config names (`tickflow_query::Rule`).
pub const QUERY_RULES: [&str; 3] = ["exact_sums", "narrow_sums", "symbol_runs"];

/// Validated `[query]` settings.
#[derive(Clone, Debug)]
pub struct QueryPlan {
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// Names from [`QUERY_RULES`].
    pub disabled: Vec<String>,
}

/// `[pgwire]`: the Postgres-wire SQL endpoint.
#[derive(Debug, Default, Deserialize)]
pub struct RawPgwire {
    pub enabled: Option<bool>,
    pub bind: Option<String>,
    pub port: Option<i64>,
    /// The password every Postgres-wire client must give (any user name).
    pub password: Option<String>,
    /// Connections served at once; past it new ones are closed on arrival.
    pub max_connections: Option<i64>,
    /// Connections one client address may hold at once.
    pub max_connections_per_address: Option<i64>,
    pub password_file: Option<String>,
    /// How clients prove they know the password: `scram-sha-256` (the default) or
    /// `password` (sent as it is, for clients older than SCRAM).
    pub auth: Option<String>,
    /// Silence after which a signed-in client is let go; 0 waits for ever.
    pub idle_timeout_secs: Option<i64>,
    /// The largest message a signed-in client may send.
    pub max_message_mb: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLog {
    /// `embedded` (the default), `nats` or `kafka`.
    pub kind: Option<String>,
    pub segment_mb: Option<i64>,
    pub retention_hours: Option<i64>,
    pub retention_gb: Option<f64>,
    pub fsync: Option<bool>,
    /// Free space the embedded log keeps on its disk: appends are refused below it.
    pub min_free_mb: Option<i64>,
    /// `kind = "nats"`: the server, stream, subject and consumer.
    pub url: Option<String>,
    pub stream: Option<String>,
    pub subject: Option<String>,
    pub consumer: Option<String>,
    pub replicas: Option<i64>,
    /// A broker log split by symbol into this many partitions, shared out among the
    /// processes that run the config.
    pub partitions: Option<i64>,
    /// `kind = "kafka"`: the brokers, topic, group and librdkafka options.
    pub brokers: Option<String>,
    pub topic: Option<String>,
    pub group: Option<String>,
    pub options: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawProcessing {
    pub lateness_ms: Option<i64>,
    pub max_future_secs: Option<i64>,
    /// The IANA zone of listed instruments' days (daily bars and metrics); pairs keep UTC's.
    pub day_time_zone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLake {
    pub flush_interval_ms: Option<i64>,
    pub flush_rows: Option<i64>,
    pub symbol_buckets: Option<i64>,
    pub compact_interval_secs: Option<i64>,
    pub compact_target_mb: Option<i64>,
    pub sink_buffer_rows: Option<i64>,
    /// `s3://bucket/prefix`: the lake on object storage instead of `<data_dir>/lake`.
    pub url: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Longest one request to the lake's object store may take.
    pub timeout_ms: Option<i64>,
    pub retention_days: Option<i64>,
}

/// One `[[sources]]` entry: its `id` and the settings its `type` reads.
#[derive(Debug)]
pub struct RawSource {
    /// Its place among the `[[sources]]` entries, for error messages.
    pub index: usize,
    pub id: Option<String>,
    pub kind: RawSourceKind,
}

/// The sources tickflow knows, by `type`. Adding a source adds a variant here and a line in
/// [`RawSourceKind::parse`].
#[derive(Debug)]
pub enum RawSourceKind {
    Simulator(RawSimulator),
    Replay(RawReplay),
    Http(RawHttpSource),
    Coinbase(RawWsFeed),
    Binance(RawWsFeed),
    Alpaca(RawAlpaca),
    Polygon(RawPolygon),
    RestPoll(RawRestPoll),
    Nats(RawNats),
    Sqs(RawSqs),
    Kafka(RawKafka),
}

/// Kafka topics to consume through a consumer group.
#[derive(Debug, Default, Deserialize)]
pub struct RawKafka {
    pub brokers: Option<String>,
    pub topics: Option<Vec<String>>,
    pub group: Option<String>,
    pub format: Option<String>,
    pub fields: Option<RawTradeFields>,
    pub batch: Option<i64>,
    pub options: Option<std::collections::BTreeMap<String, String>>,
}

/// Where a trade's fields are in a broker's messages (`format = "fields"`): JSON pointers.
#[derive(Debug, Default, Deserialize)]
pub struct RawTradeFields {
    pub symbol: Option<String>,
    pub price: Option<String>,
    pub size: Option<String>,
    pub size_default: Option<String>,
    pub ts_event: Option<String>,
    pub time_unit: Option<String>,
    pub trade_id: Option<String>,
    pub exchange: Option<String>,
}

/// An SQS queue to long-poll.
#[derive(Debug, Default, Deserialize)]
pub struct RawSqs {
    pub queue_url: Option<String>,
    pub format: Option<String>,
    pub fields: Option<RawTradeFields>,
    pub wait_secs: Option<i64>,
    pub max_receives: Option<i64>,
    pub dead_letter_queue_url: Option<String>,
    pub retry_max_secs: Option<i64>,
    pub timeout_ms: Option<i64>,
    /// Where and as whom to call AWS; unset, from the standard AWS environment. (Not a
    /// flattened struct: serde's flatten would hide misspelt keys from the checker.)
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

/// A NATS JetStream stream to follow.
#[derive(Debug, Default, Deserialize)]
pub struct RawNats {
    pub url: Option<String>,
    pub stream: Option<String>,
    pub subjects: Option<Vec<String>>,
    pub durable: Option<String>,
    pub batch: Option<i64>,
    pub retry_max_secs: Option<i64>,
    pub format: Option<String>,
    pub fields: Option<RawTradeFields>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRestPoll {
    pub url: Option<String>,
    pub symbols: Option<Vec<String>>,
    pub interval: Option<String>,
    pub format: Option<String>,
    pub requests_per_minute: Option<i64>,
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub fields: Option<RawFields>,
}

/// JSON pointers to a quote answer's fields.
#[derive(Debug, Default, Deserialize)]
pub struct RawFields {
    pub price: Option<String>,
    pub open: Option<String>,
    pub high: Option<String>,
    pub low: Option<String>,
    pub volume: Option<String>,
    pub time: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPolygon {
    pub url: Option<String>,
    pub rest_url: Option<String>,
    pub key: Option<String>,
    pub symbols: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
    pub history_days: Option<i64>,
    pub daily_update_utc: Option<String>,
    pub requests_per_minute: Option<i64>,
    pub repair_gaps: Option<bool>,
    pub repair_hold_secs: Option<i64>,
    pub stale_after_secs: Option<i64>,
    pub ping_interval_secs: Option<i64>,
    pub retry_max_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAlpaca {
    pub url: Option<String>,
    pub feed: Option<String>,
    pub key: Option<String>,
    pub secret: Option<String>,
    pub symbols: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
    pub emit: Option<String>,
    pub rest_url: Option<String>,
    pub repair_gaps: Option<bool>,
    pub repair_hold_secs: Option<i64>,
    pub requests_per_minute: Option<i64>,
    pub stale_after_secs: Option<i64>,
    pub ping_interval_secs: Option<i64>,
    pub retry_max_secs: Option<i64>,
}

/// A public WebSocket trade feed's settings (Coinbase, Binance).
#[derive(Debug, Default, Deserialize)]
pub struct RawWsFeed {
    pub url: Option<String>,
    pub symbols: Option<Vec<String>>,
    pub stale_after_secs: Option<i64>,
    pub ping_interval_secs: Option<i64>,
    pub retry_max_secs: Option<i64>,
    /// The venue's REST history, for gap repair.
    pub rest_url: Option<String>,
    pub repair_gaps: Option<bool>,
    pub repair_hold_secs: Option<i64>,
    /// Binance only: sent to its REST history.
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHttpSource {
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawReplay {
    pub path: Option<String>,
    pub speed: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSimulator {
    pub rate: Option<i64>,
    pub seed: Option<u64>,
    pub anomaly_rate: Option<f64>,
    pub quote_ratio: Option<f64>,
    pub history_days: Option<i64>,
    pub history_step_secs: Option<i64>,
    pub symbols: Option<Vec<String>>,
}

impl RawSourceKind {
    /// Every `type` a `[[sources]]` entry may name.
    pub const TYPES: &[&str] = &[
        "simulator",
        "replay",
        "http",
        "coinbase",
        "binance",
        "alpaca",
        "polygon",
        "rest_poll",
        "nats",
        "sqs",
        "kafka",
    ];

    fn parse(kind: &str, entry: toml::Value, key: &str, c: &mut Checker) -> Option<Self> {
        match kind {
            "simulator" => c.typed(entry, key).map(Self::Simulator),
            "replay" => c.typed(entry, key).map(Self::Replay),
            "http" => c.typed(entry, key).map(Self::Http),
            "coinbase" => c.typed(entry, key).map(Self::Coinbase),
            "binance" => c.typed(entry, key).map(Self::Binance),
            "alpaca" => c.typed(entry, key).map(Self::Alpaca),
            "polygon" => c.typed(entry, key).map(Self::Polygon),
            "rest_poll" => c.typed(entry, key).map(Self::RestPoll),
            "nats" => c.typed(entry, key).map(Self::Nats),
            "sqs" => c.typed(entry, key).map(Self::Sqs),
            "kafka" => c.typed(entry, key).map(Self::Kafka),
            _ => None,
        }
    }
}

/// One `[[sinks]]` entry: its `id` and the settings its `type` reads.
#[derive(Debug)]
pub struct RawSink {
    /// Its place among the `[[sinks]]` entries, for error messages.
    pub index: usize,
    pub id: Option<String>,
    pub kind: RawSinkKind,
    pub backlog: RawBacklog,
}

/// What a sink does when it falls behind, keys every sink takes.
#[derive(Debug, Default, Deserialize)]
pub struct RawBacklog {
    /// `block` (the default), `drop_oldest` or `drop_newest`.
    pub overflow: Option<String>,
    /// How far behind the lake, in flushes, a dropping sink may fall.
    pub max_lag_flushes: Option<i64>,
}

/// What a sink does with a backlog past its limit. The lake keeps every flush, so a
/// sink's backlog never holds up ingest or the other sinks whatever the policy: the policy
/// only says whether this sink gets every row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Never drop: the sink writes every flush, catching up from the lake's files. The
    /// right choice for a store of record (PostgreSQL, a CSV archive).
    Block,
    /// Keep the newest: past `max_lag_flushes` behind, skip the oldest flushes so that it is
    /// `max_lag_flushes` behind again. For live views that want fresh data first.
    DropOldest { max_lag_flushes: u64 },
    /// Keep the backlog it has: past `max_lag_flushes`, write the flushes it was behind by
    /// then, and skip those that came in meanwhile.
    DropNewest { max_lag_flushes: u64 },
}

impl Overflow {
    /// Every `overflow` value, as the config spells it.
    pub const NAMES: [&str; 3] = ["block", "drop_oldest", "drop_newest"];
}

/// The sinks tickflow knows, by `type`. Adding a sink adds a variant here, a line in
/// [`RawSinkKind::parse`] and one in [`SinkConfig`].
#[derive(Debug)]
pub enum RawSinkKind {
    Csv(RawCsvSink),
    Postgres(RawPostgresSink),
    Dynamodb(RawDynamoSink),
    S3Json(RawS3JsonSink),
    Nats(RawNatsSink),
    Kafka(RawKafkaSink),
}

/// Kafka topics `<topic_prefix>.<table>` to publish rows to.
#[derive(Debug, Default, Deserialize)]
pub struct RawKafkaSink {
    pub brokers: Option<String>,
    pub topic_prefix: Option<String>,
    pub tables: Option<Vec<String>>,
    pub create_partitions: Option<i64>,
    pub options: Option<std::collections::BTreeMap<String, String>>,
}

/// A NATS JetStream subject tree to publish rows to.
#[derive(Debug, Default, Deserialize)]
pub struct RawNatsSink {
    pub url: Option<String>,
    pub subject_prefix: Option<String>,
    pub tables: Option<Vec<String>>,
    pub stream: Option<String>,
}

/// JSON lines on S3 for Athena: `url` is `s3://bucket/prefix`, the rest as for a lake on S3.
#[derive(Debug, Default, Deserialize)]
pub struct RawS3JsonSink {
    pub url: Option<String>,
    pub tables: Option<Vec<String>>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub timeout_ms: Option<i64>,
}

/// DynamoDB tables, one per kind of row.
#[derive(Debug, Default, Deserialize)]
pub struct RawDynamoSink {
    /// Table names by kind: `{ trades = "tickflow-trades", … }`.
    pub tables: Option<std::collections::BTreeMap<String, String>>,
    /// Attributes to keep by kind: `{ trades = ["price", "size"] }`.
    pub fields: Option<std::collections::BTreeMap<String, Vec<String>>>,
    pub state_table: Option<String>,
    pub create_tables: Option<bool>,
    pub oversize: Option<String>,
    pub timeout_ms: Option<i64>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCsvSink {
    pub dir: Option<String>,
    pub tables: Option<Vec<String>>,
    pub fsync: Option<bool>,
}

/// A PostgreSQL / TimescaleDB sink: `url` (a `postgres://` URL or `key=value` pairs, often
/// `"${DATABASE_URL}"`), or the fields; `user`, `password` and `dbname` beside `url`
/// override its parts (a password kept in a variable of its own).
#[derive(Debug, Default, Deserialize)]
pub struct RawPostgresSink {
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    pub schema: Option<String>,
    pub tables: Option<Vec<String>>,
    pub compress_after: Option<String>,
    pub timeout_secs: Option<i64>,
}

impl RawSinkKind {
    /// Every `type` a `[[sinks]]` entry may name.
    pub const TYPES: &[&str] = &["csv", "postgres", "dynamodb", "s3_json", "nats", "kafka"];

    /// The keys every sink takes (`overflow`, `max_lag_flushes`) are taken out first; the
    /// rest are the type's own.
    fn parse(
        kind: &str,
        entry: toml::Value,
        key: &str,
        c: &mut Checker,
    ) -> Option<(Self, RawBacklog)> {
        let toml::Value::Table(mut table) = entry else {
            return None;
        };
        let mut common = toml::Table::new();
        for name in ["overflow", "max_lag_flushes"] {
            if let Some(v) = table.remove(name) {
                common.insert(name.to_string(), v);
            }
        }
        let backlog = c.typed(toml::Value::Table(common), key)?;
        let kind = Self::parse_own(kind, toml::Value::Table(table), key, c)?;
        Some((kind, backlog))
    }

    fn parse_own(kind: &str, entry: toml::Value, key: &str, c: &mut Checker) -> Option<Self> {
        match kind {
            "csv" => c.typed(entry, key).map(Self::Csv),
            "postgres" => c.typed(entry, key).map(Self::Postgres),
            "dynamodb" => c.typed(entry, key).map(Self::Dynamodb),
            "s3_json" => c.typed(entry, key).map(Self::S3Json),
            "nats" => c.typed(entry, key).map(Self::Nats),
            "kafka" => c.typed(entry, key).map(Self::Kafka),
            _ => None,
        }
    }
}

/// One `[[notifiers]]` entry: its `id` and the settings its `type` reads.
#[derive(Debug)]
pub struct RawNotifier {
    /// Its place among the `[[notifiers]]` entries, for error messages.
    pub index: usize,
    pub id: Option<String>,
    pub kind: RawNotifierKind,
    pub delivery: RawDelivery,
}

/// Delivery settings every notifier takes.
#[derive(Debug, Default, Deserialize)]
pub struct RawDelivery {
    pub max_attempts: Option<i64>,
    pub retry_max_ms: Option<i64>,
    pub max_age_secs: Option<i64>,
}

/// The notifiers tickflow knows, by `type`. Adding one adds a variant here, a line in
/// [`RawNotifierKind::parse`] and one in [`NotifierConfig`].
#[derive(Debug)]
pub enum RawNotifierKind {
    Log,
    Webhook(RawWebhook),
    Email(RawEmail),
    Sns(RawSns),
}

/// An SNS topic to publish alerts to.
#[derive(Debug, Default, Deserialize)]
pub struct RawSns {
    pub topic_arn: Option<String>,
    pub timeout_ms: Option<i64>,
    /// Where and as whom to call AWS; unset, from the standard AWS environment. (Not a
    /// flattened struct: serde's flatten would hide misspelt keys from the checker.)
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawEmail {
    pub host: Option<String>,
    pub port: Option<i64>,
    /// `none`, `starttls` or `tls`.
    pub security: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
    pub timeout_ms: Option<i64>,
    /// A CA certificate (PEM) to trust besides the platform's.
    pub ca_file: Option<PathBuf>,
}

/// The log notifier has no settings of its own.
#[derive(Debug, Default, Deserialize)]
pub struct RawLogNotifier {}

#[derive(Debug, Default, Deserialize)]
pub struct RawWebhook {
    pub url: Option<String>,
    pub format: Option<String>,
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub timeout_ms: Option<i64>,
}

impl RawNotifierKind {
    /// Every `type` a `[[notifiers]]` entry may name.
    pub const TYPES: &[&str] = &["log", "webhook", "email", "sns"];

    /// The settings of every notifier (`max_attempts`, …) are taken out first; the rest are
    /// the type's own.
    fn parse(
        kind: &str,
        entry: toml::Value,
        key: &str,
        c: &mut Checker,
    ) -> Option<(Self, RawDelivery)> {
        let toml::Value::Table(mut table) = entry else {
            return None;
        };
        let mut common = toml::Table::new();
        for name in ["max_attempts", "retry_max_ms", "max_age_secs"] {
            if let Some(v) = table.remove(name) {
                common.insert(name.to_string(), v);
            }
        }
        let delivery = c.typed(toml::Value::Table(common), key)?;
        let entry = toml::Value::Table(table);
        let kind = match kind {
            "log" => c.typed::<RawLogNotifier>(entry, key).map(|_| Self::Log)?,
            "webhook" => c.typed(entry, key).map(Self::Webhook)?,
            "email" => c.typed(entry, key).map(Self::Email)?,
            "sns" => c.typed(entry, key).map(Self::Sns)?,
            _ => return None,
        };
        Some((kind, delivery))
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAlerts {
    #[serde(default)]
    pub threshold: Vec<RawThreshold>,
    #[serde(default)]
    pub spike: Vec<RawSpike>,
    #[serde(default)]
    pub rule: Vec<RawRule>,
    #[serde(default)]
    pub volume_spike: Vec<RawVolumeSpike>,
    #[serde(default)]
    pub stale_feed: Vec<RawStaleFeed>,
    #[serde(default)]
    pub gap: Vec<RawGap>,
}

/// The gap detector: what a streaming source missed while disconnected.
#[derive(Debug, Deserialize)]
pub struct RawGap {
    pub name: String,
    /// A source id; every source when left out.
    pub source: Option<String>,
    /// Shorter gaps are left out (default 0).
    pub min_secs: Option<i64>,
    pub severity: Option<String>,
    /// Notifier ids its alerts go to; every notifier when left out.
    pub notify: Option<Vec<String>>,
}

/// The stale-feed detector: a source silent for `after_secs` while its market is open.
#[derive(Debug, Deserialize)]
pub struct RawStaleFeed {
    pub name: String,
    /// A source id; every source when left out.
    pub source: Option<String>,
    pub after_secs: Option<i64>,
    /// `always` (default) or `nyse`.
    pub calendar: Option<String>,
    pub resolve: Option<bool>,
    pub severity: Option<String>,
    /// Notifier ids its alerts go to; every notifier when left out.
    pub notify: Option<Vec<String>>,
}

/// A rule written as an SQL condition over the rows of one table.
#[derive(Debug, Deserialize)]
pub struct RawRule {
    pub name: String,
    /// trades, quotes, bars or daily_metrics.
    pub on: String,
    /// The bars a `bars` rule watches, or that a trade or quote rule's indicators read.
    pub interval: Option<String>,
    pub when: String,
    pub symbol: Option<String>,
    pub cooldown_secs: Option<i64>,
    pub reminder_secs: Option<i64>,
    pub resolve: Option<bool>,
    pub coalesce_secs: Option<i64>,
    pub severity: Option<String>,
    /// Notifier ids its alerts go to; every notifier when left out.
    pub notify: Option<Vec<String>>,
}

/// The volume-spike detector: a final bar whose volume is `k` times the mean of the
/// `window` bars before it.
#[derive(Debug, Deserialize)]
pub struct RawVolumeSpike {
    pub name: String,
    pub interval: Option<String>,
    pub window: Option<i64>,
    pub k: Option<RawAmount>,
    pub symbol: Option<String>,
    pub cooldown_secs: Option<i64>,
    pub coalesce_secs: Option<i64>,
    pub severity: Option<String>,
    /// Notifier ids its alerts go to; every notifier when left out.
    pub notify: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawThreshold {
    pub name: String,
    pub symbol: Option<String>,
    pub condition: String,
    /// How far back past the threshold the price must go to clear: a price or `N%`.
    pub hysteresis: Option<RawAmount>,
    pub cooldown_secs: Option<i64>,
    pub reminder_secs: Option<i64>,
    pub resolve: Option<bool>,
    pub coalesce_secs: Option<i64>,
    pub severity: Option<String>,
    /// Notifier ids its alerts go to; every notifier when left out.
    pub notify: Option<Vec<String>>,
}

/// The firing keys a rule was given (each kind of rule takes some of them).
#[derive(Default)]
struct RawFiring<'a> {
    severity: Option<&'a str>,
    cooldown_secs: Option<i64>,
    reminder_secs: Option<i64>,
    resolve: Option<bool>,
    coalesce_secs: Option<i64>,
}

/// Every alert rule's alerts route by its name: records its `notify` and refuses a name
/// already taken by a rule of any kind.
fn rule_named(
    c: &mut Checker,
    (names, routes): (&mut std::collections::HashSet<String>, &mut Vec<Route>),
    name: &str,
    notify: &Option<Vec<String>>,
    key: &dyn Fn(&str) -> String,
) {
    routes.push((name.to_string(), notify.clone(), key("notify")));
    if !names.insert(name.to_string()) {
        c.add(key("name"), format!("duplicate rule name {name:?}"));
    }
}

/// A rule, the notifiers it names (all when `None`), and where it names them.
type Route = (String, Option<Vec<String>>, String);

/// A decimal written as text (`"0.5"`, `"0.25%"`) or as a TOML number (`0.5`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawAmount {
    Text(String),
    Integer(i64),
    Float(f64),
}

impl RawAmount {
    fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Integer(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RawSpike {
    pub name: String,
    pub symbol: Option<String>,
    pub window: Option<i64>,
    pub k: Option<f64>,
    pub min_samples: Option<i64>,
    pub min_return_pct: Option<f64>,
    pub cooldown_secs: Option<i64>,
    pub coalesce_secs: Option<i64>,
    pub severity: Option<String>,
    /// Notifier ids its alerts go to; every notifier when left out.
    pub notify: Option<Vec<String>>,
}

/// Where the HTTP API listens.
#[derive(Clone, Debug)]
pub struct HttpPlan {
    pub bind: IpAddr,
    pub port: u16,
    pub max_body_bytes: usize,
    /// Bytes of ingest request bodies in flight at once, at least `max_body_bytes`.
    pub max_inflight_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one client address may hold at once, so that one host cannot take
    /// every slot.
    pub max_connections_per_address: usize,
    /// Time a client has to send a request's headers, and an idle connection stays open.
    pub header_timeout: Duration,
    /// Time an ingest body has to arrive in full once its headers have: a producer that
    /// stops halfway must not hold its share of `max_inflight_bytes`.
    pub body_timeout: Duration,
    /// Required (`Authorization: Bearer`, or the dashboard's cookie) on every route but
    /// ingest, health and the dashboard's static files, when set. Always set when `bind`
    /// is not loopback.
    pub token: Option<Secret>,
}

/// Log settings.
#[derive(Clone, Debug)]
pub struct LogPlan {
    pub kind: LogKind,
    /// Partitions of a broker log (1 on the embedded log): each is processed, checkpointed
    /// and written to the lake apart, by whichever process owns it (`crate::members`).
    pub partitions: u32,
    /// Set on the plan of one partition's processor (`LogPlan::for_partition`).
    pub partition: Option<u32>,
    pub segment_bytes: u64,
    pub retention_age: Option<Duration>,
    pub retention_bytes: Option<u64>,
    pub fsync: bool,
    /// Appends are refused while the log's disk would keep less than this free.
    pub min_free_bytes: u64,
}

impl LogPlan {
    /// The plan of partition `p`'s processor.
    #[must_use]
    pub fn for_partition(&self, p: u32) -> Self {
        Self {
            partition: Some(p),
            ..self.clone()
        }
    }
}

/// Where the log's records are kept (`[log] kind`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// Segment files under `<data_dir>/log`.
    Embedded,
    /// A NATS JetStream stream ([`tickflow_brokers::nats_log`]).
    Nats(NatsLogPlan),
    /// A Kafka topic ([`tickflow_brokers::kafka_log`]).
    Kafka(KafkaLogPlan),
}

/// `[log] kind = "kafka"`.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaLogPlan {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// Copies of the partition, when the topic is created.
    pub replicas: i32,
    pub options: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaLogPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Options may hold SASL passwords: only their names are shown.
        f.debug_struct("KafkaLogPlan")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("replicas", &self.replicas)
            .field(
                "options",
                &tickflow_brokers::kafka::option_names(&self.options),
            )
            .finish()
    }
}

/// `[log] kind = "nats"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsLogPlan {
    pub url: String,
    pub stream: String,
    pub subject: String,
    pub consumer: String,
    pub replicas: usize,
}

impl LogKind {
    /// Every `[log] kind`.
    pub const KINDS: &[&str] = &["embedded", "nats", "kafka"];

    /// Where the log is, for `tickflow check`; credentials in a URL are not shown.
    pub fn describe(&self, data_dir: &std::path::Path) -> String {
        match self {
            Self::Embedded => data_dir.join("log").display().to_string(),
            Self::Nats(n) => format!(
                "NATS JetStream {} stream {} subject {} (consumer {}, {} replica(s))",
                redact_nats(&n.url),
                n.stream,
                n.subject,
                n.consumer,
                n.replicas
            ),
            Self::Kafka(k) => format!("Kafka {} topic {} (group {})", k.brokers, k.topic, k.group),
        }
    }
}

/// When the lake flushes.
#[derive(Clone, Debug)]
pub struct LakePlan {
    pub flush_interval: Duration,
    pub flush_rows: usize,
    /// Shared `bucket=NN` folders for symbols; 0 = one `symbol=SYM` folder each.
    pub symbol_buckets: u32,
    /// How often small files are merged; `None` = never.
    pub compact_every: Option<Duration>,
    pub compact: tickflow_lake::CompactPolicy,
    /// Rows of recent flushes kept in memory for sinks behind the lake; a sink further
    /// behind reads the lake's files instead.
    pub sink_buffer_rows: usize,
    /// Where the lake lives when not under the data directory.
    pub object: Option<tickflow_lake::ObjectLake>,
    /// A local lake elsewhere than `<data_dir>/lake`: a partition's processor writes the
    /// lake of the data directory above its own.
    pub dir: Option<PathBuf>,
    /// Trades and quotes of days older than this many are deleted; `None` keeps them.
    pub retention_days: Option<u32>,
}

/// A simulator to run.
#[derive(Clone, Debug)]
pub struct SimulatorPlan {
    pub config: SimulatorConfig,
    /// Live events per second; 0 = as fast as possible.
    pub rate: u64,
    pub history_days: u32,
    pub history_step_nanos: i64,
}

/// Checks an Alpaca entry: the stream from `url` and `feed`, the key and secret, and which
/// channels carry the symbols.
fn alpaca(c: &mut Checker, key: &dyn Fn(&str) -> String, raw: RawAlpaca) -> SourceConfig {
    let base = raw
        .url
        .unwrap_or_else(|| "wss://stream.data.alpaca.markets".to_string());
    let path = match raw.feed.as_deref().unwrap_or("iex") {
        feed @ ("iex" | "sip" | "delayed_sip" | "test") => format!("v2/{feed}"),
        "crypto" => "v1beta3/crypto/us".to_string(),
        other => {
            c.add(
                key("feed"),
                format!("{other:?}: expected iex, sip, delayed_sip, test or crypto"),
            );
            String::new()
        }
    };
    let mut secret = |name: &str, value: Option<String>| match value {
        Some(v) if !v.is_empty() => v,
        _ => {
            c.add(
                key(name),
                "missing: set it from the environment (APCA_API_KEY_ID, APCA_API_SECRET_KEY)",
            );
            String::new()
        }
    };
    let (api_key, api_secret) = (secret("key", raw.key), secret("secret", raw.secret));
    let feed = ws_feed(
        c,
        key,
        RawWsFeed {
            url: Some(format!("{}/{path}", base.trim_end_matches('/'))),
            symbols: raw.symbols.clone(),
            stale_after_secs: Some(raw.stale_after_secs.unwrap_or(600)),
            ping_interval_secs: raw.ping_interval_secs,
            retry_max_secs: raw.retry_max_secs,
            ..RawWsFeed::default()
        },
        "",
    );
    // Alpaca names crypto pairs with a slash; tickflow stores them with a dash.
    let names: Vec<String> = raw.symbols.unwrap_or_default();
    let channels = raw
        .channels
        .unwrap_or_else(|| vec!["trades".into(), "quotes".into(), "bars".into()]);
    let mut picked = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for channel in &channels {
        match ["trades", "quotes", "bars", "daily_bars"]
            .iter()
            .position(|c| c == channel)
        {
            Some(i) => picked[i] = names.clone(),
            None => c.add(
                key("channels"),
                format!("{channel:?}: expected trades, quotes, bars or daily_bars"),
            ),
        }
    }
    let [trades, quotes, bars, daily_bars] = picked;
    let on_change = match raw.emit.as_deref() {
        None | Some("all") => false,
        Some("on_change") => true,
        Some(other) => {
            c.add(
                key("emit"),
                format!("{other:?}: expected \"all\" or \"on_change\""),
            );
            false
        }
    };
    let rest_url = http_url(
        c,
        &key("rest_url"),
        raw.rest_url,
        tickflow_sources::alpaca::DEFAULT_REST_URL,
    );
    SourceConfig::Alpaca(tickflow_sources::alpaca::AlpacaSource {
        url: feed.url,
        rest_url,
        requests_per_minute: c.range(
            &key("requests_per_minute"),
            raw.requests_per_minute,
            200,
            1,
            100_000,
        ) as u32,
        key: api_key,
        secret: api_secret,
        trades,
        quotes,
        bars,
        daily_bars,
        stale_after: feed.stale_after,
        ping_every: feed.ping_every,
        retry_max: feed.retry_max,
        on_change,
        repair_gaps: raw.repair_gaps.unwrap_or(true),
        repair_hold: repair_hold(c, key, raw.repair_hold_secs),
    })
}

/// How long a stream waits for a failing history during a gap repair (0 to a day).
fn repair_hold(c: &mut Checker, key: &dyn Fn(&str) -> String, secs: Option<i64>) -> Duration {
    let default = tickflow_sources::gaps::DEFAULT_HOLD.as_secs() as i64;
    let secs = c.range(&key("repair_hold_secs"), secs, default, 0, 86_400);
    Duration::from_secs(secs.unsigned_abs())
}

/// Checks a Polygon entry: the stream, the REST base, the key, which channels carry the
/// symbols, and how daily bars are fetched.
fn polygon(c: &mut Checker, key: &dyn Fn(&str) -> String, raw: RawPolygon) -> SourceConfig {
    use tickflow_sources::polygon::{DEFAULT_REST_URL, DEFAULT_WS_URL, PolygonSource};
    let api_key = match raw.key {
        Some(v) if !v.is_empty() => v,
        _ => {
            c.add(
                key("key"),
                "missing: set it from the environment (POLYGON_API_KEY)",
            );
            String::new()
        }
    };
    let feed = ws_feed(
        c,
        key,
        RawWsFeed {
            url: raw.url,
            symbols: raw.symbols.clone(),
            stale_after_secs: Some(raw.stale_after_secs.unwrap_or(600)),
            ping_interval_secs: raw.ping_interval_secs,
            retry_max_secs: raw.retry_max_secs,
            ..RawWsFeed::default()
        },
        DEFAULT_WS_URL,
    );
    let rest_url = http_url(c, &key("rest_url"), raw.rest_url, DEFAULT_REST_URL);
    let names: Vec<String> = raw.symbols.unwrap_or_default();
    let channels = raw
        .channels
        .unwrap_or_else(|| vec!["trades".into(), "minute_bars".into()]);
    const CHANNELS: [&str; 5] = [
        "trades",
        "quotes",
        "second_bars",
        "minute_bars",
        "daily_bars",
    ];
    let mut picked: [Vec<String>; 5] = Default::default();
    for channel in &channels {
        match CHANNELS.iter().position(|c| c == channel) {
            Some(i) => picked[i] = names.clone(),
            None => c.add(
                key("channels"),
                format!("{channel:?}: expected one of {}", CHANNELS.join(", ")),
            ),
        }
    }
    let [trades, quotes, second_bars, minute_bars, daily_bars] = picked;
    let daily_at_minute = match raw
        .daily_update_utc
        .as_deref()
        .unwrap_or("13:00")
        .split_once(':')
    {
        Some((h, m)) => match (h.parse::<u32>(), m.parse::<u32>()) {
            (Ok(h), Ok(m)) if h < 24 && m < 60 => h * 60 + m,
            _ => {
                c.add(
                    key("daily_update_utc"),
                    "expected HH:MM (UTC), as \"13:00\"",
                );
                0
            }
        },
        None => {
            c.add(
                key("daily_update_utc"),
                "expected HH:MM (UTC), as \"13:00\"",
            );
            0
        }
    };
    SourceConfig::Polygon(PolygonSource {
        ws_url: feed.url,
        rest_url,
        key: api_key,
        trades,
        quotes,
        second_bars,
        minute_bars,
        daily_bars,
        history_days: c.range(&key("history_days"), raw.history_days, 70, 0, 36_500) as u32,
        daily_at_minute,
        requests_per_minute: c.range(
            &key("requests_per_minute"),
            raw.requests_per_minute,
            5,
            1,
            100_000,
        ) as u32,
        repair_gaps: raw.repair_gaps.unwrap_or(true),
        repair_hold: repair_hold(c, key, raw.repair_hold_secs),
        stale_after: feed.stale_after,
        ping_every: feed.ping_every,
        retry_max: feed.retry_max,
    })
}

/// A source's vendor history, and the symbols the source follows as the vendor names them.
pub type VendorHistory = (
    std::sync::Arc<dyn tickflow_sources::history::History>,
    Vec<String>,
);

/// A vendor's history behind the interface backfill uses.
fn shared(
    history: impl tickflow_sources::history::History + 'static,
) -> std::sync::Arc<dyn tickflow_sources::history::History> {
    std::sync::Arc::new(history)
}

/// Checks a quote poller: the URL template, the symbols, the interval and the answer's shape.
fn rest_poll(c: &mut Checker, key: &dyn Fn(&str) -> String, raw: RawRestPoll) -> SourceConfig {
    use tickflow_sources::rest_poll::parse::{Fields, Shape};
    let url = match raw.url {
        Some(u) => http_url(c, &key("url"), Some(u), ""),
        None => {
            c.add(
                key("url"),
                "missing: the quote URL, with {symbol} where each symbol goes",
            );
            String::new()
        }
    };
    let symbols = raw.symbols.unwrap_or_default();
    if symbols.is_empty() {
        c.add(
            key("symbols"),
            "missing: the symbols to poll, as the API names them",
        );
    }
    for s in &symbols {
        if let Err(e) = Symbol::parse(s) {
            c.add(key("symbols"), e.to_string());
        }
    }
    if !url.is_empty() && !url.contains("{symbol}") && symbols.len() > 1 {
        c.add(
            key("url"),
            "put {symbol} where each symbol goes: one URL polls one symbol",
        );
    }
    let interval = match raw
        .interval
        .as_deref()
        .unwrap_or("1m")
        .parse::<BarInterval>()
    {
        Ok(i) => i,
        Err(_) => {
            c.add(key("interval"), "expected 1s, 1m, 5m, 1h or 1d");
            BarInterval::M1
        }
    };
    let pointer = |c: &mut Checker, name: &str, value: Option<String>| {
        if let Some(v) = &value
            && !v.starts_with('/')
        {
            c.add(
                key(&format!("fields.{name}")),
                format!("{v:?} is not a JSON pointer: write it as /a/0/b"),
            );
        }
        value
    };
    let shape = match raw.format.as_deref().unwrap_or("alpha_vantage") {
        "alpha_vantage" => {
            if raw.fields.is_some() {
                c.add(key("fields"), "only with format = \"custom\"");
            }
            Shape::AlphaVantage
        }
        "custom" => {
            let f = raw.fields.unwrap_or_default();
            let price = pointer(c, "price", f.price).unwrap_or_else(|| {
                c.add(
                    key("fields.price"),
                    "missing: the JSON pointer to the price",
                );
                String::new()
            });
            Shape::Custom(Fields {
                price,
                open: pointer(c, "open", f.open),
                high: pointer(c, "high", f.high),
                low: pointer(c, "low", f.low),
                volume: pointer(c, "volume", f.volume),
                time: pointer(c, "time", f.time),
            })
        }
        other => {
            c.add(
                key("format"),
                format!("{other:?}: expected \"alpha_vantage\" or \"custom\""),
            );
            Shape::AlphaVantage
        }
    };
    SourceConfig::RestPoll(tickflow_sources::rest_poll::RestPollSource {
        url,
        headers: raw.headers.unwrap_or_default().into_iter().collect(),
        symbols,
        interval,
        shape,
        requests_per_minute: c.range(
            &key("requests_per_minute"),
            raw.requests_per_minute,
            5,
            1,
            100_000,
        ) as u32,
    })
}

/// Checks a REST base URL, defaulting to the vendor's.
fn http_url(c: &mut Checker, key: &str, raw: Option<String>, default: &str) -> String {
    let url = raw.unwrap_or_else(|| default.to_string());
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        c.add(
            key,
            format!("{url:?} is not an http:// or https:// address"),
        );
    }
    url.trim_end_matches('/').to_string()
}

/// A WebSocket feed's validated settings.
struct WsFeedPlan {
    url: String,
    symbols: Vec<Symbol>,
    stale_after: Duration,
    ping_every: Duration,
    retry_max: Duration,
}

/// Checks a WebSocket feed's entry (`key` names its fields), filling in the defaults.
/// The AWS settings of an entry that has them.
macro_rules! aws {
    ($raw:expr) => {
        tickflow_aws::AwsConfig {
            region: $raw.region,
            endpoint: $raw.endpoint,
            access_key_id: $raw.access_key_id,
            secret_access_key: $raw.secret_access_key,
            session_token: $raw.session_token,
        }
    };
}

/// A `dynamodb` sink: a table per kind of row it keeps.
fn dynamodb_sink(
    raw: RawDynamoSink,
    key: &dyn Fn(&str) -> String,
    c: &mut Checker,
) -> tickflow_aws::dynamodb::DynamoConfig {
    use tickflow_aws::dynamodb::{Kind, Oversize, TableConfig};
    let kind = |c: &mut Checker, name: &str, at: &str| {
        let found = Kind::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k);
        if found.is_none() {
            c.add(
                key(at),
                format!("unknown kind {name:?}: expected trades, quotes, bars or daily_metrics"),
            );
        }
        found
    };
    let mut fields = raw.fields.unwrap_or_default();
    let mut tables = Vec::new();
    for (name, table) in raw.tables.unwrap_or_default() {
        if let Some(k) = kind(c, &name, "tables") {
            tables.push(TableConfig {
                kind: k,
                name: table,
                fields: fields.remove(&name),
            });
        }
    }
    for name in fields.keys() {
        if kind(c, name, "fields").is_some() {
            c.add(
                key("fields"),
                format!("{name:?} has fields but no table in `tables`"),
            );
        }
    }
    let oversize = match raw.oversize.as_deref() {
        None | Some("reject") => Oversize::Reject,
        Some("trim") => Oversize::Trim,
        Some(other) => {
            c.add(
                key("oversize"),
                format!("{other:?}: expected \"reject\" (to the DLQ) or \"trim\""),
            );
            Oversize::Reject
        }
    };
    let config = tickflow_aws::dynamodb::DynamoConfig {
        aws: aws!(raw),
        tables,
        state_table: raw
            .state_table
            .unwrap_or_else(|| "tickflow-sink-positions".to_string()),
        create_tables: raw.create_tables.unwrap_or(true),
        oversize,
        timeout: Duration::from_millis(c.range(
            &key("timeout_ms"),
            raw.timeout_ms,
            10_000,
            100,
            120_000,
        ) as u64),
    };
    for (field, message) in config.problems() {
        c.add(key(&field), message);
    }
    config
}

/// The tables a broker sink publishes: bars and alerts unless `tables` names others.
fn broker_sink_tables(
    tables: Option<Vec<String>>,
    key: &dyn Fn(&str) -> String,
    c: &mut Checker,
) -> Vec<String> {
    match tables {
        None => vec!["bars".to_string(), "alerts".to_string()],
        Some(list) => sink_tables(Some(list), &tickflow_core::rows_json::TABLES, key, c)
            .into_iter()
            .map(str::to_string)
            .collect(),
    }
}

/// A `nats` sink: bars and alerts by default, under `tickflow.`.
fn nats_sink(
    raw: RawNatsSink,
    key: &dyn Fn(&str) -> String,
    c: &mut Checker,
) -> tickflow_brokers::nats_sink::NatsSinkConfig {
    let url = raw
        .url
        .unwrap_or_else(|| tickflow_brokers::nats::DEFAULT_URL.to_string());
    if !(url.starts_with("nats://") || url.starts_with("tls://")) {
        c.add(
            key("url"),
            format!("{url:?} is not a nats:// or tls:// address"),
        );
    }
    let subject_prefix = raw.subject_prefix.unwrap_or_else(|| "tickflow".to_string());
    let token_ok =
        |t: &str| !t.is_empty() && !t.contains(|ch: char| ch.is_whitespace() || "*>".contains(ch));
    if !subject_prefix.split('.').all(token_ok) {
        c.add(
            key("subject_prefix"),
            format!("{subject_prefix:?} is not a subject prefix (tokens without spaces, * or >)"),
        );
    }
    if let Some(stream) = &raw.stream
        && (!token_ok(stream) || stream.contains('.'))
    {
        c.add(key("stream"), format!("{stream:?} is not a stream name"));
    }
    let tables = broker_sink_tables(raw.tables, key, c);
    tickflow_brokers::nats_sink::NatsSinkConfig {
        url,
        subject_prefix,
        tables,
        stream: raw.stream,
        dir: PathBuf::new(),
    }
}

/// `[log] kind` and, for a broker, where the log lives. Settings of the other kind are
/// refused rather than ignored.
fn log_kind(c: &mut Checker, raw: &RawLog) -> LogKind {
    let kind = raw.kind.as_deref().unwrap_or("embedded");
    let own: &[(&str, bool, &str)] = &[
        ("segment_mb", raw.segment_mb.is_some(), "embedded"),
        ("fsync", raw.fsync.is_some(), "embedded"),
        ("min_free_mb", raw.min_free_mb.is_some(), "embedded"),
        ("url", raw.url.is_some(), "nats"),
        ("stream", raw.stream.is_some(), "nats"),
        ("subject", raw.subject.is_some(), "nats"),
        ("consumer", raw.consumer.is_some(), "nats"),
        ("brokers", raw.brokers.is_some(), "kafka"),
        ("topic", raw.topic.is_some(), "kafka"),
        ("group", raw.group.is_some(), "kafka"),
        ("options", raw.options.is_some(), "kafka"),
    ];
    if LogKind::KINDS.contains(&kind) {
        for (key, given, of) in own {
            if *given && *of != kind {
                c.add(
                    format!("log.{key}"),
                    format!("applies to kind = \"{of}\" only, not to this \"{kind}\" log"),
                );
            }
        }
    }
    let name_ok = |v: &str| {
        !v.is_empty()
            && v.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    };
    match kind {
        "embedded" => {
            for (key, given) in [
                ("replicas", raw.replicas.is_some()),
                ("partitions", raw.partitions.is_some()),
            ] {
                if given {
                    c.add(
                        format!("log.{key}"),
                        "applies to a broker log only (kind = \"nats\" or \"kafka\")",
                    );
                }
            }
            LogKind::Embedded
        }
        "nats" => {
            let url = raw
                .url
                .clone()
                .unwrap_or_else(|| tickflow_brokers::nats::DEFAULT_URL.to_string());
            if !(url.starts_with("nats://") || url.starts_with("tls://")) {
                c.add(
                    "log.url",
                    format!("{url:?} is not a nats:// or tls:// address"),
                );
            }
            let stream = raw.stream.clone().unwrap_or_else(|| "TICKFLOW_LOG".into());
            if !name_ok(&stream) {
                c.add(
                    "log.stream",
                    format!("{stream:?} is not a stream name (letters, digits, - and _)"),
                );
            }
            let consumer = raw
                .consumer
                .clone()
                .unwrap_or_else(|| "tickflow-processor".into());
            if !name_ok(&consumer) {
                c.add(
                    "log.consumer",
                    format!("{consumer:?} is not a consumer name (letters, digits, - and _)"),
                );
            }
            let subject = raw.subject.clone().unwrap_or_else(|| "tickflow.log".into());
            let token_ok = |t: &str| {
                !t.is_empty() && !t.contains(|ch: char| ch.is_whitespace() || "*>".contains(ch))
            };
            if !subject.split('.').all(token_ok) {
                c.add(
                    "log.subject",
                    format!(
                        "{subject:?} is not a subject (dot-separated tokens without spaces, * or >)"
                    ),
                );
            }
            LogKind::Nats(NatsLogPlan {
                url,
                stream,
                subject,
                consumer,
                replicas: c.range("log.replicas", raw.replicas, 1, 1, 5) as usize,
            })
        }
        "kafka" => {
            // `type` is where a source or sink says it needs the feature; here it is `kind`.
            let key = |k: &str| {
                if k == "type" {
                    "log.kind".to_string()
                } else {
                    format!("log.{k}")
                }
            };
            for (k, given) in [
                ("retention_hours", raw.retention_hours.is_some()),
                ("retention_gb", raw.retention_gb.is_some()),
            ] {
                if given {
                    c.add(
                        format!("log.{k}"),
                        "a Kafka topic keeps what its retention.ms and retention.bytes say: set them with the broker's tools",
                    );
                }
            }
            let brokers = kafka_brokers(c, &key, raw.brokers.clone());
            let topic = raw.topic.clone().unwrap_or_else(|| "tickflow.log".into());
            if topic.is_empty()
                || topic.len() > 249
                || !topic
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
            {
                c.add(
                    "log.topic",
                    format!("{topic:?} is not a topic name (letters, digits, '.', '_', '-')"),
                );
            }
            let group = raw
                .group
                .clone()
                .unwrap_or_else(|| "tickflow-processor".into());
            if group.is_empty() {
                c.add("log.group", "name the consumer group processing commits to");
            }
            LogKind::Kafka(KafkaLogPlan {
                brokers,
                topic,
                group,
                replicas: c.range("log.replicas", raw.replicas, 1, 1, 16) as i32,
                options: kafka_options(c, &key, raw.options.clone()),
            })
        }
        other => {
            c.add(
                "log.kind",
                format!(
                    "{other:?} is not a log kind; one of {}",
                    LogKind::KINDS.join(", ")
                ),
            );
            LogKind::Embedded
        }
    }
}

/// A NATS address without the credentials it may hold.
fn redact_nats(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_user, host)) => format!(
            "{}://…@{host}",
            scheme_user.split("://").next().unwrap_or("nats")
        ),
        None => url.to_string(),
    }
}

/// An `sqs` source: the queue's URL is required.
fn sqs(c: &mut Checker, key: &dyn Fn(&str) -> String, raw: RawSqs) -> SourceConfig {
    let source = tickflow_aws::sqs::SqsSource {
        aws: aws!(raw),
        queue_url: raw.queue_url.unwrap_or_default(),
        wait: Duration::from_secs(
            c.range(&key("wait_secs"), raw.wait_secs, 20, 1, 20)
                .unsigned_abs(),
        ),
        max_receives: c.range(&key("max_receives"), raw.max_receives, 5, 1, 1000) as u32,
        dead_letter_queue_url: raw.dead_letter_queue_url,
        retry_max: Duration::from_secs(
            c.range(&key("retry_max_secs"), raw.retry_max_secs, 30, 1, 3600)
                .unsigned_abs(),
        ),
        timeout: Duration::from_millis(c.range(
            &key("timeout_ms"),
            raw.timeout_ms,
            30_000,
            100,
            120_000,
        ) as u64),
        format: message_format(c, key, raw.format, raw.fields),
    };
    for (field, message) in source.problems() {
        c.add(key(field), message);
    }
    SourceConfig::Sqs(source)
}

/// The region and endpoint for `tickflow check`, never the keys.
fn aws_shown(aws: &tickflow_aws::AwsConfig) -> String {
    let mut out = String::new();
    if let Some(r) = &aws.region {
        out.push_str(&format!(" in {r}"));
    }
    if let Some(e) = &aws.endpoint {
        out.push_str(&format!(" via {e}"));
    }
    out
}

/// A `nats` source: a stream and its subjects are required; the consumer is named after the
/// source unless `durable` says otherwise.
fn nats(c: &mut Checker, key: &dyn Fn(&str) -> String, raw: RawNats, id: &str) -> SourceConfig {
    let url = raw
        .url
        .unwrap_or_else(|| tickflow_brokers::nats::DEFAULT_URL.to_string());
    if !(url.starts_with("nats://") || url.starts_with("tls://")) {
        c.add(
            key("url"),
            format!("{url:?} is not a nats:// or tls:// address"),
        );
    }
    let token = |what: &str, v: &str| {
        !v.is_empty()
            && !v
                .contains(|ch: char| ch.is_whitespace() || (what == "stream" && ".*>".contains(ch)))
    };
    let stream = raw.stream.unwrap_or_default();
    if !token("stream", &stream) {
        c.add(
            key("stream"),
            format!("{stream:?}: name the JetStream stream (letters, digits, - and _; created when missing)"),
        );
    }
    let subjects = raw.subjects.unwrap_or_default();
    if subjects.is_empty() || !subjects.iter().all(|s| token("subject", s)) {
        c.add(
            key("subjects"),
            "the subjects the stream holds, such as [\"ticks.>\"] (no spaces)",
        );
    }
    let durable = raw.durable.unwrap_or_else(|| format!("tickflow-{id}"));
    if !token("stream", &durable) {
        c.add(
            key("durable"),
            format!("{durable:?} is not a consumer name"),
        );
    }
    SourceConfig::Nats(tickflow_brokers::nats::NatsSource {
        url,
        stream,
        subjects,
        durable,
        batch: c.range(&key("batch"), raw.batch, 1000, 1, 100_000) as usize,
        retry_max: Duration::from_secs(
            c.range(&key("retry_max_secs"), raw.retry_max_secs, 30, 1, 3600)
                .unsigned_abs(),
        ),
        format: message_format(c, key, raw.format, raw.fields),
    })
}

/// How a broker source reads its messages: `format` and, for `"fields"`, the mapping.
fn message_format(
    c: &mut Checker,
    key: &dyn Fn(&str) -> String,
    format: Option<String>,
    fields: Option<RawTradeFields>,
) -> tickflow_core::mapping::Format {
    use tickflow_core::mapping::{Fields, Format, TimeUnit};
    let format = format.unwrap_or_else(|| "tickflow".to_string());
    if format != "fields" && fields.is_some() {
        c.add(key("fields"), "only with format = \"fields\"");
    }
    match format.as_str() {
        "tickflow" => Format::Tickflow,
        "market_ticks" => Format::Fields(Fields::market_ticks()),
        "fields" => {
            let f = fields.unwrap_or_default();
            let mut pointer = |name: &str, value: Option<String>, required: bool| match value {
                Some(p) if p.starts_with('/') => Some(p),
                Some(p) => {
                    c.add(
                        key(&format!("fields.{name}")),
                        format!("{p:?} is not a JSON pointer: write \"/{p}\""),
                    );
                    None
                }
                None if required => {
                    c.add(
                        key(&format!("fields.{name}")),
                        format!("missing: the JSON pointer to the trade's {name}"),
                    );
                    None
                }
                None => None,
            };
            let symbol = pointer("symbol", f.symbol, true).unwrap_or_default();
            let price = pointer("price", f.price, true).unwrap_or_default();
            let ts_event = pointer("ts_event", f.ts_event, true).unwrap_or_default();
            let size = pointer("size", f.size, f.size_default.is_none());
            let trade_id = pointer("trade_id", f.trade_id, false);
            let exchange = pointer("exchange", f.exchange, false);
            if let Some(d) = &f.size_default
                && !tickflow_model::Qty::parse(d).is_ok_and(|q| !q.is_zero())
            {
                c.add(
                    key("fields.size_default"),
                    format!("{d:?} is not a size above zero"),
                );
            }
            let time_unit = match f.time_unit.as_deref() {
                None => TimeUnit::Nanos,
                Some(u) => TimeUnit::parse(u).unwrap_or_else(|| {
                    c.add(
                        key("fields.time_unit"),
                        format!("{u:?}: expected one of {}", TimeUnit::NAMES.join(", ")),
                    );
                    TimeUnit::Nanos
                }),
            };
            Format::Fields(Fields {
                symbol,
                price,
                size,
                size_default: f.size_default,
                ts_event,
                time_unit,
                trade_id,
                exchange,
            })
        }
        other => {
            c.add(
                key("format"),
                format!("{other:?}: expected one of {}", Format::NAMES.join(", ")),
            );
            Format::Tickflow
        }
    }
}

/// A format for `tickflow check`.
fn format_shown(format: &tickflow_core::mapping::Format) -> String {
    match format {
        tickflow_core::mapping::Format::Tickflow => "tickflow's ingest format".to_string(),
        tickflow_core::mapping::Format::Fields(f)
            if *f == tickflow_core::mapping::Fields::market_ticks() =>
        {
            "the old market_ticks messages (size 1 each)".to_string()
        }
        tickflow_core::mapping::Format::Fields(f) => format!(
            "trades from fields {} {} {} {}",
            f.symbol,
            f.price,
            f.size.as_deref().unwrap_or("(size default)"),
            f.ts_event
        ),
    }
}

/// Brokers as `host:port[,host:port…]`: a problem names the list when one is not.
fn kafka_brokers(c: &mut Checker, key: &dyn Fn(&str) -> String, brokers: Option<String>) -> String {
    let brokers = brokers.unwrap_or_else(|| "127.0.0.1:9092".to_string());
    let ok = brokers.split(',').all(|b| {
        b.trim()
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    });
    if !ok {
        c.add(
            key("brokers"),
            format!("{brokers:?}: write host:port, or several separated by commas"),
        );
    }
    if !tickflow_brokers::KAFKA_BUILT {
        c.add(key("type"), tickflow_brokers::kafka::NOT_BUILT);
    }
    brokers
}

/// librdkafka settings besides tickflow's own.
fn kafka_options(
    c: &mut Checker,
    key: &dyn Fn(&str) -> String,
    options: Option<std::collections::BTreeMap<String, String>>,
) -> std::collections::BTreeMap<String, String> {
    let options = options.unwrap_or_default();
    for (name, value) in &options {
        if tickflow_brokers::kafka::OWN_SETTINGS.contains(&name.as_str()) {
            c.add(
                key(&format!("options.{name}")),
                "set by tickflow: use brokers and group instead",
            );
        }
        // librdkafka would name a missing certificate or key only once the client is made,
        // at start.
        // `probe` asks librdkafka to look in the usual places itself.
        if name.starts_with("ssl.")
            && name.ends_with(".location")
            && value != "probe"
            && let Err(e) = std::fs::File::open(value)
        {
            c.add(
                key(&format!("options.{name}")),
                format!("{value:?} cannot be read: {e}"),
            );
        }
    }
    options
}

/// A `kafka` source: topics are required; the group is named after the source unless
/// `group` says otherwise.
fn kafka(c: &mut Checker, key: &dyn Fn(&str) -> String, raw: RawKafka, id: &str) -> SourceConfig {
    let brokers = kafka_brokers(c, key, raw.brokers);
    let topics = raw.topics.unwrap_or_default();
    let topic_ok = |t: &String| {
        !t.is_empty()
            && t.len() <= 249
            && t.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
    };
    if topics.is_empty() || !topics.iter().all(topic_ok) {
        c.add(
            key("topics"),
            "the topics to read, such as [\"market_ticks\"] (letters, digits, '.', '_', '-')",
        );
    }
    SourceConfig::Kafka(tickflow_brokers::kafka::KafkaSource {
        brokers,
        topics,
        group: raw.group.unwrap_or_else(|| format!("tickflow-{id}")),
        format: message_format(c, key, raw.format, raw.fields),
        batch: c.range(&key("batch"), raw.batch, 5000, 1, 100_000) as usize,
        options: kafka_options(c, key, raw.options),
    })
}

/// A `kafka` sink: bars and alerts by default, on `tickflow.<table>`.
fn kafka_sink(
    raw: RawKafkaSink,
    key: &dyn Fn(&str) -> String,
    c: &mut Checker,
) -> tickflow_brokers::kafka_sink::KafkaSinkConfig {
    let brokers = kafka_brokers(c, key, raw.brokers);
    let topic_prefix = raw.topic_prefix.unwrap_or_else(|| "tickflow".to_string());
    if topic_prefix.is_empty()
        || !topic_prefix
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
    {
        c.add(
            key("topic_prefix"),
            format!("{topic_prefix:?} is not a topic name (letters, digits, '.', '_', '-')"),
        );
    }
    let tables = broker_sink_tables(raw.tables, key, c);
    tickflow_brokers::kafka_sink::KafkaSinkConfig {
        brokers,
        topic_prefix,
        tables,
        create_partitions: raw
            .create_partitions
            .map(|p| c.range(&key("create_partitions"), Some(p), 1, 1, 10_000) as i32),
        options: kafka_options(c, key, raw.options),
        dir: PathBuf::new(),
    }
}

fn ws_feed(
    c: &mut Checker,
    key: &dyn Fn(&str) -> String,
    raw: RawWsFeed,
    default_url: &str,
) -> WsFeedPlan {
    let url = raw.url.unwrap_or_else(|| default_url.to_string());
    if !(url.starts_with("wss://") || url.starts_with("ws://")) {
        c.add(
            key("url"),
            format!("{url:?} is not a ws:// or wss:// address"),
        );
    }
    let symbols = match raw.symbols {
        Some(list) if !list.is_empty() => list
            .iter()
            .filter_map(|s| match Symbol::parse(s) {
                Ok(sym) => Some(sym),
                Err(e) => {
                    c.add(key("symbols"), e.to_string());
                    None
                }
            })
            .collect(),
        _ => {
            c.add(
                key("symbols"),
                "missing: the pairs to follow, as BASE-QUOTE (\"BTC-USD\")",
            );
            Vec::new()
        }
    };
    let secs = |v: i64| Duration::from_secs(v.unsigned_abs());
    WsFeedPlan {
        url,
        symbols,
        stale_after: secs(c.range(&key("stale_after_secs"), raw.stale_after_secs, 30, 2, 3600)),
        ping_every: secs(c.range(
            &key("ping_interval_secs"),
            raw.ping_interval_secs,
            10,
            1,
            300,
        )),
        retry_max: secs(c.range(&key("retry_max_secs"), raw.retry_max_secs, 30, 1, 3600)),
    }
}

/// A file or folder to replay.
#[derive(Clone, Debug)]
pub struct ReplayPlan {
    pub path: PathBuf,
    /// `None`: as fast as possible; `Some(x)`: the recorded pace × x.
    pub speed: Option<f64>,
}

/// Text that must not be shown: `Debug` prints `"***"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// An HTTP ingest endpoint: `POST /api/v1/ingest/<id>` (and `/api/v1/ingest` for the one
/// called `http`).
#[derive(Clone, Debug)]
pub struct HttpSourcePlan {
    /// When set, requests must carry `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
}

/// A source to run, under its `id`.
#[derive(Clone, Debug)]
pub struct SourcePlan {
    /// Names it in metrics, status, logs, and the `source` of its events; unique among sources.
    pub id: String,
    pub config: SourceConfig,
}

/// Validated settings of each source type; [`SourceConfig::build`] makes the source.
#[derive(Clone, Debug)]
pub enum SourceConfig {
    Simulator(SimulatorPlan),
    Replay(ReplayPlan),
    /// Fed by the HTTP API; its task only waits for the stop.
    Http(HttpSourcePlan),
    Coinbase(tickflow_sources::coinbase::CoinbaseSource),
    Binance(tickflow_sources::binance::BinanceSource),
    Alpaca(tickflow_sources::alpaca::AlpacaSource),
    Polygon(tickflow_sources::polygon::PolygonSource),
    RestPoll(tickflow_sources::rest_poll::RestPollSource),
    Nats(tickflow_brokers::nats::NatsSource),
    Sqs(tickflow_aws::sqs::SqsSource),
    Kafka(tickflow_brokers::kafka::KafkaSource),
    /// A vendor's history for `tickflow backfill`; not a `[[sources]]` type.
    Backfill(tickflow_sources::backfill::Backfill),
}

impl SourceConfig {
    /// The `type` that names it in the config.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Simulator(_) => "simulator",
            Self::Replay(_) => "replay",
            Self::Http(_) => "http",
            Self::Coinbase(_) => "coinbase",
            Self::Binance(_) => "binance",
            Self::Alpaca(_) => "alpaca",
            Self::Polygon(_) => "polygon",
            Self::RestPoll(_) => "rest_poll",
            Self::Nats(_) => "nats",
            Self::Sqs(_) => "sqs",
            Self::Kafka(_) => "kafka",
            Self::Backfill(_) => "backfill",
        }
    }

    /// A new source; `log_is_empty` tells the simulator whether to push its history.
    pub fn build(&self, log_is_empty: bool) -> Box<dyn tickflow_core::source::Source> {
        match self {
            Self::Simulator(p) => Box::new(tickflow_sources::SimulatorSource {
                config: p.config.clone(),
                rate: p.rate,
                history_days: p.history_days,
                history_step_nanos: p.history_step_nanos,
                push_history: log_is_empty,
            }),
            Self::Replay(p) => Box::new(tickflow_sources::ReplaySource {
                path: p.path.clone(),
                speed: p.speed,
            }),
            Self::Http(_) => Box::new(HttpIngest),
            Self::Coinbase(c) => Box::new(c.clone()),
            Self::Binance(b) => Box::new(b.clone()),
            Self::Alpaca(a) => Box::new(a.clone()),
            Self::Polygon(p) => Box::new(p.clone()),
            Self::RestPoll(p) => Box::new(p.clone()),
            Self::Nats(n) => Box::new(n.clone()),
            Self::Sqs(q) => Box::new(q.clone()),
            Self::Kafka(k) => Box::new(k.clone()),
            Self::Backfill(b) => Box::new(b.clone()),
        }
    }

    /// The vendor history this source can backfill from, with the symbols it follows (as the
    /// vendor names them); `None` for sources without one.
    ///
    /// # Errors
    /// The client could not be set up (a key that is not a valid header).
    pub fn history(&self, id: &str) -> Option<Result<VendorHistory, String>> {
        use tickflow_sources::rest::Retry;
        match self {
            Self::Alpaca(a) => {
                let mut symbols: Vec<String> = Vec::new();
                for s in [&a.trades, &a.quotes, &a.bars, &a.daily_bars]
                    .into_iter()
                    .flatten()
                {
                    if !symbols.contains(s) {
                        symbols.push(s.clone());
                    }
                }
                Some(
                    a.history(id, Retry::default())
                        .map(|h| (shared(h), symbols)),
                )
            }
            Self::Polygon(p) => {
                let mut symbols: Vec<String> = Vec::new();
                for s in [
                    &p.trades,
                    &p.quotes,
                    &p.second_bars,
                    &p.minute_bars,
                    &p.daily_bars,
                ]
                .into_iter()
                .flatten()
                .filter(|s| *s != "*")
                {
                    if !symbols.contains(s) {
                        symbols.push(s.clone());
                    }
                }
                Some(
                    p.history(id, Retry::default())
                        .map(|h| (shared(h), symbols)),
                )
            }
            Self::Coinbase(c) => Some(
                c.history(id, Retry::default())
                    .map(|h| (shared(h), c.symbols.clone())),
            ),
            Self::Binance(b) => Some(b.history(id, Retry::default()).map(|h| {
                let symbols = b.symbols.iter().map(|s| s.as_str().to_string()).collect();
                (shared(h), symbols)
            })),
            _ => None,
        }
    }

    /// One line for `tickflow check`.
    pub fn describe(&self) -> String {
        match self {
            Self::Simulator(s) => format!(
                "simulator, {} symbols at {} events/s",
                s.config.symbols.len(),
                s.rate
            ),
            Self::Http(h) => format!(
                "HTTP ingest{}",
                if h.token.is_some() {
                    ", bearer token required"
                } else {
                    ""
                }
            ),
            Self::Coinbase(c) => {
                format!("Coinbase trades of {} from {}", c.symbols.join(", "), c.url)
            }
            Self::Alpaca(a) => {
                let mut channels = Vec::new();
                for (name, list) in [
                    ("trades", &a.trades),
                    ("quotes", &a.quotes),
                    ("minute bars", &a.bars),
                    ("daily bars", &a.daily_bars),
                ] {
                    if !list.is_empty() {
                        channels.push(format!("{name} of {}", list.join(", ")));
                    }
                }
                format!(
                    "Alpaca {}: {}{}; key from the config, never shown",
                    a.url,
                    channels.join("; "),
                    if a.on_change {
                        "; trades and quotes only when the price moves"
                    } else {
                        ""
                    }
                )
            }
            Self::RestPoll(p) => format!(
                "quotes of {} polled every {} from {} ({}; {} requests a minute)",
                p.symbols.join(", "),
                p.interval,
                tickflow_sources::rest::redact(&p.url),
                match p.shape {
                    tickflow_sources::rest_poll::parse::Shape::AlphaVantage =>
                        "Alpha Vantage GLOBAL_QUOTE",
                    tickflow_sources::rest_poll::parse::Shape::Custom(_) =>
                        "fields by JSON pointer",
                },
                p.requests_per_minute
            ),
            Self::Nats(n) => format!(
                "NATS JetStream stream {} ({}) at {}, consumer {}, {}, {} messages a batch",
                n.stream,
                n.subjects.join(", "),
                // Credentials in the address stay out of the output.
                redact_nats(&n.url),
                n.durable,
                format_shown(&n.format),
                n.batch
            ),
            Self::Kafka(k) => format!(
                "Kafka topics {} at {}, group {}, {}, {} messages a batch",
                k.topics.join(", "),
                k.brokers,
                k.group,
                format_shown(&k.format),
                k.batch
            ),
            Self::Sqs(q) => format!(
                "SQS queue {}{}, long polls of {} s, poison after {} receives{}",
                q.queue_url,
                aws_shown(&q.aws),
                q.wait.as_secs(),
                q.max_receives,
                q.dead_letter_queue_url
                    .as_ref()
                    .map_or(String::new(), |d| format!(", dead letters to {d}"))
            ),
            Self::Backfill(b) => format!(
                "backfill of {} {} from {} to {}",
                b.symbols.join(", "),
                b.what.as_str(),
                b.from,
                b.to
            ),
            Self::Polygon(p) => {
                let mut channels = Vec::new();
                for (name, list) in [
                    ("trades", &p.trades),
                    ("quotes", &p.quotes),
                    ("second bars", &p.second_bars),
                    ("minute bars", &p.minute_bars),
                ] {
                    if !list.is_empty() {
                        channels.push(format!("{name} of {}", list.join(", ")));
                    }
                }
                if !p.daily_bars.is_empty() {
                    channels.push(format!(
                        "daily bars of {} from {} ({} days of history, then each day at {:02}:{:02} UTC; {} requests a minute)",
                        p.daily_bars.join(", "),
                        p.rest_url,
                        p.history_days,
                        p.daily_at_minute / 60,
                        p.daily_at_minute % 60,
                        p.requests_per_minute
                    ));
                }
                format!(
                    "Polygon {}: {}; key from the config, never shown",
                    p.ws_url,
                    channels.join("; ")
                )
            }
            Self::Binance(b) => format!(
                "Binance trades of {} from {}",
                b.symbols
                    .iter()
                    .map(Symbol::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                b.url
            ),
            Self::Replay(r) => format!(
                "replay of {} {}",
                r.path.display(),
                r.speed
                    .map_or("as fast as possible".to_string(), |x| format!(
                        "at {x}x the recorded pace"
                    ))
            ),
        }
    }
}

/// A notifier to run, under its `id`, with the rules whose alerts it delivers.
#[derive(Clone, Debug)]
pub struct NotifierPlan {
    /// Names it in metrics, status, logs and idempotency keys; unique among notifiers.
    pub id: String,
    pub config: NotifierConfig,
    pub max_attempts: u32,
    /// The cap of the doubling delay between attempts.
    pub retry_max: Duration,
    /// Alerts older than this (event time) are not sent, only counted.
    pub max_age: Duration,
    /// Names of the rules routed to it.
    pub rules: std::collections::HashSet<String>,
}

/// Validated settings of each notifier type.
#[derive(Clone, Debug)]
pub enum NotifierConfig {
    Log,
    Webhook(tickflow_notify::webhook::WebhookConfig),
    Email(tickflow_notify::email::EmailConfig),
    Sns(tickflow_aws::sns::SnsConfig),
}

impl NotifierConfig {
    /// The `type` that names it in the config.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Webhook(_) => "webhook",
            Self::Email(_) => "email",
            Self::Sns(_) => "sns",
        }
    }

    /// A ready notifier.
    ///
    /// # Errors
    /// The HTTP client cannot be built; SNS without AWS keys or region.
    pub fn build(
        &self,
        id: &str,
    ) -> Result<
        std::sync::Arc<dyn tickflow_core::notify::Notifier>,
        Box<dyn std::error::Error + Send + Sync>,
    > {
        Ok(match self {
            Self::Log => {
                std::sync::Arc::new(tickflow_notify::log::LogNotifier { id: id.to_string() })
            }
            Self::Webhook(w) => {
                std::sync::Arc::new(tickflow_notify::webhook::WebhookNotifier::new(w.clone())?)
            }
            Self::Email(e) => {
                std::sync::Arc::new(tickflow_notify::email::EmailNotifier::new(e.clone())?)
            }
            Self::Sns(s) => std::sync::Arc::new(tickflow_aws::sns::SnsNotifier::new(s.clone())?),
        })
    }

    /// One line for `tickflow check`, without secrets.
    pub fn describe(&self) -> String {
        match self {
            Self::Log => "the log".to_string(),
            Self::Webhook(w) => format!("webhook to {} ({})", w.shown_url(), w.format.name()),
            Self::Email(e) => format!("e-mail via {}", e.shown()),
            Self::Sns(s) => format!("SNS topic {}{}", s.topic_arn, aws_shown(&s.aws)),
        }
    }
}

/// Checks an `email` notifier: the server, how it is protected (the port follows: 25, 587
/// or 465), the addresses and the login.
fn email(
    c: &mut Checker,
    key: &dyn Fn(&str) -> String,
    raw: RawEmail,
) -> tickflow_notify::email::EmailConfig {
    use tickflow_notify::email::Security;
    let security = match raw.security.as_deref() {
        None => Security::StartTls,
        Some(name) => Security::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| {
                c.add(
                    key("security"),
                    format!("unknown {name:?}: expected none, starttls or tls"),
                );
                Security::StartTls
            }),
    };
    let default_port = match security {
        Security::None => 25,
        Security::StartTls => 587,
        Security::Tls => 465,
    };
    let config = tickflow_notify::email::EmailConfig {
        host: raw.host.unwrap_or_default(),
        port: c.range(&key("port"), raw.port, default_port, 1, 65_535) as u16,
        security,
        username: raw.username,
        password: raw.password,
        from: raw.from.unwrap_or_else(|| "tickflow@localhost".into()),
        to: raw.to.unwrap_or_default(),
        timeout: Duration::from_millis(c.range(
            &key("timeout_ms"),
            raw.timeout_ms,
            10_000,
            1,
            120_000,
        ) as u64),
        ca_file: raw.ca_file,
    };
    for (field, message) in config.problems() {
        c.add(key(field), message);
    }
    config
}

/// How Postgres-wire clients prove they know `[pgwire] password`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgwireAuth {
    /// SCRAM-SHA-256, PostgreSQL's default: the password never crosses the wire, and the
    /// server proves it knows it too.
    ScramSha256,
    /// The password as it is (PostgreSQL's `password` method), for clients without SCRAM;
    /// only safe over TLS or loopback.
    Password,
}

/// A validated configuration, ready to start.
#[derive(Clone, Debug)]
pub struct Plan {
    pub data_dir: PathBuf,
    pub http: HttpPlan,
    /// The Postgres-wire endpoint; none when `[pgwire] enabled = false`.
    pub pgwire: Option<std::net::SocketAddr>,
    /// The password its clients must give; always set when it listens beyond loopback.
    pub pgwire_password: Option<Secret>,
    /// Postgres-wire connections served at once.
    pub pgwire_max_connections: usize,
    /// Of which one client address may hold at most this many.
    pub pgwire_max_connections_per_address: usize,
    /// How its clients prove they know the password.
    pub pgwire_auth: PgwireAuth,
    /// Silence after which a signed-in client is let go; `None` waits for ever.
    pub pgwire_idle_timeout: Option<Duration>,
    /// The largest message a signed-in client may send, in bytes.
    pub pgwire_max_message: usize,
    pub query: QueryPlan,
    pub log: LogPlan,
    pub processing: ProcessorConfig,
    pub lake: LakePlan,
    pub sources: Vec<SourcePlan>,
    pub sinks: Vec<SinkPlan>,
    pub notifiers: Vec<NotifierPlan>,
    /// Scheduled jobs (`[[jobs]]`).
    pub jobs: Vec<crate::jobs::JobPlan>,
    /// Stale-feed rules (`[[alerts.stale_feed]]`), watched by the wall clock.
    pub stale_feeds: Vec<crate::feed_watch::StaleRule>,
    /// Gap rules (`[[alerts.gap]]`), watching the sources' gap ledgers.
    pub gap_rules: Vec<crate::feed_watch::GapRule>,
    /// What `GET /readyz` requires (`[health]`).
    pub health: HealthPlan,
    /// TLS for HTTP and the Postgres wire (`[tls]`); plain TCP without it.
    pub tls: Option<TlsPlan>,
}

/// HTTP ingest as a source: the API appends what requests carry under the source's id, so
/// the source itself only waits for the stop.
#[derive(Debug)]
struct HttpIngest;

#[async_trait::async_trait]
impl tickflow_core::source::Source for HttpIngest {
    async fn run(
        self: Box<Self>,
        ctx: tickflow_core::source::SourceContext,
    ) -> Result<(), tickflow_core::source::SourceError> {
        ctx.stopped().await;
        Ok(())
    }
}

impl Plan {
    /// The HTTP ingest source called `id`, if the config has one.
    pub fn http_source(&self, id: &str) -> Option<&HttpSourcePlan> {
        self.sources.iter().find_map(|s| match &s.config {
            SourceConfig::Http(h) if s.id == id => Some(h),
            _ => None,
        })
    }

    /// The first simulator, for the settings `tickflow demo` overrides.
    pub fn simulator_mut(&mut self) -> Option<&mut SimulatorPlan> {
        self.sources.iter_mut().find_map(|s| match &mut s.config {
            SourceConfig::Simulator(sim) => Some(sim),
            _ => None,
        })
    }
}

/// A sink to run, under its `id`.
#[derive(Clone, Debug)]
pub struct SinkPlan {
    /// Names it in metrics, status and logs; unique among sinks.
    pub id: String,
    pub config: SinkConfig,
    pub overflow: Overflow,
}

/// Validated settings of each sink type; [`SinkConfig::build`] makes the sink.
#[derive(Clone, Debug)]
pub enum SinkConfig {
    Csv(tickflow_sinks::csv::CsvConfig),
    Postgres(Box<tickflow_postgres::PostgresConfig>),
    Dynamodb(Box<tickflow_aws::dynamodb::DynamoConfig>),
    S3Json(tickflow_lake::json_sink::JsonSinkConfig),
    Nats(tickflow_brokers::nats_sink::NatsSinkConfig),
    Kafka(tickflow_brokers::kafka_sink::KafkaSinkConfig),
}

impl SinkConfig {
    /// The `type` that names it in the config.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Csv(_) => "csv",
            Self::Postgres(_) => "postgres",
            Self::Dynamodb(_) => "dynamodb",
            Self::S3Json(_) => "s3_json",
            Self::Nats(_) => "nats",
            Self::Kafka(_) => "kafka",
        }
    }

    /// A new, unopened sink; rows its store refuses go to `dlq` (the log).
    pub fn build(
        &self,
        id: &str,
        dlq: &Arc<dyn tickflow_core::source::Append>,
    ) -> Box<dyn tickflow_core::sink::Sink> {
        match self {
            Self::Csv(c) => Box::new(tickflow_sinks::csv::CsvSink::new(c.clone())),
            Self::Postgres(c) => Box::new(tickflow_postgres::PostgresSink::new(
                id,
                (**c).clone(),
                Arc::clone(dlq),
            )),
            Self::Dynamodb(c) => Box::new(tickflow_aws::dynamodb::DynamoSink::new(
                id,
                (**c).clone(),
                Arc::clone(dlq),
            )),
            Self::S3Json(c) => Box::new(tickflow_lake::json_sink::JsonSink::new(id, c.clone())),
            Self::Nats(c) => Box::new(tickflow_brokers::nats_sink::NatsSink::new(id, c.clone())),
            Self::Kafka(c) => Box::new(tickflow_brokers::kafka_sink::KafkaSink::new(id, c.clone())),
        }
    }

    /// One line for `tickflow check`.
    pub fn describe(&self) -> String {
        match self {
            Self::Csv(c) => format!("csv files in {} ({})", c.dir.display(), c.tables.join(", ")),
            Self::Kafka(k) => format!(
                "Kafka at {}, topics {}.<table> keyed by symbol ({})",
                k.brokers,
                k.topic_prefix,
                k.tables.join(", ")
            ),
            Self::Nats(n) => format!(
                "NATS JetStream at {}, {}.<table>.<symbol> ({}){}",
                redact_nats(&n.url),
                n.subject_prefix,
                n.tables.join(", "),
                n.stream
                    .as_ref()
                    .map_or(String::new(), |s| format!(", stream {s}"))
            ),
            Self::S3Json(j) => format!(
                "JSON lines for Athena under {}{} ({})",
                j.store.url,
                j.store
                    .endpoint
                    .as_ref()
                    .map_or(String::new(), |e| format!(" via {e}")),
                j.tables.join(", ")
            ),
            Self::Dynamodb(d) => format!(
                "DynamoDB{} {}, position in {}",
                aws_shown(&d.aws),
                d.tables
                    .iter()
                    .map(|t| format!("{} to {}", t.kind.name(), t.name))
                    .collect::<Vec<_>>()
                    .join(", "),
                d.state_table
            ),
            Self::Postgres(c) => {
                let hosts: Vec<String> = c
                    .connection
                    .get_hosts()
                    .iter()
                    .map(|h| match h {
                        tokio_postgres::config::Host::Tcp(h) => h.clone(),
                        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                    })
                    .collect();
                format!(
                    "PostgreSQL {} database {}, schema {} ({})",
                    hosts.join(","),
                    c.connection.get_dbname().unwrap_or("(the user's)"),
                    c.schema,
                    c.tables.join(", ")
                )
            }
        }
    }
}

/// Replaces `${VAR}`, `${VAR:-default}` and `${file:PATH}`; an unset variable without
/// default, or a secret file that cannot be read or that others may read, is a problem.
/// Comments are left as written, so a commented-out example needs no variable set.
fn interpolate(text: &str, problems: &mut Vec<(usize, String)>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let code = comment_start(line).unwrap_or(line.len());
        interpolate_span(&line[..code], offset, problems, &mut out);
        out.push_str(&line[code..]);
        offset += line.len();
    }
    out
}

/// Where a line's comment starts: the first `#` outside a basic or literal string.
fn comment_start(line: &str) -> Option<usize> {
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for (i, b) in line.bytes().enumerate() {
        match (quote, b) {
            (Some(b'"'), b'\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), _) if b == q && !escaped => quote = None,
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'#') => return Some(i),
            _ => {}
        }
        escaped = false;
    }
    None
}

fn interpolate_span(
    text: &str,
    base: usize,
    problems: &mut Vec<(usize, String)>,
    out: &mut String,
) {
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let expr = &after[..end];
        if let Some(path) = expr.strip_prefix("file:") {
            match read_secret_file(Path::new(path)) {
                // Spliced into a TOML string as it is: a quote or a backslash would end it
                // or change it.
                Ok(secret) if secret.contains(['"', '\'', '\\']) => {
                    let offset = base + text.len() - rest.len() + start;
                    problems.push((offset, format!("{path}: a secret holding a quote or a backslash cannot go into a config string as it is")));
                }
                Ok(secret) => out.push_str(&secret),
                Err(e) => {
                    let offset = base + text.len() - rest.len() + start;
                    problems.push((offset, e));
                }
            }
            rest = &after[end + 1..];
            continue;
        }
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match (std::env::var(name), default) {
            (Ok(v), _) => out.push_str(&v),
            (Err(_), Some(d)) => out.push_str(d),
            (Err(_), None) => {
                let offset = base + text.len() - rest.len() + start;
                problems.push((offset, format!("environment variable {name} is not set (use ${{{name}:-default}} for a default)")));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
}

/// `alerts.threshold[0].name` from serde_ignored's path.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        P::Map { parent, key } => {
            let parent = key_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            key_path(parent)
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Finds the byte span of the value at a dotted path like `alerts.threshold[1].condition`.
fn span_of(root: &toml::de::DeTable<'_>, path: &str) -> Option<std::ops::Range<usize>> {
    let mut table = root;
    let mut span = None;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (key, index) = match part.split_once('[') {
            Some((k, idx)) => (k, idx.trim_end_matches(']').parse::<usize>().ok()),
            None => (*part, None),
        };
        let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == key)?;
        span = Some(k.span());
        let mut value = v;
        if let Some(i) = index {
            let toml::de::DeValue::Array(items) = value.get_ref() else {
                return span;
            };
            value = items.get(i)?;
            span = Some(value.span());
        }
        if i + 1 == parts.len() {
            return Some(value.span());
        }
        match value.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            _ => return span,
        }
    }
    span
}

/// Collects problems with their key paths while validating.
struct Checker {
    problems: Vec<(String, String)>,
}

/// An object store's request timeout from its `timeout_ms` key: 30 s by default, as
/// object_store's own; a PUT of a large compacted part must fit in it.
fn request_timeout(c: &mut Checker, key: &str, raw: Option<i64>) -> Duration {
    let default = tickflow_lake::OBJECT_REQUEST_TIMEOUT.as_millis() as i64;
    Duration::from_millis(c.range(key, raw, default, 100, 600_000) as u64)
}

/// `prefix.key`, or `key` alone at the top.
fn join(prefix: &str, key: &str) -> String {
    match (prefix.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}.{key}"),
    }
}

impl Checker {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push((key.into(), message.into()));
    }

    /// Reads one section or entry into its raw type. Every unknown key is a problem, and so
    /// is a value of the wrong type (then `None`); the key paths start at `prefix`.
    fn typed<T: serde::de::DeserializeOwned>(
        &mut self,
        value: toml::Value,
        prefix: &str,
    ) -> Option<T> {
        let mut unknown = Vec::new();
        let mut collect = |path: serde_ignored::Path<'_>| unknown.push(key_path(&path));
        let de = serde_ignored::Deserializer::new(value, &mut collect);
        let result: Result<T, _> = serde_path_to_error::deserialize(de);
        for key in unknown {
            self.add(join(prefix, &key), "unknown key");
        }
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                let key = e.path().to_string();
                let key = if key == "." { String::new() } else { key };
                self.add(
                    join(prefix, &key),
                    e.into_inner().message().trim().to_string(),
                );
                None
            }
        }
    }

    fn range(&mut self, key: &str, value: Option<i64>, default: i64, min: i64, max: i64) -> i64 {
        match value {
            None => default,
            Some(v) if (min..=max).contains(&v) => v,
            Some(v) => {
                self.add(key, format!("{v} is out of range {min}..={max}"));
                default
            }
        }
    }

    /// When and how a rule's alerts go out, from the keys every rule takes.
    fn firing(&mut self, key: &dyn Fn(&str) -> String, raw: RawFiring<'_>) -> Firing {
        Firing {
            severity: self.severity(&key("severity"), raw.severity),
            cooldown_nanos: self.range(
                &key("cooldown_secs"),
                raw.cooldown_secs,
                60,
                0,
                86_400 * 30,
            ) * 1_000_000_000,
            reminder_nanos: self.optional_secs(&key("reminder_secs"), raw.reminder_secs),
            resolve: raw.resolve.unwrap_or(false),
            coalesce_nanos: self.optional_secs(&key("coalesce_secs"), raw.coalesce_secs),
        }
    }

    /// An interval in seconds up to 30 days, in nanoseconds; left out or 0 is none.
    fn optional_secs(&mut self, key: &str, value: Option<i64>) -> Option<i64> {
        Some(self.range(key, value, 0, 0, 86_400 * 30))
            .filter(|s| *s > 0)
            .map(|s| s * 1_000_000_000)
    }

    fn symbol(&mut self, key: &str, value: Option<&str>) -> Option<Symbol> {
        value.and_then(|s| {
            Symbol::parse(s)
                .map_err(|e| self.add(key, e.to_string()))
                .ok()
        })
    }

    fn severity(&mut self, key: &str, value: Option<&str>) -> Severity {
        match value {
            None => Severity::default(),
            Some("info") => Severity::Info,
            Some("warning") => Severity::Warning,
            Some("critical") => Severity::Critical,
            Some(other) => {
                self.add(
                    key,
                    format!("unknown severity {other:?}: expected info, warning or critical"),
                );
                Severity::default()
            }
        }
    }
}

fn validate(raw: RawConfig, checker: &mut Checker) -> Plan {
    let c = checker;
    // Relative to the working directory, like every other path a command line takes.
    let data_dir = raw
        .data_dir
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./tickflow-data"));
    let bind = match raw
        .http
        .bind
        .as_deref()
        .unwrap_or("127.0.0.1")
        .parse::<IpAddr>()
    {
        Ok(ip) => ip,
        Err(_) => {
            c.add(
                "http.bind",
                format!(
                    "{:?} is not an IP address",
                    raw.http.bind.unwrap_or_default()
                ),
            );
            IpAddr::from([127, 0, 0, 1])
        }
    };
    let pgwire_bind = match raw.pgwire.bind.as_deref().map(str::parse::<IpAddr>) {
        None => bind,
        Some(Ok(ip)) => ip,
        Some(Err(_)) => {
            c.add(
                "pgwire.bind",
                format!(
                    "{:?} is not an IP address",
                    raw.pgwire.bind.clone().unwrap_or_default()
                ),
            );
            bind
        }
    };
    let pgwire_port = c.range("pgwire.port", raw.pgwire.port, 8751, 0, 65_535) as u16;
    let pgwire_max_connections = c.range(
        "pgwire.max_connections",
        raw.pgwire.max_connections,
        256,
        1,
        1 << 20,
    ) as usize;
    let pgwire_max_connections_per_address = c.range(
        "pgwire.max_connections_per_address",
        raw.pgwire.max_connections_per_address,
        64,
        1,
        1 << 20,
    ) as usize;
    let pgwire_idle_timeout = match c.range(
        "pgwire.idle_timeout_secs",
        raw.pgwire.idle_timeout_secs,
        0,
        0,
        7 * 86_400,
    ) {
        0 => None,
        secs => Some(Duration::from_secs(secs.unsigned_abs())),
    };
    let pgwire_max_message = c.range(
        "pgwire.max_message_mb",
        raw.pgwire.max_message_mb,
        16,
        1,
        1023,
    ) as usize
        * 1024
        * 1024;
    let pgwire_auth = match raw.pgwire.auth.as_deref() {
        None | Some("scram-sha-256") => PgwireAuth::ScramSha256,
        Some("password") => PgwireAuth::Password,
        Some(other) => {
            c.add(
                "pgwire.auth",
                format!("unknown {other:?}: expected scram-sha-256 or password"),
            );
            PgwireAuth::ScramSha256
        }
    };
    let pgwire = raw
        .pgwire
        .enabled
        .unwrap_or(true)
        .then(|| std::net::SocketAddr::new(pgwire_bind, pgwire_port));
    let disabled: Vec<String> = raw
        .query
        .disable
        .unwrap_or_default()
        .into_iter()
        .filter(|name| {
            let known = QUERY_RULES.contains(&name.as_str());
            if !known {
                c.add(
                    "query.disable",
                    format!(
                        "unknown rule {name:?}: expected some of {}",
                        QUERY_RULES.join(", ")
                    ),
                );
            }
            known
        })
        .collect();
    let query = QueryPlan {
        timeout: Duration::from_secs(c.range(
            "query.timeout_secs",
            raw.query.timeout_secs,
            120,
            1,
            86_400,
        ) as u64),
        memory_bytes: c.range("query.memory_mb", raw.query.memory_mb, 4096, 16, 1 << 20) as usize
            * 1024
            * 1024,
        disabled,
    };
    let http = HttpPlan {
        bind,
        port: c.range("http.port", raw.http.port, 8750, 0, 65_535) as u16,
        max_body_bytes: c.range("http.max_body_mb", raw.http.max_body_mb, 16, 1, 1024) as usize
            * 1024
            * 1024,
        max_inflight_bytes: c.range(
            "http.max_inflight_mb",
            raw.http.max_inflight_mb,
            256,
            1,
            1 << 20,
        ) as usize
            * 1024
            * 1024,
        max_connections: c.range(
            "http.max_connections",
            raw.http.max_connections,
            1024,
            1,
            1 << 20,
        ) as usize,
        max_connections_per_address: c.range(
            "http.max_connections_per_address",
            raw.http.max_connections_per_address,
            256,
            1,
            1 << 20,
        ) as usize,
        header_timeout: Duration::from_secs(c.range(
            "http.header_timeout_secs",
            raw.http.header_timeout_secs,
            30,
            1,
            3600,
        ) as u64),
        body_timeout: Duration::from_secs(c.range(
            "http.body_timeout_secs",
            raw.http.body_timeout_secs,
            60,
            1,
            3600,
        ) as u64),
        token: secret(c, "http.token", raw.http.token, raw.http.token_file, 16),
    };
    if http.max_inflight_bytes < http.max_body_bytes {
        c.add(
            "http.max_inflight_mb",
            format!(
                "{} is below http.max_body_mb ({}): a body of the largest size could never be taken",
                http.max_inflight_bytes >> 20,
                http.max_body_bytes >> 20
            ),
        );
    }
    let ingest_token = secret(
        c,
        "http.ingest_token",
        raw.http.ingest_token,
        raw.http.ingest_token_file,
        16,
    );
    let pgwire_password = secret(
        c,
        "pgwire.password",
        raw.pgwire.password,
        raw.pgwire.password_file,
        12,
    );
    let retention_gb = match raw.log.retention_gb {
        Some(v) if v.is_nan() || v <= 0.0 => {
            c.add("log.retention_gb", format!("{v} must be positive"));
            None
        }
        other => other,
    };
    let log = LogPlan {
        kind: log_kind(c, &raw.log),
        partitions: c.range("log.partitions", raw.log.partitions, 1, 1, MAX_PARTITIONS) as u32,
        partition: None,
        segment_bytes: c.range("log.segment_mb", raw.log.segment_mb, 128, 1, 4096) as u64
            * 1024
            * 1024,
        retention_age: raw.log.retention_hours.map(|_| {
            Duration::from_secs(
                3600 * c.range(
                    "log.retention_hours",
                    raw.log.retention_hours,
                    168,
                    1,
                    24 * 3650,
                ) as u64,
            )
        }),
        retention_bytes: retention_gb.map(|gb| (gb * 1024.0 * 1024.0 * 1024.0) as u64),
        fsync: raw.log.fsync.unwrap_or(true),
        min_free_bytes: c.range("log.min_free_mb", raw.log.min_free_mb, 256, 0, 1 << 30) as u64
            * 1024
            * 1024,
    };
    let mut thresholds = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut routes: Vec<Route> = Vec::new();
    for (i, t) in raw.alerts.threshold.into_iter().enumerate() {
        let key = |f: &str| format!("alerts.threshold[{i}].{f}");
        rule_named(c, (&mut names, &mut routes), &t.name, &t.notify, &key);
        let condition = t
            .condition
            .parse::<Condition>()
            .map_err(|e| c.add(key("condition"), e))
            .ok();
        let symbol = c.symbol(&key("symbol"), t.symbol.as_deref());
        let hysteresis = t
            .hysteresis
            .as_ref()
            .and_then(|h| {
                h.text()
                    .parse::<Hysteresis>()
                    .map_err(|e| c.add(key("hysteresis"), e))
                    .ok()
            })
            .unwrap_or_default();
        let firing = c.firing(
            &key,
            RawFiring {
                severity: t.severity.as_deref(),
                cooldown_secs: t.cooldown_secs,
                reminder_secs: t.reminder_secs,
                resolve: t.resolve,
                coalesce_secs: t.coalesce_secs,
            },
        );
        if let Some(condition) = condition {
            let rule = ThresholdRule {
                name: t.name,
                symbol,
                condition,
                hysteresis,
                firing,
            };
            let clear = rule.clear_level();
            // Without a band, `price > 0` is a rule that holds for ever once it fires (a
            // reminder-only rule); with one, a level no price reaches is a mistake.
            if hysteresis != Hysteresis::None
                && clear.raw() <= 0
                && matches!(condition, Condition::Above(_))
            {
                c.add(
                    key("hysteresis"),
                    format!("{hysteresis} would clear at {clear}, which no price reaches"),
                );
            }
            thresholds.push(rule);
        }
    }
    let mut spikes = Vec::new();
    for (i, s) in raw.alerts.spike.into_iter().enumerate() {
        let key = |f: &str| format!("alerts.spike[{i}].{f}");
        rule_named(c, (&mut names, &mut routes), &s.name, &s.notify, &key);
        let k = s.k.unwrap_or(6.0);
        if k.is_nan() || k <= 0.0 || k.is_infinite() {
            c.add(
                key("k"),
                format!("{k} must be a positive number of standard deviations"),
            );
        }
        let window = c.range(&key("window"), s.window, 200, 2, 100_000) as usize;
        let min_samples = c.range(&key("min_samples"), s.min_samples, 50, 2, 100_000) as usize;
        if min_samples > window {
            c.add(
                key("min_samples"),
                format!("{min_samples} is larger than window {window}"),
            );
        }
        let min_return_pct = s.min_return_pct.unwrap_or(1.0);
        if min_return_pct.is_nan() || !(0.0..=100.0).contains(&min_return_pct) {
            c.add(
                key("min_return_pct"),
                format!("{min_return_pct} must be a percentage in 0..=100"),
            );
        }
        spikes.push(SpikeRule {
            name: s.name,
            symbol: c.symbol(&key("symbol"), s.symbol.as_deref()),
            window,
            k,
            min_samples,
            min_return: min_return_pct / 100.0,
            firing: c.firing(
                &key,
                RawFiring {
                    severity: s.severity.as_deref(),
                    cooldown_secs: s.cooldown_secs,
                    coalesce_secs: s.coalesce_secs,
                    ..RawFiring::default()
                },
            ),
        });
    }
    let mut exprs = Vec::new();
    for (i, r) in raw.alerts.rule.into_iter().enumerate() {
        let key = |f: &str| format!("alerts.rule[{i}].{f}");
        rule_named(c, (&mut names, &mut routes), &r.name, &r.notify, &key);
        let interval = r.interval.as_deref().and_then(|text| {
            text.parse::<BarInterval>()
                .map_err(|_| {
                    c.add(
                        key("interval"),
                        format!("unknown interval {text:?}: expected 1s, 1m, 5m, 1h or 1d"),
                    )
                })
                .ok()
        });
        let watch = Watch::parse(&r.on, interval)
            .map_err(|e| c.add(key("on"), e))
            .ok();
        let when = watch.and_then(|watch| {
            Expr::parse(&r.when, watch, interval)
                .map_err(|e| c.add(key("when"), e))
                .ok()
        });
        let firing = c.firing(
            &key,
            RawFiring {
                severity: r.severity.as_deref(),
                cooldown_secs: r.cooldown_secs,
                reminder_secs: r.reminder_secs,
                resolve: r.resolve,
                coalesce_secs: r.coalesce_secs,
            },
        );
        let symbol = c.symbol(&key("symbol"), r.symbol.as_deref());
        if let Some(when) = when {
            exprs.push(ExprRule {
                name: r.name,
                symbol,
                when,
                firing,
            });
        }
    }
    for (i, v) in raw.alerts.volume_spike.into_iter().enumerate() {
        let key = |f: &str| format!("alerts.volume_spike[{i}].{f}");
        rule_named(c, (&mut names, &mut routes), &v.name, &v.notify, &key);
        let interval = v.interval.as_deref().unwrap_or("1m");
        let interval = interval
            .parse::<BarInterval>()
            .map_err(|_| {
                c.add(
                    key("interval"),
                    format!("unknown interval {interval:?}: expected 1s, 1m, 5m, 1h or 1d"),
                )
            })
            .unwrap_or(BarInterval::M1);
        let window = c.range(
            &key("window"),
            v.window,
            20,
            1,
            i64::from(tickflow_process::rules::MAX_WINDOW),
        );
        let k =
            v.k.as_ref()
                .map_or_else(|| "3".to_string(), RawAmount::text);
        let when = match k.parse::<f64>() {
            Ok(x) if x > 0.0 && x.is_finite() => {
                let text = format!("volume > {k} * sma(volume, {window}, 1)");
                Expr::parse(&text, Watch::Bars(interval), None)
                    .map_err(|e| c.add(key("k"), e))
                    .ok()
            }
            _ => {
                c.add(
                    key("k"),
                    format!("{k} must be a positive number (times the mean volume)"),
                );
                None
            }
        };
        let firing = c.firing(
            &key,
            RawFiring {
                severity: v.severity.as_deref(),
                cooldown_secs: v.cooldown_secs,
                coalesce_secs: v.coalesce_secs,
                ..RawFiring::default()
            },
        );
        let symbol = c.symbol(&key("symbol"), v.symbol.as_deref());
        if let Some(when) = when {
            exprs.push(ExprRule {
                name: v.name,
                symbol,
                when,
                firing,
            });
        }
    }
    let processing = ProcessorConfig {
        lateness_nanos: c.range(
            "processing.lateness_ms",
            raw.processing.lateness_ms,
            2000,
            0,
            86_400_000,
        ) * 1_000_000,
        limits: Limits {
            max_future_nanos: c.range(
                "processing.max_future_secs",
                raw.processing.max_future_secs,
                300,
                1,
                86_400 * 7,
            ) * 1_000_000_000,
            ..Limits::default()
        },
        thresholds,
        spikes,
        exprs,
        days: match raw.processing.day_time_zone.as_deref() {
            None => Days::default(),
            Some(name) => Days::in_zone(name).unwrap_or_else(|e| {
                c.add(
                    "processing.day_time_zone",
                    format!("{e}; expected an IANA name such as \"America/New_York\" or \"UTC\""),
                );
                Days::default()
            }),
        },
    };
    if raw.lake.url.is_none() {
        let object_settings = [
            ("lake.endpoint", raw.lake.endpoint.is_some()),
            ("lake.region", raw.lake.region.is_some()),
            ("lake.access_key_id", raw.lake.access_key_id.is_some()),
            (
                "lake.secret_access_key",
                raw.lake.secret_access_key.is_some(),
            ),
        ];
        for (key, _) in object_settings.iter().filter(|(_, set)| *set) {
            c.add(
                *key,
                "applies only to a lake on object storage: set lake.url = \"s3://bucket/prefix\" too",
            );
        }
    }
    let lake = LakePlan {
        flush_interval: Duration::from_millis(c.range(
            "lake.flush_interval_ms",
            raw.lake.flush_interval_ms,
            1000,
            10,
            3_600_000,
        ) as u64),
        flush_rows: c.range(
            "lake.flush_rows",
            raw.lake.flush_rows,
            750_000,
            1,
            100_000_000,
        ) as usize,
        symbol_buckets: c.range("lake.symbol_buckets", raw.lake.symbol_buckets, 0, 0, 4096) as u32,
        compact_every: match c.range(
            "lake.compact_interval_secs",
            raw.lake.compact_interval_secs,
            60,
            0,
            86_400,
        ) {
            0 => None,
            secs => Some(Duration::from_secs(secs as u64)),
        },
        compact: tickflow_lake::CompactPolicy {
            target_bytes: c.range(
                "lake.compact_target_mb",
                raw.lake.compact_target_mb,
                128,
                1,
                4096,
            ) as u64
                * 1024
                * 1024,
            ..tickflow_lake::CompactPolicy::default()
        },
        sink_buffer_rows: c.range(
            "lake.sink_buffer_rows",
            raw.lake.sink_buffer_rows,
            2_000_000,
            0,
            1_000_000_000,
        ) as usize,
        object: raw.lake.url.map(|url| {
            let object = tickflow_lake::ObjectLake {
                url,
                endpoint: raw.lake.endpoint,
                region: raw.lake.region,
                access_key_id: raw.lake.access_key_id,
                secret_access_key: raw.lake.secret_access_key,
                timeout: Some(request_timeout(c, "lake.timeout_ms", raw.lake.timeout_ms)),
            };
            if let Err(e) = object.bucket_and_prefix() {
                c.add("lake.url", e);
            }
            if let Some(e) = &object.endpoint
                && !(e.starts_with("http://") || e.starts_with("https://"))
            {
                c.add(
                    "lake.endpoint",
                    format!("{e:?} is not an http:// or https:// URL"),
                );
            }
            if object.access_key_id.is_some() != object.secret_access_key.is_some() {
                c.add(
                    "lake.access_key_id",
                    "set access_key_id and secret_access_key together, or neither (then they come from the AWS environment)",
                );
            }
            object
        }),
        dir: None,
        retention_days: raw
            .lake
            .retention_days
            .map(|_| c.range("lake.retention_days", raw.lake.retention_days, 0, 1, 36_500) as u32),
    };
    if lake.retention_days.is_some() && lake.compact_every.is_none() {
        c.add(
            "lake.retention_days",
            "retention runs with compaction: set lake.compact_interval_secs above 0",
        );
    }

    let mut sources: Vec<SourcePlan> = Vec::new();
    for source in raw.sources {
        let i = source.index;
        let key = |f: &str| format!("sources[{i}].{f}");
        let default_id = match source.kind {
            RawSourceKind::Simulator(_) => "simulator",
            RawSourceKind::Replay(_) => "replay",
            RawSourceKind::Http(_) => "http",
            RawSourceKind::Coinbase(_) => "coinbase",
            RawSourceKind::Binance(_) => "binance",
            RawSourceKind::Alpaca(_) => "alpaca",
            RawSourceKind::Polygon(_) => "polygon",
            RawSourceKind::RestPoll(_) => "rest_poll",
            RawSourceKind::Nats(_) => "nats",
            RawSourceKind::Sqs(_) => "sqs",
            RawSourceKind::Kafka(_) => "kafka",
        };
        let is_http = matches!(source.kind, RawSourceKind::Http(_));
        let id = source.id.unwrap_or_else(|| default_id.to_string());
        if !valid_id(&id) {
            c.add(
                key("id"),
                format!(
                    "{id:?} is not a valid id: use 1 to 64 lower-case letters, digits, '-' or '_'"
                ),
            );
        } else if id == "http" && !is_http {
            c.add(
                key("id"),
                "\"http\" names the default HTTP ingest: choose another id",
            );
        } else if sources.iter().any(|s| s.id == id) {
            c.add(
                key("id"),
                format!("another source is already called {id:?}: give each source its own id"),
            );
        }
        let config = match source.kind {
            RawSourceKind::Simulator(RawSimulator {
                rate,
                seed,
                anomaly_rate,
                quote_ratio,
                history_days,
                history_step_secs,
                symbols,
            }) => {
                let mut probability = |f: &str, v: Option<f64>, default: f64| match v {
                    Some(p) if (0.0..=1.0).contains(&p) => p,
                    Some(p) => {
                        c.add(key(f), format!("{p} is not a probability in 0..=1"));
                        default
                    }
                    None => default,
                };
                let anomaly_rate = probability("anomaly_rate", anomaly_rate, 0.0);
                let quote_ratio = probability("quote_ratio", quote_ratio, 0.5);
                let universe = SimSymbol::demo_universe();
                let symbols = match symbols {
                    None => universe,
                    Some(list) if list.is_empty() => {
                        c.add(
                            key("symbols"),
                            "list at least one symbol, or leave the key out for the demo universe",
                        );
                        universe
                    }
                    Some(list) => list
                        .iter()
                        .filter_map(|s| match Symbol::parse(s) {
                            Ok(sym) => Some(
                                universe
                                    .iter()
                                    .find(|u| u.symbol == sym)
                                    .cloned()
                                    .unwrap_or_else(|| SimSymbol::new(sym.as_str(), 100.0, 0.4)),
                            ),
                            Err(e) => {
                                c.add(key("symbols"), e.to_string());
                                None
                            }
                        })
                        .collect(),
                };
                SourceConfig::Simulator(SimulatorPlan {
                    config: SimulatorConfig {
                        symbols,
                        seed: seed.unwrap_or(42),
                        quote_ratio,
                        anomaly_rate,
                        source: Arc::from(id.as_str()),
                        feed: Arc::from("sim"),
                    },
                    rate: c.range(&key("rate"), rate, 20_000, 0, 100_000_000) as u64,
                    history_days: c.range(&key("history_days"), history_days, 0, 0, 3650) as u32,
                    history_step_nanos: c.range(
                        &key("history_step_secs"),
                        history_step_secs,
                        300,
                        1,
                        86_400,
                    ) * 1_000_000_000,
                })
            }
            RawSourceKind::Replay(replay) => {
                let path = match replay.path {
                    Some(p) if !p.is_empty() => PathBuf::from(p),
                    _ => {
                        c.add(key("path"), "missing: the file or folder to replay");
                        PathBuf::new()
                    }
                };
                let speed = match replay.speed {
                    None => None,
                    Some(x) if x.is_finite() && x > 0.0 => Some(x),
                    Some(x) => {
                        c.add(
                            key("speed"),
                            format!("{x} must be a positive factor of the recorded pace (leave it out for as fast as possible)"),
                        );
                        None
                    }
                };
                SourceConfig::Replay(ReplayPlan { path, speed })
            }
            RawSourceKind::Coinbase(mut raw) => {
                if raw.key.take().is_some() {
                    c.add(
                        key("key"),
                        "Coinbase's public feed and history take no key: leave it out",
                    );
                }
                let rest_url = http_url(
                    c,
                    &key("rest_url"),
                    raw.rest_url.take(),
                    tickflow_sources::coinbase::history::DEFAULT_REST_URL,
                );
                let repair_gaps = raw.repair_gaps.unwrap_or(true);
                let repair_hold = repair_hold(c, &key, raw.repair_hold_secs);
                let f = ws_feed(c, &key, raw, tickflow_sources::coinbase::DEFAULT_URL);
                SourceConfig::Coinbase(tickflow_sources::coinbase::CoinbaseSource {
                    url: f.url,
                    symbols: f.symbols.iter().map(|s| s.as_str().to_string()).collect(),
                    stale_after: f.stale_after,
                    ping_every: f.ping_every,
                    retry_max: f.retry_max,
                    rest_url,
                    repair_gaps,
                    repair_hold,
                })
            }
            RawSourceKind::Alpaca(raw) => alpaca(c, &key, raw),
            RawSourceKind::Polygon(raw) => polygon(c, &key, raw),
            RawSourceKind::RestPoll(raw) => rest_poll(c, &key, raw),
            RawSourceKind::Nats(raw) => nats(c, &key, raw, &id),
            RawSourceKind::Sqs(raw) => sqs(c, &key, raw),
            RawSourceKind::Kafka(raw) => kafka(c, &key, raw, &id),
            RawSourceKind::Binance(mut raw) => {
                let rest_url = http_url(
                    c,
                    &key("rest_url"),
                    raw.rest_url.take(),
                    tickflow_sources::binance::history::DEFAULT_REST_URL,
                );
                let repair_gaps = raw.repair_gaps.unwrap_or(true);
                let repair_hold = repair_hold(c, &key, raw.repair_hold_secs);
                let api_key = raw.key.take().filter(|k| !k.is_empty());
                if api_key
                    .as_deref()
                    .is_some_and(|k| !k.bytes().all(|b| b.is_ascii_graphic()))
                {
                    // Sent as a header: a stray newline or space from a copied key would
                    // otherwise fail only once the source starts.
                    c.add(
                        key("key"),
                        "holds a space, a control or a non-ASCII character; an API key is visible ASCII",
                    );
                }
                let f = ws_feed(c, &key, raw, tickflow_sources::binance::DEFAULT_URL);
                for s in f.symbols.iter().filter(|s| !s.as_str().contains('-')) {
                    c.add(
                        key("symbols"),
                        format!("\"{s}\": write the pair as BASE-QUOTE (\"BTC-USDT\"), the form tickflow stores; its stream is named from it"),
                    );
                }
                SourceConfig::Binance(tickflow_sources::binance::BinanceSource {
                    url: f.url,
                    symbols: f.symbols,
                    stale_after: f.stale_after,
                    ping_every: f.ping_every,
                    retry_max: f.retry_max,
                    rest_url,
                    key: api_key,
                    repair_gaps,
                    repair_hold,
                })
            }
            RawSourceKind::Http(h) => {
                if h.token.as_deref().is_some_and(|t| t.len() < 16) {
                    c.add(
                        key("token"),
                        "shorter than 16 characters: use a long random token",
                    );
                }
                SourceConfig::Http(HttpSourcePlan {
                    token: h.token.map(Secret),
                })
            }
        };
        sources.push(SourcePlan { id, config });
    }
    // HTTP ingest is always on: a config that names no HTTP source gets the open one, `http`.
    if !sources
        .iter()
        .any(|s| matches!(s.config, SourceConfig::Http(_)))
    {
        sources.push(SourcePlan {
            id: "http".to_string(),
            config: SourceConfig::Http(HttpSourcePlan { token: None }),
        });
    }
    let mut sinks: Vec<SinkPlan> = Vec::new();
    let mut dirs: Vec<(PathBuf, usize)> = Vec::new();
    for sink in raw.sinks {
        let i = sink.index;
        let key = |f: &str| format!("sinks[{i}].{f}");
        let config = match sink.kind {
            RawSinkKind::Csv(csv) => {
                let tables = sink_tables(csv.tables, &tickflow_sinks::csv::TABLES, &key, c);
                SinkConfig::Csv(tickflow_sinks::csv::CsvConfig {
                    dir: PathBuf::new(),
                    tables,
                    fsync: csv.fsync.unwrap_or(true),
                })
                .with_dir(csv.dir)
            }
            RawSinkKind::Postgres(pg) => SinkConfig::Postgres(Box::new(postgres_sink(pg, &key, c))),
            RawSinkKind::Dynamodb(raw) => {
                SinkConfig::Dynamodb(Box::new(dynamodb_sink(raw, &key, c)))
            }
            RawSinkKind::S3Json(raw) => {
                let store = tickflow_lake::ObjectLake {
                    url: raw.url.unwrap_or_default(),
                    endpoint: raw.endpoint,
                    region: raw.region,
                    access_key_id: raw.access_key_id,
                    secret_access_key: raw.secret_access_key,
                    timeout: Some(request_timeout(c, &key("timeout_ms"), raw.timeout_ms)),
                };
                if let Err(e) = store.bucket_and_prefix() {
                    c.add(key("url"), e);
                }
                let tables = sink_tables(raw.tables, &tickflow_lake::json_sink::TABLES, &key, c)
                    .into_iter()
                    .map(str::to_string)
                    .collect();
                SinkConfig::S3Json(tickflow_lake::json_sink::JsonSinkConfig { store, tables })
            }
            RawSinkKind::Nats(raw) => SinkConfig::Nats(nats_sink(raw, &key, c)),
            RawSinkKind::Kafka(raw) => SinkConfig::Kafka(kafka_sink(raw, &key, c)),
        };
        let id = sink.id.unwrap_or_else(|| config.type_name().to_string());
        if !valid_id(&id) {
            c.add(
                key("id"),
                format!(
                    "{id:?} is not a valid id: use 1 to 64 lower-case letters, digits, '-' or '_'"
                ),
            );
        } else if sinks.iter().any(|s| s.id == id) {
            c.add(
                key("id"),
                format!("another sink is already called {id:?}: give each sink its own id"),
            );
        }
        let mut config = config;
        // A sink's files default to the data directory, under its id; two sinks in one
        // directory would share (and corrupt) one position.
        if let SinkConfig::Nats(n) = &mut config
            && n.dir.as_os_str().is_empty()
        {
            n.dir = data_dir.join("sinks").join(&id);
        }
        if let SinkConfig::Kafka(k) = &mut config
            && k.dir.as_os_str().is_empty()
        {
            k.dir = data_dir.join("sinks").join(&id);
        }
        if let SinkConfig::Csv(csv) = &mut config {
            if csv.dir.as_os_str().is_empty() {
                csv.dir = data_dir.join("sinks").join(&id);
            }
            if let Some((_, other)) = dirs.iter().find(|(d, _)| *d == csv.dir) {
                c.add(
                    key("dir"),
                    format!(
                        "{} is already sinks[{other}]'s directory: give each sink its own",
                        csv.dir.display()
                    ),
                );
            }
            dirs.push((csv.dir.clone(), i));
        }
        let overflow = overflow(c, &key, sink.backlog);
        sinks.push(SinkPlan {
            id,
            config,
            overflow,
        });
    }
    let mut notifiers: Vec<NotifierPlan> = Vec::new();
    for notifier in raw.notifiers {
        let i = notifier.index;
        let key = |f: &str| format!("notifiers[{i}].{f}");
        let config = match notifier.kind {
            RawNotifierKind::Log => NotifierConfig::Log,
            RawNotifierKind::Webhook(w) => {
                let url = w.url.unwrap_or_default();
                let missing_url = url.is_empty();
                if missing_url {
                    c.add(
                        key("url"),
                        "missing: the http:// or https:// address to POST alerts to",
                    );
                }
                let format = match w.format.as_deref() {
                    None => tickflow_notify::webhook::Format::Json,
                    Some(name) => tickflow_notify::webhook::Format::ALL
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, f)| *f)
                        .unwrap_or_else(|| {
                            c.add(
                                key("format"),
                                format!("unknown format {name:?}: expected json, slack or discord"),
                            );
                            tickflow_notify::webhook::Format::Json
                        }),
                };
                let webhook = tickflow_notify::webhook::WebhookConfig {
                    url,
                    format,
                    headers: w.headers.unwrap_or_default().into_iter().collect(),
                    timeout: Duration::from_millis(c.range(
                        &key("timeout_ms"),
                        w.timeout_ms,
                        5000,
                        1,
                        60_000,
                    ) as u64),
                };
                for (field, message) in webhook.problems() {
                    if !(missing_url && field == "url") {
                        c.add(key(field), message);
                    }
                }
                NotifierConfig::Webhook(webhook)
            }
            RawNotifierKind::Email(e) => NotifierConfig::Email(email(c, &key, e)),
            RawNotifierKind::Sns(raw) => {
                let sns = tickflow_aws::sns::SnsConfig {
                    aws: aws!(raw),
                    topic_arn: raw.topic_arn.unwrap_or_default(),
                    timeout: Duration::from_millis(c.range(
                        &key("timeout_ms"),
                        raw.timeout_ms,
                        5000,
                        1,
                        60_000,
                    ) as u64),
                };
                for (field, message) in sns.problems() {
                    c.add(key(field), message);
                }
                NotifierConfig::Sns(sns)
            }
        };
        let id = notifier
            .id
            .unwrap_or_else(|| config.type_name().to_string());
        if !valid_id(&id) {
            c.add(
                key("id"),
                format!(
                    "{id:?} is not a valid id: use 1 to 64 lower-case letters, digits, '-' or '_'"
                ),
            );
        } else if notifiers.iter().any(|n| n.id == id) {
            c.add(
                key("id"),
                format!("another notifier is already called {id:?}: give each its own id"),
            );
        } else if sinks.iter().any(|s| s.id == id) || sources.iter().any(|s| s.id == id) {
            // Ids label the same metrics and the DLQ's `source`: they must not mix.
            c.add(
                key("id"),
                format!("a source or sink is already called {id:?}: give the notifier its own id"),
            );
        }
        let d = notifier.delivery;
        notifiers.push(NotifierPlan {
            id,
            config,
            max_attempts: c.range(&key("max_attempts"), d.max_attempts, 10, 1, 1000) as u32,
            retry_max: Duration::from_millis(c.range(
                &key("retry_max_ms"),
                d.retry_max_ms,
                60_000,
                1,
                3_600_000,
            ) as u64),
            max_age: Duration::from_secs(c.range(
                &key("max_age_secs"),
                d.max_age_secs,
                86_400,
                1,
                86_400 * 3650,
            ) as u64),
            rules: std::collections::HashSet::new(),
        });
    }
    let mut stale_feeds = Vec::new();
    for (i, f) in raw.alerts.stale_feed.into_iter().enumerate() {
        let key = |k: &str| format!("alerts.stale_feed[{i}].{k}");
        rule_named(c, (&mut names, &mut routes), &f.name, &f.notify, &key);
        if let Some(id) = &f.source
            && !sources.iter().any(|s| s.id == *id)
        {
            c.add(key("source"), format!("no source is called {id:?}"));
        }
        let hours = f
            .calendar
            .as_deref()
            .map(|h| {
                h.parse()
                    .map_err(|e| c.add(key("calendar"), e))
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        stale_feeds.push(crate::feed_watch::StaleRule {
            name: f.name,
            source: f.source,
            after_nanos: c.range(&key("after_secs"), f.after_secs, 60, 1, 86_400 * 7)
                * 1_000_000_000,
            hours,
            severity: c.severity(&key("severity"), f.severity.as_deref()),
            resolve: f.resolve.unwrap_or(true),
        });
    }
    let mut gap_rules = Vec::new();
    for (i, g) in raw.alerts.gap.into_iter().enumerate() {
        let key = |k: &str| format!("alerts.gap[{i}].{k}");
        rule_named(c, (&mut names, &mut routes), &g.name, &g.notify, &key);
        if let Some(id) = &g.source
            && !sources.iter().any(|s| s.id == *id)
        {
            c.add(key("source"), format!("no source is called {id:?}"));
        }
        gap_rules.push(crate::feed_watch::GapRule {
            name: g.name,
            source: g.source,
            min_nanos: c.range(&key("min_secs"), g.min_secs, 0, 0, 86_400 * 30) * 1_000_000_000,
            severity: c.severity(&key("severity"), g.severity.as_deref()),
        });
    }
    // Each rule's alerts go to the notifiers it names, or to all of them.
    for (rule, notify, key) in routes {
        match notify {
            None => {
                for n in &mut notifiers {
                    n.rules.insert(rule.clone());
                }
            }
            Some(ids) => {
                for id in ids {
                    match notifiers.iter_mut().find(|n| n.id == id) {
                        Some(n) => {
                            n.rules.insert(rule.clone());
                        }
                        None => c.add(key.clone(), format!("no notifier is called {id:?}")),
                    }
                }
            }
        }
    }
    let jobs = crate::jobs::plans(raw.jobs, |key, message| c.add(key, message));
    let emails: Vec<&str> = notifiers
        .iter()
        .filter(|n| matches!(n.config, NotifierConfig::Email(_)))
        .map(|n| n.id.as_str())
        .collect();
    for (i, job) in jobs.iter().enumerate() {
        let key = format!("jobs[{i}].notifier");
        match (&job.notifier, job.kind) {
            (Some(id), crate::jobs::JobKind::WeeklyReport | crate::jobs::JobKind::DailyReport)
                if !emails.contains(&id.as_str()) =>
            {
                c.add(key, format!("no e-mail notifier is called {id:?}"));
            }
            (None, crate::jobs::JobKind::WeeklyReport | crate::jobs::JobKind::DailyReport)
                if emails.len() != 1 =>
            {
                c.add(
                    key,
                    format!(
                        "missing: the e-mail notifier to send the report through ({} configured)",
                        if emails.is_empty() {
                            "none".to_string()
                        } else {
                            emails.join(", ")
                        }
                    ),
                );
            }
            (Some(_), crate::jobs::JobKind::Compaction) => {
                c.add(key, "a compaction job sends nothing");
            }
            _ => {}
        }
        if job.kind == crate::jobs::JobKind::Retention && lake.retention_days.is_none() {
            c.add(
                format!("jobs[{i}].kind"),
                "a retention job needs `[lake] retention_days`",
            );
        }
        if let Some(fetch) = &job.fetch {
            let key = |f: &str| format!("jobs[{i}].{f}");
            if let Err(e) = fetch.what.parse::<tickflow_sources::history::What>() {
                c.add(key("what"), e);
            }
            let with_history: Vec<&str> = sources
                .iter()
                .filter(|s| s.config.history(&s.id).is_some())
                .map(|s| s.id.as_str())
                .collect();
            match &fetch.source {
                Some(id) if !sources.iter().any(|s| s.id == *id) => {
                    c.add(key("source"), format!("no source is called {id:?}"));
                }
                Some(id) if !with_history.contains(&id.as_str()) => c.add(
                    key("source"),
                    format!(
                        "source {id:?} has no vendor history to fetch from (alpaca, polygon, coinbase and binance do)"
                    ),
                ),
                None if with_history.len() != 1 => c.add(
                    key("source"),
                    format!(
                        "missing: the source to fetch through ({} with a vendor history)",
                        if with_history.is_empty() {
                            "none".to_string()
                        } else {
                            with_history.join(", ")
                        }
                    ),
                ),
                _ => {}
            }
        }
    }
    if log.partitions > 1 {
        // Each would run in every process at once, or in none.
        for (what, given) in [
            ("[[jobs]]", !jobs.is_empty()),
            ("[[alerts.stale_feed]]", !stale_feeds.is_empty()),
            ("[[alerts.gap]]", !gap_rules.is_empty()),
        ] {
            if given {
                c.add(
                    "log.partitions",
                    format!("{what} cannot run yet with a partitioned log (each process would run it); set partitions = 1 with a new data directory and log to use it"),
                );
            }
        }
    }
    let health = HealthPlan {
        source_silence: Duration::from_secs(c.range(
            "health.source_silence_secs",
            raw.health.source_silence_secs,
            60,
            1,
            86_400,
        ) as u64),
        hours: match raw.health.calendar.as_deref().map(str::parse) {
            None => crate::feed_watch::Hours::Always,
            Some(Ok(hours)) => hours,
            Some(Err(e)) => {
                c.add("health.calendar", e);
                crate::feed_watch::Hours::Always
            }
        },
        sink_lag_flushes: c.range(
            "health.sink_lag_flushes",
            raw.health.sink_lag_flushes,
            60,
            1,
            1_000_000,
        ) as u64,
        sources: raw.health.sources.inspect(|ids| {
            for id in ids {
                if !sources.iter().any(|s| &s.id == id) {
                    c.add(
                        "health.sources",
                        format!("no source has the id {id:?}; [[sources]] ids are what it lists"),
                    );
                }
            }
        }),
    };
    guard_exposed(c, &http, ingest_token.as_ref(), &mut sources);
    if let Some(addr) = pgwire.filter(|a| !a.ip().is_loopback() && pgwire_password.is_none()) {
        c.add(
            if raw.pgwire.bind.is_some() { "pgwire.bind" } else { "http.bind" },
            format!(
                "the Postgres-wire endpoint on {addr} is reachable from other machines: set pgwire.password (or pgwire.password_file), or [pgwire] enabled = false (docs/security.md)"
            ),
        );
    }
    let tls = tls(c, raw.tls);
    Plan {
        data_dir,
        http,
        pgwire,
        pgwire_password,
        pgwire_max_connections,
        pgwire_max_connections_per_address,
        pgwire_auth,
        pgwire_idle_timeout,
        pgwire_max_message,
        query,
        log,
        processing,
        lake,
        sources,
        sinks,
        notifiers,
        jobs,
        stale_feeds,
        gap_rules,
        health,
        tls,
    }
}

/// A sink's `overflow` and `max_lag_flushes`.
fn overflow(c: &mut Checker, key: &dyn Fn(&str) -> String, raw: RawBacklog) -> Overflow {
    let max_lag_flushes = c.range(
        &key("max_lag_flushes"),
        raw.max_lag_flushes,
        600,
        1,
        100_000_000,
    ) as u64;
    let policy = match raw.overflow.as_deref() {
        None | Some("block") => Overflow::Block,
        Some("drop_oldest") => Overflow::DropOldest { max_lag_flushes },
        Some("drop_newest") => Overflow::DropNewest { max_lag_flushes },
        Some(other) => {
            c.add(
                key("overflow"),
                format!(
                    "unknown policy {other:?}: expected {}",
                    Overflow::NAMES.join(", ")
                ),
            );
            Overflow::Block
        }
    };
    if policy == Overflow::Block && raw.max_lag_flushes.is_some() {
        c.add(
            key("max_lag_flushes"),
            "only a sink that drops has a limit: set overflow = \"drop_oldest\" or \"drop_newest\"",
        );
    }
    policy
}

/// `[tls]`: neither file (plain TCP) or both, the key's readable by its owner only.
fn tls(c: &mut Checker, raw: RawTls) -> Option<TlsPlan> {
    let (cert_file, key_file) = match (raw.cert_file, raw.key_file) {
        (None, None) => return None,
        (Some(cert), Some(key)) => (PathBuf::from(cert), PathBuf::from(key)),
        (cert, _) => {
            let (key, other) = if cert.is_some() {
                ("tls.key_file", "tls.cert_file")
            } else {
                ("tls.cert_file", "tls.key_file")
            };
            c.add(key, format!("missing: {other} is set, and TLS needs both"));
            return None;
        }
    };
    if let Err(e) = std::fs::metadata(&cert_file) {
        c.add("tls.cert_file", format!("{}: {e}", cert_file.display()));
    }
    if let Err(e) = private_file(&key_file) {
        c.add("tls.key_file", e);
    }
    Some(TlsPlan {
        cert_file,
        key_file,
    })
}

/// A secret from `key` (usually `"${VAR}"`, so it stays out of the file) or from the file
/// `<key>_file` names, which only its owner may read.
fn secret(
    c: &mut Checker,
    key: &str,
    value: Option<String>,
    file: Option<String>,
    min_len: usize,
) -> Option<Secret> {
    let file_key = format!("{key}_file");
    let value = match (value, file) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            c.add(file_key, format!("set {key} or {key}_file, not both"));
            return None;
        }
        (Some(v), None) => v,
        (None, Some(path)) => match read_secret_file(Path::new(&path)) {
            Ok(v) => v,
            Err(e) => {
                c.add(file_key, e);
                return None;
            }
        },
    };
    if value.chars().count() < min_len {
        c.add(
            key,
            format!("shorter than {min_len} characters: use a long random secret"),
        );
    }
    Some(Secret(value))
}

/// Refuses a file of secrets that other users may read.
fn private_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} may be read by other users (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// A secret kept in a file: its first line, refused when other users may read the file.
fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    private_file(path)?;
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Err(format!("{} is not a file", path.display()));
    }
    // A secret is a line; a device or a huge file named by mistake must not be read whole.
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let value = text.lines().next().unwrap_or("").trim_end().to_string();
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(value)
}

/// Gives every HTTP ingest source without a token of its own `ingest_token`, keeps the
/// ingest and query tokens apart, and refuses an API reachable from other machines without
/// them (docs/security.md).
fn guard_exposed(
    c: &mut Checker,
    http: &HttpPlan,
    ingest_token: Option<&Secret>,
    sources: &mut [SourcePlan],
) {
    // RFC 6750's token characters: the token travels in a header and the dashboard's cookie.
    let b64token = |t: &Secret| {
        t.0.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
    };
    for (key, token) in [
        ("http.token", http.token.as_ref()),
        ("http.ingest_token", ingest_token),
    ] {
        if token.is_some_and(|t| !b64token(t)) {
            c.add(
                key,
                "use only letters, digits and -._~+/= (it is sent as a bearer token)",
            );
        }
    }
    let exposed = !http.bind.is_loopback();
    if exposed && http.token.is_none() {
        c.add(
            "http.bind",
            format!(
                "{} is reachable from other machines: set http.token (or http.token_file) for queries and administration (docs/security.md)",
                http.bind
            ),
        );
    }
    for source in sources.iter_mut() {
        let SourceConfig::Http(h) = &mut source.config else {
            continue;
        };
        if h.token.is_none() {
            h.token = ingest_token.cloned();
        }
        if h.token.is_some() && h.token == http.token {
            c.add(
                "http.token",
                format!(
                    "ingest source {:?} has the same token as http.token: use separate tokens, so a producer cannot query or administer",
                    source.id
                ),
            );
        } else if exposed && h.token.is_none() {
            c.add(
                "http.bind",
                format!(
                    "{} is reachable from other machines: HTTP ingest source {:?} needs a token (its own, or http.ingest_token)",
                    http.bind, source.id
                ),
            );
        }
    }
}

/// The most partitions a broker log may have: each is a processor, a checkpoint and a
/// folder of every lake table.
pub const MAX_PARTITIONS: i64 = 64;

/// Ids name connectors in metrics labels, status and file names: short and plain.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl SinkConfig {
    /// Sets the directory of a file sink when the config names one.
    fn with_dir(mut self, dir: Option<String>) -> Self {
        if let (Self::Csv(c), Some(dir)) = (&mut self, dir) {
            c.dir = PathBuf::from(dir);
        }
        self
    }
}

/// The tables a sink keeps: all it knows when `list` is absent, else those named.
fn sink_tables(
    list: Option<Vec<String>>,
    known: &[&'static str],
    key: &dyn Fn(&str) -> String,
    c: &mut Checker,
) -> Vec<&'static str> {
    let Some(list) = list else {
        return known.to_vec();
    };
    list.iter()
        .filter_map(|t| {
            let found = known.iter().find(|k| **k == t.as_str());
            if found.is_none() {
                c.add(
                    key("tables"),
                    format!("unknown table {t:?}: expected some of {}", known.join(", ")),
                );
            }
            found.copied()
        })
        .collect()
}

/// Validates a `type = "postgres"` sink.
fn postgres_sink(
    raw: RawPostgresSink,
    key: &dyn Fn(&str) -> String,
    c: &mut Checker,
) -> tickflow_postgres::PostgresConfig {
    // `sslmode` and `sslrootcert` are tickflow's to read; tokio-postgres reads the rest.
    let split = raw.url.as_deref().map(tickflow_postgres::tls::split);
    let (url, ssl_mode, root_cert) = match split {
        None => (None, tickflow_postgres::tls::SslMode::Prefer, None),
        Some(Ok(s)) => (Some(s.rest), s.mode, s.root_cert),
        Some(Err(e)) => {
            c.add(key("url"), e);
            (None, tickflow_postgres::tls::SslMode::Prefer, None)
        }
    };
    let mut connection = match url.as_deref().map(str::parse::<tokio_postgres::Config>) {
        None => tokio_postgres::Config::new(),
        Some(Ok(config)) => config,
        Some(Err(e)) => {
            c.add(
                key("url"),
                format!("not a PostgreSQL connection string ({e}): use postgres://user@host:5432/db or \"host=… user=… dbname=…\""),
            );
            tokio_postgres::Config::new()
        }
    };
    if raw.url.is_some() && (raw.host.is_some() || raw.port.is_some()) {
        c.add(
            key(if raw.host.is_some() { "host" } else { "port" }),
            "give the server in url or as host and port, not both",
        );
    }
    if let Some(host) = &raw.host {
        connection.host(host);
    }
    if let Some(port) = raw.port {
        match u16::try_from(port) {
            Ok(p) if p > 0 => {
                connection.port(p);
            }
            _ => c.add(
                key("port"),
                format!("{port} is not a TCP port (1 to 65535)"),
            ),
        }
    }
    if let Some(user) = &raw.user {
        connection.user(user);
    }
    if let Some(password) = &raw.password {
        connection.password(password);
    }
    if let Some(dbname) = &raw.dbname {
        connection.dbname(dbname);
    }
    if raw.url.is_none() && connection.get_hosts().is_empty() {
        c.add(
            key("url"),
            "missing: set url (for example \"${DATABASE_URL}\") or host, user and dbname",
        );
    } else if connection.get_user().is_none() {
        c.add(
            key("user"),
            "missing: name the database user, in url or as user",
        );
    }
    connection.application_name("tickflow");
    connection.connect_timeout(Duration::from_secs(10));
    connection.ssl_mode(if ssl_mode.encrypts() {
        tokio_postgres::config::SslMode::Require
    } else {
        tokio_postgres::config::SslMode::Disable
    });
    let tls = tickflow_postgres::tls::client(ssl_mode, root_cert.as_deref()).unwrap_or_else(|e| {
        c.add(key("url"), e);
        None
    });
    let schema = raw.schema.unwrap_or_else(|| "tickflow".into());
    if !tickflow_postgres::valid_schema(&schema) {
        c.add(
            key("schema"),
            format!("{schema:?} is not a plain schema name: use lower-case letters, digits and '_', starting with a letter"),
        );
    }
    let compress_after = raw.compress_after.unwrap_or_else(|| "7 days".into());
    let plain =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ');
    if !plain(&compress_after) {
        c.add(
            key("compress_after"),
            format!("{compress_after:?} is not an interval such as \"7 days\" or \"12 hours\""),
        );
    }
    tickflow_postgres::PostgresConfig {
        connection,
        tls,
        schema,
        tables: sink_tables(raw.tables, &tickflow_postgres::TABLES, key, c),
        compress_after,
        timeout: Duration::from_secs(c.range(
            key("timeout_secs").as_str(),
            raw.timeout_secs,
            60,
            1,
            3600,
        ) as u64),
    }
}

/// Parses and validates configuration text; `file` names it in errors.
///
/// # Errors
/// Every problem found, each with line and key.
pub fn parse(text: &str, file: &Path) -> Result<Plan, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        file: file.to_path_buf(),
        problems,
    };
    let mut env_problems = Vec::new();
    let written = text;
    let text = interpolate(text, &mut env_problems);
    let mut problems: Vec<Problem> = env_problems
        .into_iter()
        .map(|(off, m)| Problem {
            // The offset is in the file as written, before any value was put in.
            line: Some(line_of(written, off)),
            key: String::new(),
            message: m,
        })
        .collect();
    let root = match toml::de::DeTable::parse(&text) {
        Ok(root) => root,
        Err(e) => {
            problems.push(Problem {
                line: e.span().map(|s| line_of(&text, s.start)),
                key: String::new(),
                message: e.message().to_string(),
            });
            return Err(fail(problems));
        }
    };
    // A key the file does not spell out (a default found wrong) is shown at its table.
    let locate = |key: &str| {
        let mut key = key;
        loop {
            if let Some(span) = span_of(root.get_ref(), key) {
                return Some(line_of(&text, span.start));
            }
            key = &key[..key.rfind('.')?];
        }
    };
    let mut checker = Checker {
        problems: Vec::new(),
    };
    let raw = match toml::from_str::<toml::Table>(&text) {
        Ok(table) => read_sections(table, &mut checker),
        Err(e) => {
            problems.push(Problem {
                line: e.span().map(|s| line_of(&text, s.start)),
                key: String::new(),
                message: e.message().trim().to_string(),
            });
            return Err(fail(problems));
        }
    };
    let plan = validate(raw, &mut checker);
    for (key, message) in checker.problems {
        problems.push(Problem {
            line: locate(&key),
            key,
            message,
        });
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        // In file order, as a reader fixes them.
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(fail(problems))
    }
}

/// Reads, parses and validates a config file.
///
/// # Errors
/// The file cannot be read, or any problem [`parse`] reports.
pub fn load(path: &Path) -> Result<Plan, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        problems: vec![Problem {
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }],
    })?;
    parse(&text, path)
}

/// Reads each top-level section on its own, and each `[[sources]]` and `[[sinks]]` entry by
/// the variant its `type` names, so one bad value hides no other problem.
fn read_sections(root: toml::Table, c: &mut Checker) -> RawConfig {
    let mut raw = RawConfig::default();
    for (key, value) in root {
        match key.as_str() {
            "data_dir" => raw.data_dir = c.typed(value, "data_dir"),
            "http" => raw.http = c.typed(value, "http").unwrap_or_default(),
            "pgwire" => raw.pgwire = c.typed(value, "pgwire").unwrap_or_default(),
            "query" => raw.query = c.typed(value, "query").unwrap_or_default(),
            "log" => raw.log = c.typed(value, "log").unwrap_or_default(),
            "processing" => raw.processing = c.typed(value, "processing").unwrap_or_default(),
            "lake" => raw.lake = c.typed(value, "lake").unwrap_or_default(),
            "alerts" => raw.alerts = c.typed(value, "alerts").unwrap_or_default(),
            "jobs" => raw.jobs = c.typed(value, "jobs").unwrap_or_default(),
            "health" => raw.health = c.typed(value, "health").unwrap_or_default(),
            "tls" => raw.tls = c.typed(value, "tls").unwrap_or_default(),
            "sources" => {
                for (i, (id, kind, entry)) in entries(value, "sources", RawSourceKind::TYPES, c) {
                    let key = format!("sources[{i}]");
                    if let Some(kind) = RawSourceKind::parse(&kind, entry, &key, c) {
                        raw.sources.push(RawSource { index: i, id, kind });
                    }
                }
            }
            "notifiers" => {
                for (i, (id, kind, entry)) in entries(value, "notifiers", RawNotifierKind::TYPES, c)
                {
                    let key = format!("notifiers[{i}]");
                    if let Some((kind, delivery)) = RawNotifierKind::parse(&kind, entry, &key, c) {
                        raw.notifiers.push(RawNotifier {
                            index: i,
                            id,
                            kind,
                            delivery,
                        });
                    }
                }
            }
            "sinks" => {
                for (i, (id, kind, entry)) in entries(value, "sinks", RawSinkKind::TYPES, c) {
                    let key = format!("sinks[{i}]");
                    if let Some((kind, backlog)) = RawSinkKind::parse(&kind, entry, &key, c) {
                        raw.sinks.push(RawSink {
                            index: i,
                            id,
                            kind,
                            backlog,
                        });
                    }
                }
            }
            _ => c.add(key, "unknown key"),
        }
    }
    raw
}

/// A connector entry: its index, `id`, `type`, and the rest of its keys.
type Entry = (usize, (Option<String>, String, toml::Value));

/// The entries of a `[[sources]]`-style array, each with its index, `id`, `type` (checked
/// against `types`) and the rest of its keys.
fn entries(value: toml::Value, name: &str, types: &[&str], c: &mut Checker) -> Vec<Entry> {
    let toml::Value::Array(items) = value else {
        c.add(name, format!("expected [[{name}]] entries"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let key = format!("{name}[{i}]");
        let toml::Value::Table(mut table) = item else {
            c.add(key, "expected a table with a `type`");
            continue;
        };
        let id = match table.remove("id") {
            None => None,
            Some(toml::Value::String(id)) => Some(id),
            Some(other) => {
                c.add(
                    format!("{key}.id"),
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        };
        let kind = match table.remove("type") {
            Some(toml::Value::String(kind)) if types.contains(&kind.as_str()) => kind,
            Some(toml::Value::String(kind)) => {
                c.add(
                    format!("{key}.type"),
                    format!(
                        "unknown type {kind:?}: expected one of {}",
                        types.join(", ")
                    ),
                );
                continue;
            }
            Some(other) => {
                c.add(
                    format!("{key}.type"),
                    format!("expected a string, found {}", other.type_str()),
                );
                continue;
            }
            None => {
                c.add(key, format!("missing `type`: one of {}", types.join(", ")));
                continue;
            }
        };
        out.push((i, (id, kind, toml::Value::Table(table))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_band_no_price_can_clear_is_refused_and_a_rule_without_one_is_not() {
        let rule = |band: &str| {
            format!(
                "[[alerts.threshold]]\nname = \"a\"\ncondition = \"price > 1\"\nhysteresis = {band}\nreminder_secs = 60\nresolve = true\ncoalesce_secs = 5\n"
            )
        };
        let plan = parse(&rule("0"), Path::new("a.toml")).unwrap();
        let t = &plan.processing.thresholds[0];
        assert_eq!(t.firing.reminder_nanos, Some(60_000_000_000));
        assert_eq!(t.firing.coalesce_nanos, Some(5_000_000_000));
        assert!(t.firing.resolve);
        assert!(parse(&rule("\"0.25%\""), Path::new("a.toml")).is_ok());
        assert_eq!(
            parse(&rule("0.5"), Path::new("a.toml"))
                .unwrap()
                .processing
                .thresholds[0]
                .clear_level(),
            tickflow_model::Price::parse("0.5").unwrap()
        );
        let e = parse(&rule("2"), Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.toml:4: alerts.threshold[0].hysteresis: 2 would clear at -1"),
            "{e}"
        );
        let e = parse(&rule("\"lots\""), Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("alerts.threshold[0].hysteresis"), "{e}");
    }

    #[test]
    fn a_secret_comes_from_a_file_only_its_owner_may_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("alpaca.key");
        std::fs::write(&key, "PKFROMFILE123\nignored second line\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = |path: &Path| {
            format!(
                "[[sources]]\ntype = \"alpaca\"\nkey = \"${{file:{}}}\"\nsecret = \"s\"\nsymbols = [\"AAPL\"]\n",
                path.display()
            )
        };
        let plan = parse(&text(&key), Path::new("s.toml")).unwrap();
        let SourceConfig::Alpaca(a) = &plan.sources[0].config else {
            panic!("an alpaca source")
        };
        assert_eq!(a.key, "PKFROMFILE123");

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let shown = parse(&text(&key), Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(shown.contains("s.toml:3:"), "{shown}");
        assert!(
            shown.contains("may be read by other users (mode 644)"),
            "{shown}"
        );
        assert!(!shown.contains("PKFROMFILE"), "{shown}");
        let shown = parse(&text(&dir.path().join("none.key")), Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(shown.contains("none.key"), "{shown}");
        let quoted = dir.path().join("quoted.key");
        std::fs::write(&quoted, "a\"b\n").unwrap();
        std::fs::set_permissions(&quoted, std::fs::Permissions::from_mode(0o600)).unwrap();
        let shown = parse(&text(&quoted), Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(shown.contains("holding a quote or a backslash"), "{shown}");
    }

    #[test]
    fn a_streams_repair_hold_is_read_and_a_binance_key_must_be_visible_ascii() {
        let text = "[[sources]]\ntype = \"coinbase\"\nsymbols = [\"BTC-USD\"]\nrepair_hold_secs = 0\n\n[[sources]]\ntype = \"alpaca\"\nkey = \"PK\"\nsecret = \"s\"\nsymbols = [\"AAPL\"]\n";
        let plan = parse(text, Path::new("s.toml")).unwrap();
        let SourceConfig::Coinbase(c) = &plan.sources[0].config else {
            panic!("a coinbase source")
        };
        assert_eq!(c.repair_hold, Duration::ZERO);
        let SourceConfig::Alpaca(a) = &plan.sources[1].config else {
            panic!("an alpaca source")
        };
        assert_eq!(a.repair_hold, tickflow_sources::gaps::DEFAULT_HOLD);

        let text = "[[sources]]\ntype = \"binance\"\nsymbols = [\"BTC-USDT\"]\nkey = \"abc\\ndef\"\nrepair_hold_secs = 90000\n";
        let shown = parse(text, Path::new("s.toml")).unwrap_err().to_string();
        for needle in [
            "s.toml:4: sources[0].key: holds a space, a control or a non-ASCII character",
            "s.toml:5: sources[0].repair_hold_secs: 90000 is out of range 0..=86400",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
        assert!(!shown.contains("abc"), "the key is not shown: {shown}");
    }

    #[test]
    #[cfg(feature = "kafka")]
    fn a_kafka_source_reads_its_mapping_and_keeps_its_options_secret() {
        let text = "[[sources]]\ntype = \"kafka\"\nid = \"vendor\"\nbrokers = \"10.0.0.5:9092,10.0.0.6:9092\"\ntopics = [\"vendor.trades\"]\nformat = \"fields\"\nfields = { symbol = \"/S\", price = \"/p\", size_default = \"1\", ts_event = \"/t\", time_unit = \"ms\" }\n\n[sources.options]\n\"sasl.password\" = \"hunter2-secret\"\n\n[[sinks]]\ntype = \"kafka\"\nid = \"bus\"\n";
        let plan = parse(text, Path::new("k.toml")).unwrap();
        let SourceConfig::Kafka(k) = &plan.sources[0].config else {
            panic!("a kafka source")
        };
        assert_eq!(k.group, "tickflow-vendor");
        assert_eq!(k.batch, 5000);
        let tickflow_core::mapping::Format::Fields(f) = &k.format else {
            panic!("a mapping")
        };
        assert_eq!(f.time_unit, tickflow_core::mapping::TimeUnit::Millis);
        assert_eq!(f.size, None);
        let SinkConfig::Kafka(sink) = &plan.sinks[0].config else {
            panic!("a kafka sink")
        };
        assert_eq!(sink.tables, ["bars", "alerts"]);
        assert_eq!(sink.topic_prefix, "tickflow");
        assert!(sink.dir.ends_with("sinks/bus"));
        assert!(!format!("{plan:?}").contains("hunter2"), "{plan:?}");

        let text = "[[sources]]\ntype = \"kafka\"\nbrokers = \"nohost\"\nformat = \"fields\"\nfields = { symbol = \"S\", time_unit = \"minutes\", size_default = \"0\" }\noptions = { \"group.id\" = \"x\", \"security.protocol\" = \"SASL_SSL\", \"ssl.ca.location\" = \"/no/such/ca.pem\" }\n\n[[sources]]\ntype = \"nats\"\nstream = \"T\"\nsubjects = [\"t.>\"]\nformat = \"csv\"\n";
        let shown = parse(text, Path::new("k.toml")).unwrap_err().to_string();
        for needle in [
            "sources[0].brokers: \"nohost\": write host:port",
            "sources[0].topics: the topics to read",
            "sources[0].fields.symbol: \"S\" is not a JSON pointer: write \"/S\"",
            "sources[0].fields.price: missing",
            "sources[0].fields.time_unit: \"minutes\": expected one of s, ms, us, ns",
            "sources[0].fields.size_default: \"0\" is not a size above zero",
            "sources[0].options.group.id: set by tickflow",
            "sources[0].options.ssl.ca.location: \"/no/such/ca.pem\" cannot be read: No such file",
            "sources[1].format: \"csv\": expected one of tickflow, market_ticks, fields",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
    }

    #[test]
    fn a_nats_source_needs_a_stream_and_subjects_and_names_its_consumer_after_itself() {
        let plan = parse(
            "[[sources]]\ntype = \"nats\"\nid = \"market\"\nurl = \"nats://u:secret@10.0.0.5:4222\"\nstream = \"TICKS\"\nsubjects = [\"ticks.>\"]\n",
            Path::new("n.toml"),
        )
        .unwrap();
        let SourceConfig::Nats(n) = &plan.sources[0].config else {
            panic!("{:?}", plan.sources[0].config)
        };
        assert_eq!((n.durable.as_str(), n.batch), ("tickflow-market", 1000));
        let shown = plan.sources[0].config.describe();
        assert!(
            shown.contains("nats://…@10.0.0.5:4222") && !shown.contains("secret"),
            "{shown}"
        );
        let e = parse(
            "[[sources]]\ntype = \"nats\"\nstream = \"ticks.all\"\nbatch = 0\n",
            Path::new("n.toml"),
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "n.toml:3: sources[0].stream: \"ticks.all\"",
            "sources[0].subjects: the subjects the stream holds",
            "n.toml:4: sources[0].batch: 0 is out of range",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from:\n{e}");
        }
    }

    #[test]
    fn an_sqs_source_and_an_sns_notifier_are_checked_by_key_and_keep_their_keys_secret() {
        let plan = parse(
            "[[sources]]\ntype = \"sqs\"\nid = \"market\"\nqueue_url = \"https://sqs.eu-west-1.amazonaws.com/123456789012/ticks\"\naccess_key_id = \"AKIA\"\nsecret_access_key = \"s3cret\"\n\n[[notifiers]]\ntype = \"sns\"\ntopic_arn = \"arn:aws:sns:eu-west-1:123456789012:alerts\"\nmax_attempts = 3\n",
            Path::new("a.toml"),
        )
        .unwrap();
        let SourceConfig::Sqs(q) = &plan.sources[0].config else {
            panic!("{:?}", plan.sources[0].config)
        };
        assert_eq!((q.wait.as_secs(), q.max_receives), (20, 5));
        assert_eq!(q.aws.access_key_id.as_deref(), Some("AKIA"));
        let shown = format!(
            "{} {}",
            plan.sources[0].config.describe(),
            plan.notifiers[0].config.describe()
        );
        assert!(
            shown.contains("SQS queue https://sqs.eu-west-1.amazonaws.com/123456789012/ticks")
                && shown.contains("SNS topic arn:aws:sns:eu-west-1:123456789012:alerts")
                && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(plan.notifiers[0].max_attempts, 3);
        let e = parse(
            "[[sources]]\ntype = \"sqs\"\nqueue_url = \"ticks\"\nwait_secs = 30\nregoin = \"x\"\naccess_key_id = \"AKIA\"\n\n[[notifiers]]\ntype = \"sns\"\ntopic_arn = \"alerts\"\nendpoint = \"localhost:5000\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "a.toml:3: sources[0].queue_url: \"ticks\"",
            "a.toml:4: sources[0].wait_secs: 30 is out of range 1..=20",
            "sources[0].regoin",
            "a.toml:6: sources[0].access_key_id: access_key_id and secret_access_key come together",
            "a.toml:10: notifiers[0].topic_arn: \"alerts\" is not a topic ARN",
            "a.toml:11: notifiers[0].endpoint: \"localhost:5000\" is not an http",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from:\n{e}");
        }
    }

    #[test]
    fn a_dynamodb_sink_names_a_table_per_kind_and_its_problems_by_key() {
        let plan = parse(
            "[[sinks]]\ntype = \"dynamodb\"\nid = \"ddb\"\ntables = { trades = \"tf-trades\", daily_metrics = \"tf-daily\" }\nfields = { trades = [\"price\", \"size\"] }\noversize = \"trim\"\nregion = \"eu-west-1\"\n",
            Path::new("d.toml"),
        )
        .unwrap();
        let SinkConfig::Dynamodb(d) = &plan.sinks[0].config else {
            panic!("{:?}", plan.sinks[0].config)
        };
        assert_eq!(d.tables.len(), 2);
        assert_eq!(d.state_table, "tickflow-sink-positions");
        assert_eq!(d.oversize, tickflow_aws::dynamodb::Oversize::Trim);
        let trades = d
            .tables
            .iter()
            .find(|t| t.kind == tickflow_aws::dynamodb::Kind::Trades)
            .unwrap();
        assert_eq!(
            trades.fields.as_deref(),
            Some(&["price".to_string(), "size".to_string()][..])
        );
        let shown = plan.sinks[0].config.describe();
        assert!(
            shown.contains("trades to tf-trades") && shown.contains(" in eu-west-1"),
            "{shown}"
        );
        let e = parse(
            "[[sinks]]\ntype = \"dynamodb\"\ntables = { ticks = \"x\", bars = \"b\" }\nfields = { bars = [\"colour\"] }\noversize = \"shrink\"\n",
            Path::new("d.toml"),
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "d.toml:3: sinks[0].tables: unknown kind \"ticks\"",
            "sinks[0].tables.bars: \"b\" is not a DynamoDB table name",
            "sinks[0].fields.bars: \"colour\" is not an attribute of bars",
            "d.toml:5: sinks[0].oversize: \"shrink\"",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from:\n{e}");
        }
    }

    #[test]
    fn the_day_zone_is_read_and_an_unknown_one_is_named_by_line_and_key() {
        let ok = parse(
            "[processing]\nday_time_zone = \"Asia/Tokyo\"\n",
            Path::new("d.toml"),
        )
        .unwrap();
        let toyota = tickflow_model::Symbol::parse("7203.T").unwrap();
        let ts = tickflow_model::UnixNanos::parse("2026-12-06T16:00:00Z").unwrap();
        let (start, _) = ok.processing.days.bar_span(&toyota, BarInterval::D1, ts);
        assert_eq!(
            start,
            tickflow_model::UnixNanos::parse("2026-12-06T15:00:00Z")
                .unwrap()
                .0
        );
        let e = parse(
            "[processing]\nlateness_ms = 100\nday_time_zone = \"Mars/Olympus\"\n",
            Path::new("d.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("d.toml:3: processing.day_time_zone: time zone \"Mars/Olympus\""),
            "{e}"
        );
    }

    #[test]
    fn expression_rules_and_volume_spikes_are_read_and_checked_by_line_and_key() {
        let text = "[[alerts.rule]]\nname = \"drop\"\non = \"daily_metrics\"\nwhen = \"daily_pct_change < -5\"\nresolve = true\nnotify = [\"log\"]\n\n[[alerts.volume_spike]]\nname = \"surge\"\ninterval = \"5m\"\nk = 4\n\n[[notifiers]]\ntype = \"log\"\n";
        let plan = parse(text, Path::new("r.toml")).unwrap();
        let [drop, surge] = &plan.processing.exprs[..] else {
            panic!("two rules: {:?}", plan.processing.exprs)
        };
        assert_eq!(drop.when.text(), "daily_pct_change < -5");
        assert!(drop.firing.resolve);
        assert_eq!(surge.when.text(), "volume > 4 * sma(volume, 20, 1)");
        assert_eq!(surge.when.watch(), Watch::Bars(BarInterval::M5));

        let feeds = "[[sources]]\ntype = \"http\"\nid = \"web\"\n\n[[alerts.stale_feed]]\nname = \"quiet\"\nsource = \"web\"\ncalendar = \"nyse\"\n\n[[alerts.gap]]\nname = \"gaps\"\nmin_secs = 5\n\n[[alerts.gap]]\nname = \"more\"\nsource = \"alpaca\"\n\n[[alerts.stale_feed]]\nname = \"q2\"\ncalendar = \"lse\"\nafter_secs = 0\n";
        let shown = parse(feeds, Path::new("f.toml")).unwrap_err().to_string();
        for needle in [
            "f.toml:16: alerts.gap[1].source: no source is called \"alpaca\"",
            "f.toml:20: alerts.stale_feed[1].calendar: unknown calendar \"lse\"",
            "f.toml:21: alerts.stale_feed[1].after_secs: 0 is out of range",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
        let ok = feeds
            .split("\n\n[[alerts.gap]]\nname = \"more\"")
            .next()
            .unwrap();
        let plan = parse(ok, Path::new("f.toml")).unwrap();
        assert_eq!(plan.stale_feeds[0].hours, crate::feed_watch::Hours::Nyse);
        assert_eq!(plan.stale_feeds[0].after_nanos, 60_000_000_000);
        assert_eq!(plan.gap_rules[0].min_nanos, 5_000_000_000);

        let bad = "[[alerts.rule]]\nname = \"a\"\non = \"trades\"\nwhen = \"close > 1\"\n\n[[alerts.rule]]\nname = \"b\"\non = \"bars\"\nwhen = \"close > 1\"\n\n[[alerts.rule]]\nname = \"c\"\non = \"trades\"\nwhen = \"price > sma(close, 20)\"\n\n[[alerts.rule]]\nname = \"a\"\non = \"ticks\"\nwhen = \"price > 1\"\n\n[[alerts.volume_spike]]\nname = \"v\"\nk = -2\ninterval = \"2m\"\n";
        let shown = parse(bad, Path::new("bad.toml")).unwrap_err().to_string();
        for needle in [
            "bad.toml:4: alerts.rule[0].when: no column \"close\" on a trade row",
            "bad.toml:8: alerts.rule[1].on: a rule on bars needs `interval`",
            "bad.toml:14: alerts.rule[2].when: `sma(close, 20)` reads bars, but a rule on trades needs `interval`",
            "bad.toml:17: alerts.rule[3].name: duplicate rule name \"a\"",
            "bad.toml:18: alerts.rule[3].on: unknown table \"ticks\"",
            "bad.toml:23: alerts.volume_spike[0].k: -2 must be a positive number",
            "bad.toml:24: alerts.volume_spike[0].interval: unknown interval \"2m\"",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
    }

    #[test]
    fn the_demo_config_is_valid() {
        let mut plan = parse(DEMO_TOML, Path::new("config/demo.toml")).unwrap();
        assert_eq!(plan.sources[0].id, "simulator");
        let sim = plan
            .simulator_mut()
            .expect("demo runs the simulator")
            .clone();
        assert_eq!(sim.config.symbols.len(), 12);
        assert_eq!(sim.history_days, 90);
        assert!(!plan.processing.thresholds.is_empty());
        assert!(!plan.processing.spikes.is_empty());
    }

    #[test]
    fn reports_every_problem_with_line_and_key() {
        let text = "data_dir = \"x\"\n\n[http]\nport = 99999\nbnid = \"0.0.0.0\"\n\n[[alerts.threshold]]\nname = \"a\"\ncondition = \"price >> 3\"\nseverity = \"loud\"\n\n[[alerts.spike]]\nname = \"a\"\nk = -1.0\n\n[lake]\nflush_ms = 0\n";
        let err = parse(text, Path::new("bad.toml")).unwrap_err();
        let shown = err.to_string();
        for needle in [
            "bad.toml:5: http.bnid: unknown key",
            "bad.toml:17: lake.flush_ms: unknown key",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
        // Unknown keys stop typed parsing; fix them and the value problems all show at once.
        let text = text
            .replace("bnid", "bind")
            .replace("flush_ms", "flush_rows");
        let shown = parse(&text, Path::new("bad.toml")).unwrap_err().to_string();
        for needle in [
            "bad.toml:4: http.port: 99999 is out of range",
            "bad.toml:9: alerts.threshold[0].condition: invalid decimal \"> 3\"",
            "bad.toml:10: alerts.threshold[0].severity: unknown severity \"loud\"",
            "bad.toml:13: alerts.spike[0].name: duplicate rule name",
            "bad.toml:14: alerts.spike[0].k: -1 must be a positive",
            "bad.toml:17: lake.flush_rows: 0 is out of range",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
    }

    #[test]
    fn query_and_pgwire_settings_are_checked() {
        let plan = parse(
            "[query]\ntimeout_secs = 5\ndisable = [\"symbol_runs\"]\n",
            Path::new("q.toml"),
        )
        .unwrap();
        assert_eq!(plan.query.timeout, Duration::from_secs(5));
        assert_eq!(plan.query.disabled, vec!["symbol_runs"]);
        assert_eq!(
            plan.pgwire.map(|a| a.port()),
            Some(8751),
            "on by default, never 5432"
        );
        assert_eq!(plan.pgwire_auth, PgwireAuth::ScramSha256);
        let plan = parse(
            "[pgwire]\nenabled = false\nauth = \"password\"\n",
            Path::new("q.toml"),
        )
        .unwrap();
        assert_eq!(plan.pgwire, None);
        assert_eq!(plan.pgwire_auth, PgwireAuth::Password);
        let text = "[query]\nmemory_mb = 1\ndisable = [\"fast\"]\n\n[pgwire]\nbind = \"here\"\nauth = \"md5\"\n";
        let shown = parse(text, Path::new("q.toml")).unwrap_err().to_string();
        for needle in [
            "q.toml:2: query.memory_mb: 1 is out of range",
            "q.toml:3: query.disable: unknown rule \"fast\"",
            "q.toml:6: pgwire.bind: \"here\" is not an IP address",
            "q.toml:7: pgwire.auth: unknown \"md5\": expected scram-sha-256 or password",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
    }

    #[test]
    fn a_postgres_sink_takes_a_url_or_fields_and_names_every_bad_key() {
        let text = "[[sinks]]\ntype = \"postgres\"\nurl = \"postgres://u:secret@db.internal:6432/other\"\ndbname = \"ticks\"\ntables = [\"trades\", \"daily_metrics\"]\n";
        let plan = parse(text, Path::new("p.toml")).unwrap();
        let SinkConfig::Postgres(c) = &plan.sinks[0].config else {
            panic!("a postgres sink")
        };
        assert_eq!(plan.sinks[0].id, "postgres");
        assert_eq!(c.connection.get_ports(), &[6432]);
        assert_eq!(
            c.connection.get_dbname(),
            Some("ticks"),
            "a field overrides the url"
        );
        assert_eq!(c.schema, "tickflow");
        assert_eq!(c.tables, vec!["trades", "daily_metrics"]);
        assert_eq!(c.timeout, Duration::from_secs(60));
        let shown = plan.sinks[0].config.describe();
        assert!(
            shown.contains("db.internal") && !shown.contains("secret"),
            "{shown}"
        );

        let text = "[[sinks]]\ntype = \"postgres\"\nurl = \"postgres://[bad\"\nschema = \"Ticks; drop\"\ntables = [\"dlq\"]\ncompress_after = \"7 days'; --\"\n\n[[sinks]]\ntype = \"postgres\"\nid = \"other\"\nport = 70000\n";
        let shown = parse(text, Path::new("p.toml")).unwrap_err().to_string();
        for needle in [
            "p.toml:3: sinks[0].url: not a PostgreSQL connection string",
            "p.toml:4: sinks[0].schema: \"Ticks; drop\" is not a plain schema name",
            "p.toml:5: sinks[0].tables: unknown table \"dlq\"",
            "p.toml:6: sinks[0].compress_after:",
            "p.toml:11: sinks[1].port: 70000 is not a TCP port",
            "sinks[1].url: missing: set url",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
    }

    #[test]
    fn sinks_are_read_entry_by_entry() {
        let text = "data_dir = \"/d\"\n\n[[sinks]]\ntype = \"csv\"\n\n[[sinks]]\ntype = \"csv\"\nid = \"backup\"\ndir = \"/b\"\ntables = [\"trades\", \"bars\"]\nfsync = false\n";
        let plan = parse(text, Path::new("s.toml")).unwrap();
        assert_eq!(plan.sinks.len(), 2);
        assert_eq!(plan.sinks[0].id, "csv", "the id defaults to the type");
        let SinkConfig::Csv(c) = &plan.sinks[0].config else {
            panic!("a csv sink")
        };
        assert_eq!(
            c.dir,
            PathBuf::from("/d/sinks/csv"),
            "files default to the data directory"
        );
        assert_eq!(
            c.tables,
            tickflow_sinks::csv::TABLES,
            "every table by default"
        );
        assert!(c.fsync);
        let SinkConfig::Csv(c) = &plan.sinks[1].config else {
            panic!("a csv sink")
        };
        assert_eq!(plan.sinks[1].id, "backup");
        assert_eq!(c.dir, PathBuf::from("/b"));
        assert_eq!(c.tables, vec!["trades", "bars"]);
        assert!(!c.fsync);

        let text = "[http]\nport = \"eighty\"\n\n[[sinks]]\ntype = \"csv\"\ncolour = \"red\"\ntables = [\"trades\", \"trade\"]\n\n[[sinks]]\ntype = \"mongodb\"\n\n[[sinks]]\ntype = \"csv\"\nid = \"csv\"\nfsync = \"yes\"\n\n[[sinks]]\ntype = \"csv\"\nid = \"Not OK\"\n\n[[sinks]]\ndir = \"x\"\n\n[lake]\nflush_rows = 0\n";
        let shown = parse(text, Path::new("s.toml")).unwrap_err().to_string();
        for needle in [
            "s.toml:2: http.port: invalid type: string \"eighty\", expected i64",
            "s.toml:6: sinks[0].colour: unknown key",
            "s.toml:7: sinks[0].tables: unknown table \"trade\"",
            "s.toml:10: sinks[1].type: unknown type \"mongodb\": expected one of csv, postgres",
            "s.toml:15: sinks[2].fsync: invalid type: string \"yes\", expected a boolean",
            "s.toml:19: sinks[3].id: \"Not OK\" is not a valid id",
            "sinks[4]: missing `type`: one of csv, postgres",
            "s.toml:25: lake.flush_rows: 0 is out of range",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
        let text = "[[sinks]]\ntype = \"csv\"\ndir = \"/x\"\n\n[[sinks]]\ntype = \"csv\"\nid = \"b\"\ndir = \"/x\"\n";
        let shown = parse(text, Path::new("s.toml")).unwrap_err().to_string();
        assert!(
            shown.contains("s.toml:8: sinks[1].dir: /x is already sinks[0]'s directory"),
            "{shown}"
        );
        let text = "[[sinks]]\ntype = \"csv\"\n\n[[sinks]]\ntype = \"csv\"\n";
        let shown = parse(text, Path::new("s.toml")).unwrap_err().to_string();
        assert!(
            shown.contains("s.toml:4: sinks[1].id: another sink is already called \"csv\""),
            "{shown}"
        );
    }

    #[test]
    fn notifiers_take_the_rules_that_name_them_or_all() {
        let text = "[[alerts.threshold]]\nname = \"a\"\ncondition = \"price > 1\"\nnotify = [\"ops\"]\n\n[[alerts.spike]]\nname = \"b\"\n\n[[notifiers]]\ntype = \"webhook\"\nid = \"ops\"\nurl = \"https://hooks.example/services/T/B/SECRET\"\nformat = \"slack\"\nheaders = { Authorization = \"Bearer TOKEN\" }\n\n[[notifiers]]\ntype = \"log\"\nmax_attempts = 3\n";
        let plan = parse(text, Path::new("n.toml")).unwrap();
        let ops = &plan.notifiers[0];
        let log = &plan.notifiers[1];
        assert_eq!(ops.id, "ops");
        assert_eq!(log.id, "log");
        assert!(ops.rules.contains("a") && ops.rules.contains("b"));
        assert!(!log.rules.contains("a") && log.rules.contains("b"));
        assert_eq!(log.max_attempts, 3);
        assert_eq!(ops.max_attempts, 10);
        let shown = format!("{plan:?} {}", ops.config.describe());
        assert!(
            !shown.contains("SECRET") && !shown.contains("TOKEN"),
            "{shown}"
        );
        assert!(
            shown.contains("webhook to https://hooks.example/… (slack)"),
            "{shown}"
        );

        let text = "[[alerts.threshold]]\nname = \"a\"\ncondition = \"price > 1\"\nnotify = [\"pager\"]\n\n[[notifiers]]\ntype = \"webhook\"\nformat = \"teams\"\n\n[[notifiers]]\ntype = \"log\"\ncolour = 1\n";
        let shown = parse(text, Path::new("n.toml")).unwrap_err().to_string();
        for needle in [
            "n.toml:4: alerts.threshold[0].notify: no notifier is called \"pager\"",
            "n.toml:6: notifiers[0].url: missing",
            "n.toml:8: notifiers[0].format: unknown format \"teams\"",
            "n.toml:12: notifiers[1].colour: unknown key",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
    }

    #[test]
    fn an_api_reachable_from_other_machines_needs_every_secret() {
        let text = "[http]\nbind = \"0.0.0.0\"\n\n[[sources]]\ntype = \"http\"\nid = \"vendor\"\n";
        let shown = parse(text, Path::new("x.toml")).unwrap_err().to_string();
        for needle in [
            "x.toml:2: http.bind: 0.0.0.0 is reachable from other machines: set http.token",
            "HTTP ingest source \"vendor\" needs a token (its own, or http.ingest_token)",
            "x.toml:2: http.bind: the Postgres-wire endpoint on 0.0.0.0:8751 is reachable from other machines: set pgwire.password",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
        // With them, ingest endpoints without a token of their own take the ingest token.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg");
        std::fs::write(&file, "a-password-of-some-length\n").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let text = format!(
            "[http]\nbind = \"0.0.0.0\"\ntoken = \"query-token-0123456789\"\ningest_token = \"ingest-token-0123456789\"\n\n[pgwire]\npassword_file = \"{}\"\n\n[[sources]]\ntype = \"http\"\nid = \"vendor\"\n\n[[sources]]\ntype = \"http\"\nid = \"own\"\ntoken = \"own-token-0123456789\"\n",
            file.display()
        );
        let plan = parse(&text, Path::new("x.toml")).unwrap();
        let token = |id: &str| plan.http_source(id).unwrap().token.clone().unwrap().0;
        assert_eq!(token("vendor"), "ingest-token-0123456789");
        assert_eq!(token("own"), "own-token-0123456789");
        assert_eq!(
            plan.http.token.as_ref().unwrap().0,
            "query-token-0123456789"
        );
        assert_eq!(
            plan.pgwire_password.as_ref().unwrap().0,
            "a-password-of-some-length"
        );
        assert!(
            !format!("{plan:?}").contains("0123456789"),
            "secrets are not shown"
        );
        // A secret file others may read, one token for both roles, a short token.
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let text = format!(
            "[http]\ntoken = \"same-token-0123456789\"\ningest_token = \"same-token-0123456789\"\n\n[pgwire]\npassword_file = \"{}\"\n\n[[sources]]\ntype = \"http\"\nid = \"short\"\ntoken = \"short\"\n\n[[sources]]\ntype = \"http\"\nid = \"vendor\"\n",
            file.display()
        );
        let shown = parse(&text, Path::new("x.toml")).unwrap_err().to_string();
        for needle in [
            "http.token: ingest source \"vendor\" has the same token",
            "pgwire.password_file: ",
            "may be read by other users (mode 644): chmod 600 it",
            "sources[0].token: shorter than 16 characters",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
        // On loopback nothing is required.
        assert!(parse("[http]\nbind = \"127.0.0.1\"\n", Path::new("x.toml")).is_ok());
    }

    #[test]
    fn http_ingest_is_a_source_on_by_default() {
        let plan = parse("data_dir = \"x\"\n", Path::new("h.toml")).unwrap();
        assert_eq!(plan.sources.len(), 1);
        assert_eq!(plan.sources[0].id, "http");
        assert!(plan.http_source("http").is_some_and(|h| h.token.is_none()));
        let text = "[[sources]]\ntype = \"http\"\nid = \"vendor\"\ntoken = \"${TICKFLOW_TEST_TOKEN:-0123456789abcdefXYZ}\"\n";
        let plan = parse(text, Path::new("h.toml")).unwrap();
        assert!(
            plan.http_source("http").is_none(),
            "named sources replace the open default"
        );
        let vendor = plan.http_source("vendor").unwrap();
        assert_eq!(vendor.token.as_ref().unwrap().0, "0123456789abcdefXYZ");
        assert!(!format!("{plan:?}").contains("0123456789abcdefXYZ"));
        let text = "[[sources]]\ntype = \"http\"\ntoken = \"short\"\n\n[[sources]]\ntype = \"replay\"\nid = \"http\"\npath = \"x\"\n";
        let shown = parse(text, Path::new("h.toml")).unwrap_err().to_string();
        for needle in [
            "h.toml:3: sources[0].token: shorter than 16 characters",
            "h.toml:7: sources[1].id: \"http\" names the default HTTP ingest",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
    }

    #[test]
    fn interpolates_environment() {
        let plan = parse(
            "data_dir = \"${TICKFLOW_TEST_UNSET_DIR:-/tmp/tf}\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(plan.data_dir, PathBuf::from("/tmp/tf"));
        let err = parse(
            "\n[http]\nbind = \"${TICKFLOW_TEST_UNSET_VAR}\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("x.toml:3") && err.contains("TICKFLOW_TEST_UNSET_VAR is not set"),
            "{err}"
        );
        // A comment is left as written: a commented-out example needs nothing set, and a
        // `#` inside a string is not a comment.
        let plan = parse(
            "# url = \"${TICKFLOW_TEST_UNSET_VAR}\"\ndata_dir = \"/tmp/a#b${TICKFLOW_TEST_UNSET_DIR:-c}\" # ${TICKFLOW_TEST_UNSET_VAR}\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(plan.data_dir, PathBuf::from("/tmp/a#bc"));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("[http]\nport = \n", Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:2"), "{err}");
    }

    #[test]
    fn symbol_buckets_are_read_and_bounded() {
        let plan = parse(
            "data_dir = \"x\"\n[lake]\nsymbol_buckets = 64\n",
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!(plan.lake.symbol_buckets, 64);
        let plan = parse("data_dir = \"x\"\n", Path::new("a.toml")).unwrap();
        assert_eq!(
            plan.lake.symbol_buckets, 0,
            "a folder per symbol unless asked"
        );
        let err = parse(
            "data_dir = \"x\"\n[lake]\nsymbol_buckets = 5000\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("a.toml:3: lake.symbol_buckets: 5000 is out of range 0..=4096"),
            "{err}"
        );
    }

    #[test]
    fn an_email_notifier_is_read_and_checked() {
        let plan = parse(
            "data_dir = \"x\"\n[[notifiers]]\ntype = \"email\"\nhost = \"smtp.example.com\"\nsecurity = \"tls\"\nusername = \"u\"\npassword = \"hush-0123456789\"\nto = [\"a@example.com\"]\n",
            Path::new("a.toml"),
        )
        .unwrap();
        let NotifierConfig::Email(email) = &plan.notifiers[0].config else {
            panic!("{:?}", plan.notifiers[0].config)
        };
        assert_eq!(
            (email.port, email.security),
            (465, tickflow_notify::email::Security::Tls)
        );
        assert_eq!(plan.notifiers[0].id, "email");
        assert!(
            !format!("{plan:?}").contains("hush-0123456789"),
            "the password stays out of Debug"
        );
        let err = parse(
            "data_dir = \"x\"\n[[notifiers]]\ntype = \"email\"\nsecurity = \"ssl\"\nusername = \"u\"\nto = [\"not an address\"]\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "a.toml:4: notifiers[0].security: unknown \"ssl\": expected none, starttls or tls",
            "notifiers[0].to: \"not an address\" is not an e-mail address",
            "notifiers[0].username: set username and password together",
            "notifiers[0].host: missing",
        ] {
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn a_lake_on_object_storage_is_read_and_checked() {
        let plan = parse(
            "data_dir = \"x\"\n[lake]\nurl = \"s3://bucket/a/b/\"\nendpoint = \"http://127.0.0.1:9000\"\nregion = \"eu-west-1\"\nretention_days = 30\n",
            Path::new("a.toml"),
        )
        .unwrap();
        let object = plan.lake.object.unwrap();
        assert_eq!(object.bucket_and_prefix().unwrap(), ("bucket", "a/b"));
        assert_eq!(object.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(object.region.as_deref(), Some("eu-west-1"));
        assert_eq!(plan.lake.retention_days, Some(30));
        let plan = parse("data_dir = \"x\"\n", Path::new("a.toml")).unwrap();
        assert!(plan.lake.object.is_none() && plan.lake.retention_days.is_none());
        let err = parse(
            "data_dir = \"x\"\n[lake]\nurl = \"gs://bucket\"\nretention_days = 0\nendpoint = \"127.0.0.1:9000\"\naccess_key_id = \"AKIA\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("a.toml:3: lake.url: \"gs://bucket\" is not an s3:// URL"),
            "{err}"
        );
        assert!(
            err.contains("a.toml:4: lake.retention_days: 0 is out of range 1..=36500"),
            "{err}"
        );
        assert!(
            err.contains(
                "a.toml:5: lake.endpoint: \"127.0.0.1:9000\" is not an http:// or https:// URL"
            ),
            "{err}"
        );
        assert!(
            err.contains(
                "a.toml:6: lake.access_key_id: set access_key_id and secret_access_key together"
            ),
            "{err}"
        );
        let err = parse(
            "data_dir = \"x\"\n[lake]\nurl = \"s3://bucket\"\nsecret_access_key = \"hush-0123456789\"\naccess_key_id = \"AKIA\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("a.toml:3: lake.url: \"s3://bucket\" names no prefix"),
            "{err}"
        );
        let plan = parse(
            "data_dir = \"x\"\n[lake]\nurl = \"s3://bucket/p\"\nsecret_access_key = \"hush-0123456789\"\naccess_key_id = \"AKIA\"\n",
            Path::new("a.toml"),
        )
        .unwrap();
        assert!(
            !format!("{plan:?}").contains("hush-0123456789"),
            "the secret stays out of Debug"
        );
        let err = parse(
            "data_dir = \"x\"\n[lake]\nendpoint = \"http://127.0.0.1:9000\"\nretention_days = 7\ncompact_interval_secs = 0\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("a.toml:3: lake.endpoint: applies only to a lake on object storage"),
            "{err}"
        );
        assert!(
            err.contains("a.toml:4: lake.retention_days: retention runs with compaction"),
            "{err}"
        );
    }

    #[test]
    fn compaction_is_on_by_default_and_can_be_turned_off() {
        let plan = parse("data_dir = \"x\"\n", Path::new("a.toml")).unwrap();
        assert_eq!(plan.lake.compact_every, Some(Duration::from_secs(60)));
        assert_eq!(plan.lake.compact.target_bytes, 128 << 20);
        let plan = parse(
            "data_dir = \"x\"\n[lake]\ncompact_interval_secs = 0\ncompact_target_mb = 16\n",
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!(plan.lake.compact_every, None);
        assert_eq!(plan.lake.compact.target_bytes, 16 << 20);
        let err = parse(
            "data_dir = \"x\"\n[lake]\ncompact_target_mb = 0\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("a.toml:3: lake.compact_target_mb: 0 is out of range"),
            "{err}"
        );
    }

    #[test]
    fn a_partitioned_log_is_a_broker_s_and_refuses_what_would_run_in_every_process() {
        let plan = parse(
            "data_dir = \"x\"\n[log]\nkind = \"nats\"\npartitions = 4\n",
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!((plan.log.partitions, plan.log.partition), (4, None));
        assert_eq!(plan.log.for_partition(3).partition, Some(3));
        let err = parse(
            "data_dir = \"x\"\n[log]\npartitions = 2\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("a.toml:3: log.partitions: applies to a broker log only"),
            "{err}"
        );
        let err = parse(
            "data_dir = \"x\"\n[log]\nkind = \"nats\"\npartitions = 65\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("log.partitions: 65 is out of range 1..=64"),
            "{err}"
        );
        let err = parse(
            "data_dir = \"x\"\n[log]\nkind = \"nats\"\npartitions = 2\n[[jobs]]\nname = \"c\"\nkind = \"compaction\"\ncron = \"0 3 * * *\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("[[jobs]] cannot run yet with a partitioned log"),
            "{err}"
        );
    }

    #[test]
    fn the_log_on_nats_takes_its_own_keys_and_refuses_the_embedded_ones() {
        let plan = parse(
            "data_dir = \"x\"\n[log]\nkind = \"nats\"\nstream = \"LOG\"\nretention_hours = 24\n",
            Path::new("a.toml"),
        )
        .unwrap();
        let LogKind::Nats(nats) = &plan.log.kind else {
            panic!("{:?}", plan.log.kind)
        };
        assert_eq!(
            (
                nats.url.as_str(),
                nats.stream.as_str(),
                nats.subject.as_str()
            ),
            ("nats://127.0.0.1:4222", "LOG", "tickflow.log")
        );
        assert_eq!(
            (nats.consumer.as_str(), nats.replicas),
            ("tickflow-processor", 1)
        );
        assert_eq!(plan.log.retention_age, Some(Duration::from_secs(24 * 3600)));
        let err = parse(
            "data_dir = \"x\"\n[log]\nkind = \"nats\"\nfsync = false\nsubject = \"a.*\"\nstream = \"a.b\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        for want in [
            "a.toml:4: log.fsync: applies to kind = \"embedded\" only, not to this \"nats\" log",
            "a.toml:5: log.subject: \"a.*\" is not a subject",
            "a.toml:6: log.stream: \"a.b\" is not a stream name",
        ] {
            assert!(err.contains(want), "{want} in {err}");
        }
        let err = parse(
            "data_dir = \"x\"\n[log]\nstream = \"LOG\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("a.toml:3: log.stream: applies to kind = \"nats\" only, not to this \"embedded\" log"),
            "{err}"
        );
        let err = parse(
            "data_dir = \"x\"\n[log]\nkind = \"redis\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "a.toml:3: log.kind: \"redis\" is not a log kind; one of embedded, nats, kafka"
            ),
            "{err}"
        );
        let text = "data_dir = \"x\"\n[log]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopic = \"ticks.log\"\n\n[log.options]\n\"batch.num.messages\" = \"1\"\n\"sasl.password\" = \"hunter2\"\n";
        match parse(text, Path::new("a.toml")) {
            Ok(plan) => {
                let LogKind::Kafka(k) = &plan.log.kind else {
                    panic!("{:?}", plan.log.kind)
                };
                assert_eq!(
                    (k.topic.as_str(), k.group.as_str(), k.options.len()),
                    ("ticks.log", "tickflow-processor", 2)
                );
                assert!(!format!("{k:?}").contains("hunter2"));
            }
            // Without the feature, the kind says how to build it.
            Err(e) => assert!(
                !tickflow_brokers::KAFKA_BUILT
                    && e.to_string()
                        .contains("a.toml:3: log.kind: this tickflow was built without Kafka"),
                "{e}"
            ),
        }
        let err = parse(
            "data_dir = \"x\"\n[log]\nkind = \"kafka\"\n[log.options]\n\"acks\" = \"1\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("log.options.acks: set by tickflow"), "{err}");
    }

    #[test]
    fn an_unset_variable_is_reported_on_its_own_line_after_longer_values() {
        let text = "data_dir = \"${TICKFLOW_TEST_UNSET_DIR:-/a/long/default/path/that/is/longer/than/its/expression}\"\n\n[http]\nport = 0\n\n[[sources]]\ntype = \"http\"\ntoken = \"${TICKFLOW_TEST_UNSET_TOKEN}\"\n";
        let err = parse(text, Path::new("a.toml")).unwrap_err().to_string();
        assert!(
            err.contains("a.toml:8: environment variable TICKFLOW_TEST_UNSET_TOKEN is not set"),
            "{err}"
        );
    }
}
