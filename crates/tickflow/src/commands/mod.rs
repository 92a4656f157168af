//! One module per command; each returns the process exit code.

mod alerts;
mod athena;
mod backfill;
mod check;
mod compact;
mod gaps;
mod jobs;
mod lambda;
mod produce;
mod replay;
mod report;
mod run;
mod sql;
mod status;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Exit code for invalid usage or configuration.
pub(crate) const EXIT_USAGE: u8 = 2;

pub(crate) fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info,datafusion=warn",
        1 => "debug,datafusion=info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
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
        Command::Backfill(args) => backfill::backfill(&args),
        Command::Gaps(args) => gaps::gaps(&args),
        Command::Status(args) => status::status(args),
        Command::Report(crate::cli::ReportCommand::Weekly(args)) => report::weekly(&args),
        Command::Report(crate::cli::ReportCommand::Daily(args)) => report::daily(&args),
        Command::Alerts(crate::cli::AlertsCommand::Test(args)) => alerts::test(&args),
        Command::AthenaDdl(args) => athena::ddl(&args),
        Command::Lambda(args) => lambda::lambda(&args),
    }
}

/// A multi-threaded runtime sized for this machine's two cores.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
