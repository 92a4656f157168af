//! `lambda`: the pipeline as an AWS Lambda handler for SQS events (custom runtime
//! `bootstrap`).
//!
//! The config is the one `tickflow run` takes. Its sources do not run: the event source
//! mapping polls the queue, and each invocation's messages are read as the config's first
//! `sqs` source reads them (its id, `max_receives` and `dead_letter_queue_url`). An invocation
//! is answered once its ticks are in the lake and every sink and notifier has written them,
//! so a message Lambda deletes is stored; the answer lists the messages to receive again
//! (`batchItemFailures`), so one bad message never fails its batch-mates:
//! - a message that cannot be read goes to tickflow's DLQ and, with its reason, to the
//!   dead-letter queue; it is listed only when that copy fails or there is no such queue, so
//!   the queue's redrive policy keeps it;
//! - when the sinks and notifiers do not have the ticks one second before the deadline, every
//!   message not already in the dead-letter queue is listed: they come back, and processing
//!   and the DynamoDB sink's natural keys drop the repeats (the S3 JSON of two environments
//!   may both hold a row; see docs/scale-out.md).
//!
//! The data directory (`/tmp` on Lambda) lasts as long as the execution environment. Sink
//! ids get the environment's name appended, so environments running at once never share a
//! sink's position or file names (see docs/scale-out.md for what that means for bars).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tickflow_aws::lambda::{Invocation, Runtime, batch_response, sqs_records};
use tickflow_aws::sqs::{Received, SqsSource};
use tickflow_aws::{Client, Service};
use tickflow_core::codec::Batch;
use tickflow_model::UnixNanos;
use tickflow_pipeline::config::{self, SourceConfig};
use tickflow_pipeline::{Pipeline, Plan};

use crate::cli::LambdaArgs;

/// The longest a flush waits in Lambda mode: each invocation waits for one.
const FLUSH_AT_MOST: Duration = Duration::from_millis(100);

/// Messages without an `sqs` source in the config are in tickflow's ingest format.
const TICKFLOW: tickflow_core::mapping::Format = tickflow_core::mapping::Format::Tickflow;

/// How long before the deadline an invocation stops waiting for the sinks and answers.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

