//! The e-mail notifier against a real SMTP server: aiosmtpd (PyPI, installed by
//! `scripts/test`), run by `smtp_server.py` beside this file. Outside CI a test without
//! aiosmtpd says so and passes; under CI (`CI=true`) it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tickflow_core::contract::{check_notifier, sample_rows};
use tickflow_core::notify::{DeliveryError, Notifier, idempotency_key};
use tickflow_notify::email::{EmailConfig, EmailNotifier, Security, message_id};

/// aiosmtpd on a loopback port, storing messages in a directory of its own.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Option<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(dir.path())
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        // Bounded by polls, not by a clock a slow machine could outrun.
        for _ in 0..600 {
            if dir.path().join("ready").exists() {
                return Some(Self { child, dir, port });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                if std::env::var("CI").as_deref() != Ok("true") {
                    eprintln!("skipped: aiosmtpd did not start ({status}): {err}");
                    return None;
                }
                panic!("aiosmtpd is required under CI: {status}: {err}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("aiosmtpd did not become ready");
    }

    fn config(&self) -> EmailConfig {
        EmailConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            security: Security::None,
            username: None,
            password: None,
            from: "tickflow <alerts@example.com>".into(),
            to: vec!["ops@example.com".into(), "Desk <desk@example.com>".into()],
            timeout: Duration::from_secs(30),
        }
    }

    /// Every message received, in order.
    fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect()
    }

    fn flag(&self, name: &str, on: bool) {
        let path = self.dir.path().join(name);
        if on {
            std::fs::write(path, b"").unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }
}

/// A header's value (unfolded) in a raw message.
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let head = message.split("\r\n\r\n").next()?;
    head.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The idempotency key a message carries in its `Message-ID`.
fn key_of(message: &str) -> String {
    let id = header(message, "Message-ID").expect("a Message-ID");
    let inner = id
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim_end_matches("@tickflow");
    inner.replacen('.', ":", 1)
}

#[tokio::test]
async fn the_email_notifier_keeps_the_notifier_contract() {
    let Some(server) = Server::start() else {
        return;
    };
    let notifier = EmailNotifier::new(server.config()).unwrap();
    check_notifier(&notifier, "mail", async || {
        server.messages().iter().map(|m| key_of(m)).collect()
    })
    .await;
    // What a reader sees: the rule and symbol in the subject, every field in the body, and
    // both recipients.
    let alert = &sample_rows(1, 2).alerts[0];
    let first = &server.messages()[0];
    let subject = header(first, "Subject").unwrap();
    assert!(
        subject.starts_with(&format!(
            "[tickflow] {} {} {}",
            alert.severity.as_str().to_uppercase(),
            alert.rule,
            alert.symbol
        )),
        "{subject}"
    );
    assert_eq!(
        header(first, "Message-ID"),
        Some(message_id(&idempotency_key(alert, "mail")).as_str())
    );
    let to = header(first, "To").unwrap();
    assert!(
        to.contains("ops@example.com") && to.contains("desk@example.com"),
        "{to}"
    );
    assert!(first.contains(&format!("alert id: {}", alert.alert_id)));
    assert!(first.contains(&format!("value: {}", alert.value)));
}

#[tokio::test]
async fn a_server_that_says_later_is_retried_and_one_that_refuses_is_not() {
    let Some(server) = Server::start() else {
        return;
    };
    let notifier = EmailNotifier::new(server.config()).unwrap();
    let alert = &sample_rows(1, 1).alerts[0];
    let key = idempotency_key(alert, "mail");
    server.flag("refuse", true);
    let err = notifier.deliver(alert, &key).await.unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Retry(m) if m.contains("451")),
        "{err}"
    );
    server.flag("refuse", false);
    notifier.deliver(alert, &key).await.unwrap();
    let received = server.messages();
    assert_eq!(received.len(), 1, "delivered once when the server takes it");
    assert_eq!(key_of(&received[0]), key);

    server.flag("reject", true);
    let err = notifier.deliver(alert, &key).await.unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Permanent(m) if m.contains("550")),
        "{err}"
    );
    // A server that is not there at all is worth another attempt.
    drop(server);
    let err = notifier.deliver(alert, &key).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Retry(_)), "{err}");
}
