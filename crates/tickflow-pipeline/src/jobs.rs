//! Scheduled jobs (`[[jobs]]`): each a built-in kind on a cron schedule of its own time
//! zone, optionally on NYSE trading days only, optionally after another job.
//!
//! The scheduler keeps, per job, the fire time it last ran for and how that run ended, in
//! `<data-dir>/jobs.json`, written durably after each run. At start, a job whose fire time
//! passed while tickflow was down runs once (not once per missed time); a job never run
//! before waits for its next fire time. Jobs run one at a time, in fire-time order, so a
//! job that waits for another (`after`) finds that one's run of the same day finished: it
//! runs if that run succeeded, and is recorded as failed, naming the dependency, if it did
//! not. What a job does is the [`JobRunner`]'s: the binary provides it, since reports need
//! the query engine and the mail notifier.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tickflow_core::Shutdown;
use tickflow_core::metrics::Metrics;
use tickflow_model::UnixNanos;

use crate::schedule::Schedule;

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// A compaction round of the lake now, which also applies `[lake] retention_days`.
    Compaction,
    /// The weekly market report of the last week traded, mailed (docs/reports.md).
    WeeklyReport,
    /// The data-quality report of the last trading day, mailed (docs/reports.md).
    DailyReport,
    /// A vendor's history of the last `days` trading days, fetched through a source (the
    /// old `initialize`); chunks already fetched are not fetched again.
    Initialize,
    /// A vendor's history of the previous trading day (the old `daily_update`).
    DailyUpdate,
    /// The lake's files older than `[lake] retention_days` deleted now.
    Retention,
}

impl JobKind {
    /// Every kind, by the name the config uses.
    pub const ALL: [JobKind; 6] = [
        Self::Compaction,
        Self::WeeklyReport,
        Self::DailyReport,
        Self::Initialize,
        Self::DailyUpdate,
        Self::Retention,
    ];

    /// The config's name for it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Compaction => "compaction",
            Self::WeeklyReport => "weekly_report",
            Self::DailyReport => "daily_report",
            Self::Initialize => "initialize",
            Self::DailyUpdate => "daily_update",
            Self::Retention => "retention",
        }
    }

    /// The kind a config names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A validated `[[jobs]]` entry.
#[derive(Clone, Debug)]
pub struct JobPlan {
    /// Unique among jobs; names it in status, metrics and `jobs.json`.
    pub name: String,
    pub kind: JobKind,
    pub cron: String,
    pub timezone: String,
    pub trading_days: bool,
    pub schedule: Schedule,
    /// A job whose run of the same day must have succeeded first.
    pub after: Option<String>,
    /// For reports: the e-mail notifier to send through (default: the only one).
    pub notifier: Option<String>,
    /// For `initialize` and `daily_update`: what to fetch, and through which source.
    pub fetch: Option<Fetch>,
}

/// What an `initialize` or `daily_update` job fetches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    /// The source whose vendor history to use; default: the only one that has one.
    pub source: Option<String>,
    /// `1d` (default), another bar interval, or `trades`.
    pub what: String,
    /// Symbols as the vendor names them; default: the source's own.
    pub symbols: Vec<String>,
    /// Trading days back (`initialize`; default 70).
    pub days: u32,
}

/// `[[jobs]]` as written.
#[derive(Clone, Debug, Deserialize)]
pub struct RawJob {
    pub name: String,
    /// Default: the name.
    pub kind: Option<String>,
    pub cron: String,
    /// IANA name; default `UTC`.
    pub timezone: Option<String>,
    pub trading_days: Option<bool>,
    pub after: Option<String>,
    pub notifier: Option<String>,
    /// `initialize`, `daily_update`: the source id (default: the only one with a history).
    pub source: Option<String>,
    /// `initialize`, `daily_update`: `1d` (default), another interval, or `trades`.
    pub what: Option<String>,
    /// `initialize`, `daily_update`: symbols as the vendor names them.
    pub symbols: Option<Vec<String>>,
    /// `initialize`: trading days back (default 70).
    pub days: Option<i64>,
}

/// How one run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
        }
    }
}

