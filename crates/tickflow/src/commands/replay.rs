//! `tickflow replay PATH`: trades and quotes from files back through a pipeline, either an
//! embedded one on `--data-dir` that stops when the replay is done, or a running one over HTTP
//! (`--to`). The reading rules are the replay source's (`tickflow_sources::replay`).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use tickflow_pipeline::Pipeline;
use tickflow_pipeline::config::{self, ReplayPlan, SourceConfig, SourcePlan};
use tickflow_sources::replay::{self, Item};

use crate::cli::ReplayArgs;

pub(crate) fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    if args.speed.is_some_and(|x| !(x.is_finite() && x > 0.0)) {
        anyhow::bail!("--speed must be a positive factor of the recorded pace");
    }
    if args.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    match (&args.data_dir, &args.to) {
        (Some(dir), _) => into_data_dir(args, dir),
        (None, Some(url)) => to_url(args, url),
        (None, None) => anyhow::bail!("give --data-dir DIR or --to URL"),
    }
}

/// An embedded pipeline with the replay as its only source, stopped once the replay has
/// ended and everything it appended is processed and in the lake.
fn into_data_dir(args: &ReplayArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let mut plan = match config::parse("", Path::new("<replay>")) {
        Ok(plan) => plan,
        Err(e) => anyhow::bail!("the default config is invalid:\n{e}"),
    };
    plan.data_dir = dir.to_path_buf();
    // Check the path before starting anything, so a typo is a plain error.
    replay::plan(&args.path)?;
    if plan.sources.iter().any(|s| s.id == args.source) {
        anyhow::bail!(
            "--source {:?} is taken (HTTP ingest is `http`): choose another id",
            args.source
        );
    }
    plan.sources.push(SourcePlan {
        id: args.source.clone(),
        config: SourceConfig::Replay(ReplayPlan {
            path: args.path.clone(),
            speed: args.speed,
        }),
    });
    let started = Instant::now();
    let pipeline = Pipeline::start(plan).context("starting the pipeline")?;
    let metrics = std::sync::Arc::clone(pipeline.metrics());
    let bar = super::progress(0, "events processed");
    let source = loop {
        let status = pipeline.status();
        bar.set_position(status.processed);
        if status.failure.is_some() {
            break status;
        }
        // Done once the source has ended and processing has read everything it appended;
        // shutdown then flushes the rest to the lake.
        let replayed = status.sources.iter().find(|s| s.id == args.source);
        match replayed.map(|s| s.state) {
            Some("running") | None => {}
            Some(_) if status.log_lag == 0 => break status,
            Some(_) => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    bar.set_message("writing the lake");
    pipeline.shutdown().context("stopping the pipeline")?;
    bar.finish_and_clear();
    let replayed = source.sources.iter().find(|s| s.id == args.source);
    if let Some(s) = replayed.filter(|s| s.state == "failed") {
        anyhow::bail!(
            "replay of {} failed: {}",
            args.path.display(),
            s.error.as_deref().unwrap_or("unknown error")
        );
    }
    // The replay is the only source, so every malformed reject is one of its inputs.
    let rejected = metrics.rejected(tickflow_model::RejectReason::Malformed);
    println!(
        "replayed {} into {} in {:.1} s: {} events appended, {} unreadable (in the DLQ with source {:?})",
        args.path.display(),
        dir.display(),
        started.elapsed().as_secs_f64(),
        replayed.map_or(0, |s| s.events).saturating_sub(rejected),
        rejected,
        args.source
    );
    Ok(if rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Sends the events as NDJSON to a running pipeline's HTTP ingest, paced if asked; unreadable
/// input is listed on stderr.
fn to_url(args: &ReplayArgs, url: &str) -> anyhow::Result<ExitCode> {
    // `replay` (the default id) means the open endpoint; another id, that HTTP source's.
    let source = (args.source != "replay").then_some(args.source.as_str());
    let url = super::produce::ingest_url(url, source);
    let days = replay::plan(&args.path)?;
    let rt = super::runtime()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let started = Instant::now();
    let (mut sent, mut unreadable) = (0u64, 0u64);
    let mut pace = args.speed.map(replay::Pace::new);
    let bar = super::progress(0, "events sent");
    let mut body = Vec::new();
    let mut in_body = 0usize;
    let send = |body: &mut Vec<u8>, in_body: &mut usize| -> anyhow::Result<()> {
        if *in_body > 0 {
            let payload = std::mem::take(body);
            rt.block_on(super::produce::post(
                &client,
                &url,
                args.token.as_deref(),
                payload,
                3,
            ))
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
            *in_body = 0;
        }
        Ok(())
    };
    for files in days {
        for item in replay::read_day(&files, &args.source)? {
            match item {
                Item::Event(event) => {
                    if let Some(due) = pace
                        .as_mut()
                        .and_then(|p| p.due(replay::replay_time(&event)))
                    {
                        send(&mut body, &mut in_body)?;
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                    body.extend_from_slice(tickflow_core::ingest::to_json(&event).as_bytes());
                    body.push(b'\n');
                    in_body += 1;
                    sent += 1;
                    bar.inc(1);
                    if in_body >= args.batch_size {
                        send(&mut body, &mut in_body)?;
                    }
                }
                Item::Unreadable { place, error, .. } => {
                    bar.suspend(|| eprintln!("{place}: {error}"));
                    unreadable += 1;
                }
            }
        }
    }
    send(&mut body, &mut in_body)?;
    bar.finish_and_clear();
    println!(
        "replayed {} to {url} in {:.1} s: {sent} events acknowledged, {unreadable} unreadable",
        args.path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(if unreadable > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
