//! `tickflow backfill` end to end against a local server speaking Polygon's REST aggregates:
//! daily bars over `next_url` pages reach the lake and daily metrics once each; a refused
//! request stops the run, and the next run resumes after the last chunk fetched.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::{config, run, sql, sql_count};

const DAY_MS: i64 = 86_400_000;

/// Serves `/v2/aggs/ticker/{T}/range/1/day/{from}/{to}`: a bar per weekday in the range,
/// closing at 100 + the day's number in May, two bars a page. While `refuse_msft` holds,
/// MSFT's requests get a 403. Returns the base URL and the paths asked for.
pub(crate) fn polygon(refuse_msft: Arc<AtomicBool>) -> (String, Arc<Mutex<Vec<String>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&asked);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let own = base.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
                let (log, refuse, base) = (Arc::clone(&log), Arc::clone(&refuse_msft), own.clone());
                async move {
                    log.lock().unwrap().push(uri.to_string());
                    let parts: Vec<&str> = uri.path().split('/').collect();
                    // ["", "v2", "aggs", "ticker", T, "range", "1", "day", from, to]
                    let (ticker, from, to) = (parts[4], parts[8], parts[9]);
                    if ticker == "MSFT" && refuse.load(Ordering::SeqCst) {
                        return (
                            axum::http::StatusCode::FORBIDDEN,
                            r#"{"status":"NOT_AUTHORIZED","request_id":"r","message":"You are not entitled to this data. Please upgrade your plan at https://polygon.io/pricing"}"#.to_string(),
                        );
                    }
                    let (from, to): (i64, i64) = (from.parse().unwrap(), to.parse().unwrap());
                    let mut bars = Vec::new();
                    let mut t = from;
                    while t <= to {
                        // 2024-05-06 (a Monday) is day 0.
                        let day = (t - 1_714_968_000_000).div_euclid(DAY_MS);
                        if day.rem_euclid(7) < 5 {
                            let close = format!("{}.5", 100 + day + 6);
                            bars.push((t, close));
                        }
                        t += DAY_MS;
                    }
                    // Two bars a page; the next page starts after the last one sent.
                    let page: Vec<String> = bars
                        .iter()
                        .take(2)
                        .map(|(t, c)| format!(r#"{{"v":1000,"vw":{c},"o":{c},"c":{c},"h":{c},"l":{c},"t":{t},"n":10}}"#))
                        .collect();
                    let next = match bars.get(2) {
                        Some((t, _)) => format!(r#","next_url":"{base}/v2/aggs/ticker/{ticker}/range/1/day/{t}/{to}?cursor=x""#),
                        None => String::new(),
                    };
                    let body = format!(
                        r#"{{"ticker":"{ticker}","queryCount":{n},"resultsCount":{n},"adjusted":true,"results":[{}],"status":"OK","request_id":"r"{next}}}"#,
                        page.join(","),
                        n = page.len()
                    );
                    (axum::http::StatusCode::OK, body)
                }
            });
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (base, asked)
}

