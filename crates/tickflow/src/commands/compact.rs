//! `tickflow compact`: merge the lake's small files while no pipeline runs on it.

use std::process::ExitCode;

use anyhow::Context;
use tickflow_lake::CompactPolicy;
use tickflow_model::UnixNanos;

use crate::cli::CompactArgs;

pub(crate) fn compact(args: &CompactArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.data_dir;
    if let Some(url) = super::sql::running_server(dir) {
        eprintln!(
            "error: a pipeline is running on {} ({url}); it compacts the lake by itself",
            dir.display()
        );
        return Ok(ExitCode::from(super::EXIT_USAGE));
    }
    if !dir.join("checkpoint").exists() {
        anyhow::bail!(
            "no checkpoint in {}: not a tickflow data directory, or nothing written yet",
            dir.display()
        );
    }
    // A pipeline holds its log's lock from start to exit, also while server.json is absent.
    let _lock = match tickflow_log::lock_dir(&dir.join("log")) {
        Ok(lock) => lock,
        Err(tickflow_log::Error::Locked { .. }) => {
            eprintln!(
                "error: a pipeline is running on {}; it compacts the lake by itself",
                dir.display()
            );
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
        Err(e) => return Err(e.into()),
    };
    let Some(checkpoint) = tickflow_pipeline::checkpoint::read(dir)
        .with_context(|| format!("reading the checkpoint in {}", dir.display()))?
    else {
        anyhow::bail!(
            "no checkpoint in {}: nothing has been written to its lake yet",
            dir.display()
        );
    };
    // Nothing a sink or notifier has not written yet: it reads those flushes one by one.
    let floor = tickflow_pipeline::checkpoint::followers_floor(dir)?;
    let committed = floor.map_or(checkpoint.flush_seq, |f| f.min(checkpoint.flush_seq));
    let lake = tickflow_pipeline::open_lake(dir)?;
    let policy = CompactPolicy {
        target_bytes: args.target_mb * 1024 * 1024,
        ..CompactPolicy::default()
    };
    let started = std::time::Instant::now();
    let bar = super::progress(0, "");
    bar.set_message(format!("merging small files in {}", lake.root().display()));
    let report = lake
        .compact(committed, UnixNanos::now().date(), policy)
        .with_context(|| format!("compacting {}", lake.root().display()))?;
    bar.finish_and_clear();
    println!(
        "merged {} files into {} ({} rows) in {:.1} s{}",
        report.inputs,
        report.outputs,
        report.rows,
        started.elapsed().as_secs_f64(),
        match floor {
            Some(f) if f < checkpoint.flush_seq => format!(
                "; flushes after {f} left as they are until the slowest sink or notifier has written them"
            ),
            _ => String::new(),
        }
    );
    Ok(ExitCode::SUCCESS)
}
