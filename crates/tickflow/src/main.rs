//! The tickflow binary: parses the command line and runs one command.

mod cli;
mod commands;

use std::process::ExitCode;

fn main() -> ExitCode {
    tickflow_notify::install_crypto();
    let cli = cli::parse();
    commands::init_logging(cli.verbose, cli.log_format);
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
