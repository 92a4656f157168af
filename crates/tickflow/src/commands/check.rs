use std::process::ExitCode;

use tickflow_pipeline::config;

use crate::cli::CheckArgs;

/// Validates a config file; prints every problem, or a summary of the plan.
pub(crate) fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    match config::load(&args.config) {
        Ok(plan) => {
            let mut plan = plan;
            if let Some(Err(e)) = plan.tls.as_ref().map(tickflow_api::tls::load) {
                eprintln!("{}: {e}", args.config.display());
                return Ok(ExitCode::from(super::EXIT_USAGE));
            }
            let sim = plan.simulator_mut().map_or("none".to_string(), |s| {
                format!("{} symbols at {} events/s", s.config.symbols.len(), s.rate)
            });
            println!(
                "{}: ok (data_dir {}, http {}:{}, postgres wire {}, simulator {}, {} threshold, {} spike, {} SQL, {} stale-feed and {} gap rules, {} sink(s))",
                args.config.display(),
                plan.data_dir.display(),
                plan.http.bind,
                plan.http.port,
                plan.pgwire.map_or("off".to_string(), |a| a.to_string()),
                sim,
                plan.processing.thresholds.len(),
                plan.processing.spikes.len(),
                plan.processing.exprs.len(),
                plan.stale_feeds.len(),
                plan.gap_rules.len(),
                plan.sinks.len()
            );
            // Each SQL rule as checked, with the table it watches.
            for rule in &plan.processing.exprs {
                println!(
                    "  rule {} on each {}: {}",
                    rule.name,
                    rule.when.watch(),
                    rule.when.text()
                );
            }
            // Who may connect, never the secrets themselves.
            let ingest: Vec<String> = plan
                .sources
                .iter()
                .filter_map(|s| match &s.config {
                    config::SourceConfig::Http(h) => Some(format!(
                        "{} {}",
                        s.id,
                        if h.token.is_some() { "token" } else { "open" }
                    )),
                    _ => None,
                })
                .collect();
            println!(
                "  access: queries and admin {}; ingest {}; postgres wire {}",
                if plan.http.token.is_some() {
                    "token required"
                } else {
                    "open (loopback)"
                },
                ingest.join(", "),
                if plan.pgwire_password.is_some() {
                    "password required"
                } else {
                    "open"
                }
            );
            if let Some(tls) = &plan.tls {
                println!(
                    "  tls: HTTPS and the Postgres wire (TLS required) with {}",
                    tls.cert_file.display()
                );
            }
            match plan.log.partitions {
                1 => println!("  log {}", plan.log.kind.describe(&plan.data_dir)),
                n => println!(
                    "  log {}, in {n} partitions by symbol, shared by the processes that run this config",
                    plan.log.kind.describe(&plan.data_dir)
                ),
            }
            match &plan.lake.object {
                Some(o) => println!(
                    "  lake {}{}{}",
                    o.url,
                    o.endpoint
                        .as_ref()
                        .map_or(String::new(), |e| format!(" via {e}")),
                    plan.lake
                        .retention_days
                        .map_or(String::new(), |d| format!(", ticks kept {d} days")),
                ),
                None => println!(
                    "  lake {}{}",
                    plan.data_dir.join("lake").display(),
                    plan.lake
                        .retention_days
                        .map_or(String::new(), |d| format!(", ticks kept {d} days")),
                ),
            }
            for source in &plan.sources {
                println!("  source {}: {}", source.id, source.config.describe());
            }
            for sink in &plan.sinks {
                println!("  sink {}: {}", sink.id, sink.config.describe());
            }
            for n in &plan.notifiers {
                let mut rules: Vec<&str> = n.rules.iter().map(String::as_str).collect();
                rules.sort_unstable();
                println!(
                    "  notifier {}: {}, up to {} attempts, rules: {}",
                    n.id,
                    n.config.describe(),
                    n.max_attempts,
                    if rules.is_empty() {
                        "none".to_string()
                    } else {
                        rules.join(", ")
                    }
                );
            }
            let now = tickflow_model::UnixNanos::now();
            for job in &plan.jobs {
                println!(
                    "  job {}: {} at \"{}\" ({}{}){}, next {}",
                    job.name,
                    job.kind.name(),
                    job.cron,
                    job.timezone,
                    if job.trading_days {
                        ", NYSE trading days"
                    } else {
                        ""
                    },
                    job.after
                        .as_ref()
                        .map_or(String::new(), |a| format!(" after {a}")),
                    job.schedule
                        .next_after(now)
                        .map_or("never".to_string(), |t| t.to_string())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{} problem(s) found", e.problems.len());
            Ok(ExitCode::from(super::EXIT_USAGE))
        }
    }
}
