//! `tickflow report weekly`: from daily bars in the lake to a mail at aiosmtpd whose subject,
//! table and attached charts are checked against the `bars` table.

use std::collections::BTreeMap;
use std::process::Command;

use tickflow_core::contract::{SmtpServer, mail_header};
use tickflow_model::{Date, UnixNanos};

use crate::support::{Server, config, http, run_ok, sql, wait_for};

/// Weekdays from 2026-10-05 to 2026-11-27 (week 2026-W48 is 11-23 to 11-27).
fn weekdays() -> Vec<String> {
    let mut days = Vec::new();
    // 2026-10-05 is a Monday: 8 weeks of five days.
    let month_days = [(10, 5..=31), (11, 1..=30)];
    let mut weekday = 0;
    for (month, range) in month_days {
        for d in range {
            if month == 11 && d > 27 {
                break;
            }
            if weekday < 5 {
                days.push(format!("2026-{month:02}-{d:02}"));
            }
            weekday = (weekday + 1) % 7;
        }
    }
    days
}

/// Weekdays of the nine weeks before today.
fn recent_weekdays() -> Vec<String> {
    let today = UnixNanos::now().date();
    (today.0 - 63..today.0)
        .map(Date)
        .filter(|d| d.weekday() < 5)
        .map(|d| d.to_string())
        .collect()
}

/// Three symbols: one rising, one falling, one flat; prices chosen so no percentage ends
/// on a rounding tie.
fn bars_ndjson(days: &[String]) -> String {
    let mut out = String::new();
    for (symbol, base, step, body) in [
        ("NVDA", 100.0, 0.73, 1.37),
        ("QUBT", 20.0, -0.11, -0.23),
        ("AAPL", 200.0, 0.0, 0.41),
    ] {
        for (k, day) in days.iter().enumerate() {
            let open: f64 = base + step * k as f64 + if k % 3 == 0 { 0.17 } else { 0.0 };
            let close = open + body;
            let (high, low) = (open.max(close) + 0.59, open.min(close) - 0.31);
            out.push_str(&format!(
                "{{\"type\":\"bar\",\"symbol\":\"{symbol}\",\"interval\":\"1d\",\"start\":\"{day}T05:00:00Z\",\"open\":\"{open:.2}\",\"high\":\"{high:.2}\",\"low\":\"{low:.2}\",\"close\":\"{close:.2}\",\"volume\":\"1000\",\"source\":\"polygon\"}}\n"
            ));
        }
    }
    out
}