#[test]
fn backfill_fetches_daily_bars_once_and_resumes_after_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let refuse = Arc::new(AtomicBool::new(true));
    let (base, asked) = polygon(Arc::clone(&refuse));
    let cfg = dir.path().join("polygon.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "[[sources]]\ntype = \"polygon\"\nkey = \"${{POLYGON_API_KEY}}\"\nrest_url = \"{base}\"\nsymbols = [\"AAPL\", \"MSFT\"]\nchannels = [\"daily_bars\"]\nrequests_per_minute = 600\n"
            ),
        ),
    )
    .unwrap();
    let backfill = |extra: &[&str]| {
        let mut args = vec![
            "backfill",
            "--config",
            cfg.to_str().unwrap(),
            "--from",
            "2024-05-06",
            "--to",
            "2024-05-17",
        ];
        args.extend_from_slice(extra);
        let out = crate::support::bin()
            .env("POLYGON_API_KEY", "pk-secret-0123")
            .args(&args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("pk-secret-0123"), "{text}");
        (out.status.code(), text)
    };

    // MSFT is refused: the run stops with the vendor's message, AAPL's bars are kept.
    let (code, text) = backfill(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("You are not entitled to this data"), "{text}");
    assert!(text.contains("run the same command again"), "{text}");
    let count = |symbol: &str| {
        sql_count(
            &data,
            &format!("SELECT count(*) FROM bars WHERE symbol = '{symbol}' AND \"interval\" = '1d'"),
        )
    };
    assert_eq!(count("AAPL"), 10, "ten weekdays");
    assert_eq!(count("MSFT"), 0);
    let first_run = asked.lock().unwrap().len();
    assert_eq!(first_run, 5 + 1, "AAPL's five pages, MSFT's refusal");

    // Allowed now: the rerun asks only for MSFT.
    refuse.store(false, Ordering::SeqCst);
    let (code, text) = backfill(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("1 chunk(s) already fetched"), "{text}");
    let second: Vec<String> = asked.lock().unwrap()[first_run..].to_vec();
    assert_eq!(second.len(), 5, "{second:?}");
    assert!(second.iter().all(|u| u.contains("/MSFT/")), "{second:?}");
    assert_eq!(count("MSFT"), 10);

    // Daily metrics from the vendor's bars: Friday 2024-05-17 closed at 117.5 after 116.5.
    let rows = sql(
        &data,
        "SELECT CAST(date AS VARCHAR) AS d, close, daily_pct_change FROM daily_metrics WHERE symbol = 'MSFT' ORDER BY date DESC LIMIT 1",
    );
    assert_eq!(rows[0]["d"], "2024-05-17", "{rows:?}");
    let pct = rows[0]["daily_pct_change"].as_f64().unwrap();
    assert!((pct - (117.5 / 116.5 - 1.0) * 100.0).abs() < 1e-9, "{pct}");

    // Everything again: the rows already stored are dropped as duplicates.
    let (code, text) = backfill(&["--restart"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("20 rows fetched"), "{text}");
    assert_eq!((count("AAPL"), count("MSFT")), (10, 10));
    assert_eq!(sql_count(&data, "SELECT count(*) FROM dlq"), 0);

    let help = run(&["backfill", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("resume"));
}

#[test]
fn backfill_sends_to_a_running_pipeline_and_resumes_from_its_own_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (base, asked) = polygon(Arc::new(AtomicBool::new(false)));
    // The running pipeline: HTTP ingest only, on a data directory of its own.
    let served = dir.path().join("served");
    let run_cfg = dir.path().join("run.toml");
    std::fs::write(
        &run_cfg,
        config(&served, "\n[lake]\nflush_interval_ms = 50\n"),
    )
    .unwrap();
    let server = crate::support::Server::start(&run_cfg, &served);
    let cfg = dir.path().join("polygon.toml");
    std::fs::write(
        &cfg,
        config(
            &dir.path().join("unused"),
            &format!(
                "[[sources]]\ntype = \"polygon\"\nkey = \"pk\"\nrest_url = \"{base}\"\nsymbols = [\"AAPL\"]\nchannels = [\"daily_bars\"]\nrequests_per_minute = 600\n"
            ),
        ),
    )
    .unwrap();
    let args = [
        "backfill",
        "--config",
        cfg.to_str().unwrap(),
        "--from",
        "2024-05-06",
        "--to",
        "2024-05-17",
        "--to-url",
        &server.url,
    ];
    let out = crate::support::run_ok(&args);
    assert!(out.contains("10 rows acknowledged"), "{out}");
    crate::support::wait_for(&server, "ten daily bars in the lake", |s| {
        s["rows_durable"]["bars"].as_u64() == Some(10)
    });
    let closes = sql(
        &served,
        "SELECT CAST(close AS VARCHAR) AS c FROM bars WHERE symbol = 'AAPL' ORDER BY start",
    );
    assert_eq!(closes.len(), 10);
    assert_eq!(closes[9]["c"], "117.500000000", "Friday the 17th, exact");
    // Run again: the progress beside the config says it is done; nothing is asked.
    let before = asked.lock().unwrap().len();
    let out = crate::support::run_ok(&args);
    assert!(out.contains("0 rows acknowledged"), "{out}");
    assert_eq!(asked.lock().unwrap().len(), before);
    assert!(
        !dir.path().join("unused").exists(),
        "the config's own data directory is not touched"
    );
    server.stop();
}

/// The `daily_update` job fetches the previous trading day's bars through the config's
/// source into the running pipeline, and a run again fetches nothing twice.
#[test]
fn a_daily_update_job_fetches_the_previous_trading_day_through_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (base, asked) = polygon(Arc::new(AtomicBool::new(false)));
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "[[sources]]\ntype = \"polygon\"\nkey = \"pk-test\"\nrest_url = \"{base}\"\nsymbols = [\"AAPL\"]\nchannels = [\"daily_bars\"]\nhistory_days = 0\nrequests_per_minute = 600\n\n[[jobs]]\nname = \"daily_update\"\ncron = \"* * * * * *\"\n"
            ),
        ),
    )
    .unwrap();
    let server = crate::support::Server::start(&cfg, &data);
    let job = |s: &serde_json::Value| {
        s["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["name"] == "daily_update"))
            .cloned()
            .unwrap_or_default()
    };
    crate::support::wait_for(&server, "two runs", |s| job(s)["runs"].as_u64() >= Some(2));
    let day =
        tickflow_sources::calendar::trading_day_before(tickflow_model::UnixNanos::now().date());
    let last = job(&server.status())["last"].clone();
    server.stop();
    assert_eq!(last["outcome"], "ok", "{last}");
    assert_eq!(
        last["message"],
        format!(
            "polygon 1d of AAPL from {day} to {day}: 0 rows fetched, 1 chunk(s) already fetched before"
        ),
        "a later run fetches nothing again"
    );
    let bars = sql(
        &data,
        "SELECT CAST(CAST(start AS DATE) AS VARCHAR) AS day FROM bars WHERE symbol = 'AAPL' AND \"interval\" = '1d'",
    );
    assert_eq!(bars.len(), 1, "{bars:?}");
    assert_eq!(bars[0]["day"], day.to_string());
    assert!(
        asked
            .lock()
            .unwrap()
            .iter()
            .all(|path| path.contains("/range/1/day/")),
        "only the day's range was asked for"
    );
}
