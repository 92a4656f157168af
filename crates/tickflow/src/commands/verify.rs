//! `tickflow verify`: read every published part of the lake and check it against the
//! checksum in its footer, a scrub for bit rot and for damage a query has not met yet.

use std::process::ExitCode;

use anyhow::Context;
use tickflow_lake::{Error, Table, Verdict};

use crate::cli::VerifyArgs;

/// Exit code when a part is damaged or could not be read.
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
    let (mut matched, mut no_sum, mut gone) = (0u64, 0u64, 0u64);
    let (mut bad, mut unreadable) = (Vec::new(), Vec::new());
    for path in &parts {
        match lake.verify_part(path) {
            Ok(Verdict::Matched) => matched += 1,
            Ok(Verdict::NoSum) => no_sum += 1,
            Err(e) if e.is_not_found() => gone += 1,
            Err(e @ Error::Damaged { .. }) => bad.push(e.to_string()),
            Err(e) => unreadable.push(e.to_string()),
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
    println!("damaged: {}", bad.len());
    for problem in &bad {
        println!("  {problem}");
    }
    if !unreadable.is_empty() {
        // Not a verdict on the bytes: a read that failed (permissions, a timeout, a bad
        // sector). Run it again once that is fixed.
        println!("could not be read: {}", unreadable.len());
        for problem in &unreadable {
            println!("  {problem}");
        }
    }
    if bad.is_empty() && unreadable.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if !bad.is_empty() {
        println!(
            "Queries that need a damaged part fail with its name. Restore it from a copy (a backup, or \
             rebuild the day with `tickflow replay` from a sink's copy), or move it aside: its rows \
             are then missing from the lake."
        );
    }
    Ok(ExitCode::from(EXIT_DAMAGED))
}
