//! `tickflow verify`: read every published part of the lake and check it against the
//! checksum in its footer, a scrub for bit rot and for damage a query has not met yet.

use std::process::ExitCode;

use anyhow::Context;
use tickflow_lake::{Error, Table, Verdict};

use crate::cli::VerifyArgs;

/// Exit code when a part is damaged or cannot be read.
const EXIT_DAMAGED: u8 = 1;

pub(crate) fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.data_dir;
    // Parts never change once published, so a running pipeline does not get in the way:
    // a part compaction deletes meanwhile is counted as gone, not as damaged.
    let Some(checkpoint) = tickflow_pipeline::checkpoint::read(dir)
        .with_context(|| format!("reading the checkpoint in {}", dir.display()))?
    else {
        anyhow::bail!(
            "no checkpoint in {}: not a tickflow data directory, or nothing written to its lake yet",
            dir.display()
        );
    };
    let lake = tickflow_pipeline::open_lake(dir)?;
    let mut parts = Vec::new();
    for table in Table::ALL {
        parts.extend(
            lake.files(table, checkpoint.flush_seq)
                .with_context(|| format!("listing the {} parts", table.name()))?,
        );
    }
    let started = std::time::Instant::now();
    let bar = super::progress(parts.len() as u64, "parts");
    let (mut matched, mut no_sum, mut gone, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut bad = Vec::new();
    for path in &parts {
        match lake.verify_part(path) {
            Ok(verdict) => {
                if verdict == Verdict::Matched {
                    matched += 1;
                } else {
                    no_sum += 1;
                }
                bytes += std::fs::metadata(path).map_or(0, |m| m.len());
            }
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                gone += 1;
            }
            Err(e) => bad.push(e.to_string()),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "checked {} parts of {} in {:.1} s: {matched} match their checksum, {no_sum} were written before parts carried one{}",
        parts.len(),
        lake.root().display(),
        started.elapsed().as_secs_f64(),
        if gone > 0 {
            format!(", {gone} were merged away by compaction while checking")
        } else {
            String::new()
        }
    );
    if bytes > 0 {
        println!("read {:.1} MiB from disk", bytes as f64 / (1024.0 * 1024.0));
    }
    if bad.is_empty() {
        println!("damaged: 0");
        return Ok(ExitCode::SUCCESS);
    }
    println!("damaged: {}", bad.len());
    for problem in &bad {
        println!("  {problem}");
    }
    println!(
        "Queries that need a damaged part fail with its name. Restore it from a copy (a backup, or \
         rebuild the day with `tickflow replay` from a sink's copy), or move it aside: its rows \
         are then missing from the lake."
    );
    Ok(ExitCode::from(EXIT_DAMAGED))
}
