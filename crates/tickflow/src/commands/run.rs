//! `demo` and `run`: start the pipeline and the HTTP server, show a status line, stop cleanly
//! on Ctrl-C, SIGTERM or `--duration`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tickflow_pipeline::{Pipeline, Plan, config};

use crate::cli::{DemoArgs, RunArgs};

/// Where a running pipeline writes its address, so `tickflow sql` can find it.
pub(crate) fn server_file(data_dir: &Path) -> PathBuf {
    data_dir.join("server.json")
}

pub(crate) fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut plan = match config::parse(config::DEMO_TOML, Path::new("<embedded demo.toml>")) {
        Ok(p) => p,
        Err(e) => anyhow::bail!("the embedded demo config is invalid:\n{e}"),
    };
    plan.data_dir = args.data_dir;
    plan.http.bind = args
        .bind
        .parse()
        .with_context(|| format!("--bind {:?} is not an IP address", args.bind))?;
    plan.http.port = args.port;
    plan.pgwire = (!args.no_pgwire).then(|| SocketAddr::new(plan.http.bind, args.pg_port));
    if let Some(sim) = plan.simulator_mut() {
        if let Some(rate) = args.rate {
            sim.rate = rate;
        }
        if let Some(days) = args.history_days {
            sim.history_days = days;
        }
    }
    serve(plan, None, args.duration, args.summary.as_deref())
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    match config::load(&args.config) {
        Ok(plan) => serve(
            plan,
            Some(&args.config),
            args.duration,
            args.summary.as_deref(),
        ),
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(super::EXIT_USAGE))
        }
    }
}

