//! Webhook notifiers against a receiver that refuses for a while: nothing else stalls, every
//! alert arrives exactly once when it recovers, exhausted deliveries are in the DLQ, and a
//! SIGKILL during retries loses and doubles nothing.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tickflow_core::contract::{SmtpServer, mail_header};

use crate::support::{Server, config, http, sql, sql_count, wait_for};

/// What the receiver does with the n-th request (from 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Answer {
    Fail,
    Hang,
    Accept,
    /// Accepted once the receiver's `held` flag is cleared.
    Hold,
}

/// A webhook receiver on loopback; `plan` decides each request's answer.
pub(crate) struct Receiver {
    port: u16,
    /// (idempotency key, answer) of every request, in order.
    seen: Arc<Mutex<Vec<(String, Answer)>>>,
    /// While set, `Hold` answers wait.
    held: Arc<AtomicBool>,
}

impl Receiver {
    pub(crate) fn start(
        listener: TcpListener,
        plan: impl Fn(usize) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(plan);
        let log = Arc::clone(&seen);
        let held = Arc::new(AtomicBool::new(true));
        let hold = Arc::clone(&held);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (plan, log, hold) = (Arc::clone(&plan), Arc::clone(&log), Arc::clone(&hold));
                std::thread::spawn(move || answer(stream, &*plan, &log, &hold));
            }
        });
        Self { port, seen, held }
    }

    /// Lets the held requests through.
    fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Accepted requests per idempotency key.
    pub(crate) fn accepted(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for (key, a) in self.seen.lock().unwrap().iter() {
            if *a == Answer::Accept {
                *out.entry(key.clone()).or_default() += 1;
            }
        }
        out
    }

    pub(crate) fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn answer(
    mut stream: TcpStream,
    plan: &dyn Fn(usize) -> Answer,
    log: &Mutex<Vec<(String, Answer)>>,
    held: &AtomicBool,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = stream.read(&mut chunk) else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::trim))
            .unwrap_or("")
            .to_string()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + length {
        let Ok(n) = stream.read(&mut chunk) else {
            return;
        };
        if n == 0 {
            // Cut short: not a request, so not answered or counted.
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let key = header("idempotency-key");
    let a = {
        let mut log = log.lock().unwrap();
        let a = plan(log.len());
        log.push((key, a));
        a
    };
    let status = match a {
        Answer::Accept => "200 OK",
        Answer::Hold => {
            while held.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            "200 OK"
        }
        Answer::Fail => "500 Internal Server Error",
        Answer::Hang => {
            // Longer than the notifier's timeout: it gives up on this attempt.
            std::thread::sleep(Duration::from_secs(3));
            return;
        }
    };
    let _ = stream.write_all(
        format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
    );
}

/// Whether any file is under `dir`.
fn has_file(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let path = e.path();
            if path.is_dir() { has_file(&path) } else { true }
        })
    })
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// `n` trades above the threshold, a millisecond apart, ending now, each of its own symbol:
/// a threshold fires on its edge, so each gives one alert.
fn trades(n: u64) -> String {
    let now = now_nanos() as u64;
    (0..n)
        .map(|i| {
            format!(
                "{{\"type\":\"trade\",\"symbol\":\"S{i:03}\",\"ts_event\":{},\"price\":\"{}\",\"size\":\"1\",\"seq\":{i}}}\n",
                now - (n - i) * 1_000_000,
                300 + i
            )
        })
        .collect()
}

fn notifier<'a>(s: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    s["notifiers"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == id))
        .unwrap_or(&serde_json::Value::Null)
}

fn caught_up(s: &serde_json::Value, id: &str) -> bool {
    s["log_lag"].as_u64() == Some(0)
        && notifier(s, id)["lag_flushes"].as_u64() == Some(0)
        && notifier(s, id)["position"].as_u64().is_some()
}

fn pipeline_config(data: &std::path::Path, ops: &str, dead: Option<&str>) -> String {
    let mut extra = format!(
        "\n[lake]\nflush_interval_ms = 100\n\n[[alerts.threshold]]\nname = \"above-100\"\ncondition = \"price > 100\"\ncooldown_secs = 0\n\n[[notifiers]]\ntype = \"webhook\"\nid = \"ops\"\nurl = \"{ops}\"\ntimeout_ms = 1000\nmax_attempts = 1000\nretry_max_ms = 200\nheaders = {{ Authorization = \"Bearer s3cret\" }}\n"
    );
    if let Some(dead) = dead {
        extra.push_str(&format!(
            "\n[[notifiers]]\ntype = \"webhook\"\nid = \"dead\"\nurl = \"{dead}\"\nmax_attempts = 2\nretry_max_ms = 50\n\n[[sinks]]\ntype = \"csv\"\nid = \"backup\"\n"
        ));
    }
    config(data, &extra)
}

