//! The dashboard in a real browser (Debian's Chromium driven by playwright-core, as
//! `tests/dashboard.cjs` does), and the live stream it reads, over plain HTTP.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Server, config, http};

/// A pipeline on the simulator with a CSV sink, and a rule the browser test fires through
/// ingest.
fn start(dir: &Path) -> Server {
    let data = dir.join("data");
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 200\n\n[[sources]]\ntype = \"simulator\"\nid = \"sim\"\nrate = 500\nhistory_days = 2\nhistory_step_secs = 300\nanomaly_rate = 0.0\nsymbols = [\"NVDA\", \"BTC-USD\"]\n\n[[sinks]]\ntype = \"csv\"\nid = \"backup\"\ndir = \"{}\"\n\n[[alerts.threshold]]\nname = \"alrt-above-100\"\nsymbol = \"ALRT\"\ncondition = \"price > 100\"\n",
                dir.join("csv").display()
            ),
        ),
    )
    .unwrap();
    Server::start(&cfg, &data)
}

/// Where playwright-core is: NODE_PATH as `./scripts/test` sets it, else its cache.
fn node_path() -> String {
    std::env::var("NODE_PATH").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/tickflow/node/node_modules")
    })
}

fn browser_available(node_path: &str) -> bool {
    let ok = Path::new("/usr/bin/chromium").exists()
        && Command::new("node")
            .args(["-e", "require('playwright-core')"])
            .env("NODE_PATH", node_path)
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium and playwright-core are required under CI: ./scripts/test installs them"
        );
        eprintln!("skipped: Chromium or playwright-core is missing (./scripts/test installs them)");
    }
    ok
}

#[test]
fn the_dashboard_shows_candles_alerts_the_pipeline_sql_and_the_dlq_in_a_browser() {
    let node_path = node_path();
    if !browser_available(&node_path) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard.cjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(&server.url)
        .arg(&shots)
        .env("NODE_PATH", &node_path)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    for shot in [
        "dashboard-desktop.png",
        "dashboard-phone.png",
        "dashboard-dlq.png",
    ] {
        let size = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(size > 10_000, "{shot} was not written ({size} bytes)");
    }
    eprintln!("{stdout}");
    server.stop();
}

#[test]
fn the_dashboard_asks_for_the_token_and_streams_once_signed_in() {
    let node_path = node_path();
    if !browser_available(&node_path) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let token = "dashboard-token-0123456789";
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "token = \"{token}\"\n\n[lake]\nflush_interval_ms = 200\n\n[[sources]]\ntype = \"simulator\"\nid = \"sim\"\nrate = 500\nhistory_days = 0\nanomaly_rate = 0.0\nsymbols = [\"NVDA\"]\n"
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard_login.cjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(&server.url)
        .arg(token)
        .env("NODE_PATH", &node_path)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "the sign-in browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();
}

/// Waits until `done` holds; panics naming `what` past a minute and a half, so a broken
/// run fails instead of hanging (a healthy one takes a few seconds).
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Reads server-sent events until `done` holds for the (event, data) pairs seen so far.
fn read_events(
    url: &str,
    path: &str,
    mut done: impl FnMut(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let host = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    // A stream that goes quiet fails the read instead of hanging the test.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    reader.read_line(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut events = Vec::new();
    let (mut event, mut data) = (String::new(), String::new());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended early"
        );
        let text = line.trim_end_matches(['\r', '\n']);
        if let Some(name) = text.strip_prefix("event: ") {
            event = name.to_string();
        } else if let Some(d) = text.strip_prefix("data: ") {
            data = d.to_string();
        } else if text.is_empty() && !event.is_empty() {
            events.push((std::mem::take(&mut event), std::mem::take(&mut data)));
            if done(&events) {
                return events;
            }
        }
    }
}

