//! `tickflow produce`: the seed test-event producer. Sends `count` trades in NDJSON batches to
//! `POST /api/v1/ingest`, paced to `rate`, padded to `target_kb` per event.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use tickflow_sources::pacing::Pacer;
use tickflow_sources::rng::Rng;

use crate::cli::ProduceArgs;

pub(crate) fn produce(args: &ProduceArgs) -> anyhow::Result<ExitCode> {
    if args.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    if !(0.0..=1024.0).contains(&args.target_kb) {
        anyhow::bail!("--target-kb must be between 0 and 1024");
    }
    let symbols: Vec<&str> = args
        .symbols
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if symbols.is_empty() {
        anyhow::bail!("--symbols lists no symbol");
    }
    let url = format!("{}/api/v1/ingest", args.to.trim_end_matches('/'));
    let mut ack_log = match &args.ack_log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => None,
    };
    let rt = super::runtime()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut rng = Rng::new(args.seed);
    let mut prices: Vec<f64> = symbols.iter().map(|_| 100.0).collect();
    let pad_bytes = (args.target_kb * 1024.0) as usize;
    let mut pacer = Pacer::new(args.rate);
    let started = Instant::now();
    let (mut acked, mut failed, mut requests) = (0u64, 0u64, 0u64);
    let mut last_error = None;
    let mut seq = args.start_seq;
    let end = args.start_seq + args.count;
    while seq < end {
        let n = args.batch_size.min(end - seq);
        std::thread::sleep(pacer.delay_for(n));
        let first = seq;
        let mut body = String::with_capacity(n as usize * (120 + pad_bytes));
        for _ in 0..n {
            let i = (seq % symbols.len() as u64) as usize;
            prices[i] = (prices[i] * (1.0 + rng.normal() * 0.0005)).max(0.01);
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let _ = write!(
                body,
                r#"{{"type":"trade","symbol":"{}","ts_event":{ts},"price":"{:.2}","size":"{}","trade_id":"{seq}","seq":{seq}"#,
                symbols[i],
                prices[i],
                1 + rng.below(500)
            );
            if pad_bytes > 0 {
                // The event without padding is about 150 bytes; the pad brings it to the target.
                let _ = write!(
                    body,
                    r#","attrs":{{"pad":"{}"}}"#,
                    "x".repeat(pad_bytes.saturating_sub(150).max(1))
                );
            }
            body.push_str("}\n");
            seq += 1;
        }
        requests += 1;
        let mut tries = 0;
        loop {
            let sent = rt.block_on(async {
                client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
                    .send()
                    .await
            });
            let outcome = match sent {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => {
                    let status = r.status();
                    let text = rt.block_on(r.text()).unwrap_or_default();
                    Err((
                        status.is_server_error(),
                        format!("{status}: {}", text.trim()),
                    ))
                }
                Err(e) => Err((true, e.to_string())),
            };
            match outcome {
                Ok(()) => {
                    acked += n;
                    if let Some(f) = ack_log.as_mut() {
                        writeln!(f, "{first} {}", first + n - 1)?;
                        f.flush()?;
                    }
                    break;
                }
                Err((retryable, message)) if retryable && tries < args.retries => {
                    tries += 1;
                    last_error = Some(message);
                    std::thread::sleep(Duration::from_millis(200 * u64::from(tries)));
                }
                Err((_, message)) => {
                    failed += n;
                    last_error = Some(message);
                    break;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent {} events in {requests} requests to {url}: {acked} acknowledged, {failed} failed, {:.0} events/s",
        args.count,
        acked as f64 / secs.max(1e-9)
    );
    if let Some(e) = last_error {
        eprintln!("last error: {e}");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
