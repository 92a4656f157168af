//! `tickflow top`: a live terminal view of a running pipeline, redrawn every second from
//! `GET /api/v1/status`: one row per component (sources, the log, processing, the lake,
//! sinks, notifiers, jobs) with its state, rate, total, lag and errors. `q` quits.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use console::{Key, Term};
use serde_json::Value;

use super::status::{address, count, fetch, rows, table, uptime};
use crate::cli::TopArgs;

pub(crate) fn top(args: &TopArgs) -> anyhow::Result<ExitCode> {
    let term = Term::stdout();
    if !term.is_term() {
        anyhow::bail!(
            "tickflow top draws on a terminal; for a script use `tickflow status` (--json for JSON)"
        );
    }
    let url = address(args.url.as_deref(), &args.data_dir)?;
    let every = Duration::from_millis((args.interval * 1000.0).clamp(100.0, 60_000.0) as u64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = super::api_client(every.max(Duration::from_secs(2)))?;
    // Keys are read on a thread of their own, so a slow answer never delays `q`. Each read
    // puts the terminal in raw mode until it returns, so the thread stops after the key
    // that quits: the terminal is back as it was before `top` ends.
    let (keys, pressed) = mpsc::channel();
    {
        let term = term.clone();
        std::thread::spawn(move || {
            while let Ok(key) = term.read_key_raw() {
                let quits = quits(&key);
                if keys.send(key).is_err() || quits {
                    break;
                }
            }
        });
    }
    term.hide_cursor().context("drawing on the terminal")?;
    term.clear_screen()?;
    let mut previous: Option<(Instant, Value)> = None;
    let outcome = loop {
        let answer = rt
            .block_on(fetch(&client, &url))
            .and_then(|body| serde_json::from_str::<Value>(&body).context("reading the status"));
        let now = Instant::now();
        let screen = match &answer {
            Ok(status) => {
                let since = previous
                    .as_ref()
                    .map(|(at, before)| (now.duration_since(*at), before));
                draw(&url, status, since)
            }
            Err(e) => format!(
                "tickflow top: {url}\n\ncannot reach the pipeline: {e:#}\nretrying every {} ms; q quits\n",
                every.as_millis()
            ),
        };
        let (height, width) = term.size();
        term.move_cursor_to(0, 0)?;
        for line in screen.lines().take(usize::from(height.saturating_sub(1))) {
            let shown: String = line.chars().take(usize::from(width)).collect();
            term.clear_line()?;
            term.write_line(&shown)?;
        }
        term.clear_to_end_of_screen().ok();
        if let Ok(status) = answer {
            previous = Some((now, status));
        }
        match pressed.recv_timeout(every) {
            Ok(key) if quits(&key) => break Ok(ExitCode::SUCCESS),
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(ExitCode::SUCCESS),
        }
    };
    term.show_cursor().ok();
    term.write_line("").ok();
    outcome
}

/// `q`, Escape and Ctrl-C quit.
fn quits(key: &Key) -> bool {
    matches!(key, Key::Char('q' | 'Q') | Key::Escape | Key::CtrlC)
}

/// One screen: a header, then a row per component. `since` is the previous answer and how
/// long ago it came, for rates.
fn draw(url: &str, s: &Value, since: Option<(Duration, &Value)>) -> String {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    // Per second since the previous answer, of what `pick` reads from an answer.
    let rate = |pick: &dyn Fn(&Value) -> u64| -> String {
        match since {
            Some((dt, before)) if dt.as_secs_f64() > 0.0 => {
                let delta = pick(s).saturating_sub(pick(before));
                count((delta as f64 / dt.as_secs_f64()).round() as u64)
            }
            _ => "-".into(),
        }
    };
    let mut out = format!(
        "tickflow top: {url}, up {}{}   (q quits)\n",
        uptime(s["uptime_secs"].as_f64().unwrap_or(0.0)),
        s["failure"]
            .as_str()
            .map(|f| format!("   FAILED: {f}"))
            .unwrap_or_default()
    );
    let mut components: Vec<Vec<String>> = Vec::new();
    let listed: Vec<String> = rows(&s["sources"], |c| vec![text(&c["id"])])
        .into_iter()
        .flatten()
        .collect();
    for c in s["sources"].as_array().into_iter().flatten() {
        let id = text(&c["id"]);
        components.push(vec![
            format!("source {id}"),
            text(&c["type"]),
            text(&c["state"]),
            rate(&|v: &Value| n(by_id(&v["sources"], &id, "events"))),
            count(n(&c["events"])),
            "-".into(),
            "-".into(),
            text(&c["error"]),
        ]);
    }
    for (id, events) in s["ingested"].as_object().into_iter().flatten() {
        if !listed.contains(id) {
            components.push(vec![
                format!("source {id}"),
                "http".into(),
                "running".into(),
                rate(&|v: &Value| n(&v["ingested"][id.as_str()])),
                count(n(events)),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    components.push(vec![
        "log".into(),
        "-".into(),
        if n(&s["log_lag"]) > 0 { "behind" } else { "ok" }.into(),
        rate(&|v: &Value| n(&v["log_next_offset"])),
        count(n(&s["log_next_offset"])),
        count(n(&s["log_lag"])),
        "-".into(),
        "-".into(),
    ]);
    components.push(vec![
        "processing".into(),
        "-".into(),
        if s["failure"].is_null() {
            "ok"
        } else {
            "failed"
        }
        .into(),
        rate(&|v: &Value| n(&v["processed"])),
        count(n(&s["processed"])),
        "-".into(),
        count(n(&s["rejected"])),
        format!(
            "{} duplicates, {} alerts",
            count(n(&s["duplicates"])),
            count(n(&s["alerts"]))
        ),
    ]);
    components.push(vec![
        "lake".into(),
        "-".into(),
        format!("flush {}", n(&s["published_flush"])),
        rate(&|v: &Value| n(&v["flushes"])),
        count(n(&s["flushes"])),
        "-".into(),
        "-".into(),
        s["latency_p99_seconds"]
            .as_f64()
            .map(|p| format!("tick to lake p99 {:.0} ms", p * 1e3))
            .unwrap_or_default(),
    ]);
    for (kind, key) in [("sink", "sinks"), ("notifier", "notifiers")] {
        for c in s[key].as_array().into_iter().flatten() {
            let id = text(&c["id"]);
            components.push(vec![
                format!("{kind} {id}"),
                text(&c["type"]),
                text(&c["state"]),
                rate(&|v: &Value| n(by_id(&v[key], &id, "rows_written"))),
                count(n(&c["rows_written"])),
                format!("{} flushes", n(&c["lag_flushes"])),
                n(&c["errors"]).to_string(),
                text(&c["last_error"]),
            ]);
        }
    }
    for j in s["jobs"].as_array().into_iter().flatten() {
        let last = &j["last"];
        components.push(vec![
            format!("job {}", text(&j["name"])),
            text(&j["kind"]),
            if j["running"].is_null() {
                text(&last["outcome"])
            } else {
                "running".into()
            },
            "-".into(),
            count(n(&j["runs"])),
            "-".into(),
            n(&j["failures"]).to_string(),
            text(&last["message"]),
        ]);
    }
    table(
        &mut out,
        "COMPONENT",
        &[
            "TYPE", "STATE", "RATE/S", "TOTAL", "LAG", "ERRORS", "DETAIL",
        ],
        &components,
    );
    out
}

/// Field `field` of the entry of `list` whose id is `id`.
fn by_id<'a>(list: &'a Value, id: &str, field: &str) -> &'a Value {
    list.as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == id))
        .map_or(&Value::Null, |c| &c[field])
}
