//! `tickflow backfill`: a vendor's history for a config's source, fetched over REST into the
//! config's data directory by an embedded pipeline that stops once everything fetched is
//! processed and in the lake. The rules are `tickflow_sources::backfill`'s: resumable from a
//! progress file, idempotent when run again.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::civil::Date;
use tickflow_pipeline::Pipeline;
use tickflow_pipeline::config::{self, SourceConfig, SourcePlan};
use tickflow_sources::backfill::{Backfill, Progress};
use tickflow_sources::calendar;
use tickflow_sources::history::What;

use crate::cli::BackfillArgs;

pub(crate) fn backfill(args: &BackfillArgs) -> anyhow::Result<ExitCode> {
    let mut plan = match config::load(&args.config) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
    };
    let what: What = args
        .what
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--what: {e}"))?;
    let date = |text: &str, flag: &str| -> anyhow::Result<Date> {
        text.parse()
            .map_err(|_| anyhow::anyhow!("{flag} {text:?}: expected YYYY-MM-DD"))
    };
    // The old jobs: `daily_update` fetched the previous trading day, `initialize` 70 days.
    let to = match &args.to {
        Some(t) => date(t, "--to")?,
        None => calendar::previous_trading_day(calendar::exchange_date(
            tickflow_model::UnixNanos::now(),
        )),
    };
    let from = match &args.from {
        Some(f) => date(f, "--from")?,
        None => to.checked_sub(jiff::Span::new().days(70))?,
    };
    if from > to {
        anyhow::bail!("--from {from} is after --to {to}");
    }
    // Sent to a running pipeline, the progress is kept beside the config instead.
    let progress_dir = match &args.to_url {
        Some(_) => args
            .config
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(".tickflow-backfill"),
        None => plan.data_dir.join("backfill"),
    };
    let (id, job) = job(
        &plan,
        &args.config.display().to_string(),
        args.source.as_deref(),
        what,
        &args.symbols,
        (from, to),
        (&progress_dir, None),
    )?;
    let progress_file = job
        .progress_file
        .clone()
        .context("a backfill keeps its progress")?;
    if args.restart {
        let _ = std::fs::remove_file(&progress_file);
    }
    let progress = Arc::clone(&job.progress);
    let symbols = job.symbols.clone();
    if let Some(url) = &args.to_url {
        return to_running(&job, url, args.token.as_deref(), &id, &symbols);
    }
    plan.sources = vec![SourcePlan {
        id: id.clone(),
        config: SourceConfig::Backfill(job),
    }];
    let data_dir = plan.data_dir.clone();
    let started = Instant::now();
    let pipeline = Pipeline::start(plan).context("starting the pipeline")?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bar:30} {pos}/{len} chunks, {msg} [{elapsed}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let status = loop {
        bar.set_length(progress.chunks_total.load(Ordering::Relaxed));
        bar.set_position(progress.chunks_done.load(Ordering::Relaxed));
        bar.set_message(format!("{} rows", progress.events.load(Ordering::Relaxed)));
        let status = pipeline.status();
        if status.failure.is_some() {
            break status;
        }
        match status.sources.iter().find(|s| s.id == id).map(|s| s.state) {
            Some("running") | None => {}
            Some(_) if status.log_lag == 0 => break status,
            Some(_) => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    bar.finish_and_clear();
    pipeline.shutdown().context("stopping the pipeline")?;
    let skipped = progress.chunks_skipped.load(Ordering::Relaxed);
    let summary = format!(
        "{} {} of {} from {from} to {to} into {}: {} rows fetched in {:.1} s{}",
        id,
        what.as_str(),
        symbols.join(","),
        data_dir.display(),
        progress.events.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        if skipped > 0 {
            format!(
                "; {skipped} chunk(s) already fetched by an earlier run (--restart fetches them again)"
            )
        } else {
            String::new()
        }
    );
    if let Some(failed) = status
        .sources
        .iter()
        .find(|s| s.id == id && s.state == "failed")
    {
        eprintln!(
            "backfill stopped: {}\n{summary}\nrun the same command again to resume after the last chunk fetched",
            failed.error.as_deref().unwrap_or("unknown error")
        );
        return Ok(ExitCode::from(1));
    }
    if let Some(failure) = status.failure {
        anyhow::bail!("the pipeline failed: {failure}");
    }
    println!("backfilled {summary}");
    Ok(ExitCode::SUCCESS)
}

/// The backfill of `what` from `from` to `to` (exchange dates, both included) through the
/// source `source` of `plan` (default: the only one with a vendor history), for `symbols`
/// (default: the source's own), keeping its progress in `progress_dir`, in a file named by
/// the dates or, for a job, by `job` (so a window that moves on a day fetches only the new
/// day): what `tickflow backfill` and the `initialize` and `daily_update` jobs run. `config`
/// names the config in errors.
///
/// # Errors
/// No such source, no history of `what` there, or no symbols.
pub(crate) fn job(
    plan: &config::Plan,
    config: &str,
    source: Option<&str>,
    what: What,
    symbols: &[String],
    (from, to): (Date, Date),
    (progress_dir, job): (&std::path::Path, Option<&str>),
) -> anyhow::Result<(String, Backfill)> {
    let with_history: Vec<&SourcePlan> = plan
        .sources
        .iter()
        .filter(|s| s.config.history(&s.id).is_some())
        .collect();
    let source = match source {
        Some(id) => plan
            .sources
            .iter()
            .find(|s| s.id == id)
            .with_context(|| format!("{config}: no source with id {id:?}"))?,
        None => match with_history[..] {
            [one] => one,
            [] => anyhow::bail!(
                "{config}: no source has a vendor history to backfill from (alpaca, polygon, coinbase and binance do)"
            ),
            _ => anyhow::bail!(
                "{config}: several sources have a history; choose one with --source ({})",
                with_history
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let id = source.id.clone();
    let (history, configured) = source
        .config
        .history(&id)
        .with_context(|| {
            format!(
                "source {id:?} ({}) has no vendor history to backfill from",
                source.config.type_name()
            )
        })?
        .map_err(|e| anyhow::anyhow!("source {id:?}: {e}"))?;
    if !history.serves(what) {
        anyhow::bail!(
            "source {id:?} ({}) has no {} history",
            source.config.type_name(),
            what.as_str()
        );
    }
    let symbols = if symbols.is_empty() {
        configured
    } else {
        symbols.to_vec()
    };
    if symbols.is_empty() {
        anyhow::bail!("no symbols: give --symbols or list them in the source's config");
    }
    let progress_file = progress_dir.join(match job {
        Some(job) => format!("job-{job}-{id}-{}.json", what.as_str()),
        None => format!("{id}-{}-{from}-{to}.json", what.as_str()),
    });
    Ok((
        id,
        Backfill {
            history,
            symbols,
            what,
            from,
            to,
            progress_file: Some(progress_file),
            progress: Arc::new(Progress::default()),
        },
    ))
}

/// Sends the backfill to a running pipeline's HTTP ingest (the open endpoint), a page at a
/// time; a chunk's progress is saved once the pipeline has acknowledged its pages.
fn to_running(
    job: &Backfill,
    base: &str,
    token: Option<&str>,
    id: &str,
    symbols: &[String],
) -> anyhow::Result<ExitCode> {
    let url = super::produce::ingest_url(base, None);
    let rt = super::runtime()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    let mut sent = 0u64;
    let result = rt.block_on(job.run_into(
        || false,
        |events| {
            let mut body = Vec::new();
            for e in events {
                body.extend_from_slice(tickflow_core::ingest::to_json(e).as_bytes());
                body.push(b'\n');
            }
            // Each page waits for its acknowledgement: the pipeline has it durably then.
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(super::produce::post(&client, &url, token, body, 5))
            })
            .map_err(|e| format!("{url}: {e}"))?;
            sent += events.len() as u64;
            bar.set_length(job.progress.chunks_total.load(Ordering::Relaxed));
            bar.set_position(job.progress.chunks_done.load(Ordering::Relaxed));
            bar.set_message(format!("{sent} rows"));
            Ok(())
        },
    ));
    bar.finish_and_clear();
    let summary = format!(
        "{id} {} of {} from {} to {} to {url}: {sent} rows acknowledged in {:.1} s",
        job.what.as_str(),
        symbols.join(","),
        job.from,
        job.to,
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        eprintln!(
            "backfill stopped: {e}\n{summary}\nrun the same command again to resume after the last chunk sent"
        );
        return Ok(ExitCode::from(1));
    }
    println!("backfilled {summary}");
    Ok(ExitCode::SUCCESS)
}
