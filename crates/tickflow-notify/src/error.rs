/// Notifier set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP client could not be built (TLS set-up).
    #[error("building the HTTP client: {0}")]
    Client(String),
    /// An e-mail setting the SMTP client refuses.
    #[error("setting up e-mail: {0}")]
    Email(String),
}
