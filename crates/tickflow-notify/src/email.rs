//! The e-mail notifier: one message per alert over SMTP, plain, STARTTLS or TLS; reports go
//! out through the same transport as HTML with attachments.
//!
//! The subject names the severity, the rule and the symbol; the body has every field of the
//! alert. The `Message-ID` is made from the idempotency key, the same on every attempt, so a
//! mail system (or its reader) can drop a repeat. A refused connection, a timeout or a 4xx
//! reply (the server's "try again later") is worth another attempt; a 5xx reply is
//! permanent. The password is left out of every message and of `Debug`.

use std::time::Duration;

pub use lettre::message::Message;
use lettre::message::header::{ContentDisposition, ContentId, ContentType};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tickflow_core::notify::{DeliveryError, Notifier};
use tickflow_model::Alert;

use crate::Error;

/// How the connection to the server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// No TLS: a relay on loopback or a private network.
    None,
    /// Plain, then upgraded with STARTTLS before anything is sent (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

impl Security {
    /// Every mode, by the name the config uses.
    pub const ALL: [(&'static str, Security); 3] = [
        ("none", Security::None),
        ("starttls", Security::StartTls),
        ("tls", Security::Tls),
    ];

    /// The config's name for it.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("none", |(n, _)| n)
    }
}

/// An SMTP server and the addresses alerts go to.
#[derive(Clone)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// Both or neither.
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    /// For one message, connection included.
    pub timeout: Duration,
    /// A CA certificate (PEM) trusted besides the platform's roots: a relay whose certificate
    /// a private CA signed.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("from", &self.from)
            .field("to", &self.to)
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl EmailConfig {
    /// What is wrong with the settings, by key: addresses that do not parse, a user without
    /// a password.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(e) = self.from.parse::<Mailbox>() {
            out.push((
                "from",
                format!("{:?} is not an e-mail address: {e}", self.from),
            ));
        }
        if self.to.is_empty() {
            out.push(("to", "name at least one address".into()));
        }
        for to in &self.to {
            if let Err(e) = to.parse::<Mailbox>() {
                out.push(("to", format!("{to:?} is not an e-mail address: {e}")));
            }
        }
        if self.username.is_some() != self.password.is_some() {
            out.push((
                "username",
                "set username and password together, or neither".into(),
            ));
        }
        if self.host.is_empty() {
            out.push(("host", "missing".into()));
        }
        if let Some(path) = &self.ca_file {
            match std::fs::read(path) {
                Err(e) => out.push(("ca_file", format!("{}: {e}", path.display()))),
                Ok(pem) if Certificate::from_pem(&pem).is_err() => out.push((
                    "ca_file",
                    format!("{}: not a PEM certificate", path.display()),
                )),
                Ok(_) => {}
            }
            if self.security == Security::None {
                out.push((
                    "ca_file",
                    "set, but security is none: no TLS to use it".into(),
                ));
            }
        }
        out
    }

    /// `smtp://host:port (starttls)`, for status and `check`.
    pub fn shown(&self) -> String {
        format!(
            "smtp://{}:{} ({}) to {}",
            self.host,
            self.port,
            self.security.name(),
            self.to.join(", ")
        )
    }
}

