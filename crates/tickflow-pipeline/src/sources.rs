//! Sources, each on a thread of its own (docs/CONNECTORS.md).
//!
//! A source's `run` is async, but many sources block (the simulator generates and sleeps, a
//! replay reads files, appends wait for the log's fsync): each gets its own thread with a
//! single-threaded runtime, so one source can never hold up another. A source that fails is
//! logged, counted and shown in the status; the others and the rest of the pipeline go on.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tickflow_core::metrics::Metrics;
use tickflow_core::source::{Append, SourceContext};
use tokio::sync::watch;

use crate::config::SourcePlan;

/// What one source is doing, for `/api/v1/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceStatus {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `running`; `reconnecting` (its connection to the venue failed and is retried, see
    /// `reconnecting`); `waiting` (the log refused its events, its disk at the reserve or
    /// its broker away; it starts again by itself); `finished` (a finite input, such as a replayed file, has
    /// ended); `failed` (see `error`); `stopped`.
    pub state: &'static str,
    /// Events and unreadable inputs it has appended.
    pub events: u64,
    pub error: Option<String>,
    /// While `reconnecting`: for how long, how many failures in a row, and the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnecting: Option<Reconnecting>,
}

/// A source's connection failing, as the status shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reconnecting {
    pub secs: u64,
    pub attempts: u32,
    pub error: String,
}

#[derive(Debug)]
struct Handle {
    id: String,
    kind: &'static str,
    state: Mutex<(&'static str, Option<String>)>,
    link: Arc<tickflow_core::source::Link>,
}

/// The running sources.
#[derive(Debug)]
pub(crate) struct Sources {
    handles: Vec<Arc<Handle>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
}

/// How long a source the log refused (its disk at the reserve) waits before it starts again.
const REFUSED_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Sleeps `time`, or less once the pipeline stops.
fn wait_or_stop(ctx: &SourceContext, time: std::time::Duration) {
    let until = std::time::Instant::now() + time;
    while std::time::Instant::now() < until && !ctx.is_stopping() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Sources {
    /// Starts every source on its own thread; `stop` turning true stops them.
    pub(crate) fn start(
        plans: &[SourcePlan],
        data_dir: &std::path::Path,
        log_is_empty: bool,
        log: &Arc<dyn Append>,
        metrics: &Arc<Metrics>,
        stop: &watch::Sender<bool>,
    ) -> std::io::Result<Self> {
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for plan in plans {
            let handle = Arc::new(Handle {
                id: plan.id.clone(),
                kind: plan.config.type_name(),
                state: Mutex::new(("running", None)),
                link: Arc::default(),
            });
            let source = plan.config.build(log_is_empty);
            let ctx = SourceContext::new(
                &plan.id,
                Arc::clone(log),
                Arc::clone(metrics),
                stop.subscribe(),
            )
            .with_state_dir(tickflow_sources::gaps::state_dir(data_dir, &plan.id))
            .with_link(Arc::clone(&handle.link));
            let h = Arc::clone(&handle);
            let config = plan.config.clone();
            let thread = std::thread::Builder::new()
                .name(format!("tickflow-source-{}", plan.id))
                .spawn(move || {
                    let stopping = ctx.clone();
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    let mut first = Some(source);
                    let result = loop {
                        let Ok(rt) = &runtime else {
                            break Err("cannot start the source's runtime".into());
                        };
                        // After a refusal the source is built again: the log is not empty.
                        let source = first.take().unwrap_or_else(|| config.build(false));
                        // A panic is a failure of this source alone.
                        let result = rt.block_on(futures_catch(source.run(ctx.clone())));
                        match result {
                            Err(e)
                                if e.is::<tickflow_core::source::Refused>()
                                    && !stopping.is_stopping() =>
                            {
                                tracing::warn!(source = %h.id, error = %e, "the log refused the source's events; it starts again once the log takes them");
                                *h.state.lock().unwrap_or_else(|e| e.into_inner()) =
                                    ("waiting", Some(e.to_string()));
                                wait_or_stop(&stopping, REFUSED_RETRY);
                                *h.state.lock().unwrap_or_else(|e| e.into_inner()) =
                                    ("running", None);
                            }
                            other => break other,
                        }
                    };
                    let mut state = h.state.lock().unwrap_or_else(|e| e.into_inner());
                    *state = match result {
                        Ok(()) if stopping.is_stopping() => ("stopped", None),
                        Ok(()) => ("finished", None),
                        Err(e) => {
                            tracing::error!(source = %h.id, error = %e, "source failed; the others go on");
                            ("failed", Some(e.to_string()))
                        }
                    };
                })?;
            handles.push(handle);
            threads.push(thread);
        }
        Ok(Self {
            handles,
            threads: Mutex::new(threads),
            metrics: Arc::clone(metrics),
        })
    }

    pub(crate) fn status(&self) -> Vec<SourceStatus> {
        let events: std::collections::HashMap<String, u64> =
            self.metrics.source_events.snapshot().into_iter().collect();
        self.handles
            .iter()
            .map(|h| {
                let (mut state, error) = h.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let reconnecting =
                    h.link
                        .trouble()
                        .filter(|_| state == "running")
                        .map(|t| Reconnecting {
                            secs: t.since.elapsed().as_secs(),
                            attempts: t.attempts,
                            error: t.error,
                        });
                if reconnecting.is_some() {
                    state = "reconnecting";
                }
                SourceStatus {
                    id: h.id.clone(),
                    kind: h.kind,
                    state,
                    events: events.get(&h.id).copied().unwrap_or(0),
                    error,
                    reconnecting,
                }
            })
            .collect()
    }

    /// Waits for every source thread (after the stop signal).
    pub(crate) fn join(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Runs a source's future, turning a panic into an error.
async fn futures_catch(
    run: impl std::future::Future<Output = Result<(), tickflow_core::source::SourceError>>,
) -> Result<(), tickflow_core::source::SourceError> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(result) => result,
        Err(_) => Err("the source panicked".into()),
    }
}
