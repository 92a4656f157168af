//! The webhook against a receiver on loopback: the notifier contract, each body format, and
//! which answers are worth another attempt.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tickflow_core::contract::{check_notifier, sample_rows};
use tickflow_core::notify::{DeliveryError, Notifier};
use tickflow_notify::webhook::{Format, WebhookConfig, WebhookNotifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a request carried.
#[derive(Clone, Debug)]
struct Received {
    key: String,
    authorization: String,
    body: serde_json::Value,
}

/// A receiver answering every request with `status`; returns its URL and what it got.
async fn receiver(status: u16) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&got);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                        .unwrap_or("")
                        .trim()
                        .to_string()
                };
                log.lock().unwrap().push(Received {
                    key: header("idempotency-key"),
                    authorization: header("authorization"),
                    body: serde_json::from_slice(&buf[head_end..]).unwrap_or_default(),
                });
                let _ = stream
                    .write_all(
                        format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (url, got)
}

fn webhook(url: &str, format: Format) -> WebhookNotifier {
    WebhookNotifier::new(WebhookConfig {
        url: url.to_string(),
        format,
        headers: vec![("Authorization".into(), "Bearer t0ken".into())],
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

#[tokio::test]
async fn webhook_meets_the_notifier_contract() {
    let (url, got) = receiver(200).await;
    let notifier = webhook(&url, Format::Json);
    check_notifier(&notifier, "ops", async || {
        got.lock().unwrap().iter().map(|r| r.key.clone()).collect()
    })
    .await;
    let first = got.lock().unwrap()[0].clone();
    assert_eq!(
        first.authorization, "bearer t0ken",
        "custom headers are sent"
    );
    let alert = &sample_rows(1, 2).alerts[0];
    assert_eq!(first.body["alert_id"], alert.alert_id.as_str());
    assert_eq!(first.body["value"], "181.25", "an exact decimal string");
    assert_eq!(first.body["severity"], "warning");
    assert_eq!(first.body["idempotency_key"], first.key);
}

#[tokio::test]
async fn slack_and_discord_get_their_own_shapes() {
    let alert = &sample_rows(1, 1).alerts[0];
    for (format, field) in [(Format::Slack, "text"), (Format::Discord, "content")] {
        let (url, got) = receiver(204).await;
        webhook(&url, format).deliver(alert, "k").await.unwrap();
        let body = got.lock().unwrap()[0].body.clone();
        let text = body[field].as_str().unwrap_or_else(|| panic!("{body}"));
        assert!(text.starts_with("[WARNING] NVDA "), "{text}");
        assert!(text.contains(&alert.message), "{text}");
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    }
}

#[tokio::test]
async fn answers_decide_whether_to_try_again() {
    let alert = &sample_rows(1, 1).alerts[0];
    for (status, retry) in [
        (500, true),
        (503, true),
        (429, true),
        (408, true),
        (400, false),
        (404, false),
    ] {
        let (url, _) = receiver(status).await;
        match webhook(&url, Format::Json).deliver(alert, "k").await {
            Err(DeliveryError::Retry(m)) => assert!(retry, "{status}: {m}"),
            Err(DeliveryError::Permanent(m)) => {
                assert!(!retry, "{status}: {m}");
                assert!(m.contains(&status.to_string()), "{m}");
            }
            Ok(()) => panic!("{status} is no delivery"),
        }
    }
    // Nobody listening: worth another attempt, and the message leaves the path out.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/services/SECRET");
    match webhook(&url, Format::Json).deliver(alert, "k").await {
        Err(DeliveryError::Retry(m)) => assert!(!m.contains("SECRET"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// Log lines written while a test runs, for the log notifier's contract.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_log_notifier_meets_the_notifier_contract() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime runs on this thread only: the subscriber sees every delivery.
    let _guard = tracing::subscriber::set_default(subscriber);
    let notifier = tickflow_notify::log::LogNotifier { id: "log".into() };
    check_notifier(&notifier, "log", async || {
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|l| l.split(" key=").nth(1))
            .map(|rest| {
                let value = rest.split(' ').next().unwrap_or_default();
                value.trim_matches('"').to_string()
            })
            .collect()
    })
    .await;
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let alert = &sample_rows(1, 2).alerts[0];
    assert!(text.contains(&alert.message), "{text}");
    assert!(text.contains("WARN"), "a warning line: {text}");
}