/// A mailbox alerts are sent to; see the module docs.
#[derive(Clone)]
pub struct EmailNotifier {
    config: EmailConfig,
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for EmailNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailNotifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EmailNotifier {
    /// A notifier that opens a connection per message. lettre's pool keeps a task on the
    /// runtime that built it, and a notifier is built and dropped outside any runtime;
    /// alerts are few enough that a connection each costs nothing that matters.
    ///
    /// # Errors
    /// An address does not parse, or the TLS set-up failed.
    pub fn new(config: EmailConfig) -> Result<Self, Error> {
        crate::install_crypto();
        let bad = Error::Email;
        let from = config
            .from
            .parse::<Mailbox>()
            .map_err(|e| bad(e.to_string()))?;
        let to = config
            .to
            .iter()
            .map(|t| t.parse::<Mailbox>().map_err(|e| bad(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let host = config.host.as_str();
        // The platform's roots, and the configured CA besides.
        let tls = || -> Result<TlsParameters, Error> {
            let mut params = TlsParameters::builder(host.to_string());
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| bad(format!("ca_file {}: {e}", path.display())))?;
                let ca = Certificate::from_pem(&pem)
                    .map_err(|e| bad(format!("ca_file {}: {e}", path.display())))?;
                params = params.add_root_certificate(ca);
            }
            params.build().map_err(|e| bad(e.to_string()))
        };
        let plain = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host);
        let builder = match config.security {
            Security::None => plain,
            Security::StartTls => plain.tls(Tls::Required(tls()?)),
            Security::Tls => plain.tls(Tls::Wrapper(tls()?)),
        };
        let mut builder = builder.port(config.port).timeout(Some(config.timeout));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            to,
            config,
        })
    }

    /// The message for `alert`, with its `Message-ID` made from `key`.
    ///
    /// # Errors
    /// The message cannot be built (it always can from parsed addresses).
    pub fn message(&self, alert: &Alert, key: &str) -> Result<Message, String> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(format!(
                "[tickflow] {} {} {}: {}",
                alert.tag(),
                alert.rule,
                alert.symbol,
                alert.message
            ))
            .message_id(Some(message_id(key)))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let body = format!(
            "{}\n\nrule: {}\nsymbol: {}\ntime: {}\nvalue: {}\nthreshold: {}\nseverity: {}\nkind: {}\nalert id: {}\n",
            alert.message,
            alert.rule,
            alert.symbol,
            alert.ts,
            alert.value,
            alert.threshold,
            alert.severity.as_str(),
            alert.kind.as_str(),
            alert.alert_id
        );
        builder.body(body).map_err(|e| e.to_string())
    }
}

/// A file attached to a mail, which its HTML body can show as `cid:<name>`.
#[derive(Clone, Debug)]
pub struct Attached {
    pub name: String,
    /// A MIME type: `image/png`.
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

impl EmailNotifier {
    /// A mail with an HTML body (and its plain-text alternative) and attachments, each with a
    /// `Content-ID` of its name so the HTML can show it inline.
    ///
    /// # Errors
    /// The message cannot be built.
    pub fn html_message(
        &self,
        subject: &str,
        text: &str,
        html: &str,
        attachments: &[Attached],
    ) -> Result<Message, String> {
        let mut builder = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let mut mixed = MultiPart::mixed().multipart(MultiPart::alternative_plain_html(
            text.to_string(),
            html.to_string(),
        ));
        for a in attachments {
            let content_type = ContentType::parse(a.content_type)
                .map_err(|e| format!("{}: {e}", a.content_type))?;
            mixed = mixed.singlepart(
                SinglePart::builder()
                    .header(content_type)
                    .header(ContentDisposition::attachment(&a.name))
                    .header(ContentId::from(format!("<{}>", a.name)))
                    .body(a.bytes.clone()),
            );
        }
        builder.multipart(mixed).map_err(|e| e.to_string())
    }

    /// Who it mails, comma separated.
    pub fn recipients(&self) -> String {
        self.config.to.join(", ")
    }

    /// Sends a mail built by [`Self::html_message`]: a 4xx reply or a connection failure is
    /// [`DeliveryError::Retry`], a 5xx one permanent.
    ///
    /// # Errors
    /// As above.
    pub async fn send(&self, message: Message) -> Result<(), DeliveryError> {
        let where_ = format!("smtp://{}:{}", self.config.host, self.config.port);
        // lettre's own timeout covers the connection only: a server that goes silent in the
        // middle of the exchange would hold the notifier for good.
        let sent = tokio::time::timeout(self.config.timeout, self.transport.send(message)).await;
        let Ok(sent) = sent else {
            return Err(DeliveryError::Retry(format!(
                "{where_}: no answer within {} ms",
                self.config.timeout.as_millis()
            )));
        };
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(DeliveryError::Permanent(format!("{where_}: {e}"))),
            Err(e) => Err(DeliveryError::Retry(format!("{where_}: {e}"))),
        }
    }
}

/// `<alert_id.notifier@tickflow>`: a `Message-ID` may not hold the key's colon.
pub fn message_id(key: &str) -> String {
    format!("<{}@tickflow>", key.replace(':', "."))
}

#[async_trait::async_trait]
impl Notifier for EmailNotifier {
    async fn deliver(&self, alert: &Alert, key: &str) -> Result<(), DeliveryError> {
        let message = self.message(alert, key).map_err(DeliveryError::Permanent)?;
        self.send(message).await
    }
}
