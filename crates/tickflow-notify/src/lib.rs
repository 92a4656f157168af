//! Notifiers, each a `tickflow_core::notify::Notifier`: the [`log`], [`webhook`]s (a JSON
//! body, or Slack's and Discord's incoming-webhook shapes) and [`email`] over SMTP. SNS
//! joins here. Also the [`report`]s mailed on a schedule, with their [`chart`]s.
//!
//! A notifier delivers one alert once; retries, the delivery ledger and the DLQ are the
//! pipeline's, the same for every channel (docs/CONNECTORS.md).

pub mod chart;
pub mod email;
mod error;
pub mod log;
pub mod quality;
pub mod report;
pub mod webhook;

pub use error::Error;

/// Installs rustls's crypto provider (ring) for the process, once; later calls do nothing.
/// Every HTTP client of the binary shares reqwest's rustls set-up, so `main` calls it first.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