/// A data directory under `dir` whose lake holds the daily bars of `days`, replayed.
fn lake_of_bars(dir: &std::path::Path, days: &[String]) -> std::path::PathBuf {
    let data = dir.join("data");
    let bars = dir.join("bars.ndjson");
    std::fs::write(&bars, bars_ndjson(days)).unwrap();
    let out = run_ok(&[
        "replay",
        bars.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.contains("0 unreadable"), "{out}");
    data
}

fn dec(v: &serde_json::Value) -> f64 {
    match v {
        serde_json::Value::String(s) => s.parse().unwrap(),
        other => other.as_f64().unwrap(),
    }
}

#[test]
fn the_weekly_report_mails_its_table_and_a_chart_per_symbol() {
    let mail = tempfile::tempdir().unwrap();
    let Some(smtp) = SmtpServer::start(mail.path()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = lake_of_bars(dir.path(), &weekdays());
    let cfg = dir.path().join("report.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[[notifiers]]\ntype = \"email\"\nid = \"desk\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"reports@example.com\"\nto = [\"desk@example.com\"]\n",
                smtp.port
            ),
        ),
    )
    .unwrap();
    let out = run_ok(&[
        "report",
        "weekly",
        "--config",
        cfg.to_str().unwrap(),
        "--week",
        "2026-W48",
        "--send",
    ]);

    // What the bars table says about the week: first open, last close, high, low.
    let rows = sql(
        &data,
        "SELECT symbol, start, open, high, low, close FROM bars WHERE \"interval\" = '1d' \
         AND start >= '2026-11-23' AND start < '2026-11-30' ORDER BY symbol, start",
    );
    let mut week: BTreeMap<String, (f64, f64, f64, f64)> = BTreeMap::new();
    for r in &rows {
        let s = r["symbol"].as_str().unwrap().to_string();
        let (o, h, l, c) = (
            dec(&r["open"]),
            dec(&r["high"]),
            dec(&r["low"]),
            dec(&r["close"]),
        );
        week.entry(s)
            .and_modify(|w| *w = (w.0, w.1.max(h), w.2.min(l), c))
            .or_insert((o, h, l, c));
    }
    assert_eq!(week.len(), 3);
    let pct = |(o, h, l, c): (f64, f64, f64, f64)| ((c - o) / o * 100.0, (h - l) / o * 100.0);
    let mut ranked: Vec<(&String, f64)> = week.iter().map(|(s, w)| (s, pct(*w).0)).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let subject = format!(
        "Weekly Market Report - Best: {}: {:.1}% | Worst: {}: {:.1}%",
        ranked[0].0, ranked[0].1, ranked[2].0, ranked[2].1
    );
    assert!(out.contains(&subject), "{out}");

    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    let eml = std::fs::read_dir(mail.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "eml"))
        .unwrap();
    let parts = dir.path().join("parts");
    std::fs::create_dir_all(&parts).unwrap();
    let parsed = Command::new("python3")
        .arg("-c")
        .arg(MIME_PARTS)
        .arg(&eml)
        .arg(&parts)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&parsed.stdout).unwrap();
    assert_eq!(parsed["subject"], subject.as_str());

    // One PNG per symbol, attached, each decoding to the stated size.
    let attachments = parsed["attachments"].as_array().unwrap();
    let mut names: Vec<&str> = attachments
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["AAPL.png", "NVDA.png", "QUBT.png"]);
    for a in attachments {
        assert_eq!(a["type"], "image/png");
        let bytes = std::fs::read(parts.join(a["name"].as_str().unwrap())).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height), (900, 420));
        assert!(pixels.iter().any(|p| *p != 255), "a blank chart");
    }

    // The table: every symbol's return and range as the bars give them, best first.
    let html = parsed["html"].as_str().unwrap();
    let mut at = 0;
    for (symbol, _) in &ranked {
        let (ret, range) = pct(week[*symbol]);
        let row = format!("<tr><td>{symbol}</td>");
        let found = html[at..]
            .find(&row)
            .unwrap_or_else(|| panic!("{symbol} after the previous row: {html}"))
            + at;
        let line = &html[found..found + html[found..].find("</tr>").unwrap()];
        assert!(line.contains(&format!(">{ret:.2}%</td>")), "{line}");
        assert!(line.contains(&format!("<td>{range:.2}%</td>")), "{line}");
        assert!(html.contains(&format!("src=\"cid:{symbol}.png\"")));
        at = found;
    }

    // The same report beside the data.
    let written = data.join("reports/2026-W48");
    for name in ["report.html", "AAPL.png", "NVDA.png", "QUBT.png"] {
        assert!(written.join(name).exists(), "{name}");
    }
    let on_disk = std::fs::read_to_string(written.join("report.html")).unwrap();
    assert!(on_disk.contains("src=\"NVDA.png\""));
}

/// The job of the status named `name`.
fn job<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