#[test]
fn the_stream_sends_final_bars_prices_alerts_and_status_as_they_happen() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (code, body) = http(
        "GET",
        &format!("{}/api/v1/stream?topics=candles", server.url),
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains(r#"\"candles\" is not a topic"#), "{body}");

    // One-second NVDA bars: several turn final while the simulator runs.
    let events = read_events(
        &server.url,
        "/api/v1/stream?topics=bars&interval=1s&symbols=NVDA",
        |events| {
            events
                .iter()
                .filter(|(e, _)| e == "bars")
                .flat_map(|(_, d)| serde_json::from_str::<Vec<serde_json::Value>>(d).unwrap())
                .filter(|b| b["final"] == true)
                .count()
                >= 3
        },
    );
    for (event, data) in &events {
        assert_eq!(event, "bars", "only the topic asked for");
        for bar in serde_json::from_str::<Vec<serde_json::Value>>(data).unwrap() {
            assert_eq!(bar["symbol"], "NVDA");
            assert_eq!(bar["interval"], "1s");
            let (low, high) = (
                bar["l"].as_str().unwrap().parse::<f64>().unwrap(),
                bar["h"].as_str().unwrap().parse::<f64>().unwrap(),
            );
            assert!(low <= high, "{bar}");
        }
    }

    // An alert raised through ingest reaches a stream of alerts, with the price it moved.
    let url = server.url.clone();
    let alerts = std::thread::spawn(move || {
        read_events(
            &url,
            "/api/v1/stream?topics=alerts,prices,status",
            |events| {
                let has = |name: &str, needle: &str| {
                    events.iter().any(|(e, d)| e == name && d.contains(needle))
                };
                has("alerts", "alrt-above-100")
                    && has("prices", "\"ALRT\"")
                    && has("status", "uptime_secs")
            },
        )
    });
    // The stream connects first: an alert raised before it would be history, not news.
    until("the stream client to connect", || {
        http("GET", &format!("{}/metrics", server.url), None)
            .1
            .contains("tickflow_stream_clients 1")
    });
    let now = tickflow_model::UnixNanos::now();
    let tick = format!(
        "{{\"type\":\"trade\",\"symbol\":\"ALRT\",\"ts_event\":{},\"price\":\"150\",\"size\":\"1\",\"trade_id\":\"1\"}}",
        now.0
    );
    let (code, body) = http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(tick.as_bytes()),
    );
    assert_eq!(code, 200, "{body}");
    let events = alerts.join().unwrap();
    let price = events
        .iter()
        .filter(|(e, _)| e == "prices")
        .flat_map(|(_, d)| serde_json::from_str::<Vec<serde_json::Value>>(d).unwrap())
        .find(|p| p["symbol"] == "ALRT")
        .unwrap();
    assert_eq!(price["last"], "150");
    server.stop();
}

/// `GET /readyz` as JSON: its status code and the checks that failed, as `check id`.
fn readiness(url: &str) -> (u16, Vec<String>) {
    let (code, body) = http("GET", &format!("{url}/readyz"), None);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    let failed = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            format!(
                "{} {}",
                c["check"].as_str().unwrap(),
                c["id"].as_str().unwrap_or("")
            )
            .trim()
            .to_string()
        })
        .collect();
    assert_eq!(v["ready"] == true, code == 200, "{body}");
    (code, failed)
}

