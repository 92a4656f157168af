//! Readiness: whether this pipeline is doing its job, check by check, for `GET /readyz`.
//!
//! It fails closed: ready only when the pipeline runs, its log takes appends (or has not
//! refused one for [`LOG_RETRY_SECS`]), its writes to the lake have not been
//! failing for [`LAKE_GRACE_SECS`], data has arrived at some point, every required source has delivered within `[health] source_silence_secs` (counted only
//! in market hours on the `nyse` calendar), and every sink and notifier is within
//! `[health] sink_lag_flushes` of the lake. Each check says what it saw, so an unready answer
//! names the source or sink at fault.

use std::collections::HashMap;
use std::sync::Mutex;

use tickflow_model::UnixNanos;
use tickflow_sources::calendar;

use crate::config::HealthPlan;
use crate::feed_watch::Hours;
use crate::runtime::Status;

/// One check of [`Readiness`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Check {
    /// `pipeline`, `log`, `lake`, `data`, `source`, `sink` or `notifier`.
    pub check: &'static str,
    /// The component's id, for `source`, `sink` and `notifier`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub ok: bool,
    /// What it saw.
    pub detail: String,
}

/// `GET /readyz`'s answer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}

/// When each source's count of events last moved, sampled from the ingest counters: a
/// source is silent since the first sample that saw its current count.
#[derive(Debug)]
pub struct Freshness {
    seen: Mutex<HashMap<String, (u64, UnixNanos)>>,
    /// When sampling began: a source not seen yet has been silent since then.
    started: UnixNanos,
}

impl Freshness {
    /// Sampling from `now` on.
    pub fn new(now: UnixNanos) -> Self {
        Self {
            seen: Mutex::default(),
            started: now,
        }
    }

    /// Takes a sample of every source's event count (`Status::ingested`).
    pub fn observe<'a>(
        &self,
        counts: impl IntoIterator<Item = (&'a String, &'a u64)>,
        now: UnixNanos,
    ) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (id, &n) in counts {
            let entry = seen.entry(id.clone()).or_insert((n, now));
            if entry.0 != n {
                *entry = (n, now);
            }
        }
    }

    /// When `id`'s count last moved (or was first seen), and the count then; a source with
    /// no count yet has sent nothing since sampling began.
    fn last_moved(&self, id: &str) -> (u64, UnixNanos) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
            .unwrap_or((0, self.started))
    }
}

/// The sources `plan` requires: those it lists, else every source that fetches data
/// itself (HTTP ingest waits to be sent; a replay ends).
fn required(plan: &HealthPlan, status: &Status) -> Vec<String> {
    match &plan.sources {
        Some(ids) => ids.clone(),
        None => status
            .sources
            .iter()
            .filter(|s| !matches!(s.kind, "http" | "replay"))
            .map(|s| s.id.clone())
            .collect(),
    }
}

/// Seconds `since` counts as silence at `now`: always, or on the NYSE calendar only within
/// today's regular session, from the bell.
fn silence(hours: Hours, since: UnixNanos, now: UnixNanos) -> Option<i64> {
    let from = match hours {
        Hours::Always => since,
        Hours::Nyse => match calendar::session(calendar::exchange_date(now)) {
            Some((open, close)) if open <= now && now < close => since.max(open),
            _ => return None,
        },
    };
    Some((now.0 - from.0).max(0) / 1_000_000_000)
}

/// How long the lake's writes may fail before `/readyz` says not ready.
pub const LAKE_GRACE_SECS: u64 = 30;

/// How long after the log's last failed append `/readyz` says not ready. An outage ends
/// only with an append that succeeds, which a balancer that took the process out of
/// rotation would never send: past this, the next request tells.
pub const LOG_RETRY_SECS: u64 = 10;

