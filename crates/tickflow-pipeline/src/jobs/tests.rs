//! The scheduler on a clock of its own: tokio's paused time, so days pass in an instant and
//! every test is bounded by runs, not by waiting.

use std::sync::Mutex;

use super::*;

fn ts(text: &str) -> UnixNanos {
    UnixNanos::parse(text).unwrap()
}

fn job(name: &str, cron: &str, after: Option<&str>) -> RawJob {
    RawJob {
        name: name.into(),
        kind: Some("compaction".into()),
        cron: cron.into(),
        timezone: None,
        trading_days: None,
        after: after.map(Into::into),
        notifier: None,
        source: None,
        what: None,
        symbols: None,
        days: None,
    }
}

#[test]
fn fetching_jobs_take_a_source_what_and_days_and_others_refuse_them() {
    let mut init = job("init", "0 6 * * *", None);
    init.kind = Some("initialize".into());
    init.days = Some(20);
    init.symbols = Some(vec!["AAPL".into()]);
    let mut update = job("update", "0 13 * * TUE-SAT", None);
    update.kind = Some("daily_update".into());
    update.what = Some("1m".into());
    let planned = plans_ok(vec![init.clone(), update]);
    let fetch = planned[0].fetch.as_ref().expect("initialize fetches");
    assert_eq!((fetch.days, fetch.what.as_str()), (20, "1d"));
    assert_eq!(fetch.symbols, ["AAPL"]);
    assert_eq!(planned[1].fetch.as_ref().unwrap().what, "1m");
    assert!(
        plans_ok(vec![job("c", "0 2 * * *", None)])[0]
            .fetch
            .is_none()
    );

    let mut problems = Vec::new();
    let mut compaction = job("c", "0 2 * * *", None);
    compaction.source = Some("polygon".into());
    let mut update = job("u", "0 13 * * *", None);
    update.kind = Some("daily_update".into());
    update.days = Some(5);
    init.days = Some(0);
    plans(vec![compaction, update, init], |k, m| {
        problems.push(format!("{k}: {m}"))
    });
    assert_eq!(
        problems,
        [
            "jobs[0].source: only initialize and daily_update jobs fetch: a compaction job has no source",
            "jobs[1].days: only an initialize job goes back a number of days",
            "jobs[2].days: 0 is out of range (1 to 3650)",
        ]
    );
}

fn plans_ok(raw: Vec<RawJob>) -> Vec<JobPlan> {
    plans(raw, |k, m| panic!("{k}: {m}"))
}