fn serve(
    plan: Plan,
    config_path: Option<&Path>,
    duration: Option<u64>,
    summary: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let data_dir = plan.data_dir.clone();
    let tls = match plan.tls.as_ref().map(tickflow_api::tls::load).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            let file = config_path.map_or_else(|| "the config".into(), |p| p.display().to_string());
            eprintln!("{file}: {e}");
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
    };
    let wanted = plan.http.max_connections + plan.pgwire_max_connections + FILES_OF_OUR_OWN;
    let limit = raise_open_files();
    if limit.is_some_and(|l| l < wanted as u64) {
        tracing::warn!(
            limit,
            wanted,
            "the open-file limit is below [http] max_connections + [pgwire] max_connections and the files tickflow keeps open; raise it (ulimit -n) or lower them"
        );
    }
    let bind = SocketAddr::new(plan.http.bind, plan.http.port);
    let rt = super::runtime()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(bind))
        .with_context(|| format!("cannot listen on {bind}"))?;
    let addr = listener.local_addr()?;
    let pg_listener = match plan.pgwire {
        Some(pg) => Some(
            rt.block_on(tokio::net::TcpListener::bind(pg))
                .with_context(|| format!("cannot listen on {pg} for the Postgres-wire endpoint ([pgwire] in the config; enabled = false turns it off)"))?,
        ),
        None => None,
    };
    let pg_addr = pg_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let started = Instant::now();
    let pipeline = Arc::new(Pipeline::start(plan).context("starting the pipeline")?);
    if let Some(path) = config_path {
        pipeline.set_config_path(path.to_path_buf());
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");
    let server_json = serde_json::json!({
        "url": url,
        "pid": std::process::id(),
        "pgwire": pg_addr.map(|a| a.to_string()),
    });
    // Written aside and renamed: `tickflow status`, `sql` and scripts read it while a new
    // process starts, and must never see it half written.
    let aside = data_dir.join("server.json.tmp");
    std::fs::write(&aside, format!("{server_json}\n"))
        .and_then(|()| std::fs::rename(&aside, server_file(&data_dir)))
        .context("writing server.json")?;
    println!(
        "tickflow is running: dashboard {url}/  (data in {}; Ctrl-C stops)",
        data_dir.display()
    );
    if let Some(pg) = pg_addr {
        println!(
            "SQL over the Postgres wire protocol: psql -h {} -p {} (read-only)",
            pg.ip(),
            pg.port()
        );
    }
    let _ = std::io::stdout().flush();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // One count of failed credentials per address, over HTTP and the Postgres wire.
    let limiter: tickflow_api::SharedLimiter = Arc::default();
    let server = {
        let pipeline = Arc::clone(&pipeline);
        let limiter = Arc::clone(&limiter);
        let tls = tls.clone();
        let mut rx = stop_rx.clone();
        rt.spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            tickflow_api::serve(pipeline, listener, limiter, tls, shutdown).await
        })
    };
    if let Some(pg_listener) = pg_listener {
        let pipeline = Arc::clone(&pipeline);
        let rx = stop_rx.clone();
        rt.spawn(async move {
            if let Err(e) =
                tickflow_api::serve_pgwire(pipeline, pg_listener, limiter, tls, rx).await
            {
                tracing::error!(error = %e, "the Postgres-wire endpoint stopped");
            }
        });
    }
    let jobs_stop = tickflow_core::Shutdown::new();
    let jobs_task = (!pipeline.plan().jobs.is_empty()).then(|| {
        let runner = Arc::new(super::jobs::Runner {
            pipeline: Arc::clone(&pipeline),
            data_dir: data_dir.clone(),
        });
        let jobs = pipeline.jobs().clone();
        let stop = jobs_stop.clone();
        rt.spawn(async move { jobs.run(runner, stop, tickflow_model::UnixNanos::now).await })
    });
    let reason = rt.block_on(wait_for_stop(&pipeline, duration));
    // A job running now finishes and is recorded before the process goes: a report sent
    // but not recorded would be sent again at the next start.
    jobs_stop.trigger();
    if let Some(task) = jobs_task
        && rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(120), task).await })
            .is_err()
    {
        tracing::warn!(
            "a scheduled job did not finish within 120 s of the stop; it may run again at the next start"
        );
    }
    if !super::json_logs() {
        eprintln!();
    }
    tracing::info!(reason, "stopping");
    let _ = stop_tx.send(true);
    match rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await }) {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server error"),
        Err(_) => tracing::warn!("http server did not stop within 10 s"),
        _ => {}
    }
    drop(rt);
    // Processes sharing a partitioned log share the data directory: the file is removed
    // only while it still names this one.
    let ours = std::fs::read_to_string(server_file(&data_dir))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|v| v["pid"].as_u64() == Some(u64::from(std::process::id())));
    if ours {
        let _ = std::fs::remove_file(server_file(&data_dir));
    }
    let metrics = Arc::clone(pipeline.metrics());
    let pipeline = Arc::try_unwrap(pipeline)
        .map_err(|_| anyhow::anyhow!("pipeline still in use after the server stopped"))?;
    pipeline.shutdown().context("stopping the pipeline")?;
    let secs = started.elapsed().as_secs_f64();
    let processed = metrics.processed.load(std::sync::atomic::Ordering::Relaxed);
    let rows: std::collections::BTreeMap<String, u64> =
        metrics.rows_produced.snapshot().into_iter().collect();
    if let Some(path) = summary {
        let json = serde_json::json!({
            "processed": processed,
            "ingested": metrics.ingested.total(),
            "seconds": secs,
            "ticks_per_second": processed as f64 / secs.max(1e-9),
            "latency_p50_seconds": metrics.latency.quantile(0.5),
            "latency_p99_seconds": metrics.latency.quantile(0.99),
            "latency_seconds": {
                "log": quantiles(&metrics.log_latency),
                "queryable": quantiles(&metrics.queryable_latency),
                "lake": quantiles(&metrics.latency),
                "alert": quantiles(&metrics.alert_latency),
            },
            "cpu_seconds": cpu_seconds(),
            "peak_rss_bytes": peak_rss_bytes(),
            "rejected": metrics.rejected_total(),
            "alerts": metrics.alerts.total(),
            "rows": rows,
        });
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "stopped ({reason}) after {secs:.1} s: {processed} events processed, rows {rows:?}, {} rejected to the DLQ, {} duplicates dropped, {} alerts",
        metrics.rejected_total(),
        metrics
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        metrics.alerts.total()
    );
    Ok(ExitCode::SUCCESS)
}