/// Every check on `status`, with `fresh` sampled up to `now`.
pub fn readiness(
    plan: &HealthPlan,
    status: &Status,
    fresh: &Freshness,
    stopping: bool,
    now: UnixNanos,
) -> Readiness {
    let mut checks = Vec::new();
    let pipeline = match (&status.failure, stopping) {
        (Some(f), _) => (false, format!("failed: {f}")),
        (None, true) => (false, "stopping".to_string()),
        (None, false) => (true, format!("running for {:.0} s", status.uptime_secs)),
    };
    checks.push(Check {
        check: "pipeline",
        id: None,
        ok: pipeline.0,
        detail: pipeline.1,
    });
    // Nothing can be acknowledged while the log refuses appends.
    let (ok, detail) = match &status.log_retrying {
        None => (true, "taking appends".to_string()),
        Some(r) => (
            r.last_secs >= LOG_RETRY_SECS,
            format!(
                "appends failing for {} s, {} refused (the last {} s ago), senders retry: {}",
                r.secs, r.attempts, r.last_secs, r.error
            ),
        ),
    };
    checks.push(Check {
        check: "log",
        id: None,
        ok,
        detail,
    });
    // Acknowledged data waits in the log while the lake is away, and queries still see it:
    // a short outage (an S3 hiccup) keeps the process in rotation. Past the grace nothing
    // has become durable in the lake for a while and the backlog grows: not ready.
    let (ok, detail) = match &status.lake_retrying {
        None => (true, format!("flush {} published", status.published_flush)),
        Some(r) => (
            r.secs < LAKE_GRACE_SECS,
            format!(
                "writes failing for {} s (not ready after {LAKE_GRACE_SECS} s), retrying, {} attempts: {}",
                r.secs, r.attempts, r.error
            ),
        ),
    };
    checks.push(Check {
        check: "lake",
        id: None,
        ok,
        detail,
    });
    let arrived = status.log_next_offset > 0 || status.ingested.values().any(|n| *n > 0);
    checks.push(Check {
        check: "data",
        id: None,
        ok: arrived,
        detail: if arrived {
            format!("{} records in the log", status.log_next_offset)
        } else {
            "no data has arrived yet".into()
        },
    });
    let limit = plan.source_silence.as_secs() as i64;
    for id in required(plan, status) {
        let state = status.sources.iter().find(|s| s.id == id);
        let (ok, detail) = match state {
            Some(s) if s.state == "failed" => (
                false,
                format!(
                    "failed: {}",
                    s.error.as_deref().unwrap_or("no reason given")
                ),
            ),
            Some(s) if s.state == "finished" => (true, "finished its input".into()),
            _ => {
                let (n, since) = fresh.last_moved(&id);
                match silence(plan.hours, since, now) {
                    None => (true, format!("{n} events; the market is closed")),
                    Some(secs) if secs >= limit && n == 0 => (
                        false,
                        format!("has sent nothing in {secs} s (limit {limit} s)"),
                    ),
                    Some(secs) if secs >= limit => (
                        false,
                        format!("silent for {secs} s (limit {limit} s) after {n} events"),
                    ),
                    Some(_) if n == 0 => (true, "nothing yet, within the limit".to_string()),
                    Some(secs) => (true, format!("{n} events, the last {secs} s ago")),
                }
            }
        };
        // Within the silence limit, but an operator should see why nothing comes.
        let detail = match state.and_then(|s| s.reconnecting.as_ref()) {
            Some(r) => format!(
                "{detail}; reconnecting for {} s, {} failures: {}",
                r.secs, r.attempts, r.error
            ),
            None => detail,
        };
        checks.push(Check {
            check: "source",
            id: Some(id),
            ok,
            detail,
        });
    }
    for (kind, followers) in [("sink", &status.sinks), ("notifier", &status.notifiers)] {
        for f in followers {
            let (ok, detail) = if f.state == "failed" {
                (
                    false,
                    format!(
                        "failed: {}",
                        f.last_error.as_deref().unwrap_or("no reason given")
                    ),
                )
            } else if f.lag_flushes > plan.sink_lag_flushes {
                (
                    false,
                    format!(
                        "{} flushes behind the lake (limit {}){}",
                        f.lag_flushes,
                        plan.sink_lag_flushes,
                        f.last_error
                            .as_deref()
                            .map(|e| format!("; last error: {e}"))
                            .unwrap_or_default()
                    ),
                )
            } else if f.state == "retrying" {
                // Within the lag budget, but an operator should see why it is behind.
                (
                    true,
                    format!(
                        "{} flushes behind the lake, retrying: {}",
                        f.lag_flushes,
                        f.last_error.as_deref().unwrap_or("no reason given")
                    ),
                )
            } else {
                (true, format!("{} flushes behind the lake", f.lag_flushes))
            };
            checks.push(Check {
                check: kind,
                id: Some(f.id.clone()),
                ok,
                detail,
            });
        }
    }
    Readiness {
        ready: checks.iter().all(|c| c.ok),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::SinkStatus;
    use crate::sources::SourceStatus;

    const S: i64 = 1_000_000_000;

    fn plan(hours: Hours) -> HealthPlan {
        HealthPlan {
            source_silence: Duration::from_secs(60),
            hours,
            sink_lag_flushes: 10,
            sources: None,
        }
    }

    fn status(events: u64, sink_lag: u64) -> Status {
        let mut s = Status::empty();
        s.log_next_offset = events;
        s.ingested.insert("feed".into(), events);
        s.sources = vec![
            SourceStatus {
                id: "feed".into(),
                kind: "alpaca",
                state: "running",
                events,
                error: None,
                reconnecting: None,
            },
            SourceStatus {
                id: "web".into(),
                kind: "http",
                state: "running",
                events: 0,
                error: None,
                reconnecting: None,
            },
        ];
        s.sinks = vec![SinkStatus {
            id: "pg".into(),
            kind: "postgres",
            state: "behind",
            position: Some(1),
            lag_flushes: sink_lag,
            lag_rows: 0,
            reading_from: "memory",
            rows_written: 0,
            errors: 0,
            last_error: None,
        }];
        s
    }

    fn failed(r: &Readiness) -> Vec<String> {
        r.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| {
                format!(
                    "{} {}: {}",
                    c.check,
                    c.id.as_deref().unwrap_or(""),
                    c.detail
                )
            })
            .collect()
    }

    #[test]
    fn never_ready_before_any_data_arrived() {
        let fresh = Freshness::new(UnixNanos(0));
        let s = status(0, 0);
        fresh.observe(&s.ingested, UnixNanos(0));
        let r = readiness(&plan(Hours::Always), &s, &fresh, false, UnixNanos(0));
        assert!(!r.ready);
        assert_eq!(failed(&r), vec!["data : no data has arrived yet"]);
    }

    #[test]
    fn a_silent_source_is_named_until_it_sends_again() {
        let fresh = Freshness::new(UnixNanos(0));
        let p = plan(Hours::Always);
        fresh.observe(&status(5, 0).ingested, UnixNanos(0));
        let r = readiness(&p, &status(5, 0), &fresh, false, UnixNanos(59 * S));
        assert!(r.ready, "{:?}", failed(&r));
        let r = readiness(&p, &status(5, 0), &fresh, false, UnixNanos(61 * S));
        assert_eq!(
            failed(&r),
            vec!["source feed: silent for 61 s (limit 60 s) after 5 events"],
            "the HTTP source is not required"
        );
        fresh.observe(&status(6, 0).ingested, UnixNanos(62 * S));
        let r = readiness(&p, &status(6, 0), &fresh, false, UnixNanos(62 * S));
        assert!(r.ready, "{:?}", failed(&r));
    }

    #[test]
    fn a_reconnecting_source_says_why_and_fails_only_past_the_silence_limit() {
        let fresh = Freshness::new(UnixNanos(0));
        let p = plan(Hours::Always);
        let mut s = status(5, 0);
        s.sources[0].state = "reconnecting";
        s.sources[0].reconnecting = Some(crate::sources::Reconnecting {
            secs: 12,
            attempts: 3,
            error: "connect: connection refused".into(),
        });
        fresh.observe(&s.ingested, UnixNanos(0));
        let r = readiness(&p, &s, &fresh, false, UnixNanos(20 * S));
        assert!(r.ready, "{:?}", failed(&r));
        let check = r.checks.iter().find(|c| c.check == "source").unwrap();
        assert_eq!(
            check.detail,
            "5 events, the last 20 s ago; reconnecting for 12 s, 3 failures: connect: connection refused"
        );
        let r = readiness(&p, &s, &fresh, false, UnixNanos(61 * S));
        assert_eq!(
            failed(&r),
            vec![
                "source feed: silent for 61 s (limit 60 s) after 5 events; reconnecting for 12 s, 3 failures: connect: connection refused"
            ]
        );
    }

    #[test]
    fn on_the_nyse_calendar_a_quiet_night_is_ready() {
        let fresh = Freshness::new(UnixNanos(0));
        // 2026-12-05 is a Saturday.
        let saturday = UnixNanos::parse("2026-12-05T16:00:00Z").unwrap();
        fresh.observe(&status(5, 0).ingested, UnixNanos(saturday.0 - 86_400 * S));
        let r = readiness(&plan(Hours::Nyse), &status(5, 0), &fresh, false, saturday);
        assert!(r.ready, "{:?}", failed(&r));
        let r = readiness(&plan(Hours::Always), &status(5, 0), &fresh, false, saturday);
        assert!(!r.ready);
        // Friday 2026-12-04, 15:00 New York: in session, silent since the bell at 09:30
        // (the last event came the day before).
        let friday = UnixNanos::parse("2026-12-04T20:00:00Z").unwrap();
        let fresh = Freshness::new(UnixNanos(0));
        fresh.observe(&status(5, 0).ingested, UnixNanos(friday.0 - 86_400 * S));
        let r = readiness(&plan(Hours::Nyse), &status(5, 0), &fresh, false, friday);
        assert_eq!(
            failed(&r),
            vec![format!(
                "source feed: silent for {} s (limit 60 s) after 5 events",
                (5 * 3600 + 30 * 60)
            )]
        );
    }

    #[test]
    fn a_source_not_heard_from_since_the_start_counts_from_the_start() {
        let started = UnixNanos::parse("2026-12-05T10:00:00Z").unwrap();
        let fresh = Freshness::new(started);
        let mut s = status(0, 0);
        s.log_next_offset = 9; // data from before the restart
        s.ingested.clear();
        // A Saturday: on the NYSE calendar a feed that said nothing since the start is fine.
        let later = UnixNanos(started.0 + 3600 * S);
        let r = readiness(&plan(Hours::Nyse), &s, &fresh, false, later);
        assert!(r.ready, "{:?}", failed(&r));
        let r = readiness(&plan(Hours::Always), &s, &fresh, false, later);
        assert_eq!(
            failed(&r),
            vec!["source feed: has sent nothing in 3600 s (limit 60 s)"]
        );
        let r = readiness(
            &plan(Hours::Always),
            &s,
            &fresh,
            false,
            UnixNanos(started.0 + S),
        );
        assert!(
            r.ready,
            "within the limit after the start: {:?}",
            failed(&r)
        );
    }

    #[test]
    fn a_sink_past_its_budget_is_named() {
        let fresh = Freshness::new(UnixNanos(0));
        fresh.observe(&status(5, 0).ingested, UnixNanos(0));
        let r = readiness(
            &plan(Hours::Always),
            &status(5, 11),
            &fresh,
            false,
            UnixNanos(S),
        );
        assert_eq!(
            failed(&r),
            vec!["sink pg: 11 flushes behind the lake (limit 10)"]
        );
        let r = readiness(
            &plan(Hours::Always),
            &status(5, 10),
            &fresh,
            false,
            UnixNanos(S),
        );
        assert!(r.ready);
        // Within the budget but failing: ready, and the reason is shown.
        let mut s = status(5, 3);
        s.sinks[0].state = "retrying";
        s.sinks[0].last_error = Some("PostgreSQL, connecting: connection refused".into());
        let r = readiness(&plan(Hours::Always), &s, &fresh, false, UnixNanos(S));
        assert!(r.ready);
        let sink = r.checks.iter().find(|c| c.check == "sink").unwrap();
        assert_eq!(
            sink.detail,
            "3 flushes behind the lake, retrying: PostgreSQL, connecting: connection refused"
        );
    }

    #[test]
    fn a_stopping_or_failed_pipeline_is_not_ready() {
        let fresh = Freshness::new(UnixNanos(0));
        fresh.observe(&status(5, 0).ingested, UnixNanos(0));
        let r = readiness(
            &plan(Hours::Always),
            &status(5, 0),
            &fresh,
            true,
            UnixNanos(0),
        );
        assert_eq!(failed(&r), vec!["pipeline : stopping"]);
    }

    #[test]
    fn a_lake_whose_writes_fail_is_named_until_one_succeeds() {
        let fresh = Freshness::new(UnixNanos(0));
        fresh.observe(&status(5, 0).ingested, UnixNanos(0));
        let mut s = status(5, 0);
        let failing = |secs| crate::LakeRetrying {
            secs,
            attempts: 3,
            error: "PUT timed out".into(),
        };
        // A short outage is shown, and the process stays in rotation.
        s.lake_retrying = Some(failing(4));
        let r = readiness(&plan(Hours::Always), &s, &fresh, false, UnixNanos(0));
        assert!(failed(&r).is_empty(), "{:?}", failed(&r));
        let lake = r.checks.iter().find(|c| c.check == "lake").unwrap();
        assert!(
            lake.detail.contains("writes failing for 4 s"),
            "{}",
            lake.detail
        );
        s.lake_retrying = Some(failing(LAKE_GRACE_SECS));
        let r = readiness(&plan(Hours::Always), &s, &fresh, false, UnixNanos(0));
        assert_eq!(
            failed(&r),
            vec![
                "lake : writes failing for 30 s (not ready after 30 s), retrying, 3 attempts: PUT timed out"
            ]
        );
        s.lake_retrying = None;
        let r = readiness(&plan(Hours::Always), &s, &fresh, false, UnixNanos(0));
        assert!(failed(&r).is_empty(), "{:?}", failed(&r));
    }

    #[test]
    fn a_log_that_refuses_appends_is_named_until_one_succeeds() {
        let fresh = Freshness::new(UnixNanos(0));
        fresh.observe(&status(5, 0).ingested, UnixNanos(0));
        let mut s = status(5, 0);
        let failing = |last_secs| crate::LogRetrying {
            secs: 12,
            last_secs,
            attempts: 7,
            error: "NATS log: publishing: timed out".into(),
        };
        s.log_retrying = Some(failing(0));
        let r = readiness(&plan(Hours::Always), &s, &fresh, false, UnixNanos(0));
        assert_eq!(
            failed(&r),
            vec![
                "log : appends failing for 12 s, 7 refused (the last 0 s ago), senders retry: NATS log: publishing: timed out"
            ]
        );
        // Nothing refused for a while: back in rotation, so a request can find out.
        s.log_retrying = Some(failing(LOG_RETRY_SECS));
        let r = readiness(&plan(Hours::Always), &s, &fresh, false, UnixNanos(0));
        assert!(failed(&r).is_empty(), "{:?}", failed(&r));
        s.log_retrying = None;
        let r = readiness(&plan(Hours::Always), &s, &fresh, false, UnixNanos(0));
        assert!(r.ready, "{:?}", failed(&r));
        assert_eq!(r.checks[1].detail, "taking appends");
    }
}