/// A port nothing listens on (yet): connections to it are refused.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_refusing_webhook_stalls_nothing_and_gets_every_alert_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let ops_url = format!("http://127.0.0.1:{port}/hook");
    let dead_url = format!("http://127.0.0.1:{}/hook", free_port());
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, pipeline_config(&data, &ops_url, Some(&dead_url))).unwrap();
    let server = Server::start(&cfg, &data);
    let (code, body) = http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(trades(20).as_bytes()),
    );
    assert_eq!(code, 200, "{body}");

    // Refused connections: the lake, queries and the CSV sink carry on.
    wait_for(&server, "deliveries fail while the lake keeps up", |s| {
        notifier(s, "ops")["errors"].as_u64().unwrap_or(0) >= 3
            && s["rows_durable"]["trades"].as_u64() == Some(20)
            && s["sinks"][0]["lag_flushes"].as_u64() == Some(0)
    });
    let alerts = sql(&data, "SELECT alert_id FROM alerts ORDER BY alert_id");
    assert_eq!(alerts.len(), 20, "one alert per trade above 100");
    assert_eq!(
        notifier(&server.status(), "ops")["state"],
        "retrying",
        "{:#}",
        server.status()
    );

    // The receiver comes up: three 500s, two hung requests, then it accepts.
    let receiver = Receiver::start(
        TcpListener::bind(("127.0.0.1", port)).unwrap(),
        |n| match n {
            0..=2 => Answer::Fail,
            3..=4 => Answer::Hang,
            _ => Answer::Accept,
        },
    );
    wait_for(&server, "every alert delivered", |s| {
        caught_up(s, "ops") && caught_up(s, "dead")
    });
    let accepted = receiver.accepted();
    let expected: Vec<String> = alerts
        .iter()
        .map(|a| format!("{}:ops", a["alert_id"].as_str().unwrap()))
        .collect();
    for key in &expected {
        assert_eq!(
            accepted.get(key),
            Some(&1),
            "{key} accepted once: {accepted:?}"
        );
    }
    assert_eq!(accepted.len(), expected.len());
    assert!(receiver.requests() >= 25, "the failed attempts came too");

    // Each settled delivery is a row of alert_deliveries, and `alerts.delivered_to` names the
    // channels that succeeded: ops, never dead.
    wait_for(&server, "every delivery in the lake", |s| {
        s["rows_durable"]["alert_deliveries"].as_u64() == Some(40)
    });
    let delivered = sql(
        &data,
        "SELECT status, count(*) AS n, max(attempts) AS most FROM alert_deliveries GROUP BY notifier, status ORDER BY notifier",
    );
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert_eq!(delivered[0]["status"], "failed", "dead: {delivered:?}");
    assert_eq!(delivered[0]["n"], 20);
    assert_eq!(delivered[1]["status"], "delivered", "ops: {delivered:?}");
    assert_eq!(delivered[1]["n"], 20);
    assert!(
        delivered[1]["most"].as_u64().unwrap() > 1,
        "the first alert took several attempts: {delivered:?}"
    );
    // Each retried or failed delivery keeps its last error; a first-try one has none.
    let retried = sql(
        &data,
        "SELECT status, attempts, error FROM alert_deliveries WHERE attempts > 1 OR status = 'failed'",
    );
    assert!(retried.len() >= 21, "{retried:?}");
    for r in &retried {
        assert!(
            r["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{retried:?}"
        );
    }
    assert_eq!(
        sql_count(
            &data,
            "SELECT count(*) AS n FROM alert_deliveries WHERE attempts = 1 AND status = 'delivered' AND error IS NOT NULL",
        ),
        0
    );
    let channels = sql(&data, "SELECT DISTINCT delivered_to FROM alerts");
    assert_eq!(channels.len(), 1, "{channels:?}");
    assert_eq!(channels[0]["delivered_to"], "log,ops");

    // The dead channel: every alert in the DLQ, none lost, with the alert as payload.
    assert_eq!(
        sql_count(
            &data,
            "SELECT count(*) FROM dlq WHERE reason = 'delivery_failed' AND source = 'dead'"
        ),
        20
    );
    let one = sql(
        &data,
        "SELECT error, payload FROM dlq WHERE source = 'dead' LIMIT 1",
    );
    assert!(
        one[0]["payload"].as_str().unwrap().contains("above-100"),
        "{one:?}"
    );
    assert!(
        one[0]["error"].as_str().unwrap().contains("notifier dead"),
        "{one:?}"
    );
    let (_, metrics) = http("GET", &format!("{}/metrics", server.url), None);
    assert!(
        metrics.contains("tickflow_alert_deliveries_total{channel=\"ops\",status=\"ok\"} 20"),
        "{metrics}"
    );
    // The token in the header shows nowhere.
    let status = server.status().to_string();
    assert!(!status.contains("s3cret"), "{status}");
    server.stop();
}