/// Shows the status line until Ctrl-C, SIGTERM, the duration, or a pipeline failure.
async fn wait_for_stop(pipeline: &Pipeline, duration: Option<u64>) -> &'static str {
    let deadline = duration.map(|s| Instant::now() + Duration::from_secs(s));
    let tty = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut last_processed = 0u64;
    let mut last_at = Instant::now();
    let mut lines = 0u64;
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    // One future for the whole wait, so a Ctrl-C between two status ticks is not missed.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        #[cfg(unix)]
        let sigterm = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        let sighup = async {
            match hangup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let sigterm = std::future::pending::<()>();
        #[cfg(not(unix))]
        let sighup = std::future::pending::<()>();
        tokio::select! {
            _ = &mut ctrl_c => return "interrupted",
            _ = sigterm => return "terminated",
            _ = sighup => {
                // SIGHUP reloads the alert rules, as POST /api/v1/reload does.
                match pipeline.reload() {
                    Ok(restart) if restart.is_empty() => tracing::info!("SIGHUP: alert rules reloaded"),
                    Ok(restart) => tracing::warn!(needs_restart = ?restart, "SIGHUP: alert rules reloaded; other changes need a restart"),
                    Err(e) => tracing::error!("SIGHUP: the config was not reloaded:\n{e}"),
                }
                continue;
            }
            _ = ticker.tick() => {}
        }
        let s = pipeline.status();
        if s.failure.is_some() {
            return "a pipeline thread failed";
        }
        let rate =
            (s.processed - last_processed) as f64 / last_at.elapsed().as_secs_f64().max(1e-3);
        last_processed = s.processed;
        last_at = Instant::now();
        let get = |k: &str| s.rows.get(k).copied().unwrap_or(0);
        let line = format!(
            "{:>9.0} ticks/s | lag {:>7} | trades {:>9} | bars {:>8} | daily {:>5} | alerts {:>5} | rejects {:>5} | p99 to lake {}",
            rate,
            s.log_lag,
            get("trades"),
            get("bars"),
            get("daily_metrics"),
            s.alerts,
            s.rejected,
            s.latency_p99_seconds
                .map_or("-".to_string(), |p| format!("{:.0} ms", p * 1000.0)),
        );
        if super::json_logs() {
            if lines.is_multiple_of(5) {
                tracing::info!(
                    ticks_per_second = rate.round(),
                    log_lag = s.log_lag,
                    trades = get("trades"),
                    bars = get("bars"),
                    alerts = s.alerts,
                    rejected = s.rejected,
                    p99_to_lake_seconds = s.latency_p99_seconds,
                    "status"
                );
            }
        } else if tty {
            eprint!("\r{line}");
        } else if lines.is_multiple_of(5) {
            eprintln!("{line}");
        }
        lines += 1;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return "duration reached";
        }
    }
}

/// Descriptors tickflow itself keeps open beside connections: log segments, lake files,
/// sinks' files and sockets, with room to spare.
const FILES_OF_OUR_OWN: usize = 512;

/// Raises the soft limit on open files to the hard one, as servers do: each connection is a
/// descriptor, and a soft limit of 1024 (common outside systemd) would run out before
/// `max_connections`. The limit now in force, if it can be read.
fn raise_open_files() -> Option<u64> {
    // SAFETY: `rlimit` is plain integers, and both calls get a pointer to a live local.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        Some(limit.rlim_cur)
    }
}

/// p50, p99 and p99.9 of a latency histogram, in seconds, and how many values it holds.
fn quantiles(h: &tickflow_core::metrics::Histogram) -> serde_json::Value {
    serde_json::json!({
        "count": h.counts().iter().sum::<u64>(),
        "p50": h.quantile(0.5),
        "p99": h.quantile(0.99),
        "p999": h.quantile(0.999),
    })
}

/// User plus system CPU time of this process so far (Linux `/proc/self/stat`, whose clock
/// ticks are USER_HZ = 100 per second), if known.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Peak resident memory of this process (Linux `VmHWM`), if known.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
