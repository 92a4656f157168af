//! Damaged files in the data directory: a query that meets one names it, and never
//! answers with rows read from it; a damaged checkpoint, offset or start record is repaired
//! or refused with the file named, never guessed around (docs/reliability.md).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Server, bin, config, http, run_ok};

#[test]
fn a_truncated_parquet_part_is_named_and_never_read_as_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, config(&data, "\n[lake]\nflush_interval_ms = 50\n")).unwrap();
    let server = Server::start(&cfg, &data);
    for i in 1..=3 {
        let tick = format!(
            "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":{},\"price\":\"18{i}\",\"size\":\"1\",\"trade_id\":\"{i}\"}}",
            tickflow_model::UnixNanos::now().0
        );
        let (code, body) = http(
            "POST",
            &format!("{}/api/v1/ingest", server.url),
            Some(tick.as_bytes()),
        );
        assert_eq!(code, 200, "{body}");
    }
    server.stop();
    let mut parts: Vec<_> = walk(&data.join("lake").join("trades"));
    parts.sort();
    let damaged = parts.first().expect("a Parquet part").clone();
    let len = std::fs::metadata(&damaged).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let out = bin()
        .args(["sql", "--data-dir", data.to_str().unwrap()])
        .arg("SELECT count(*) AS n FROM trades")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "rows from a damaged file: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(&damaged.display().to_string()) && stderr.contains("is damaged"),
        "{stderr}"
    );
}

/// A byte flipped inside a part's pages, where the file still reads as Parquet and would
/// decode into wrong values: the scrub names it, a query that needs it fails with its name,
/// a query that does not still answers, and a pipeline that met it shows it in `/metrics`
/// and its status.
#[test]
fn a_byte_flipped_inside_a_part_is_found_by_the_scrub_and_by_every_query_that_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, config(&data, "\n[lake]\nflush_interval_ms = 50\n")).unwrap();
    let server = Server::start(&cfg, &data);
    let now = tickflow_model::UnixNanos::now().0;
    let ticks: String = (1..=6)
        .map(|i| {
            let symbol = if i % 2 == 0 { "NVDA" } else { "AAPL" };
            format!(
                "{{\"type\":\"trade\",\"symbol\":\"{symbol}\",\"ts_event\":{},\"price\":\"18{i}\",\"size\":\"1\",\"trade_id\":\"{i}\"}}\n",
                now + i
            )
        })
        .collect();
    let (code, body) = http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(ticks.as_bytes()),
    );
    assert_eq!(code, 200, "{body}");
    crate::support::wait_for(&server, "six trades in the lake", |s| {
        s["rows_durable"]["trades"].as_u64() == Some(6)
    });
    server.stop();
    let data_dir = data.to_str().unwrap();
    let clean = run_ok(&["verify", "--data-dir", data_dir]);
    assert!(clean.contains("damaged: 0"), "{clean}");
    let parts = walk(&data.join("lake"));
    assert!(
        clean.contains(&format!("{} match their checksum", parts.len())),
        "{clean}"
    );
    let damaged = parts
        .iter()
        .find(|p| p.parent().is_some_and(|d| d.ends_with("symbol=NVDA")))
        .expect("an NVDA part")
        .clone();
    let mut bytes = std::fs::read(&damaged).unwrap();
    // Past the magic, inside the first page.
    bytes[8] ^= 0x01;
    std::fs::write(&damaged, bytes).unwrap();

    let out = bin()
        .args(["verify", "--data-dir", data_dir])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("damaged: 1")
            && stdout.contains(&damaged.display().to_string())
            && stdout.contains("checksum mismatch"),
        "{stdout}"
    );
    let out = bin()
        .args(["sql", "--data-dir", data_dir])
        .arg("SELECT sum(price) AS s FROM trades")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "rows from a damaged part: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(&damaged.display().to_string()) && stderr.contains("checksum mismatch"),
        "{stderr}"
    );
    // The other symbol's folder does not hold the part: its trades still answer.
    assert_eq!(
        crate::support::sql_count(&data, "SELECT count(*) FROM trades WHERE symbol = 'AAPL'"),
        3
    );

    let server = Server::start(&cfg, &data);
    let (code, body) = http(
        "POST",
        &format!("{}/api/v1/sql", server.url),
        Some(br#"{"sql":"SELECT count(*) AS n FROM trades WHERE symbol = 'NVDA'"}"#),
    );
    assert!(code >= 400, "{code} {body}");
    assert!(body.contains(&damaged.display().to_string()), "{body}");
    let (_, metrics) = http("GET", &format!("{}/metrics", server.url), None);
    assert!(
        metrics
            .lines()
            .any(|l| l == "tickflow_lake_damaged_parts 1"),
        "{metrics}"
    );
    let status = server.status();
    assert_eq!(
        status["damaged_parts"][0]["path"].as_str(),
        Some(damaged.to_str().unwrap()),
        "{status}"
    );
    server.stop();
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}