/// Records each run; fails the jobs named in `failing` while they are there.
#[derive(Default)]
struct Recorder {
    runs: Mutex<Vec<(String, UnixNanos)>>,
    failing: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl JobRunner for Recorder {
    async fn run(&self, job: &JobPlan, scheduled: UnixNanos) -> Result<String, String> {
        self.runs
            .lock()
            .unwrap()
            .push((job.name.clone(), scheduled));
        if self.failing.lock().unwrap().contains(&job.name) {
            Err("the vendor answered 503".into())
        } else {
            Ok("done".into())
        }
    }
}

/// Runs `jobs` from `start` until `runs` runs are recorded, on paused time.
async fn run_until(jobs: &Jobs, recorder: &Arc<Recorder>, start: UnixNanos, runs: usize) {
    let stop = Shutdown::new();
    let origin = tokio::time::Instant::now();
    let clock = move || UnixNanos(start.0 + origin.elapsed().as_nanos() as i64);
    let task = {
        let (jobs, runner, stop) = (
            jobs.clone(),
            Arc::clone(recorder) as Arc<dyn JobRunner>,
            stop.clone(),
        );
        tokio::spawn(async move { jobs.run(runner, stop, clock).await })
    };
    // Bounded: ten simulated days, however the scheduler misbehaves.
    for _ in 0..864_000 {
        if recorder.runs.lock().unwrap().len() >= runs {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        recorder.runs.lock().unwrap().len() >= runs,
        "only {:?} ran in ten days",
        recorder.runs.lock().unwrap()
    );
    stop.trigger();
    task.await.unwrap();
}

fn names(recorder: &Recorder) -> Vec<(String, String)> {
    recorder
        .runs
        .lock()
        .unwrap()
        .iter()
        .map(|(n, at)| (n.clone(), at.to_string()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_new_job_waits_for_its_time_and_a_missed_one_runs_once_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let daily = || plans_ok(vec![job("daily", "0 16 * * *", None)]);
    let metrics = Arc::new(Metrics::default());
    let jobs = Jobs::open(dir.path(), daily(), Arc::clone(&metrics)).unwrap();
    let recorder = Arc::new(Recorder::default());
    // Started on the 16th at 10:00: nothing before 16:00.
    run_until(&jobs, &recorder, ts("2026-11-16T10:00:00Z"), 2).await;
    assert_eq!(
        names(&recorder),
        [
            ("daily".into(), "2026-11-16T16:00:00.000000000Z".into()),
            ("daily".into(), "2026-11-17T16:00:00.000000000Z".into()),
        ]
    );
    // Down from the 17th after its run until the 20th at 10:00: the 18th and 19th were
    // missed, and run once, for the 19th; then the 20th at 16:00.
    let jobs = Jobs::open(dir.path(), daily(), Arc::clone(&metrics)).unwrap();
    let recorder = Arc::new(Recorder::default());
    run_until(&jobs, &recorder, ts("2026-11-20T10:00:00Z"), 2).await;
    assert_eq!(
        names(&recorder),
        [
            ("daily".into(), "2026-11-19T16:00:00.000000000Z".into()),
            ("daily".into(), "2026-11-20T16:00:00.000000000Z".into()),
        ]
    );
    let status = &jobs.status()[0];
    assert_eq!(status.record.runs, 4, "runs are counted across restarts");
    assert_eq!(status.next_run, Some(ts("2026-11-21T16:00:00Z")));
    let last = status.record.last.as_ref().unwrap();
    assert_eq!((last.outcome, last.message.as_str()), (Outcome::Ok, "done"));
    assert!(
        metrics
            .job_runs
            .snapshot()
            .contains(&("daily/ok".to_string(), 4))
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_first_seen_then_down_over_its_time_runs_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let daily = || plans_ok(vec![job("daily", "0 16 * * *", None)]);
    // Seen on the 16th at 10:00, stopped before 16:00 (no run), started again on the 17th.
    let jobs = Jobs::open(dir.path(), daily(), Arc::new(Metrics::default())).unwrap();
    let stop = Shutdown::new();
    stop.trigger();
    let never = Arc::new(Recorder::default());
    jobs.run(Arc::clone(&never) as Arc<dyn JobRunner>, stop, || {
        ts("2026-11-16T10:00:00Z")
    })
    .await;
    assert!(never.runs.lock().unwrap().is_empty());
    let jobs = Jobs::open(dir.path(), daily(), Arc::new(Metrics::default())).unwrap();
    let recorder = Arc::new(Recorder::default());
    run_until(&jobs, &recorder, ts("2026-11-17T09:00:00Z"), 1).await;
    assert_eq!(
        names(&recorder),
        [(
            "daily".to_string(),
            "2026-11-16T16:00:00.000000000Z".to_string()
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_after_a_failed_one_is_reported_failed_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    // Listed first and due at the same time as its dependency, it still runs second.
    let plans = plans_ok(vec![
        job("report", "0 13 * * *", Some("update")),
        job("update", "0 13 * * *", None),
    ]);
    let jobs = Jobs::open(dir.path(), plans, Arc::new(Metrics::default())).unwrap();
    let recorder = Arc::new(Recorder::default());
    recorder.failing.lock().unwrap().push("update".into());
    run_until(&jobs, &recorder, ts("2026-11-16T12:00:00Z"), 1).await;
    let status = jobs.status();
    let report = status[0].record.last.as_ref().unwrap();
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(
        report.message.contains("waits for update, whose run for 2026-11-16T13:00:00.000000000Z failed: the vendor answered 503"),
        "{}",
        report.message
    );
    assert_eq!(
        names(&recorder),
        [(
            "update".to_string(),
            "2026-11-16T13:00:00.000000000Z".to_string()
        )],
        "the report's body never ran"
    );
    // The next day the update works, and the report runs after it.
    recorder.failing.lock().unwrap().clear();
    let jobs = Jobs::open(
        dir.path(),
        jobs.plans.to_vec(),
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let recorder2 = Arc::new(Recorder::default());
    run_until(&jobs, &recorder2, ts("2026-11-17T12:00:00Z"), 2).await;
    assert_eq!(
        names(&recorder2)
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["update", "report"]
    );
    assert_eq!(jobs.status()[0].record.failures, 1);
}

#[tokio::test(start_paused = true)]
async fn trading_day_jobs_skip_weekends_and_holidays() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = job("update", "0 13 * * *", None);
    raw.trading_days = Some(true);
    raw.timezone = Some("America/New_York".into());
    let jobs = Jobs::open(
        dir.path(),
        plans_ok(vec![raw]),
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let recorder = Arc::new(Recorder::default());
    // Wednesday 2026-11-25; Thursday is Thanksgiving, then a weekend.
    run_until(&jobs, &recorder, ts("2026-11-25T12:00:00Z"), 3).await;
    let days: Vec<String> = names(&recorder).into_iter().map(|(_, at)| at).collect();
    assert_eq!(
        days,
        [
            "2026-11-25T18:00:00.000000000Z",
            "2026-11-27T18:00:00.000000000Z",
            "2026-11-30T18:00:00.000000000Z"
        ]
    );
}

#[test]
fn bad_jobs_are_refused_with_their_keys() {
    let mut problems = Vec::new();
    let mut bad_zone = job("a", "0 13 * * *", None);
    bad_zone.timezone = Some("Mars/Olympus".into());
    let mut unknown = job("weekly", "0 16 * * SAT", None);
    unknown.kind = None;
    plans(
        vec![
            bad_zone,
            job("b", "61 * * * *", None),
            job("c", "0 13 * * *", Some("nobody")),
            job("d", "0 13 * * *", Some("e")),
            job("e", "0 13 * * *", Some("d")),
            job("d", "0 14 * * *", None),
            unknown,
        ],
        |k, m| problems.push(format!("{k}: {m}")),
    );
    let expect = [
        "jobs[0].timezone: time zone \"Mars/Olympus\"",
        "jobs[1].cron: \"61 * * * *\"",
        "jobs[2].after: no other job is called \"nobody\"",
        "jobs[5].name: duplicate job name \"d\"",
        "jobs[6].name: unknown job kind \"weekly\"",
        "waits for itself",
    ];
    for e in expect {
        assert!(
            problems.iter().any(|p| p.contains(e)),
            "{e} in {problems:#?}"
        );
    }
}
