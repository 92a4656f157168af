//! NATS JetStream on both sides of `tickflow run`: `tickflow produce --to nats://…`
//! publishes while the pipeline is SIGKILLed and restarted; every tick ends up in the lake
//! exactly once, and the NATS sink publishes every trade back once.
//! Needs the server on 127.0.0.1:4222 (or `TICKFLOW_TEST_NATS`); under CI it must be there.

use std::process::Stdio;

use crate::support::{Server, bin, config, live_trades, sql_count, wait_exit, wait_for};

pub(crate) fn server() -> Option<String> {
    let url =
        std::env::var("TICKFLOW_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    if std::net::TcpStream::connect(url.trim_start_matches("nats://")).is_ok() {
        return Some(url);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "NATS JetStream is required under CI at {url}"
    );
    eprintln!("skipped: no NATS server at {url}");
    None
}

#[test]
fn ticks_published_while_the_pipeline_is_killed_are_stored_once() {
    let Some(url) = server() else { return };
    let unique = format!(
        "{}_{}",
        std::process::id(),
        tickflow_model::UnixNanos::now().0
    );
    let (stream, subject) = (format!("TF_{unique}"), format!("tf.{unique}"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 200\n\n[[sources]]\ntype = \"nats\"\nid = \"market\"\nurl = \"{url}\"\nstream = \"{stream}\"\nsubjects = [\"{subject}.>\"]\nbatch = 500\n\n[[sinks]]\ntype = \"nats\"\nid = \"bus\"\nurl = \"{url}\"\nsubject_prefix = \"out{unique}\"\ntables = [\"trades\"]\nstream = \"OUT_{unique}\"\n"
            ),
        ),
    )
    .unwrap();
    let total = 20_000u64;
    let server = Server::start(&cfg, &data);
    // The source creates the stream; the producer retries until it takes the subject.
    let mut producer = bin()
        .args([
            "produce",
            "--count",
            &total.to_string(),
            "--batch-size",
            "250",
        ])
        .args(["--retries", "50", "--rate", "10000"])
        .args(["--to", &format!("{url}/{subject}.ticks")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_for(&server, "some ticks stored", |s| {
        s["rows_durable"]["trades"].as_i64().unwrap_or(0) > 2_000
    });
    server.kill();
    // The producer goes on publishing into the stream while no pipeline reads it.
    let status = wait_exit(&mut producer, "the producer");
    assert!(status.success(), "produce to NATS failed: {status}");
    let server = Server::start(&cfg, &data);
    // Bounded by the count, not by time: the query sees the lake and what is not flushed yet.
    wait_for(&server, "every published tick stored", |_| {
        live_trades(&server) >= total
    });
    wait_for(&server, "the NATS sink caught up", |s| {
        s["sinks"]
            .as_array()
            .and_then(|a| a.first())
            .is_some_and(|k| k["lag_flushes"] == 0 && k["position"].as_u64().is_some())
            && s["log_lag"] == 0
    });
    server.stop();
    assert_eq!(
        sql_count(&data, "SELECT count(*) FROM trades") as u64,
        total
    );
    // Every trade published back once, across the kill: the duplicate window dropped what a
    // flush written again repeated.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        let mut stream = js.get_stream(format!("OUT_{unique}")).await.unwrap();
        stream.info().await.unwrap().state.messages
    });
    assert_eq!(out, total, "trades published back");
    assert_eq!(
        sql_count(&data, "SELECT count(DISTINCT seq) FROM trades") as u64,
        total
    );
}