pub(crate) fn lambda(args: &LambdaArgs) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    let api = match Runtime::from_env() {
        Ok(api) => api,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
    };
    let path = args.config.clone().unwrap_or_else(default_config);
    let (plan, queue) = match config::load(&path) {
        Ok(plan) => prepare(plan),
        Err(e) => {
            eprintln!("{e}");
            let _ = rt.block_on(api.init_failed("Runtime.ConfigError", &e.to_string()));
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
    };
    if plan.log.partitions > 1 {
        // An invocation is answered once its ticks are in every sink, which a partitioned
        // log's processes cannot tell one environment.
        let message = format!(
            "{}: [log] partitions = {} is for `tickflow run` processes; Lambda mode takes a one-partition log",
            path.display(),
            plan.log.partitions
        );
        eprintln!("{message}");
        let _ = rt.block_on(api.init_failed("Runtime.ConfigError", &message));
        return Ok(ExitCode::from(super::EXIT_USAGE));
    }
    let pipeline = match Pipeline::start(plan) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            let message = format!("starting the pipeline: {e}");
            eprintln!("{message}");
            let _ = rt.block_on(api.init_failed("Runtime.StartError", &message));
            return Ok(ExitCode::from(1));
        }
    };
    let dead_letters = match &queue {
        Some((_, q)) if q.dead_letter_queue_url.is_some() => {
            match Client::new(&q.aws, Service::Sqs, Duration::from_secs(10)) {
                Ok(client) => Some(client),
                Err(e) => {
                    let message = format!("the dead-letter queue's client: {e}");
                    eprintln!("{message}");
                    let _ = rt.block_on(api.init_failed("Runtime.ConfigError", &message));
                    let _ = Arc::try_unwrap(pipeline).map(Pipeline::shutdown);
                    return Ok(ExitCode::from(super::EXIT_USAGE));
                }
            }
        }
        _ => None,
    };
    let handler = Handler {
        pipeline: Arc::clone(&pipeline),
        queue,
        dead_letters,
    };
    tracing::info!(config = %path.display(), "tickflow lambda is waiting for invocations");
    let outcome = rt.block_on(serve(&api, &handler));
    drop(handler);
    let stopped = Arc::try_unwrap(pipeline)
        .map_err(|_| anyhow::anyhow!("the pipeline is still in use"))
        .and_then(|p| Ok(p.shutdown()?));
    match (outcome, stopped) {
        (Ok(()), Ok(())) => Ok(ExitCode::SUCCESS),
        (Err(e), _) | (Ok(()), Err(e)) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `$LAMBDA_TASK_ROOT/tickflow.toml`: the config packaged beside `bootstrap`.
fn default_config() -> PathBuf {
    std::env::var_os("LAMBDA_TASK_ROOT")
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
        .join("tickflow.toml")
}

/// The plan Lambda runs: no sources, prompt flushes, sink ids of this environment's own;
/// and the `sqs` source whose settings read the messages.
fn prepare(mut plan: Plan) -> (Plan, Option<(String, SqsSource)>) {
    let queue = plan.sources.iter().find_map(|s| match &s.config {
        SourceConfig::Sqs(q) => Some((s.id.clone(), q.clone())),
        _ => None,
    });
    plan.sources.clear();
    plan.lake.flush_interval = plan.lake.flush_interval.min(FLUSH_AT_MOST);
    let environment = environment_name();
    for sink in &mut plan.sinks {
        sink.id = format!("{}-{environment}", sink.id);
    }
    (plan, queue)
}

/// A short name for this execution environment: the tail of its log stream's name, which
/// Lambda makes unique per environment, or the time it started.
fn environment_name() -> String {
    let stream = std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_default();
    let tail: String = stream
        .rsplit(']')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    if tail.len() >= 8 {
        tail[tail.len() - 12.min(tail.len())..].to_ascii_lowercase()
    } else {
        format!("{:x}", UnixNanos::now().0 ^ i64::from(std::process::id()))
    }
}

struct Handler {
    pipeline: Arc<Pipeline>,
    queue: Option<(String, SqsSource)>,
    dead_letters: Option<Client>,
}

/// Answers invocations until the Runtime API goes away (`Err`) or a sink has failed for good
/// (`Err`, after failing the invocation): a new environment then starts afresh.
async fn serve(api: &Runtime, handler: &Handler) -> anyhow::Result<()> {
    loop {
        let invocation = api.next().await?;
        let id = invocation.request_id.clone();
        match handler.handle(&invocation).await {
            Ok(answer) => api.respond(&id, &answer).await?,
            Err(Failure::Event(message)) => {
                tracing::warn!(request = %id, error = %message, "the event cannot be handled");
                api.fail(&id, "InvalidEvent", &message).await?;
            }
            Err(Failure::Pipeline(message)) => {
                tracing::error!(request = %id, error = %message, "the pipeline cannot store events; this environment stops");
                api.fail(&id, "PipelineFailed", &message).await?;
                anyhow::bail!("{message}");
            }
        }
    }
}

/// Why an invocation failed as a whole.
enum Failure {
    /// Not an SQS event.
    Event(String),
    /// The log, the lake or a sink failed for good.
    Pipeline(String),
}

impl Handler {
    async fn handle(&self, invocation: &Invocation) -> Result<serde_json::Value, Failure> {
        let records = sqs_records(&invocation.event).map_err(Failure::Event)?;
        let source = self.queue.as_ref().map_or("lambda", |(id, _)| id.as_str());
        let now = UnixNanos::now();
        let mut batch = Batch::default();
        let mut failed = vec![false; records.len()];
        let mut dead_lettered = vec![false; records.len()];
        for (i, r) in records.iter().enumerate() {
            let message = Received {
                queue: r.queue_arn.rsplit(':').next().unwrap_or_default(),
                id: &r.message_id,
                body: &r.body,
                receives: r.receives,
            };
            let (format, max_receives) = self
                .queue
                .as_ref()
                .map_or((&TICKFLOW, u32::MAX), |(_, q)| (&q.format, q.max_receives));
            if let Err(problem) = message.read(format, max_receives, source, now, &mut batch) {
                dead_lettered[i] = self.send_dead(&r.message_id, &r.body, &problem).await;
                failed[i] = !dead_lettered[i];
            }
        }
        if !batch.is_empty() {
            let offsets = match self.pipeline.ingest_batch(source, &batch) {
                Ok(offsets) => offsets,
                // The log refused it for now (its broker away, its disk at the reserve):
                // every message not dead-lettered comes again; the environment lives on.
                Err(
                    e @ (tickflow_pipeline::Error::LogUnavailable(_)
                    | tickflow_pipeline::Error::Log(tickflow_log::Error::DiskFull { .. })),
                ) => {
                    tracing::warn!(request = %invocation.request_id, error = %e, messages = records.len(), "the log refused the batch; its messages come again");
                    for (f, dead) in failed.iter_mut().zip(&dead_lettered) {
                        *f = !dead;
                    }
                    return Ok(batch_response(&records, &failed));
                }
                Err(e) => return Err(Failure::Pipeline(e.to_string())),
            };
            let wait = invocation.remaining().saturating_sub(ANSWER_MARGIN);
            if !self.stored(offsets.end, wait).await? {
                tracing::warn!(request = %invocation.request_id, trace = ?invocation.trace_id, messages = records.len(), "the sinks did not have the batch before the deadline; its messages come again");
                // A message already in the dead-letter queue is done with.
                for (f, dead) in failed.iter_mut().zip(&dead_lettered) {
                    *f = !dead;
                }
            }
        }
        Ok(batch_response(&records, &failed))
    }

    /// Copies an unreadable message to the dead-letter queue; whether the queue has it.
    async fn send_dead(&self, id: &str, body: &str, problem: &str) -> bool {
        let (Some((_, queue)), Some(client)) = (&self.queue, &self.dead_letters) else {
            return false;
        };
        match queue.send_dead_letter(client, id, body, problem).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(message = id, error = %e, "the dead-letter queue did not take a copy; the message comes again");
                false
            }
        }
    }

    /// Waits up to `wait` for everything below `end` to be in the lake and every follower;
    /// `Ok(false)` when the time ran out first.
    async fn stored(&self, end: u64, wait: Duration) -> Result<bool, Failure> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = tokio::time::interval(Duration::from_millis(5));
        let seq = loop {
            if let Some(seq) = self.pipeline.flush_covering(end) {
                break seq;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            if let Some(f) = self.pipeline.failure() {
                return Err(Failure::Pipeline(f));
            }
            pause.tick().await;
        };
        loop {
            if self
                .pipeline
                .followers_reached(seq)
                .map_err(Failure::Pipeline)?
            {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            pause.tick().await;
        }
    }
}