#[test]
fn a_weekly_report_missed_while_down_is_mailed_once_and_compaction_runs_on_schedule() {
    let mail = tempfile::tempdir().unwrap();
    let Some(smtp) = SmtpServer::start(mail.path()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = lake_of_bars(dir.path(), &recent_weekdays());
    // The report last ran a month ago: at least one Saturday 16:00 passed while down.
    let month_ago = UnixNanos::now().0 - 30 * 86_400 * 1_000_000_000;
    let record = serde_json::json!({
        "weekly_report": {
            "last": {"scheduled": month_ago, "started": month_ago, "finished": month_ago, "outcome": "ok", "message": "sent"},
            "runs": 1,
            "failures": 0
        }
    });
    std::fs::write(data.join("jobs.json"), record.to_string()).unwrap();
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[[notifiers]]\ntype = \"email\"\nid = \"desk\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"reports@example.com\"\nto = [\"desk@example.com\"]\n\n[[jobs]]\nname = \"weekly_report\"\ncron = \"0 16 * * SAT\"\n\n[[jobs]]\nname = \"compact\"\nkind = \"compaction\"\ncron = \"* * * * * *\"\n",
                smtp.port
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    wait_for(&server, "the missed report and two compactions", |s| {
        job(s, "weekly_report")["runs"] == 2 && job(s, "compact")["runs"].as_u64() >= Some(2)
    });
    let status = server.status();
    let report = job(&status, "weekly_report");
    assert_eq!(report["last"]["outcome"], "ok", "{report}");
    assert!(
        report["next_run"].as_i64() > Some(UnixNanos::now().0),
        "{report}"
    );
    let compact = job(&status, "compact");
    assert_eq!(compact["last"]["outcome"], "ok", "{compact}");
    assert!(
        compact["last"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("compaction round done")),
        "{compact}"
    );
    let (code, jobs) = http("GET", &format!("{}/api/v1/jobs", server.url), None);
    assert_eq!(code, 200);
    let jobs: serde_json::Value = serde_json::from_str(&jobs).unwrap();
    assert_eq!(jobs[0]["kind"], "weekly_report");
    assert_eq!(jobs[0]["cron"], "0 16 * * SAT");
    let (_, metrics) = http("GET", &format!("{}/metrics", server.url), None);
    assert!(
        metrics.contains("tickflow_job_runs_total{job=\"weekly_report\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    server.stop();

    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "the missed runs are one run");
    let subject = mail_header(&messages[0], "Subject").unwrap();
    assert!(
        subject.starts_with("Weekly Market Report - Best: "),
        "{subject}"
    );
    assert_eq!(messages[0].matches("Content-Type: image/png").count(), 3);

    // Started again, nothing was missed: no second mail.
    let server = Server::start(&cfg, &data);
    wait_for(&server, "the scheduler to plan the next report", |s| {
        job(s, "weekly_report")["next_run"].is_i64()
            && job(s, "compact")["runs"].as_u64() >= Some(3)
    });
    let status = server.status();
    assert_eq!(job(&status, "weekly_report")["runs"], 2);
    assert!(job(&status, "weekly_report")["next_run"].as_i64() > Some(UnixNanos::now().0));
    server.stop();
    assert_eq!(smtp.messages().len(), 1);
}

/// Splits a mail into its subject, HTML body and attachments (written to a folder).
const MIME_PARTS: &str = r#"
import email, email.policy, json, os, sys
m = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
out = {"subject": str(m["subject"]), "html": m.get_body(("html",)).get_content(), "attachments": []}
for part in m.iter_attachments():
    name = part.get_filename()
    open(os.path.join(sys.argv[2], name), "wb").write(part.get_content())
    out["attachments"].append({"name": name, "type": part.get_content_type()})
print(json.dumps(out))
"#;

/// `tickflow report daily` asks the running pipeline: a hole between 1-minute bars is one
/// gap of its missing minutes, rejects are counted by reason, and the files are written.
#[test]
fn the_daily_report_counts_gaps_between_bars_and_rejects_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, config(&data, "")).unwrap();
    let minute = 60 * 1_000_000_000i64;
    // Every event in the past (so the trade at +10 closes the bars before it) and on one UTC
    // day: just after midnight, the events are the end of the day before.
    let now = UnixNanos::now();
    let mut base = now.0 - now.0.rem_euclid(minute) - 15 * minute;
    let next_day = UnixNanos::from_date(UnixNanos(base).date()).0 + 1_440 * minute;
    if base + 11 * minute >= next_day {
        base = next_day - 15 * minute;
    }
    let date = UnixNanos(base).date();
    let trade = |at: i64, price: &str| {
        format!(
            "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":{},\"price\":\"{price}\",\"size\":\"1\"}}\n",
            base + at
        )
    };
    // Bars at +0, +1 and +5 minutes (three missing between), closed by the trade at +10.
    let body = [
        trade(0, "100"),
        trade(minute, "101"),
        trade(5 * minute, "102"),
        trade(10 * minute, "103"),
        trade(minute, "99"),
        trade(10 * minute + 1, "-1"),
    ]
    .concat();
    let server = Server::start(&cfg, &data);
    let (code, answer) = http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(body.as_bytes()),
    );
    assert_eq!(code, 200, "{answer}");
    wait_for(&server, "every line processed", |s| {
        s["processed"] == 6 && s["log_lag"] == 0
    });
    let out = run_ok(&[
        "report",
        "daily",
        "--data-dir",
        data.to_str().unwrap(),
        "--date",
        &date.to_string(),
    ]);
    server.stop();
    assert!(
        out.starts_with(&format!(
            "Daily Data Report - {date}: 1 symbol, 1 gap (3 min), 2 rejects (1 late)"
        )),
        "{out}"
    );
    let nvda = out
        .lines()
        .find(|l| l.starts_with("NVDA"))
        .unwrap_or_else(|| panic!("no NVDA row: {out}"));
    let cells: Vec<&str> = nvda.split_whitespace().collect();
    // symbol, trades, bars, gaps, missing, longest
    assert_eq!(cells, ["NVDA", "4", "3", "1", "3", "m", "3", "m"], "{out}");
    for reason in ["late", "non_positive_price"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(reason) && l.trim_end().ends_with(" 1")),
            "{reason}: {out}"
        );
    }
    assert!(
        out.contains("none configured"),
        "a running pipeline without sinks: {out}"
    );
    let html = std::fs::read_to_string(
        data.join("reports")
            .join(date.to_string())
            .join("daily.html"),
    )
    .unwrap();
    assert!(
        html.contains("<td>NVDA</td><td>4</td><td>3</td><td>1</td><td>3</td><td>3</td>"),
        "{html}"
    );
}
