//! The e-mail notifier against a real SMTP server: aiosmtpd (PyPI, installed by
//! `scripts/test`), run by `tickflow_core::contract::SmtpServer`. Outside CI a test without
//! aiosmtpd says so and passes; under CI (`CI=true`) it fails.

use std::time::Duration;

use tickflow_core::contract::{SmtpServer, check_notifier, mail_header as header, sample_rows};
use tickflow_core::notify::{DeliveryError, Notifier, idempotency_key};
use tickflow_notify::email::{EmailConfig, EmailNotifier, Security, message_id};

/// aiosmtpd on loopback with the directory it stores messages in.
struct Server {
    smtp: SmtpServer,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let smtp = SmtpServer::start(dir.path())?;
        Some(Self { smtp, _dir: dir })
    }

    fn config(&self) -> EmailConfig {
        EmailConfig {
            host: "127.0.0.1".into(),
            port: self.smtp.port,
            security: Security::None,
            username: None,
            password: None,
            from: "tickflow <alerts@example.com>".into(),
            to: vec!["ops@example.com".into(), "Desk <desk@example.com>".into()],
            timeout: Duration::from_secs(30),
            ca_file: None,
        }
    }

    fn messages(&self) -> Vec<String> {
        self.smtp.messages()
    }

    fn flag(&self, name: &str, on: bool) {
        self.smtp.answer(name, on);
    }
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

/// STARTTLS and TLS from the first byte: the relay's certificate is checked against the
/// platform's roots and `ca_file`, and the login goes over the encrypted connection.
#[tokio::test]
async fn starttls_and_tls_verify_the_relay_and_log_in_over_it() {
    for mode in ["starttls", "tls"] {
        let dir = tempfile::tempdir().unwrap();
        let Some(smtp) = SmtpServer::start_secure(dir.path(), mode, "alerts", "s3cret") else {
            return;
        };
        let security = if mode == "tls" {
            Security::Tls
        } else {
            Security::StartTls
        };
        let config = EmailConfig {
            host: "127.0.0.1".into(),
            port: smtp.port,
            security,
            username: Some("alerts".into()),
            password: Some("s3cret".into()),
            from: "tickflow <alerts@example.com>".into(),
            to: vec!["ops@example.com".into()],
            timeout: Duration::from_secs(30),
            ca_file: Some(dir.path().join("ca.pem")),
        };
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        let rows = sample_rows(1, 3);
        let notifier = EmailNotifier::new(config.clone()).unwrap();
        notifier
            .deliver(&rows.alerts[0], &idempotency_key(&rows.alerts[0], "mail"))
            .await
            .unwrap_or_else(|e| {
                let log = std::fs::read_to_string(dir.path().join("server.log"));
                panic!(
                    "{mode}: {e}\nthe server's log:\n{}",
                    log.unwrap_or_default()
                )
            });
        assert_eq!(smtp.messages().len(), 1, "{mode}");

        // A wrong password is refused, for good.
        let wrong = EmailNotifier::new(EmailConfig {
            password: Some("guess".into()),
            ..config.clone()
        })
        .unwrap();
        let err = wrong
            .deliver(&rows.alerts[1], &idempotency_key(&rows.alerts[1], "mail"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DeliveryError::Permanent(m) if m.contains("535")),
            "{mode}: {err:?}"
        );
        // Without the CA, the relay's certificate is not trusted and nothing is sent.
        let untrusted = EmailNotifier::new(EmailConfig {
            ca_file: None,
            ..config
        })
        .unwrap();
        let err = untrusted
            .deliver(&rows.alerts[2], &idempotency_key(&rows.alerts[2], "mail"))
            .await
            .unwrap_err();
        assert!(
            format!("{err:?}").to_lowercase().contains("certificate"),
            "{mode}: {err:?}"
        );
        assert_eq!(smtp.messages().len(), 1, "{mode}: only the first was taken");
    }
}