#[test]
fn readyz_names_a_silent_source_and_a_sink_past_its_lag_budget() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    // A source that only sends what the test posts, and a sink whose database is away.
    std::fs::write(
        &cfg,
        config(
            &data,
            "\n[lake]\nflush_interval_ms = 50\n\n[[sources]]\ntype = \"http\"\nid = \"feed\"\n\n[[sinks]]\ntype = \"postgres\"\nid = \"pg\"\nurl = \"postgres://postgres@127.0.0.1:1/test\"\n\n[health]\nsources = [\"feed\"]\nsource_silence_secs = 1\nsink_lag_flushes = 3\n",
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let (code, body) = http("GET", &format!("{}/healthz", server.url), None);
    assert_eq!((code, body.as_str()), (200, "{\"alive\":true}"));
    let (code, failed) = readiness(&server.url);
    assert_eq!(code, 503);
    assert_eq!(failed[0], "data", "never ready before data");
    // The source's limit (1 s) may have passed since the start on a slow machine.
    assert!(
        failed.len() == 1 || failed[1] == "source feed",
        "{failed:?}"
    );

    let mut seq = 0;
    let mut send = || {
        seq += 1;
        let tick = format!(
            "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":{},\"price\":\"180\",\"size\":\"1\",\"trade_id\":\"{seq}\"}}",
            tickflow_model::UnixNanos::now().0
        );
        let (code, body) = http(
            "POST",
            &format!("{}/api/v1/ingest/feed", server.url),
            Some(tick.as_bytes()),
        );
        assert_eq!(code, 200, "{body}");
    };
    send();
    assert_eq!(
        readiness(&server.url),
        (200, Vec::new()),
        "fresh, and the sink 1 flush behind"
    );
    // Silence past the limit: the source is named; a tick makes it fresh again.
    until("the source to count as silent", || {
        readiness(&server.url).0 != 200
    });
    assert_eq!(readiness(&server.url).1, vec!["source feed"]);
    send();
    assert_eq!(readiness(&server.url).0, 200);
    // Each tick is its own flush, which the sink cannot write: past 3 it is named.
    let flushes = |s: &serde_json::Value| s["flushes"].as_u64().unwrap_or_default();
    for _ in 0..20 {
        let before = flushes(&server.status());
        send();
        until("the tick's flush", || flushes(&server.status()) != before);
        let (code, failed) = readiness(&server.url);
        if code == 503 {
            assert_eq!(failed, vec!["sink pg"]);
            let (_, body) = http("GET", &format!("{}/readyz", server.url), None);
            assert!(body.contains("flushes behind the lake (limit 3)"), "{body}");
            server.stop();
            return;
        }
    }
    panic!(
        "the sink never went past its lag budget: {}",
        server.status()
    );
}

/// `tmux` on a socket of this test's own, so it never touches the user's sessions.
fn tmux(socket: &str, args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .args(["-L", socket])
        .args(args)
        .output()
        .expect("run tmux")
}

#[test]
fn top_draws_each_component_updates_and_quits_on_q() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tmux is required under CI: ./scripts/test installs it"
        );
        eprintln!("skipped: tmux is missing (./scripts/test installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let socket = format!("tickflow-top-{}", std::process::id());
    let command = format!(
        "{} top --url {} --interval 0.2",
        env!("CARGO_BIN_EXE_tickflow"),
        server.url
    );
    let out = tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "160",
            "-y",
            "40",
            &command,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = || {
        String::from_utf8_lossy(&tmux(&socket, &["capture-pane", "-p", "-t", "top"]).stdout)
            .to_string()
    };
    // The processing row's total, once the screen shows it.
    let processed = |text: &str| -> Option<u64> {
        let row = text.lines().find(|l| l.starts_with("processing"))?;
        row.split_whitespace().nth(4)?.replace(',', "").parse().ok()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let first = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "top never drew:\n{}",
            screen()
        );
        let text = screen();
        if let Some(n) = processed(&text) {
            for needle in [
                "COMPONENT",
                "source sim",
                "simulator",
                "log",
                "lake",
                "sink backup",
                "(q quits)",
            ] {
                assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
            }
            break n;
        }
        assert!(
            tmux(&socket, &["has-session", "-t", "top"])
                .status
                .success(),
            "tickflow top exited before drawing:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // Redrawn with new figures while the simulator runs.
    until("top to redraw with new figures", || {
        processed(&screen()).is_some_and(|n| n != first)
    });
    tmux(&socket, &["send-keys", "-t", "top", "q"]);
    until("top to quit on q", || {
        !tmux(&socket, &["has-session", "-t", "top"])
            .status
            .success()
    });
    tmux(&socket, &["kill-server"]);
    server.stop();
}

#[test]
fn dlq_replay_refuses_what_it_cannot_replay_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, config(&data, "\n[lake]\nflush_interval_ms = 50\n")).unwrap();
    let server = Server::start(&cfg, &data);
    let replay = |body: &str| {
        http(
            "POST",
            &format!("{}/api/v1/dlq/replay", server.url),
            Some(body.as_bytes()),
        )
    };
    let (code, body) = replay(r#"{"id":"x' OR 1=1","payload":"{}"}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("is not a DLQ entry's id"), "{body}");
    let (code, body) = replay(r#"{"id":"5:http:7","payload":"{}"}"#);
    assert_eq!(code, 404, "{body}");
    let (code, _) = replay("not json");
    assert!((400..500).contains(&code));

    // A real entry: a negative price; a payload that still does not parse is refused whole.
    let tick = format!(
        "{{\"type\":\"trade\",\"symbol\":\"BAD\",\"ts_event\":{},\"price\":\"-1\",\"size\":\"1\",\"trade_id\":\"1\"}}",
        tickflow_model::UnixNanos::now().0
    );
    let (code, _) = http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(tick.as_bytes()),
    );
    assert_eq!(code, 200);
    let mut id = String::new();
    until("the rejected tick in the DLQ", || {
        let (_, body) = http("GET", &format!("{}/api/v1/dlq", server.url), None);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(entry) = v["entries"].get(0) {
            assert_eq!(entry["reason"], "non_positive_price");
            id = entry["id"].as_str().unwrap().to_string();
        }
        !id.is_empty()
    });
    let (code, body) =
        replay(&serde_json::json!({ "id": id, "payload": "{\"type\":\"trade\"" }).to_string());
    assert_eq!(code, 400, "{body}");
    let (code, body) = http(
        "GET",
        &format!("{}/api/v1/dlq?reason=nonsense", server.url),
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("is not a reason"), "{body}");
    server.stop();
}