#[test]
fn sigkill_during_webhook_retries_loses_and_doubles_no_alert() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // The first five alerts get through, then every request fails until the restart.
    let failing = Arc::new(Mutex::new(true));
    let flag = Arc::clone(&failing);
    let receiver = Receiver::start(listener, move |n| {
        if n < 5 || !*flag.lock().unwrap() {
            Answer::Accept
        } else {
            Answer::Fail
        }
    });
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, pipeline_config(&data, &receiver.url(), None)).unwrap();
    let server = Server::start(&cfg, &data);
    let (code, _) = http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(trades(12).as_bytes()),
    );
    assert_eq!(code, 200);
    wait_for(&server, "deliveries being retried", |_| {
        receiver.requests() >= 10
    });
    server.kill();

    *failing.lock().unwrap() = false;
    let server = Server::start(&cfg, &data);
    wait_for(&server, "every alert delivered after the restart", |s| {
        caught_up(s, "ops")
    });
    server.stop();
    let accepted = receiver.accepted();
    let alerts = sql(&data, "SELECT alert_id FROM alerts");
    assert_eq!(alerts.len(), 12);
    for a in &alerts {
        let key = format!("{}:ops", a["alert_id"].as_str().unwrap());
        assert_eq!(accepted.get(&key), Some(&1), "{key}: {accepted:?}");
    }
    assert_eq!(accepted.len(), 12);
    let channels = sql(
        &data,
        "SELECT delivered_to, count(*) AS n FROM alerts GROUP BY delivered_to",
    );
    assert_eq!(channels.len(), 1, "{channels:?}");
    assert_eq!(channels[0]["delivered_to"], "log,ops");
    assert_eq!(
        channels[0]["n"], 12,
        "each alert once, whatever the repeats"
    );
}

#[test]
fn a_clean_stop_during_a_delivery_records_it_and_the_restart_does_not_send_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start(TcpListener::bind("127.0.0.1:0").unwrap(), |_| Answer::Hold);
    let cfg = dir.path().join("run.toml");
    // No flush before the stop: the alert goes out the early way and its flush is the last.
    let text = pipeline_config(&data, &receiver.url(), None)
        .replace("flush_interval_ms = 100", "flush_interval_ms = 3600000");
    std::fs::write(&cfg, &text).unwrap();
    let mut server = Server::start(&cfg, &data);
    let (code, _) = http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(trades(1).as_bytes()),
    );
    assert_eq!(code, 200);
    wait_for(&server, "the delivery in flight", |_| {
        receiver.requests() == 1
    });
    server.terminate();
    // Released once the stop has begun: the last flush (its alert in the lake) is written
    // while the delivery is still in flight.
    let alerts = data.join("lake").join("alerts");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !has_file(&alerts) {
        assert!(std::time::Instant::now() < deadline, "no last flush");
        std::thread::sleep(Duration::from_millis(10));
    }
    receiver.release();
    server.wait_success();

    let delivered = sql(&data, "SELECT alert_id, delivered_to FROM alerts");
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["delivered_to"], "log,ops", "{delivered:?}");
    let server = Server::start(&cfg, &data);
    wait_for(&server, "the restart caught up", |s| caught_up(s, "ops"));
    server.stop();
    assert_eq!(receiver.requests(), 1, "sent again after the restart");
}

