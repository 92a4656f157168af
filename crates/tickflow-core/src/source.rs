//! The source contract: how events enter tickflow.
//!
//! A source runs until it is told to stop (or, for a finite input such as a replayed file,
//! until its input ends). It appends batches through its [`SourceContext`], which returns
//! only once the batch is durable in the log: a source acknowledges its upstream (commits a
//! broker offset, answers an HTTP request) only after that. Input it cannot read goes into the
//! same batch as a rejected record ([`Batch::push_rejected`]), so processing puts it in the
//! DLQ with the source's id and reason, and nothing is dropped silently. Reconnects, paging,
//! rate limits and gap accounting are the source's own.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use crate::codec::Batch;
use crate::metrics::Metrics;

/// An error from a source's input or from the log. The pipeline logs it with the source's
/// id, shows it in the status and stops that source; the other sources go on.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// The log refused a batch for now and acknowledged none of it: its disk is down to the
/// reserve (`[log] min_free_mb`), or the broker holding it did not store the batch. A source
/// with a vendor history treats it like a lost connection, waits and repairs the gap; the
/// refusal clears by itself once space is freed or the broker is back.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Where a source's batches go: the durable log, as the pipeline runs it.
pub trait Append: Send + Sync + std::fmt::Debug {
    /// Appends `batch` under the source `source`, returning its offsets once it is durable.
    /// Blocks for the log's group-commit fsync (a millisecond or so).
    ///
    /// # Errors
    /// The log failed or the pipeline is stopping; nothing of the batch is then acknowledged.
    fn append(&self, source: &str, batch: &Batch) -> Result<Range<u64>, SourceError>;
}

/// How a source's connection to its upstream is faring, for the status and `/readyz`: clear
/// while it works, else since when and how often it has failed in a row, and why.
#[derive(Debug, Default)]
pub struct Link(Mutex<Option<Trouble>>);

/// Failures in a row of a source's connection.
#[derive(Clone, Debug)]
pub struct Trouble {
    pub since: Instant,
    pub attempts: u32,
    pub error: String,
}

impl Link {
    /// The connection failed (again).
    pub fn failed(&self, error: String) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t = Some(Trouble {
            since: t.as_ref().map_or_else(Instant::now, |t| t.since),
            attempts: t.as_ref().map_or(0, |t| t.attempts) + 1,
            error,
        });
    }

    /// The connection works again.
    pub fn working(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The failures since the connection last worked, if it has not since.
    pub fn trouble(&self) -> Option<Trouble> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What a running source is given: its id, the log, its metrics and the stop signal.
#[derive(Clone, Debug)]
pub struct SourceContext {
    id: Arc<str>,
    log: Arc<dyn Append>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    state_dir: Option<std::path::PathBuf>,
    link: Arc<Link>,
}

impl SourceContext {
    /// A context for the source `id`; `stop` turns true when the source should stop.
    pub fn new(
        id: &str,
        log: Arc<dyn Append>,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            id: Arc::from(id),
            log,
            metrics,
            stop,
            state_dir: None,
            link: Arc::default(),
        }
    }

    /// The same context reporting its connection to `link`, which the pipeline shows.
    #[must_use]
    pub fn with_link(mut self, link: Arc<Link>) -> Self {
        self.link = link;
        self
    }

    /// Where a source that reconnects reports how its connection fares.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The same context with a directory of the source's own for what it keeps across
    /// restarts (its last event times, its gap ledger).
    #[must_use]
    pub fn with_state_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.state_dir = Some(dir);
        self
    }

    /// The source's own directory, when the pipeline gives it one (tests may not).
    pub fn state_dir(&self) -> Option<&std::path::Path> {
        self.state_dir.as_deref()
    }

    /// The source's id, which is also the `source` of its events unless they name another.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Appends a batch durably; see [`Append::append`]. Counts it under the source's id.
    ///
    /// # Errors
    /// As [`Append::append`].
    pub fn append(&self, batch: &Batch) -> Result<Range<u64>, SourceError> {
        let offsets = self.log.append(&self.id, batch)?;
        self.metrics.source_events.add(&self.id, batch.len() as u64);
        Ok(offsets)
    }

    /// Shared counters, for a source's own (reconnects, gaps).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether the source should stop now.
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once the source should stop: `select!` it against a socket's next frame.
    pub async fn stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// A source of events; see the module docs.
#[async_trait::async_trait]
pub trait Source: Send + std::fmt::Debug {
    /// Runs until [`SourceContext::is_stopping`], or until a finite input ends.
    ///
    /// # Errors
    /// Anything that stops the source for good: its input is gone or the log failed.
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_counts_failures_in_a_row_from_the_first_and_forgets_them_once_working() {
        let link = Link::default();
        assert!(link.trouble().is_none());
        link.failed("connect: refused".into());
        let first = link.trouble().unwrap();
        link.failed("timeout: nothing heard".into());
        let t = link.trouble().unwrap();
        assert_eq!(t.attempts, 2);
        assert_eq!(t.error, "timeout: nothing heard");
        assert_eq!(t.since, first.since, "since the first failure");
        link.working();
        assert!(link.trouble().is_none());
        link.failed("read: reset".into());
        assert_eq!(link.trouble().unwrap().attempts, 1);
    }
}
