//! Sinks behind the lake: a CSV sink keeps every row exactly once across SIGKILL, and a sink
//! that cannot write stalls nothing and catches up from the lake once it can.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{
    Server, bin, caught_up, config_with_csv_sink, http, lake_trade_seqs, run_ok, sink, sql_count,
    wait_for,
};

/// `seq` of every trade row in the CSV sink's trade files; panics on a file without its header.
fn csv_trade_seqs(dir: &Path) -> Vec<u64> {
    let mut seqs = Vec::new();
    let Ok(days) = std::fs::read_dir(dir.join("trades")) else {
        return seqs;
    };
    for day in days {
        let path = day.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("symbol,ts_event,ts_recv,price,size,trade_id,exchange,source,feed,seq"),
            "{} starts with its header, once",
            path.display()
        );
        for line in lines {
            let seq = line.rsplit(',').next().unwrap();
            seqs.push(
                seq.parse()
                    .unwrap_or_else(|e| panic!("{e}: bad row {line:?} in {}", path.display())),
            );
        }
    }
    seqs
}

#[test]
fn csv_sink_keeps_every_row_once_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("csv");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config_with_csv_sink(
            &data,
            &csv,
            "\n[lake]\nflush_interval_ms = 100\n",
            "tables = [\"trades\"]\n",
        ),
    )
    .unwrap();
    let mut next_seq = 0u64;
    for round in 0..3u64 {
        let server = Server::start(&cfg, &data);
        let mut producer = bin()
            .args(["produce", "--count", "1000000", "--batch-size", "200"])
            .args(["--to", &server.url, "--start-seq", &next_seq.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill while the CSV sink is writing: after it has written something this round.
        wait_for(&server, "the CSV sink writes", |s| {
            sink(s)["rows_written"].as_u64().unwrap_or(0) >= 2000
        });
        std::thread::sleep(Duration::from_millis(100 * round));
        server.kill();
        let _ = producer.wait();
        next_seq += 1_000_000;
    }
    let server = Server::start(&cfg, &data);
    wait_for(&server, "the sink catches up", caught_up);
    server.stop();

    let lake = lake_trade_seqs(&data);
    let copied = csv_trade_seqs(&csv);
    let unique: HashSet<u64> = copied.iter().copied().collect();
    assert_eq!(unique.len(), copied.len(), "a trade is in the CSV twice");
    assert_eq!(
        unique,
        lake.iter().copied().collect::<HashSet<u64>>(),
        "the CSV holds exactly the lake's trades"
    );
    assert!(lake.len() >= 6000, "only {} trades stored", lake.len());
}

#[test]
fn a_failing_sink_stalls_nothing_and_catches_up_from_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A regular file where the sink's directory should be: every open fails.
    let csv = dir.path().join("csv");
    std::fs::write(&csv, "in the way").unwrap();
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config_with_csv_sink(
            &data,
            &csv,
            "\n[lake]\nflush_interval_ms = 100\nsink_buffer_rows = 1000\n",
            "",
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let out = run_ok(&[
        "produce",
        "--count",
        "30000",
        "--batch-size",
        "500",
        "--to",
        &server.url,
    ]);
    assert!(out.contains("30000 acknowledged"), "{out}");
    // Ingest, processing, the lake and queries carry on while the sink fails.
    wait_for(&server, "the lake takes every trade", |s| {
        s["log_lag"].as_u64() == Some(0) && s["rows_durable"]["trades"].as_u64() == Some(30000)
    });
    assert_eq!(sql_count(&data, "SELECT count(*) FROM trades"), 30000);
    let s = server.status();
    assert_eq!(sink(&s)["state"], "retrying", "{s:#}");
    assert!(sink(&s)["errors"].as_u64().unwrap() >= 1, "{s:#}");
    assert!(
        sink(&s)["last_error"].as_str().unwrap().contains("opening"),
        "{s:#}"
    );
    assert!(sink(&s)["lag_flushes"].as_u64().unwrap() > 0, "{s:#}");
    assert!(sink(&s)["lag_rows"].as_u64().unwrap() >= 30000, "{s:#}");
    let (_, metrics) = http("GET", &format!("{}/metrics", server.url), None);
    assert!(
        metrics.contains("tickflow_sink_errors_total{sink=\"backup\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("tickflow_sink_lag_rows{sink=\"backup\"} 0\n"),
        "{metrics}"
    );

    // The way is cleared: the sink opens and writes every flush it missed, from the lake
    // (the in-memory buffer holds only 1,000 rows).
    std::fs::remove_file(&csv).unwrap();
    // Its position moves past the last flush a moment before its state says `ok`.
    wait_for(&server, "the sink catches up", |s| {
        caught_up(s) && sink(s)["state"] == "ok"
    });
    let s = server.status();
    assert_eq!(sink(&s)["lag_rows"], 0, "{s:#}");
    server.stop();

    let copied = csv_trade_seqs(&csv);
    let unique: HashSet<u64> = copied.iter().copied().collect();
    assert_eq!(copied.len(), 30000, "every trade once in the CSV");
    assert_eq!(unique, lake_trade_seqs(&data).into_iter().collect());
}

#[test]
fn sinks_that_may_drop_stay_within_their_limit_and_count_what_they_skip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let archive = dir.path().join("archive");
    let recent = dir.path().join("recent");
    let window = dir.path().join("window");
    // The two dropping sinks cannot open until their directories are cleared.
    std::fs::write(&recent, "in the way").unwrap();
    std::fs::write(&window, "in the way").unwrap();
    let cfg = dir.path().join("run.toml");
    let others = format!(
        "\n[[sinks]]\ntype = \"csv\"\nid = \"recent\"\ndir = \"{}\"\noverflow = \"drop_oldest\"\nmax_lag_flushes = 3\n\n[[sinks]]\ntype = \"csv\"\nid = \"window\"\ndir = \"{}\"\noverflow = \"drop_newest\"\nmax_lag_flushes = 3\n",
        recent.display(),
        window.display()
    );
    std::fs::write(
        &cfg,
        config_with_csv_sink(
            &data,
            &archive,
            "\n[lake]\nflush_interval_ms = 100\n",
            &others,
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    // Ten flushes of trades, each waited for, while the dropping sinks cannot write.
    for round in 0..10u64 {
        let before = server.status()["flushes"].as_u64().unwrap_or(0);
        let out = run_ok(&[
            "produce",
            "--count",
            "500",
            "--start-seq",
            &(round * 500).to_string(),
            "--to",
            &server.url,
        ]);
        assert!(out.contains("500 acknowledged"), "{out}");
        wait_for(&server, "a flush of this round", |s| {
            s["flushes"].as_u64().unwrap_or(0) > before && s["log_lag"].as_u64() == Some(0)
        });
    }
    std::fs::remove_file(&recent).unwrap();
    std::fs::remove_file(&window).unwrap();
    let all_caught_up = |s: &serde_json::Value| {
        s["sinks"].as_array().is_some_and(|sinks| {
            sinks.len() == 3
                && sinks
                    .iter()
                    .all(|k| k["state"] == "ok" && k["lag_flushes"].as_u64() == Some(0))
        })
    };
    wait_for(&server, "every sink caught up", all_caught_up);
    let written = |id| crate::support::sink_counter(&server, "tickflow_sink_rows_total", id);
    let dropped =
        |id| crate::support::sink_counter(&server, "tickflow_sink_dropped_rows_total", id);
    let skipped =
        |id| crate::support::sink_counter(&server, "tickflow_sink_dropped_flushes_total", id);
    let total = written("backup");
    assert_eq!(skipped("backup"), 0, "block never drops");
    for id in ["recent", "window"] {
        assert!(skipped(id) >= 6, "{id}: {} flushes skipped", skipped(id));
        assert!(dropped(id) > 0 && written(id) > 0, "{id}");
        assert_eq!(
            written(id) + dropped(id),
            total,
            "{id}: every row written or counted as dropped"
        );
    }
    server.stop();

    let lake: HashSet<u64> = lake_trade_seqs(&data).into_iter().collect();
    assert_eq!(lake.len(), 5000);
    let archived = csv_trade_seqs(&archive);
    assert_eq!(archived.len(), 5000, "the blocking sink has every trade");
    for dir in [&recent, &window] {
        let kept = csv_trade_seqs(dir);
        let unique: HashSet<u64> = kept.iter().copied().collect();
        assert_eq!(unique.len(), kept.len(), "{}: a trade twice", dir.display());
        assert!(
            unique.is_subset(&lake) && unique.len() < 5000,
            "{}",
            dir.display()
        );
    }
    // drop_oldest kept the newest trades; drop_newest the oldest of its backlog.
    let max = |dir: &Path| csv_trade_seqs(dir).into_iter().max().unwrap();
    let min = |dir: &Path| csv_trade_seqs(dir).into_iter().min().unwrap();
    assert_eq!(max(&recent), 4999);
    assert!(
        min(&window) < min(&recent),
        "{} {}",
        min(&window),
        min(&recent)
    );
}
