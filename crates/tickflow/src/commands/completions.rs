//! `tickflow completions <shell>` and `tickflow man`: generated from the command line's own
//! definition, so they never disagree with `--help`.

use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;

pub(crate) fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "tickflow", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn man() -> anyhow::Result<ExitCode> {
    clap_mangen::Man::new(Cli::command())
        .render(&mut std::io::stdout())
        .context("writing the manual page")?;
    Ok(ExitCode::SUCCESS)
}
