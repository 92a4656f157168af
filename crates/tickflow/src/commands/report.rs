//! `tickflow report weekly`: the weekly market report from the `bars` table, written to
//! `<data-dir>/reports/<week>/` and, with `--send`, mailed with its charts attached.
//! `tickflow report daily`: one day's data quality, written to `<data-dir>/reports/<date>/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tickflow_model::{Date, Price, Symbol};
use tickflow_notify::email::{Attached, EmailNotifier, Message};
use tickflow_notify::quality::{DailyQuality, SinkLag, SymbolDay};
use tickflow_notify::report::{DailyBar, IsoWeek, WeeklyReport};
use tickflow_pipeline::config::NotifierConfig;

use crate::cli::{DailyArgs, ReportTarget, WeeklyArgs};

/// Calendar days of bars read before the week: enough for 30 trading days and the holidays
/// among them.
const LOOKBACK_DAYS: i32 = 56;

/// The data directory and, with `--send`, the mailer a report command's flags name; a
/// usage error is printed and comes back as the exit code.
fn target(t: &ReportTarget) -> Result<(PathBuf, Option<EmailNotifier>), ExitCode> {
    let usage = || ExitCode::from(super::EXIT_USAGE);
    let plan = match &t.config {
        Some(path) => match tickflow_pipeline::config::load(path) {
            Ok(plan) => Some(plan),
            Err(e) => {
                eprintln!("{e}");
                return Err(usage());
            }
        },
        None => None,
    };
    let data_dir: PathBuf = t
        .data_dir
        .clone()
        .or_else(|| plan.as_ref().map(|p| p.data_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("./tickflow-data"));
    let mailer = match t.send {
        true => match mailer(plan.as_ref(), t.notifier.as_deref()) {
            Ok(m) => Some(m),
            Err(message) => {
                eprintln!("error: --send: {message}");
                return Err(usage());
            }
        },
        false => None,
    };
    Ok((data_dir, mailer))
}

pub(crate) fn weekly(args: &WeeklyArgs) -> anyhow::Result<ExitCode> {
    let (data_dir, mailer) = match target(&args.target) {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let week = match &args.week {
        Some(text) => match text.parse::<IsoWeek>() {
            Ok(w) => w,
            Err(e) => {
                eprintln!("error: --week: {e}");
                return Ok(ExitCode::from(super::EXIT_USAGE));
            }
        },
        None => IsoWeek::last_traded(tickflow_model::UnixNanos::now().date()),
    };
    let done = weekly_report(&data_dir, week, mailer.as_ref())?;
    println!("{done}");
    Ok(ExitCode::SUCCESS)
}

/// Builds the report of `week` from `data_dir`'s bars, writes it beside the data and, with a
/// mailer, sends it: what `tickflow report weekly` and the `weekly_report` job do. Blocks;
/// not to be called on a runtime's thread.
///
/// # Errors
/// The bars cannot be read, the files written, or the mail sent.
pub(crate) fn weekly_report(
    data_dir: &Path,
    week: IsoWeek,
    mailer: Option<&EmailNotifier>,
) -> anyhow::Result<String> {
    let rt = super::runtime()?;
    let bars = daily_bars(&rt, data_dir, week)?;
    let report = WeeklyReport::build(week, &bars).map_err(anyhow::Error::msg)?;
    let dir = write(data_dir, &report)?;
    let mut done = format!(
        "{}\n{} symbol(s); written to {}",
        report.subject(),
        report.symbols.len(),
        dir.join("report.html").display()
    );
    if let Some(mailer) = mailer {
        let message = mail(mailer, &report).map_err(anyhow::Error::msg)?;
        rt.block_on(mailer.send(message))
            .map_err(|e| anyhow::anyhow!("sending the report: {e}"))?;
        done.push_str(&format!("\nsent to {}", mailer.recipients()));
    }
    Ok(done)
}

/// The config's e-mail notifier: the one named, or the only one.
pub(crate) fn mailer(
    plan: Option<&tickflow_pipeline::config::Plan>,
    id: Option<&str>,
) -> Result<EmailNotifier, String> {
    let plan = plan.ok_or("needs --config FILE with an e-mail notifier")?;
    let emails: Vec<_> = plan
        .notifiers
        .iter()
        .filter_map(|n| match &n.config {
            NotifierConfig::Email(c) => Some((n.id.as_str(), c)),
            _ => None,
        })
        .collect();
    let config = match (id, emails.as_slice()) {
        (Some(id), _) => emails
            .iter()
            .find(|(n, _)| *n == id)
            .map(|(_, c)| *c)
            .ok_or_else(|| format!("the config has no e-mail notifier {id:?}"))?,
        (None, [(_, c)]) => *c,
        (None, []) => return Err("the config has no [[notifiers]] of type \"email\"".into()),
        (None, _) => {
            let ids: Vec<&str> = emails.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "the config has several e-mail notifiers ({}); name one with --notifier",
                ids.join(", ")
            ));
        }
    };
    EmailNotifier::new(config.clone()).map_err(|e| e.to_string())
}