#[test]
fn an_alert_reaches_email_and_webhook_and_a_refusing_mail_server_gets_it_once() {
    let mail = tempfile::tempdir().unwrap();
    let Some(smtp) = SmtpServer::start(mail.path()) else {
        return;
    };
    let receiver = Receiver::start(TcpListener::bind("127.0.0.1:0").unwrap(), |_| {
        Answer::Accept
    });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let email = format!(
        "\n[[notifiers]]\ntype = \"email\"\nid = \"desk\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"alerts@example.com\"\nto = [\"desk@example.com\"]\nmax_attempts = 1000\nretry_max_ms = 200\n",
        smtp.port
    );
    let text = pipeline_config(&data, &receiver.url(), None) + &email;
    std::fs::write(&cfg, text).unwrap();
    // The mail server says "later" until the webhook has every alert.
    smtp.answer("refuse", true);
    let server = Server::start(&cfg, &data);
    let (code, body) = http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(trades(5).as_bytes()),
    );
    assert_eq!(code, 200, "{body}");
    wait_for(&server, "the webhook has every alert", |s| {
        caught_up(s, "ops") && notifier(s, "desk")["errors"].as_u64().unwrap_or(0) >= 2
    });
    assert_eq!(receiver.accepted().len(), 5);
    assert!(smtp.messages().is_empty(), "nothing taken while refusing");
    smtp.answer("refuse", false);
    wait_for(&server, "the mail server has every alert", |s| {
        caught_up(s, "desk")
    });
    // The delivery log: each channel, delivered, and how many attempts the mail took.
    let (code, body) = http(
        "GET",
        &format!("{}/api/v1/alerts?limit=1", server.url),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let log: serde_json::Value = serde_json::from_str(&body).unwrap();
    let deliveries = log["alerts"][0]["deliveries"].as_array().unwrap();
    let channels: Vec<&str> = deliveries
        .iter()
        .map(|d| d["notifier"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["desk", "ops"], "{body}");
    assert!(
        deliveries.iter().all(|d| d["status"] == "delivered"),
        "{body}"
    );
    server.stop();

    let mut ids: Vec<String> = smtp
        .messages()
        .iter()
        .map(|m| {
            mail_header(m, "Message-ID")
                .expect("a Message-ID")
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 5, "each alert mailed once: {ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "no alert mailed twice");
    let both = sql(
        &data,
        "SELECT count(*) AS n FROM alerts WHERE delivered_to = 'log,desk,ops'",
    );
    assert_eq!(both[0]["n"], 5, "{both:?}");
}

#[test]
fn alerts_test_sends_one_message_through_the_channel_and_reports_a_refusal() {
    let mail = tempfile::tempdir().unwrap();
    let Some(smtp) = SmtpServer::start(mail.path()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mail.toml");
    std::fs::write(
        &cfg,
        config(
            &dir.path().join("data"),
            &format!(
                "\n[[notifiers]]\ntype = \"email\"\nid = \"desk\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"alerts@example.com\"\nto = [\"desk@example.com\"]\n",
                smtp.port
            ),
        ),
    )
    .unwrap();
    let test = |channel: &str| {
        crate::support::run(&["alerts", "test", "--config", cfg.to_str().unwrap(), channel])
    };
    let out = test("desk");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    let subject = mail_header(&messages[0], "Subject").unwrap();
    assert!(
        subject.starts_with("[tickflow] INFO tickflow-test TEST: Test alert"),
        "{subject}"
    );

    smtp.answer("reject", true);
    let out = test("desk");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("desk refused it") && stderr.contains("550"),
        "{stderr}"
    );
    assert_eq!(smtp.messages().len(), 1);

    let out = test("pager");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no notifier \"pager\"; its notifiers: desk")
    );
}

#[test]
fn alerts_go_out_before_their_flush_and_once_across_a_sigkill_that_loses_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver = Receiver::start(listener, |_| Answer::Accept);
    let cfg = dir.path().join("run.toml");
    // No flush in the first run: its alerts can reach the channel only the early way.
    let text = pipeline_config(&data, &receiver.url(), None);
    let never = text.replace("flush_interval_ms = 100", "flush_interval_ms = 3600000");
    assert_ne!(never, text);
    std::fs::write(&cfg, &never).unwrap();
    let server = Server::start(&cfg, &data);
    let (code, _) = http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(trades(12).as_bytes()),
    );
    assert_eq!(code, 200);
    wait_for(&server, "every alert delivered before a flush", |_| {
        receiver.accepted().len() == 12
    });
    let status = server.status();
    assert_eq!(status["flushes"], 0, "{status}");
    // The alerts and their deliveries are in the log only: the restart raises them again.
    server.kill();

    std::fs::write(&cfg, &text).unwrap();
    let server = Server::start(&cfg, &data);
    wait_for(&server, "the replayed alerts through the flush path", |s| {
        caught_up(s, "ops") && s["published_flush"].as_u64() > Some(0)
    });
    server.stop();
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 12, "{accepted:?}");
    assert!(
        accepted.values().all(|n| *n == 1),
        "sent again: {accepted:?}"
    );
    let channels = sql(
        &data,
        "SELECT delivered_to, count(*) AS n FROM alerts GROUP BY delivered_to",
    );
    assert_eq!(channels.len(), 1, "{channels:?}");
    assert_eq!(channels[0]["delivered_to"], "log,ops");
    assert_eq!(channels[0]["n"], 12);
    assert_eq!(
        sql_count(&data, "SELECT count(*) FROM alert_deliveries"),
        12,
        "one delivery row each"
    );
}
