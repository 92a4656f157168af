//! Command-line interface: every command, flag and example, as `--help` shows them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Real-time market-data pipeline: ticks in, durable log, bars, daily metrics, alerts,
/// a Parquet lake and SQL, in one binary.
#[derive(Debug, Parser)]
#[command(name = "tickflow", version, propagate_version = true)]
#[command(
    after_help = "Start with `tickflow demo`, then query with `tickflow sql \"SELECT * FROM bars LIMIT 5\"`.\nExit codes: 0 success, 1 failure, 2 invalid usage or configuration."
)]
pub(crate) struct Cli {
    /// Log more (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// How log lines are written to standard error: `human` to read, `json` (one object per
    /// line) for a log collector.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the embedded pipeline on the simulator: 90 days of history, then live ticks.
    #[command(
        after_help = "Examples:\n  tickflow demo\n  tickflow demo --duration 20 --data-dir /tmp/tf\n  tickflow demo --port 0   # any free port; the address is printed"
    )]
    Demo(DemoArgs),
    /// Run the pipeline a config file describes.
    #[command(
        after_help = "Examples:\n  tickflow run --config config/demo.toml\n  tickflow run --config my.toml --duration 60"
    )]
    Run(RunArgs),
    /// Validate a config file and print every problem with file, line and key.
    #[command(after_help = "Examples:\n  tickflow check --config config/demo.toml")]
    Check(CheckArgs),
    /// Query trades, quotes, bars, daily_metrics, alerts, dlq and alert_deliveries with SQL.
    #[command(
        after_help = "Examples:\n  tickflow sql \"SELECT interval, count(*) FROM bars GROUP BY interval\"\n  tickflow sql --format csv \"SELECT * FROM daily_metrics WHERE symbol = 'NVDA' ORDER BY date\"\n  tickflow sql --data-dir /tmp/tf --format json \"SELECT reason, count(*) FROM dlq GROUP BY reason\"\n\nWhile a pipeline runs on the data directory, the query goes to it and also sees rows not yet\nflushed to Parquet; otherwise the files and the last checkpoint are read directly.\nColumns named like SQL keywords need double quotes: \"end\", \"final\", \"offset\", \"interval\"."
    )]
    Sql(SqlArgs),
    /// Send test events to a running pipeline's HTTP ingest (the old test-event producer), or write them to a file.
    #[command(
        after_help = "Examples:\n  tickflow produce --count 100000 --batch-size 500 --to http://127.0.0.1:8750\n  tickflow produce --count 1000 --batch-size 10 --target-kb 4 --rate 100 --to http://127.0.0.1:8750\n  tickflow produce --count 2000000 --batch-size 5000 --connections 4\n  tickflow produce --count 100000 --to ticks.ndjson   # the same events, to a file\n  tickflow produce --from ticks.ndjson --batch-size 5000 --connections 4   # replay a file\n  AWS_ENDPOINT_URL=http://127.0.0.1:5000 tickflow produce --count 1000 --batch-size 10 --to sqs://ticks   # one message per event\n  tickflow produce --count 100000 --batch-size 1000 --connections 4 --to nats://127.0.0.1:4222/ticks.all\n  tickflow produce --count 100000 --batch-size 1000 --to kafka://127.0.0.1:9092/market_ticks   # keyed by symbol (a build with --features kafka)"
    )]
    Produce(ProduceArgs),
    /// Replay trades, quotes and bars from NDJSON, CSV, Parquet (a lake's own included) or Databento DBN files into a data directory or a running pipeline.
    #[command(
        after_help = "Examples:\n  tickflow replay old-data/lake --data-dir /tmp/fresh          # rebuild bars and metrics in a new lake\n  tickflow replay ticks.ndjson --to http://127.0.0.1:8750 --speed 10\n  tickflow replay backup/trades/2026-11-24.csv --data-dir /tmp/tf\n\nA folder is searched for *.parquet, *.csv, *.ndjson, *.jsonl, *.json, *.dbn and *.dbn.zst and read one day at a\ntime (date=YYYY-MM-DD folders, YYYY-MM-DD file names), each day's events in event-time order.\nEvents keep their recorded source, feed and sequence numbers. Without --speed they go as fast as\nthe pipeline takes them; --speed 1 keeps the recorded pace. Lines that cannot be read go to the\nDLQ (--data-dir) or are listed on stderr with file and line (--to), and the exit code is then 1."
    )]
    Replay(ReplayArgs),
    /// Merge the lake's small Parquet files now (a running pipeline does this on its own).
    #[command(
        after_help = "Examples:\n  tickflow compact --data-dir /tmp/tf\n  tickflow compact --data-dir /tmp/tf --target-mb 256\n\nEvery day before today (UTC) becomes as few files per folder as --target-mb allows;\ntoday's folders are merged once 32 flush files have gathered. Refused while a pipeline\nruns on the data directory: it compacts by itself, every lake.compact_interval_secs."
    )]
    Compact(CompactArgs),
    /// Read every part of the lake and check it against the checksum it was written with.
    #[command(
        after_help = "Examples:\n  tickflow verify --data-dir /tmp/tf\n\nEvery published Parquet part is read in full and its crc32 compared with the one recorded\nin its footer when it was written (parts from before tickflow recorded one are counted,\nnot checked). Safe while a pipeline runs. Prints each damaged part with its reason and\nexits 1 if there is one; queries, sinks catching up, compaction and replay check the same\nsum before they read a part."
    )]
    Verify(VerifyArgs),
    /// Fetch a vendor's history (bars or trades) for a config's source into its data directory.
    #[command(
        after_help = "Examples:\n  tickflow backfill --config config/polygon.toml                       # 70 days of daily bars (the old initialize)\n  tickflow backfill --config config/polygon.toml --from 2026-12-03 --to 2026-12-03   # one day (the old daily_update)\n  tickflow backfill --config config/alpaca.toml --symbols AAPL --what 1m --from 2026-11-02 --to 2026-11-06\n  tickflow backfill --config config/alpaca.toml --what trades --from 2026-12-01 --to 2026-12-01\n\nAn embedded pipeline processes what is fetched (bars, daily metrics, the lake, the sinks) and\nstops when done; the data directory must not be in use by a running pipeline (send to one with\n--to-url http://127.0.0.1:8750 instead). Progress is kept\nper chunk in DATA_DIR/backfill/: run the same command again to resume where it stopped;\n--restart fetches everything again, and processing drops the rows already stored as duplicates.\nRows older than what processing already holds for a symbol are late and go to the DLQ: backfill\na symbol's history before its live data, oldest first."
    )]
    Backfill(BackfillArgs),
    /// List what streaming sources missed while disconnected or stopped, and whether it was fetched again.
    #[command(
        after_help = "Examples:\n  tickflow gaps --data-dir ./tickflow-data\n  tickflow gaps --json\n\nA gap runs from the last event a source passed on to the moment its subscription was\nconfirmed again. `filled`: fetched over the vendor's REST history and appended; `unfillable`:\nthe vendor has no history of that kind (quotes, Polygon trades) or refused, with the reason;\n`detected`: still being fetched (or the stream is held while the vendor's history fails), or the\nprocess stopped while it was. A running pipeline\nserves the same list at GET /api/v1/gaps."
    )]
    Gaps(GapsArgs),
    /// Show a running pipeline at a glance: the log, the lake, every source, sink, notifier and job.
    #[command(
        after_help = "Examples:\n  tickflow status                      # the pipeline running on ./tickflow-data\n  tickflow status --data-dir /tmp/D\n  tickflow status --url http://10.0.0.5:8750 --json\n\nThe address comes from the data directory's server.json, which `tickflow run` and\n`tickflow demo` write. The same status is GET /api/v1/status. Exit code 0 while the\npipeline runs, 1 when it cannot be reached or one of its threads has failed."
    )]
    Status(StatusArgs),
    /// Build a market report from the stored daily bars, write it beside the data, and mail it.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Check the alert channels a config sets up.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Print Athena's CREATE EXTERNAL TABLE statements for a config's s3_json sinks' JSON and its Parquet lake on S3.
    #[command(
        name = "athena-ddl",
        after_help = "Example:\n  tickflow athena-ddl --config config/aws.toml --database tickflow > tables.sql\n\nThe JSON tables (<table>_json) are partitioned by dt (the UTC day) with partition\nprojection, so new days are queryable at once: no crawler, no MSCK REPAIR TABLE.\nWith [lake] url = \"s3://...\", the lake's tables follow under their own names, over its\nfolders (date=, then symbol= or bucket=; partition= first on a partitioned log). Days,\nbuckets and partitions are projected; a table with symbol= folders is followed by\nMSCK REPAIR TABLE, to run again once new days or symbols appear."
    )]
    AthenaDdl(AthenaDdlArgs),
    /// Run the pipeline as an AWS Lambda handler for SQS events (the custom runtime's bootstrap).
    #[command(
        after_help = "Example (the zip's bootstrap):\n  #!/bin/sh\n  exec ./tickflow lambda --config \"$LAMBDA_TASK_ROOT/tickflow.toml\"\n\nThe config is the one `tickflow run` takes; its sources do not run, the event source\nmapping polls the queue. The first `sqs` source's id, max_receives and\ndead_letter_queue_url apply to the messages. Each invocation is answered once its ticks are\nin every sink, with the messages to receive again as batchItemFailures (enable\nReportBatchItemFailures on the mapping). Put data_dir under /tmp. deploy/terraform/ has\nthe function, queue, tables and roles."
    )]
    Lambda(LambdaArgs),
    /// Watch a running pipeline live in the terminal: every component's state, rate, lag and errors (q quits).
    #[command(
        after_help = "Examples:\n  tickflow top                       # the pipeline whose data directory is ./tickflow-data\n  tickflow top --url http://10.0.0.5:8750 --interval 2"
    )]
    Top(TopArgs),
    /// Print a shell completion script to standard output.
    #[command(
        after_help = "Examples:\n  tickflow completions bash > ~/.local/share/bash-completion/completions/tickflow\n  tickflow completions zsh > \"${fpath[1]}/_tickflow\"\n  tickflow completions fish > ~/.config/fish/completions/tickflow.fish"
    )]
    Completions(CompletionsArgs),
    /// Print the manual page (roff) to standard output.
    #[command(
        after_help = "Example:\n  tickflow man > ~/.local/share/man/man1/tickflow.1 && man tickflow"
    )]
    Man,
}

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// The data directory of the running pipeline, which records its address.
    #[arg(long, value_name = "DIR", default_value = "./tickflow-data")]
    pub(crate) data_dir: PathBuf,
    /// Watch this address instead (`http://host:port`).
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// Seconds between redraws.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub(crate) interval: f64,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AlertsCommand {
    /// Send one test alert through a notifier of the config, once, and say how it went.
    #[command(
        after_help = "Examples:\n  tickflow alerts test --config config/email.toml desk\n  tickflow alerts test --config config/webhook.toml ops\n\nThe test alert has rule `tickflow-test`, symbol TEST and severity info; it is not stored.\nExit code 0 when the channel took it, 1 with the channel's answer when it did not."
    )]
    Test(AlertsTestArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AlertsTestArgs {
    /// The config whose `[[notifiers]]` to use.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// The notifier's id.
    #[arg(value_name = "CHANNEL")]
    pub(crate) channel: String,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ReportCommand {
    /// Every symbol's weekly return and range, best and worst in the subject, and a 30-day
    /// candlestick chart each (the old Saturday e-mail).
    #[command(
        after_help = "Examples:\n  tickflow report weekly --data-dir ./tickflow-data                 # the last week traded\n  tickflow report weekly --data-dir ./tickflow-data --week 2026-W48\n  tickflow report weekly --config config/email.toml --send          # and mail it\n\nThe report is written to DATA_DIR/reports/YYYY-Www/ (report.html and one PNG per symbol)\nand its subject printed. Return is from the week's first open to its last close; range is\nthe week's high less its low, as a share of that open (docs/reports.md). --send mails it\nthrough the config's e-mail notifier (--notifier names one when there are several), with\nthe charts attached."
    )]
    Weekly(WeeklyArgs),
    /// One day's data quality: trades and 1-minute bars per symbol with the gaps between
    /// them, rejects by reason, alerts by rule, and each sink's lag.
    #[command(
        after_help = "Examples:\n  tickflow report daily --data-dir ./tickflow-data                  # the last trading day\n  tickflow report daily --data-dir ./tickflow-data --date 2026-11-23\n  tickflow report daily --config config/email.toml --send           # and mail it\n\nThe report is written to DATA_DIR/reports/YYYY-MM-DD/ (daily.html and daily.txt) and printed.\nA gap is a hole between two consecutive 1-minute bars of a symbol on the day (UTC). Sink\nlag comes from the pipeline running on the data directory, if there is one (docs/reports.md)."
    )]
    Daily(DailyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DailyArgs {
    #[command(flatten)]
    pub(crate) target: ReportTarget,
    /// The day (YYYY-MM-DD, UTC); default: the last NYSE trading day before today.
    #[arg(long, value_name = "DATE")]
    pub(crate) date: Option<String>,
}

/// What every report command takes: where the data is and whether to mail the report.
#[derive(Debug, Args)]
pub(crate) struct ReportTarget {
    /// The data directory to read; default: the config's, else ./tickflow-data.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// A config: its data directory and, for --send, its e-mail notifier.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Mail the report (needs --config with an e-mail notifier).
    #[arg(long)]
    pub(crate) send: bool,
    /// With --send: the e-mail notifier's id, when the config has several.
    #[arg(long, value_name = "ID")]
    pub(crate) notifier: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct WeeklyArgs {
    #[command(flatten)]
    pub(crate) target: ReportTarget,
    /// The ISO week (YYYY-Www); default: the last week traded (this week from Saturday on).
    #[arg(long, value_name = "WEEK")]
    pub(crate) week: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct GapsArgs {
    /// The data directory whose sources' gap ledgers to read.
    #[arg(long, value_name = "DIR", default_value = "./tickflow-data")]
    pub(crate) data_dir: PathBuf,
    /// Print JSON, as GET /api/v1/gaps answers.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The data directory of the running pipeline, which records its address.
    #[arg(long, value_name = "DIR", default_value = "./tickflow-data")]
    pub(crate) data_dir: PathBuf,
    /// Ask this address instead (`http://host:port`).
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// Print the JSON of GET /api/v1/status as it came.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    /// The config file: its source's vendor, keys and endpoints, and its data directory.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// The source to backfill (its id); default: the one source with a vendor history.
    #[arg(long, value_name = "ID")]
    pub(crate) source: Option<String>,
    /// Symbols as the vendor names them, comma separated; default: the source's own.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub(crate) symbols: Vec<String>,
    /// First exchange date (YYYY-MM-DD); default: 70 days before --to.
    #[arg(long, value_name = "DATE")]
    pub(crate) from: Option<String>,
    /// Last exchange date, included; default: the previous NYSE trading day.
    #[arg(long, value_name = "DATE")]
    pub(crate) to: Option<String>,
    /// Bars of an interval (1d, 1h, 5m, 1m, 1s) or `trades`.
    #[arg(long, value_name = "WHAT", default_value = "1d")]
    pub(crate) what: String,
    /// Forget the progress of an earlier run over the same range and fetch it all again.
    #[arg(long)]
    pub(crate) restart: bool,
    /// Send to a running pipeline's HTTP ingest at this base URL instead of processing into
    /// the config's data directory (progress is then kept in .tickflow-backfill/ beside the
    /// config).
    #[arg(long, value_name = "URL")]
    pub(crate) to_url: Option<String>,
    /// With --to-url: the bearer token of the open ingest endpoint; default: the
    /// TICKFLOW_TOKEN environment variable.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "TICKFLOW_TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CompactArgs {
    /// The data directory whose lake to compact.
    #[arg(long, value_name = "DIR", default_value = "./tickflow-data")]
    pub(crate) data_dir: PathBuf,
    /// Largest merged file, in MiB; files this large are left alone.
    #[arg(long, value_name = "MIB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub(crate) target_mb: u64,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The data directory whose lake to check (a lake on object storage is found from it).
    #[arg(long, value_name = "DIR", default_value = "./tickflow-data")]
    pub(crate) data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Stop cleanly after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub(crate) duration: Option<u64>,
    /// Where the log, lake and checkpoint live.
    #[arg(long, value_name = "DIR", default_value = "./tickflow-data")]
    pub(crate) data_dir: PathBuf,
    /// Address the HTTP server binds to.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub(crate) bind: String,
    /// HTTP port (0 picks a free one).
    #[arg(long, value_name = "N", default_value_t = 8750)]
    pub(crate) port: u16,
    /// Port of the Postgres-wire SQL endpoint (`psql -h 127.0.0.1 -p 8751`); 0 picks a free one.
    #[arg(long, value_name = "N", default_value_t = 8751)]
    pub(crate) pg_port: u16,
    /// Leave the Postgres-wire endpoint off.
    #[arg(long)]
    pub(crate) no_pgwire: bool,
    /// Live simulator rate in events per second (0 = as fast as possible).
    #[arg(long, value_name = "EVENTS")]
    pub(crate) rate: Option<u64>,
    /// Days of simulated history pushed first.
    #[arg(long, value_name = "DAYS")]
    pub(crate) history_days: Option<u32>,
    /// Write a JSON summary (throughput, latency, peak memory) here on exit; bench/ uses it.
    #[arg(long, value_name = "FILE")]
    pub(crate) summary: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The config file.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Stop cleanly after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub(crate) duration: Option<u64>,
    /// Write a JSON summary (throughput, latency, peak memory) here on exit.
    #[arg(long, value_name = "FILE")]
    pub(crate) summary: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The config file.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct LambdaArgs {
    /// The config file [default: $LAMBDA_TASK_ROOT/tickflow.toml].
    #[arg(long, short, value_name = "FILE", env = "TICKFLOW_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct AthenaDdlArgs {
    /// The config file whose s3_json sinks and lake on S3 to describe.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// The Glue database the tables go in.
    #[arg(long, default_value = "tickflow")]
    pub(crate) database: String,
}

#[derive(Debug, Args)]
pub(crate) struct SqlArgs {
    /// The data directory to query.
    #[arg(long, value_name = "DIR", default_value = "./tickflow-data")]
    pub(crate) data_dir: PathBuf,
    /// Output format.
    #[arg(long, value_name = "FORMAT", default_value = "table", value_parser = ["table", "csv", "json"])]
    pub(crate) format: String,
    /// Print the time the query took to standard error, as psql's \timing does (planning and
    /// execution; not printing the rows). Asked of a running pipeline, the time is the one
    /// it reports, followed by the whole round trip.
    #[arg(long)]
    pub(crate) timing: bool,
    /// Stop a query running longer than this, reading the lake directly (a running
    /// pipeline applies its `[query] timeout_secs`).
    #[arg(long, value_name = "SECS")]
    pub(crate) timeout: Option<u64>,
    /// Stop a query whose joins, sorts and groups need more memory than this, reading the
    /// lake directly (a running pipeline applies its `[query] memory_mb`).
    #[arg(long, value_name = "MB")]
    pub(crate) memory_mb: Option<usize>,
    /// Plan without one of tickflow's own rules (exact_sums, narrow_sums, symbol_runs),
    /// reading the lake directly; repeat for several. The answer is the same; bench/ uses
    /// it to show what each rule buys.
    #[arg(long, value_name = "RULE")]
    pub(crate) disable: Vec<String>,
    /// One SQL statement (read-only).
    pub(crate) query: String,
}

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    /// Events to send in total (with --from: at most this many of the file's).
    #[arg(long, value_name = "N", required_unless_present = "from")]
    pub(crate) count: Option<u64>,
    /// Send the NDJSON lines of this file (one written by --to FILE, or a capture) instead
    /// of generated events: a replay, with no generating cost on the sender's side.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["target_kb", "symbols", "seed", "start_seq"])]
    pub(crate) from: Option<PathBuf>,
    /// Events per request.
    #[arg(long, value_name = "B", default_value_t = 100)]
    pub(crate) batch_size: u64,
    /// Pad each event to about this many KB (0 = no padding), as the old producer did.
    #[arg(long, value_name = "K", default_value_t = 0.0)]
    pub(crate) target_kb: f64,
    /// Events per second (0 = as fast as possible).
    #[arg(long, value_name = "R", default_value_t = 0)]
    pub(crate) rate: u64,
    /// Base URL of the running pipeline; sqs://<queue>, nats://<host>:<port>/<subject> or
    /// kafka://<host>:<port>/<topic> for one message per event (the topic is created when
    /// missing); or a file path to write the
    /// same NDJSON to.
    #[arg(long, value_name = "URL|FILE", default_value = "http://127.0.0.1:8750")]
    pub(crate) to: String,
    /// Requests in flight at once.
    #[arg(long, value_name = "C", default_value_t = 1)]
    pub(crate) connections: usize,
    /// Symbols to cycle through, comma separated.
    #[arg(long, value_name = "LIST", default_value = "AAPL,MSFT,NVDA,BTC-USD")]
    pub(crate) symbols: String,
    /// Seed of the price walk.
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: u64,
    /// Number of the first event (its `seq` and `trade_id`), to continue an earlier run.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) start_seq: u64,
    /// Append one line "FIRST LAST" per acknowledged request to this file (the events' seq,
    /// or with --from their positions in the file, counting from 0).
    #[arg(long, value_name = "FILE")]
    pub(crate) ack_log: Option<PathBuf>,
    /// Retries per request on connection errors, 429 or 5xx before giving up on it, each
    /// after the server's Retry-After (up to 30 s) when it sends one.
    #[arg(long, default_value_t = 0)]
    pub(crate) retries: u32,
    /// A librdkafka setting for a kafka:// target, such as security.protocol=SASL_SSL or
    /// batch.num.messages=1; repeat for several.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    pub(crate) kafka_options: Vec<String>,
    /// Send to the HTTP source with this id (`/api/v1/ingest/<id>`) instead of the open one.
    #[arg(long, value_name = "ID")]
    pub(crate) source: Option<String>,
    /// Bearer token of that source; default: the TICKFLOW_TOKEN environment variable.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "TICKFLOW_TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// A file, or a folder of files, to replay.
    #[arg(value_name = "PATH")]
    pub(crate) path: PathBuf,
    /// Recorded pace × this factor (1 = as recorded); without it, as fast as possible.
    #[arg(long, value_name = "X")]
    pub(crate) speed: Option<f64>,
    /// Base URL of a running pipeline to send the events to (HTTP ingest).
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "data_dir",
        required_unless_present = "data_dir"
    )]
    pub(crate) to: Option<String>,
    /// A data directory to process the events into, with an embedded pipeline that stops when
    /// the replay is done (it must not be in use by a running pipeline).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The source id the replayed events get when their lines name none; with --to, the
    /// HTTP source to send to (`/api/v1/ingest/<id>`; `replay` means the open endpoint).
    #[arg(long, value_name = "ID", default_value = "replay")]
    pub(crate) source: String,
    /// With --to: the bearer token of that HTTP source; default: the TICKFLOW_TOKEN
    /// environment variable.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "TICKFLOW_TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
    /// Events per request with --to.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub(crate) batch_size: usize,
}

/// The command line; a binary named `bootstrap` and given no arguments is a Lambda custom
/// runtime, and runs `tickflow lambda`.
pub(crate) fn parse() -> Cli {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let program = args.first().map(std::path::Path::new);
    if args.len() == 1 && program.and_then(|p| p.file_name()) == Some("bootstrap".as_ref()) {
        args.push("lambda".into());
    }
    Cli::parse_from(args)
}