/// How a file is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Every bit of the middle byte inverted.
    Flip,
    /// Cut to half its length.
    Truncate,
    /// Emptied.
    Empty,
}

fn damage(path: &Path, how: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    match how {
        Damage::Flip => {
            let i = bytes.len() / 2;
            bytes[i] ^= 0xff;
        }
        Damage::Truncate => bytes.truncate(bytes.len() / 2),
        Damage::Empty => bytes.clear(),
    }
    std::fs::write(path, bytes).unwrap();
}

/// Every file under `dir`, whatever its kind.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// What `tickflow run` did with a damaged data directory.
enum Outcome {
    /// It started; the trades it answers with.
    Started(Vec<serde_json::Value>),
    /// It refused; what it said.
    Refused(String),
}

fn start_or_refuse(cfg: &Path, data: &Path) -> Outcome {
    let mut child = bin()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            assert!(!status.success(), "exited cleanly by itself: {stderr}");
            return Outcome::Refused(stderr);
        }
        if let Ok(text) = std::fs::read_to_string(data.join("server.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && v["pid"].as_u64() == Some(u64::from(child.id()))
        {
            // Dropped stderr would block the server once the pipe fills; drain it.
            let mut stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            let server = Server {
                child,
                url: v["url"].as_str().unwrap().to_string(),
            };
            let rows = crate::support::api_rows(&server.url, "SELECT seq, price FROM trades");
            server.stop();
            return Outcome::Started(rows.as_array().unwrap().clone());
        }
        assert!(Instant::now() < deadline, "neither started nor refused");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_damaged_control_file_is_repaired_or_named_and_never_guessed_around() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    let data = pristine.join("data");
    let cfg_text = |root: &Path| {
        config(
            &root.join("data"),
            &format!(
                "\n[lake]\nflush_interval_ms = 50\n\n[[alerts.threshold]]\nname = \"above-1\"\nsymbol = \"NVDA\"\ncondition = \"price > 1\"\n\n[[notifiers]]\ntype = \"log\"\nid = \"desk\"\n\n[[sinks]]\ntype = \"csv\"\nid = \"backup\"\ndir = \"{}\"\n",
                root.join("csv").display()
            ),
        )
    };
    std::fs::create_dir_all(&pristine).unwrap();
    let cfg = pristine.join("run.toml");
    std::fs::write(&cfg, cfg_text(&pristine)).unwrap();
    let server = Server::start(&cfg, &data);
    let out = run_ok(&[
        "produce",
        "--count",
        "300",
        "--batch-size",
        "100",
        "--to",
        &server.url,
    ]);
    assert!(out.contains("300 acknowledged"), "{out}");
    crate::support::wait_for(
        &server,
        "the sink has every flush",
        crate::support::caught_up,
    );
    server.stop();
    let expected = crate::support::sql(&data, "SELECT seq, price FROM trades ORDER BY seq");
    assert_eq!(expected.len(), 300);

    // The files that say where things stand: the checkpoint, the followers' start records
    // and compaction floors, the log's identity and its consumer offsets.
    let control: Vec<PathBuf> = files(&data.join("checkpoint"))
        .into_iter()
        .chain(files(&data.join("log").join("consumers")))
        .collect();
    assert!(control.len() >= 5, "{control:?}");
    let mut report = Vec::new();
    for file in &control {
        let relative = file.strip_prefix(&pristine).unwrap();
        for how in [Damage::Flip, Damage::Truncate, Damage::Empty] {
            let copy = dir.path().join("copy");
            let _ = std::fs::remove_dir_all(&copy);
            let status = std::process::Command::new("cp")
                .args(["-a", pristine.to_str().unwrap(), copy.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success());
            let cfg = copy.join("run.toml");
            std::fs::write(&cfg, cfg_text(&copy)).unwrap();
            let damaged = copy.join(relative);
            damage(&damaged, how);
            let what = format!("{} {how:?}", relative.display());
            match start_or_refuse(&cfg, &copy.join("data")) {
                Outcome::Started(mut rows) => {
                    rows.sort_by_key(|r| r["seq"].as_u64());
                    assert_eq!(rows, expected, "{what}: started with other rows");
                    report.push(format!("{what}: repaired"));
                }
                Outcome::Refused(stderr) => {
                    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
                    assert!(
                        stderr.contains(&damaged.display().to_string()),
                        "{what}: the refusal does not name the file: {stderr}"
                    );
                    report.push(format!("{what}: refused"));
                }
            }
        }
    }
    eprintln!("{}", report.join("\n"));
}