/// A job's last run, as `jobs.json` keeps it and the status shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The fire time it ran for.
    pub scheduled: UnixNanos,
    pub started: UnixNanos,
    pub finished: UnixNanos,
    pub outcome: Outcome,
    /// What it did, or why it failed.
    pub message: String,
}

/// Everything `jobs.json` keeps about one job.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobRecord {
    pub last: Option<Run>,
    pub runs: u64,
    pub failures: u64,
    /// When the scheduler first had the job: a fire time after it that passed while
    /// tickflow was down counts as missed even before the job's first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<UnixNanos>,
}

/// A job as `GET /api/v1/jobs` and `tickflow status` show it.
#[derive(Clone, Debug, Serialize)]
pub struct JobStatus {
    pub name: String,
    pub kind: JobKind,
    pub cron: String,
    pub timezone: String,
    pub trading_days: bool,
    pub after: Option<String>,
    pub next_run: Option<UnixNanos>,
    /// Running now, for this fire time.
    pub running: Option<UnixNanos>,
    #[serde(flatten)]
    pub record: JobRecord,
}

/// Does a job's work; the binary implements it.
#[async_trait::async_trait]
pub trait JobRunner: Send + Sync {
    /// Runs `job` for its fire time `scheduled`: what it did, or why it failed.
    async fn run(&self, job: &JobPlan, scheduled: UnixNanos) -> Result<String, String>;
}

/// The jobs' shared state: what the status shows.
#[derive(Debug, Default)]
pub(crate) struct Board {
    records: BTreeMap<String, JobRecord>,
    next: BTreeMap<String, UnixNanos>,
    running: Option<(String, UnixNanos)>,
}

/// The scheduler of a pipeline's jobs.
#[derive(Debug, Clone)]
pub struct Jobs {
    plans: Arc<Vec<JobPlan>>,
    path: PathBuf,
    board: Arc<Mutex<Board>>,
    metrics: Arc<Metrics>,
}

fn lock(board: &Mutex<Board>) -> std::sync::MutexGuard<'_, Board> {
    board.lock().unwrap_or_else(|e| e.into_inner())
}

