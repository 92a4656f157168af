//! `tickflow gaps`: what the streaming sources of a data directory missed, and whether it
//! was fetched again (`tickflow_sources::gaps`).

use std::process::ExitCode;

use crate::cli::GapsArgs;

pub(crate) fn gaps(args: &GapsArgs) -> anyhow::Result<ExitCode> {
    let gaps = tickflow_sources::gaps::read_all(&args.data_dir);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&gaps)?);
        return Ok(ExitCode::SUCCESS);
    }
    if gaps.is_empty() {
        println!("no gaps recorded in {}", args.data_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12} {:<10} {:<7} {:<31} {:<31} {:<10} {:>7}  detail",
        "source", "symbol", "kind", "from", "to", "state", "events"
    );
    for g in &gaps {
        println!(
            "{:<12} {:<10} {:<7} {:<31} {:<31} {:<10} {:>7}  {}",
            g.source,
            g.symbol,
            g.kind,
            g.from.to_string(),
            g.to.to_string(),
            g.state,
            g.events,
            g.detail.as_deref().unwrap_or("")
        );
    }
    let open = gaps.iter().filter(|g| g.state != "filled").count();
    println!("{} gap(s), {open} not filled", gaps.len());
    Ok(ExitCode::SUCCESS)
}