/// Daily bars from the week's Monday back [`LOOKBACK_DAYS`], through its Sunday.
fn daily_bars(
    rt: &tokio::runtime::Runtime,
    data_dir: &Path,
    week: IsoWeek,
) -> anyhow::Result<Vec<DailyBar>> {
    let from = Date(week.monday().0 - LOOKBACK_DAYS);
    let to = Date(week.sunday().0 + 1);
    // Decimals and dates as text, so nothing passes through a float.
    let query = format!(
        "SELECT symbol, CAST(CAST(start AS DATE) AS VARCHAR) AS date, \
         CAST(open AS VARCHAR) AS open, CAST(high AS VARCHAR) AS high, \
         CAST(low AS VARCHAR) AS low, CAST(close AS VARCHAR) AS close \
         FROM bars WHERE \"interval\" = '1d' AND \"final\" AND start >= '{from}' AND start < '{to}' \
         ORDER BY symbol, start"
    );
    let rows = super::sql::query_rows(rt, data_dir, &query)
        .with_context(|| format!("reading daily bars from {}", data_dir.display()))?;
    rows.iter()
        .map(|row| {
            let text = |k: &str| {
                row[k]
                    .as_str()
                    .with_context(|| format!("bars row without {k}: {row}"))
            };
            let price =
                |k: &str| -> anyhow::Result<Price> { Ok(Price::parse(text(k)?)?.normalized()) };
            Ok(DailyBar {
                symbol: Symbol::parse(text("symbol")?)?,
                date: Date::parse(text("date")?)?,
                open: price("open")?,
                high: price("high")?,
                low: price("low")?,
                close: price("close")?,
            })
        })
        .collect()
}