impl Jobs {
    /// The jobs of `plans`, with what `<data_dir>/jobs.json` recorded.
    ///
    /// # Errors
    /// `jobs.json` exists but cannot be read: running again what already ran could mail a
    /// report twice.
    pub fn open(
        data_dir: &Path,
        plans: Vec<JobPlan>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let path = data_dir.join("jobs.json");
        let records: BTreeMap<String, JobRecord> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is damaged: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Self {
            plans: Arc::new(plans),
            path,
            board: Arc::new(Mutex::new(Board {
                records,
                ..Board::default()
            })),
            metrics,
        })
    }

    /// Each job with its schedule, next fire time and last run.
    pub fn status(&self) -> Vec<JobStatus> {
        let board = lock(&self.board);
        self.plans
            .iter()
            .map(|p| JobStatus {
                name: p.name.clone(),
                kind: p.kind,
                cron: p.cron.clone(),
                timezone: p.timezone.clone(),
                trading_days: p.trading_days,
                after: p.after.clone(),
                next_run: board.next.get(&p.name).copied(),
                running: board
                    .running
                    .as_ref()
                    .filter(|(n, _)| *n == p.name)
                    .map(|(_, at)| *at),
                record: board.records.get(&p.name).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// Runs the jobs until `stop`: first each run missed while down, then each fire time as
    /// it comes. `now` is the clock (tests pass their own); `stop` is looked at every second.
    pub async fn run(
        &self,
        runner: Arc<dyn JobRunner>,
        stop: Shutdown,
        now: impl Fn() -> UnixNanos + Send + Sync,
    ) {
        let started = now();
        // Jobs due at the same time run dependencies first.
        let depth = |i: usize| {
            let mut n = 0;
            let mut at = self.plans[i].after.as_deref();
            while let Some(name) = at.filter(|_| n < self.plans.len()) {
                n += 1;
                at = self
                    .plans
                    .iter()
                    .find(|p| p.name == name)
                    .and_then(|p| p.after.as_deref());
            }
            n
        };
        // A job new to this data directory waits for its next fire time; one known before
        // (run, or only seen) runs once for what it missed.
        let mut due: Vec<(UnixNanos, usize, usize)> = Vec::new();
        let mut first_seen = false;
        {
            let mut board = lock(&self.board);
            for (i, p) in self.plans.iter().enumerate() {
                let record = board.records.entry(p.name.clone()).or_default();
                if record.last.is_none() && record.since.is_none() {
                    record.since = Some(started);
                    first_seen = true;
                }
                let last = record.last.as_ref().map(|r| r.scheduled).or(record.since);
                let next = match last.and_then(|l| p.schedule.missed(l, started)) {
                    Some(missed) => Some(missed),
                    None => p.schedule.next_after(started),
                };
                if let Some(at) = next {
                    board.next.insert(p.name.clone(), at);
                    due.push((at, depth(i), i));
                }
            }
        }
        if first_seen {
            self.save();
        }
        loop {
            if stop.is_triggered() {
                return;
            }
            due.sort();
            let Some(&(at, _, i)) = due.first() else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let wait = Duration::from_nanos(at.0.saturating_sub(now().0).max(0) as u64);
            if !wait.is_zero() {
                tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                continue;
            }
            due.remove(0);
            let plan = &self.plans[i];
            self.run_one(plan, at, runner.as_ref(), &now).await;
            if let Some(next) = plan.schedule.next_after(at.max(now())) {
                lock(&self.board).next.insert(plan.name.clone(), next);
                due.push((next, depth(i), i));
            } else {
                lock(&self.board).next.remove(&plan.name);
            }
        }
    }

    async fn run_one(
        &self,
        plan: &JobPlan,
        at: UnixNanos,
        runner: &dyn JobRunner,
        now: &(impl Fn() -> UnixNanos + Send + Sync),
    ) {
        let started = now();
        lock(&self.board).running = Some((plan.name.clone(), at));
        tracing::info!(job = %plan.name, scheduled = %at, "job started");
        let result = match self.dependency(plan, at) {
            Err(e) => Err(e),
            Ok(()) => runner.run(plan, at).await,
        };
        let (outcome, message) = match result {
            Ok(m) => (Outcome::Ok, m),
            Err(m) => (Outcome::Failed, m),
        };
        match outcome {
            Outcome::Ok => tracing::info!(job = %plan.name, "job done: {message}"),
            Outcome::Failed => tracing::error!(job = %plan.name, "job failed: {message}"),
        }
        self.metrics
            .job_runs
            .add(&format!("{}/{}", plan.name, outcome.as_str()), 1);
        let run = Run {
            scheduled: at,
            started,
            finished: now(),
            outcome,
            message,
        };
        {
            let mut board = lock(&self.board);
            board.running = None;
            let record = board.records.entry(plan.name.clone()).or_default();
            record.runs += 1;
            if outcome == Outcome::Failed {
                record.failures += 1;
            }
            record.last = Some(run);
        }
        self.save();
    }

    /// Writes `jobs.json` durably.
    fn save(&self) {
        let records = lock(&self.board).records.clone();
        let text = serde_json::to_vec_pretty(&records).unwrap_or_default();
        if let Err(e) = crate::checkpoint::write_durably(&self.path, &text) {
            tracing::error!(path = %self.path.display(), error = %e, "could not record the jobs' runs; a job may run again, or a missed one be skipped, after a restart");
        }
    }

    /// `Ok` when `plan` waits for nothing, or its dependency's run of the same day (in
    /// `plan`'s zone) succeeded, or the dependency had no run that day.
    fn dependency(&self, plan: &JobPlan, at: UnixNanos) -> Result<(), String> {
        let Some(after) = &plan.after else {
            return Ok(());
        };
        let board = lock(&self.board);
        let Some(last) = board.records.get(after).and_then(|r| r.last.as_ref()) else {
            return Ok(());
        };
        if !plan.schedule.same_day(last.scheduled, at) || last.outcome == Outcome::Ok {
            return Ok(());
        }
        Err(format!(
            "not run: it waits for {after}, whose run for {} failed: {}",
            last.scheduled, last.message
        ))
    }
}

/// The `[[jobs]]` entries checked: unique names, known kinds, valid schedules and zones,
/// dependencies on jobs that exist, without cycles. Problems go to `problem(key, message)`.
pub(crate) fn plans(raw: Vec<RawJob>, mut problem: impl FnMut(String, String)) -> Vec<JobPlan> {
    let names: Vec<String> = raw.iter().map(|j| j.name.clone()).collect();
    let mut out: Vec<JobPlan> = Vec::new();
    for (i, j) in raw.into_iter().enumerate() {
        let key = |f: &str| format!("jobs[{i}].{f}");
        if names[..i].contains(&j.name) {
            problem(key("name"), format!("duplicate job name {:?}", j.name));
        }
        let kind_name = j.kind.clone().unwrap_or_else(|| j.name.clone());
        let kind = JobKind::parse(&kind_name);
        if kind.is_none() {
            let known: Vec<&str> = JobKind::ALL.iter().map(|k| k.name()).collect();
            problem(
                key(if j.kind.is_some() { "kind" } else { "name" }),
                format!(
                    "unknown job kind {kind_name:?}: expected one of {} (set `kind` to name a job freely)",
                    known.join(", ")
                ),
            );
        }
        let timezone = j.timezone.clone().unwrap_or_else(|| "UTC".to_string());
        let trading_days = j.trading_days.unwrap_or(false);
        let schedule = match Schedule::parse(&j.cron, &timezone, trading_days) {
            Ok(s) => Some(s),
            Err(e) => {
                let field = if e.starts_with("time zone") {
                    "timezone"
                } else {
                    "cron"
                };
                problem(key(field), e);
                None
            }
        };
        if let Some(after) = &j.after
            && (!names.contains(after) || *after == j.name)
        {
            problem(key("after"), format!("no other job is called {after:?}"));
        }
        let fetches = matches!(kind, Some(JobKind::Initialize | JobKind::DailyUpdate));
        for (field, set) in [
            ("source", j.source.is_some()),
            ("what", j.what.is_some()),
            ("symbols", j.symbols.is_some()),
        ] {
            if set && !fetches && kind.is_some() {
                problem(
                    key(field),
                    format!(
                        "only initialize and daily_update jobs fetch: a {kind_name} job has no {field}"
                    ),
                );
            }
        }
        if j.days.is_some() && kind != Some(JobKind::Initialize) && kind.is_some() {
            problem(
                key("days"),
                "only an initialize job goes back a number of days".into(),
            );
        }
        let days = match j.days {
            Some(d) if !(1..=3650).contains(&d) => {
                problem(key("days"), format!("{d} is out of range (1 to 3650)"));
                70
            }
            Some(d) => d as u32,
            None => 70,
        };
        let fetch = fetches.then(|| Fetch {
            source: j.source.clone(),
            what: j.what.clone().unwrap_or_else(|| "1d".to_string()),
            symbols: j.symbols.clone().unwrap_or_default(),
            days,
        });
        if let (Some(kind), Some(schedule)) = (kind, schedule) {
            out.push(JobPlan {
                fetch,
                name: j.name,
                kind,
                cron: j.cron,
                timezone,
                trading_days,
                schedule,
                after: j.after,
                notifier: j.notifier,
            });
        }
    }
    // A cycle of `after`s would wait for ever: follow each chain.
    for (i, p) in out.iter().enumerate() {
        let mut seen = vec![p.name.as_str()];
        let mut at = p.after.as_deref();
        while let Some(name) = at {
            if seen.contains(&name) {
                problem(
                    format!("jobs[{i}].after"),
                    format!(
                        "{} waits for itself: {} -> {name}",
                        p.name,
                        seen.join(" -> ")
                    ),
                );
                break;
            }
            seen.push(name);
            at = out
                .iter()
                .find(|q| q.name == name)
                .and_then(|q| q.after.as_deref());
        }
    }
    out
}

#[cfg(test)]
mod tests;
