//! What each scheduled job kind does (`tickflow_pipeline::jobs`): the scheduler decides
//! when; this runner does the work with the pipeline, the query engine and the notifiers.

use std::path::PathBuf;
use std::sync::Arc;

use tickflow_model::UnixNanos;
use tickflow_notify::report::IsoWeek;
use tickflow_pipeline::Pipeline;
use tickflow_pipeline::jobs::{Fetch, JobKind, JobPlan, JobRunner};
use tickflow_sources::history::What;

impl Runner {
    /// Fetches a vendor's history from `from` to `to` through the job's source and appends
    /// it to this pipeline's log, a page at a time, as `tickflow backfill` would.
    async fn fetch(
        &self,
        name: &str,
        fetch: &Fetch,
        (from, to): (tickflow_model::Date, tickflow_model::Date),
    ) -> Result<String, String> {
        let civil = |d: tickflow_model::Date| -> Result<jiff::civil::Date, String> {
            d.to_string().parse().map_err(|e| format!("{d}: {e}"))
        };
        let what: What = fetch.what.parse()?;
        let plan = self.pipeline.plan();
        let (id, job) = super::backfill::job(
            plan,
            "the config",
            fetch.source.as_deref(),
            what,
            &fetch.symbols,
            (civil(from)?, civil(to)?),
            (&self.data_dir.join("backfill"), Some(name)),
        )
        .map_err(|e| format!("{e:#}"))?;
        let pipeline = Arc::clone(&self.pipeline);
        job.run_into(
            || pipeline.is_stopping(),
            |events| {
                pipeline
                    .ingest(&id, events)
                    .map(|_| ())
                    .map_err(|e| e.to_string().into())
            },
        )
        .await
        .map_err(|e| format!("{id}: {e}"))?;
        let p = &job.progress;
        let (done, total) = (
            p.chunks_done.load(std::sync::atomic::Ordering::Relaxed),
            p.chunks_total.load(std::sync::atomic::Ordering::Relaxed),
        );
        if done < total {
            // Stopped by a shutdown: failed, so the missed run is not taken as done.
            return Err(format!(
                "{id}: stopped after {done} of {total} chunk(s); the next run goes on from there"
            ));
        }
        Ok(format!(
            "{id} {} of {} from {from} to {to}: {} rows fetched, {} chunk(s) already fetched before",
            what.as_str(),
            job.symbols.join(","),
            p.events.load(std::sync::atomic::Ordering::Relaxed),
            p.chunks_skipped.load(std::sync::atomic::Ordering::Relaxed)
        ))
    }
}

/// Runs the jobs of a `tickflow run`.
pub(crate) struct Runner {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) data_dir: PathBuf,
}

#[async_trait::async_trait]
impl JobRunner for Runner {
    async fn run(&self, job: &JobPlan, scheduled: UnixNanos) -> Result<String, String> {
        // Dates are the fire time's in the job's own zone.
        let day = job
            .schedule
            .local_date(scheduled)
            .unwrap_or_else(|| scheduled.date());
        let data_dir = self.data_dir.clone();
        let mailer = || super::report::mailer(Some(self.pipeline.plan()), job.notifier.as_deref());
        match job.kind {
            JobKind::Compaction => self.pipeline.compact_now().await,
            JobKind::WeeklyReport => {
                // Saturday's run reports the week just traded.
                let week = IsoWeek::last_traded(day);
                let mailer = mailer()?;
                let done =
                    apart(move || super::report::weekly_report(&data_dir, week, Some(&mailer)))
                        .await?;
                Ok(format!("{week}: {}", done.replace('\n', "; ")))
            }
            JobKind::DailyReport => {
                // Tuesday morning's run covers Monday, Monday morning's Friday.
                let date = tickflow_sources::calendar::trading_day_before(day);
                let mailer = mailer()?;
                let done =
                    apart(move || super::report::daily_report(&data_dir, date, Some(&mailer)))
                        .await?;
                let subject = done.lines().next().unwrap_or_default().to_string();
                Ok(format!("{date}: {subject}"))
            }
            JobKind::Retention => {
                // Retention is applied by the lake's compaction round, between flushes.
                let days = self.pipeline.plan().lake.retention_days.unwrap_or(0);
                let done = self.pipeline.compact_now().await?;
                Ok(format!(
                    "retention applied: trades and quotes older than {days} day(s) deleted; {done}"
                ))
            }
            JobKind::Initialize | JobKind::DailyUpdate => {
                let fetch = job
                    .fetch
                    .clone()
                    .ok_or("a fetching job without what to fetch")?;
                let to = tickflow_sources::calendar::trading_day_before(day);
                let mut from = to;
                if job.kind == JobKind::Initialize {
                    for _ in 1..fetch.days {
                        from = tickflow_sources::calendar::trading_day_before(from);
                    }
                }
                self.fetch(&job.name, &fetch, (from, to)).await
            }
        }
    }
}

/// Runs a report on a thread of its own: it blocks on its own runtime (SQL to this
/// pipeline, SMTP), which must not be one of this runtime's threads.
async fn apart(
    report: impl FnOnce() -> anyhow::Result<String> + Send + 'static,
) -> Result<String, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(report().map_err(|e| format!("{e:#}")));
    });
    rx.await
        .map_err(|_| "the report's thread ended without an answer".to_string())?
}
