//! One module per command; each returns the process exit code.

mod alerts;
mod athena;
mod backfill;
mod check;
mod compact;
mod completions;
mod gaps;
mod jobs;
mod lambda;
mod produce;
mod replay;
mod report;
mod run;
mod sql;
mod status;
mod top;
mod verify;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Exit code for invalid usage or configuration.
pub(crate) const EXIT_USAGE: u8 = 2;

/// Set when logs are JSON: status lines then go out as log events, not as text.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `--log-format json` was given.
pub(crate) fn json_logs() -> bool {
    JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn init_logging(verbose: u8, format: crate::cli::LogFormat) {
    JSON_LOGS.store(
        format == crate::cli::LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    let default = match verbose {
        0 => "info,datafusion=warn",
        1 => "debug,datafusion=info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        crate::cli::LogFormat::Human => builder.try_init(),
        // One JSON object per line, fields flattened beside the message.
        crate::cli::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => run::demo(args),
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::check(&args),
        Command::Sql(args) => sql::sql(&args),
        Command::Produce(args) => produce::produce(&args),
        Command::Replay(args) => replay::replay(&args),
        Command::Compact(args) => compact::compact(&args),
        Command::Verify(args) => verify::verify(&args),
        Command::Backfill(args) => backfill::backfill(&args),
        Command::Gaps(args) => gaps::gaps(&args),
        Command::Status(args) => status::status(args),
        Command::Report(crate::cli::ReportCommand::Weekly(args)) => report::weekly(&args),
        Command::Report(crate::cli::ReportCommand::Daily(args)) => report::daily(&args),
        Command::Alerts(crate::cli::AlertsCommand::Test(args)) => alerts::test(&args),
        Command::AthenaDdl(args) => athena::ddl(&args),
        Command::Lambda(args) => lambda::lambda(&args),
        Command::Top(args) => top::top(&args),
        Command::Completions(args) => completions::completions(args.shell),
        Command::Man => completions::man(),
    }
}

/// A progress bar on standard error for a long command, counting `unit`: a bar when the
/// total `len` is known, a spinner when it is 0, and only a spinner with the elapsed time
/// (and the message) when `unit` is empty. indicatif draws only on a terminal, so a
/// command in a script or a pipe stays quiet.
pub(crate) fn progress(len: u64, unit: &str) -> indicatif::ProgressBar {
    let template = if unit.is_empty() {
        "{spinner} {msg} [{elapsed}]".to_string()
    } else if len > 0 {
        format!("{{bar:30}} {{human_pos}}/{{human_len}} {unit}, {{per_sec}}, eta {{eta}} {{msg}}")
    } else {
        format!("{{spinner}} {{human_pos}} {unit}, {{per_sec}} [{{elapsed}}] {{msg}}")
    };
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// A multi-threaded runtime sized for this machine's two cores.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The environment variable the commands that talk to a running pipeline (`sql`, `status`,
/// `top`, `report`) read its `[http] token` from.
pub(crate) const TOKEN_ENV: &str = "TICKFLOW_TOKEN";

/// An HTTP client for a running pipeline's API: it sends `$TICKFLOW_TOKEN` as the bearer
/// token when set, and gives up after `timeout`.
pub(crate) fn api_client(timeout: std::time::Duration) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(token) = std::env::var(TOKEN_ENV) {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("{TOKEN_ENV} holds characters a header cannot"))?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers)
        .build()?)
}