/// Writes `report.html` and the charts to `<data-dir>/reports/<week>/`.
fn write(data_dir: &Path, report: &WeeklyReport) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join("reports").join(report.week.to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for chart in &report.charts {
        let path = dir.join(&chart.file_name);
        std::fs::write(&path, &chart.png).with_context(|| format!("writing {}", path.display()))?;
    }
    let path = dir.join("report.html");
    std::fs::write(&path, report.html(|c| c.file_name.clone()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(dir)
}

/// The report as a mail: the HTML with the charts shown inline (`cid:`), each also attached.
fn mail(mailer: &EmailNotifier, report: &WeeklyReport) -> Result<Message, String> {
    let text = report
        .symbols
        .iter()
        .map(|s| {
            format!(
                "{:<10} return {:>8}%  range {:>8}%",
                s.symbol.as_str(),
                s.return_pct.rounded(2),
                s.range_pct.rounded(2)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let attachments: Vec<Attached> = report
        .charts
        .iter()
        .map(|c| Attached {
            name: c.file_name.clone(),
            content_type: "image/png",
            bytes: c.png.clone(),
        })
        .collect();
    mailer.html_message(
        &report.subject(),
        &format!("{}\n\n{text}\n", report.subject()),
        &report.html(|c| format!("cid:{}", c.file_name)),
        &attachments,
    )
}

pub(crate) fn daily(args: &DailyArgs) -> anyhow::Result<ExitCode> {
    let (data_dir, mailer) = match target(&args.target) {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let date = match &args.date {
        Some(text) => match Date::parse(text) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: --date: {e}");
                return Ok(ExitCode::from(super::EXIT_USAGE));
            }
        },
        None => {
            tickflow_sources::calendar::trading_day_before(tickflow_model::UnixNanos::now().date())
        }
    };
    let done = daily_report(&data_dir, date, mailer.as_ref())?;
    println!("{done}");
    Ok(ExitCode::SUCCESS)
}

/// Builds the data-quality report of `date` from `data_dir`, writes it beside the data and,
/// with a mailer, sends it: what `tickflow report daily` and the `daily_report` job do.
/// Blocks; not to be called on a runtime's thread.
///
/// # Errors
/// The tables cannot be read, the files written, or the mail sent.
pub(crate) fn daily_report(
    data_dir: &Path,
    date: Date,
    mailer: Option<&EmailNotifier>,
) -> anyhow::Result<String> {
    let rt = super::runtime()?;
    let report = quality(&rt, data_dir, date)?;
    let dir = data_dir.join("reports").join(date.to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = report.text();
    for (name, body) in [("daily.html", report.html()), ("daily.txt", text.clone())] {
        let path = dir.join(name);
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut done = format!("{text}\nwritten to {}", dir.join("daily.html").display());
    if let Some(mailer) = mailer {
        let message = mailer
            .html_message(&report.subject(), &text, &report.html(), &[])
            .map_err(anyhow::Error::msg)?;
        rt.block_on(mailer.send(message))
            .map_err(|e| anyhow::anyhow!("sending the report: {e}"))?;
        done.push_str(&format!("\nsent to {}", mailer.recipients()));
    }
    Ok(done)
}

/// The day's figures, over SQL (from the running pipeline when there is one) and, for the
/// sinks' lag, its status.
fn quality(
    rt: &tokio::runtime::Runtime,
    data_dir: &Path,
    date: Date,
) -> anyhow::Result<DailyQuality> {
    let (from, to) = (date, Date(date.0 + 1));
    let day = |column: &str| format!("{column} >= '{from}' AND {column} < '{to}'");
    let query = |q: &str| {
        super::sql::query_rows(rt, data_dir, q)
            .with_context(|| format!("reading {}: {q}", data_dir.display()))
    };
    let int = |row: &serde_json::Value, k: &str| -> u64 {
        row[k]
            .as_u64()
            .or_else(|| row[k].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0)
    };
    let text = |row: &serde_json::Value, k: &str| row[k].as_str().unwrap_or_default().to_string();
    let trades = query(&format!(
        "SELECT symbol, count(*) AS n FROM trades WHERE {} GROUP BY symbol",
        day("ts_event")
    ))?;
    // The step between a bar and the one before it, in minutes; a hole is a step over one.
    let bars = query(&format!(
        "SELECT symbol, count(*) AS bars, \
           sum(CASE WHEN step > 1 THEN 1 ELSE 0 END) AS gaps, \
           sum(CASE WHEN step > 1 THEN step - 1 ELSE 0 END) AS missing, \
           max(CASE WHEN step > 1 THEN step - 1 ELSE 0 END) AS longest \
         FROM (SELECT symbol, CAST((to_unixtime(start) - to_unixtime(lag(start) OVER (PARTITION BY symbol ORDER BY start))) / 60 AS BIGINT) AS step \
               FROM bars WHERE \"interval\" = '1m' AND \"final\" AND {}) \
         GROUP BY symbol",
        day("start")
    ))?;
    let mut symbols: std::collections::BTreeMap<String, SymbolDay> = Default::default();
    fn entry(
        symbols: &mut std::collections::BTreeMap<String, SymbolDay>,
        name: String,
    ) -> anyhow::Result<&mut SymbolDay> {
        let symbol = Symbol::parse(&name)?;
        Ok(symbols.entry(name).or_insert_with(|| SymbolDay {
            symbol,
            trades: 0,
            bars: 0,
            gaps: 0,
            missing_minutes: 0,
            longest_gap_minutes: 0,
        }))
    }
    for row in &trades {
        entry(&mut symbols, text(row, "symbol"))?.trades = int(row, "n");
    }
    for row in &bars {
        let s = entry(&mut symbols, text(row, "symbol"))?;
        s.bars = int(row, "bars");
        s.gaps = int(row, "gaps");
        s.missing_minutes = int(row, "missing");
        s.longest_gap_minutes = int(row, "longest");
    }
    let rejects = query(&format!(
        "SELECT reason, count(*) AS n FROM dlq WHERE {} GROUP BY reason ORDER BY n DESC, reason",
        day("ts")
    ))?
    .iter()
    .map(|r| (text(r, "reason"), int(r, "n")))
    .collect();
    let alerts = query(&format!(
        "SELECT rule, coalesce(kind, 'fired') AS kind, count(*) AS n FROM alerts WHERE {} \
         GROUP BY rule, coalesce(kind, 'fired') ORDER BY rule, kind",
        day("ts")
    ))?
    .iter()
    .map(|r| (text(r, "rule"), text(r, "kind"), int(r, "n")))
    .collect();
    Ok(DailyQuality {
        date,
        symbols: symbols.into_values().collect(),
        rejects,
        alerts,
        sinks: sink_lag(rt, data_dir),
    })
}

/// Each sink's lag, from the pipeline running on `data_dir`; `None` when none answers.
fn sink_lag(rt: &tokio::runtime::Runtime, data_dir: &Path) -> Option<Vec<SinkLag>> {
    let url = super::sql::running_server(data_dir)?;
    let status: serde_json::Value = rt.block_on(async {
        let resp = super::api_client(std::time::Duration::from_secs(30))
            .ok()?
            .get(format!("{url}/api/v1/status"))
            .send()
            .await
            .ok()?;
        serde_json::from_str(&resp.text().await.ok()?).ok()
    })?;
    let sinks = status["sinks"].as_array()?;
    Some(
        sinks
            .iter()
            .map(|s| SinkLag {
                id: s["id"].as_str().unwrap_or_default().to_string(),
                kind: s["type"].as_str().unwrap_or_default().to_string(),
                lag_flushes: s["lag_flushes"].as_u64().unwrap_or(0),
                error: s["last_error"].as_str().map(str::to_string),
            })
            .collect(),
    )
}
