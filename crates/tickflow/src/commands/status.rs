//! `tickflow status`: one look at a running pipeline, asked at the address its data directory
//! records (`server.json`) or at `--url`: the log, processing, the lake, and every source,
//! sink, notifier and scheduled job, as `GET /api/v1/status` gives them.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::cli::StatusArgs;

pub(crate) fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let url = address(args.url.as_deref(), &args.data_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = super::api_client(std::time::Duration::from_secs(10))?;
    let body = rt.block_on(fetch(&client, &url))?;
    let status: Value = serde_json::from_str(&body)
        .with_context(|| format!("{url}/api/v1/status answered something other than JSON"))?;
    if args.json {
        println!("{body}");
    } else {
        print!("{}", render(&url, &status));
    }
    // A pipeline whose thread failed is stopping: worth a non-zero exit for scripts.
    Ok(if status["failure"].is_null() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The running pipeline's address: `url`, else the one `data_dir`'s `server.json` records.
pub(crate) fn address(url: Option<&str>, data_dir: &std::path::Path) -> anyhow::Result<String> {
    match url {
        Some(url) => Ok(url.trim_end_matches('/').to_string()),
        None => super::sql::running_server(data_dir).with_context(|| {
            format!(
                "no pipeline is running on {}: its server.json is missing or names a process \
                 that has stopped (start one with `tickflow run`, or pass --url)",
                data_dir.display()
            )
        }),
    }
}

/// `GET /api/v1/status` of the pipeline at `url`, as it came.
pub(crate) async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let answer = async {
        client
            .get(format!("{url}/api/v1/status"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    };
    answer
        .await
        .with_context(|| format!("asking {url}/api/v1/status"))
}

/// The status as text: a summary, then one table per kind of component.
fn render(url: &str, s: &Value) -> String {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tickflow at {url}, up {}",
        uptime(s["uptime_secs"].as_f64().unwrap_or(0.0))
    );
    if let Some(failure) = s["failure"].as_str() {
        let _ = writeln!(out, "FAILED: {failure}");
    }
    let _ = writeln!(
        out,
        "log        {} records, processed to {}, lag {}",
        count(n(&s["log_next_offset"])),
        count(n(&s["processed_offset"])),
        count(n(&s["log_lag"]))
    );
    let _ = writeln!(
        out,
        "processed  {} events; {} rejected, {} duplicates, {} alerts",
        count(n(&s["processed"])),
        count(n(&s["rejected"])),
        count(n(&s["duplicates"])),
        count(n(&s["alerts"]))
    );
    let ms = |v: &Value| {
        v.as_f64()
            .map_or("-".to_string(), |x| format!("{:.1} ms", x * 1e3))
    };
    let _ = writeln!(
        out,
        "lake       flush {} ({} this run), {} compactions; tick to lake p50 {}, p99 {}",
        n(&s["published_flush"]),
        count(n(&s["flushes"])),
        n(&s["compactions"]),
        ms(&s["latency_p50_seconds"]),
        ms(&s["latency_p99_seconds"])
    );
    if s["lake_retrying"].is_object() {
        let r = &s["lake_retrying"];
        let _ = writeln!(
            out,
            "RETRYING   lake writes failing for {} s, {} attempts: {}",
            n(&r["secs"]),
            n(&r["attempts"]),
            r["error"].as_str().unwrap_or("?")
        );
    }
    if s["log_retrying"].is_object() {
        let r = &s["log_retrying"];
        let _ = writeln!(
            out,
            "RETRYING   log appends failing for {} s, {} refused, senders retry: {}",
            n(&r["secs"]),
            n(&r["attempts"]),
            r["error"].as_str().unwrap_or("?")
        );
    }
    if let Some(damaged) = s["damaged_parts"].as_array().filter(|d| !d.is_empty()) {
        let _ = writeln!(
            out,
            "DAMAGED    {} lake parts fail their checksum (tickflow verify lists them all); first: {} ({})",
            damaged.len(),
            damaged[0]["path"].as_str().unwrap_or("?"),
            damaged[0]["reason"].as_str().unwrap_or("?")
        );
    }
    if let Some(rows) = s["rows_durable"].as_object().filter(|r| !r.is_empty()) {
        let shown: Vec<String> = rows
            .iter()
            .map(|(table, v)| format!("{table} {}", count(n(v))))
            .collect();
        let _ = writeln!(out, "stored     {}", shown.join(", "));
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let sources: Vec<Vec<String>> = rows(&s["sources"], |c| {
        vec![
            text(&c["id"]),
            text(&c["type"]),
            text(&c["state"]),
            count(n(&c["events"])),
            match &c["reconnecting"] {
                Value::Null => text(&c["error"]),
                r => format!(
                    "{} failures in {} s: {}",
                    n(&r["attempts"]),
                    n(&r["secs"]),
                    text(&r["error"])
                ),
            },
        ]
    });
    table(
        &mut out,
        "SOURCE",
        &["TYPE", "STATE", "EVENTS", "ERROR"],
        &sources,
    );
    for (title, key) in [("SINK", "sinks"), ("NOTIFIER", "notifiers")] {
        let followers = rows(&s[key], |c| {
            vec![
                text(&c["id"]),
                text(&c["type"]),
                text(&c["state"]),
                c["position"].as_u64().map_or("-".into(), |p| p.to_string()),
                n(&c["lag_flushes"]).to_string(),
                count(n(&c["rows_written"])),
                n(&c["errors"]).to_string(),
                text(&c["last_error"]),
            ]
        });
        table(
            &mut out,
            title,
            &[
                "TYPE",
                "STATE",
                "POSITION",
                "LAG",
                "ROWS",
                "ERRORS",
                "LAST ERROR",
            ],
            &followers,
        );
    }
    let jobs = rows(&s["jobs"], |j| {
        let last = &j["last"];
        vec![
            text(&j["name"]),
            text(&j["kind"]),
            format!("{} {}", text(&j["cron"]), text(&j["timezone"])),
            if j["running"].is_null() {
                time(&j["next_run"])
            } else {
                "running now".to_string()
            },
            if last.is_null() {
                "never run".to_string()
            } else {
                format!("{} at {}", text(&last["outcome"]), time(&last["finished"]))
            },
            format!("{}/{}", n(&j["failures"]), n(&j["runs"])),
            text(&last["message"]),
        ]
    });
    table(
        &mut out,
        "JOB",
        &["KIND", "SCHEDULE", "NEXT", "LAST", "FAILED", "MESSAGE"],
        &jobs,
    );
    out
}

/// A time the API gives in nanoseconds since the epoch, to the second: `2026-12-12T16:00:00Z`.
pub(crate) fn time(v: &Value) -> String {
    match v.as_i64() {
        Some(ns) => {
            let full = tickflow_model::UnixNanos(ns).to_string();
            format!("{}Z", full.split('.').next().unwrap_or(&full))
        }
        None => "-".to_string(),
    }
}

pub(crate) fn rows(list: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    list.as_array()
        .map(|a| a.iter().map(row).collect())
        .unwrap_or_default()
}

/// A table under a blank line, columns as wide as their widest cell; the last column is
/// left as long as it is (an error message). Nothing when there are no rows.
pub(crate) fn table(out: &mut String, first: &str, rest: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        return;
    }
    let header: Vec<&str> = std::iter::once(first).chain(rest.iter().copied()).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ", w = widths[i]);
            }
        }
        text.trim_end().to_string()
    };
    let _ = writeln!(out, "\n{}", line(header.clone()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

/// `1,234,567`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2d 03h`, `1h 02m`, `5m 07s`, `12s`.
pub(crate) fn uptime(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_reads_as_tables_with_every_component_and_job() {
        let s = serde_json::json!({
            "uptime_secs": 3725.0, "log_next_offset": 1234567, "processed_offset": 1234560,
            "log_lag": 7, "processed": 1234560, "rejected": 3, "duplicates": 1, "alerts": 12,
            "published_flush": 40, "flushes": 38, "compactions": 2,
            "latency_p50_seconds": 0.0123, "latency_p99_seconds": null,
            "rows_durable": {"trades": 1000000},
            "sources": [{"id": "sim", "type": "simulator", "state": "running", "events": 1234567, "error": null},
                        {"id": "iex", "type": "alpaca", "state": "reconnecting", "events": 5, "error": null,
                         "reconnecting": {"secs": 42, "attempts": 4, "error": "connect: connection refused"}}],
            "sinks": [{"id": "pg", "type": "postgres", "state": "retrying", "position": 37, "lag_flushes": 3,
                       "rows_written": 999, "errors": 2, "last_error": "writing: connection refused"}],
            "notifiers": [],
            "jobs": [{"name": "weekly", "kind": "weekly_report", "cron": "0 16 * * SAT", "timezone": "UTC",
                      "next_run": 1_797_091_200_000_000_000_i64, "running": null, "runs": 3, "failures": 1,
                      "last": {"outcome": "failed", "finished": 1_796_486_409_000_000_000_i64, "message": "smtp refused"}}],
            "failure": null
        });
        let text = render("http://127.0.0.1:8750", &s);
        for needle in [
            "tickflow at http://127.0.0.1:8750, up 1h 02m",
            "log        1,234,567 records, processed to 1,234,560, lag 7",
            "p50 12.3 ms, p99 -",
            "stored     trades 1,000,000",
            "sim     simulator  running       1,234,567",
            "iex     alpaca     reconnecting  5          4 failures in 42 s: connect: connection refused",
            "pg    postgres  retrying  37",
            "writing: connection refused",
            "weekly  weekly_report  0 16 * * SAT UTC  2026-12-12T16:00:00Z  failed at 2026-12-05T16:00:09Z  1/3     smtp refused",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert!(
            !text.contains("NOTIFIER"),
            "no notifiers, no table:\n{text}"
        );
    }
}
