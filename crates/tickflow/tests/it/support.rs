//! Running the binary and a pipeline under test.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tickflow"));
    c.env("RUST_LOG", "warn");
    c
}

pub(crate) fn run_ok(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("run tickflow");
    assert!(
        out.status.success(),
        "tickflow {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

pub(crate) fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run tickflow")
}

/// `tickflow sql --format json` on a data directory, parsed.
pub(crate) fn sql(data_dir: &Path, query: &str) -> Vec<serde_json::Value> {
    let out = run_ok(&[
        "sql",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--format",
        "json",
        query,
    ]);
    serde_json::from_str::<Vec<serde_json::Value>>(out.trim())
        .unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A single integer from a one-row, one-column query.
pub(crate) fn sql_count(data_dir: &Path, query: &str) -> i64 {
    let rows = sql(data_dir, query);
    let row = rows
        .first()
        .and_then(|r| r.as_object())
        .unwrap_or_else(|| panic!("no row for {query}"));
    let v = row.values().next().expect("one column");
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Polls the server's status until `done` holds for it. The bound is generous for a slow
/// machine and only stops a test that would hang; the status is shown if it is reached.
pub(crate) fn wait_for(server: &Server, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = server.status();
        if done(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never happened; status {s:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A config whose CSV sink `backup` writes under `csv`, which the caller may block by putting
/// a file there; `extra` goes before the sink (a `[lake]` section, say).
pub(crate) fn config_with_csv_sink(data_dir: &Path, csv: &Path, extra: &str, sink: &str) -> String {
    config(
        data_dir,
        &format!(
            "{extra}\n[[sinks]]\ntype = \"csv\"\nid = \"backup\"\ndir = \"{}\"\n{sink}",
            csv.display()
        ),
    )
}

/// A `tickflow run` process with its config in a temp dir.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
}

pub(crate) fn config(data_dir: &Path, extra: &str) -> String {
    format!(
        "data_dir = \"{}\"\n\n[http]\nport = 0\n{extra}\n\n[pgwire]\nport = 0\n",
        data_dir.display()
    )
}

impl Server {
    pub(crate) fn start(config_path: &Path, data_dir: &Path) -> Server {
        let _ = std::fs::remove_file(data_dir.join("server.json"));
        let child = bin()
            .args(["run", "--config", config_path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tickflow run");
        // Owned by a Server from here on, so a failed wait below still kills it on drop.
        let mut server = Server {
            child,
            url: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(data_dir.join("server.json")) {
                let v: serde_json::Value = serde_json::from_str(&text).expect("server.json");
                if v["pid"].as_u64() == Some(u64::from(server.child.id())) {
                    server.url = v["url"].as_str().expect("url").to_string();
                    return server;
                }
            }
            assert!(Instant::now() < deadline, "tickflow run did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn status(&self) -> serde_json::Value {
        let (_, body) = http("GET", &format!("{}/api/v1/status", self.url), None);
        serde_json::from_str(&body).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit.
    pub(crate) fn stop(mut self) {
        self.terminate();
        self.wait_success();
    }

    /// SIGTERM, without waiting.
    pub(crate) fn terminate(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc_kill(self.child.id() as i32, 15);
        }
    }

    /// Waits for the process to exit, which must be a clean exit.
    pub(crate) fn wait_success(mut self) {
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "tickflow run exited with {status}");
    }

    /// Sends SIGHUP: reload the config.
    pub(crate) fn hangup(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc_kill(self.child.id() as i32, 1);
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    /// A failing test must not leave a server running (it would hold the test's pipes open).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A blocking HTTP/1.0 request over a plain socket: (status, body). Status 0 if the
/// server could not be reached.
pub(crate) fn http(method: &str, url: &str, body: Option<&[u8]>) -> (u16, String) {
    http_with(method, url, &[], body)
}

/// [`http`] with extra request headers.
pub(crate) fn http_with(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, String) {
    let (code, _, body) = exchange(method, url, headers, body.unwrap_or_default());
    (code, body)
}

/// A blocking HTTP/1.0 exchange over a plain socket: (status, the response's head with its
/// header names and values lower-cased, body). Status 0 if the server could not be reached.
pub(crate) fn exchange(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return (0, String::new(), String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nhost: {host}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n",
        body.len()
    );
    if stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body))
        .is_err()
    {
        // The server may answer (413) before reading everything; read what it said.
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (0, String::new(), text);
    };
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_ascii_lowercase(), body.to_string())
}

/// The `Retry-After` seconds of a head [`exchange`] returned.
pub(crate) fn retry_after(head: &str) -> u64 {
    head.lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .unwrap_or_else(|| panic!("no Retry-After in {head}"))
        .trim()
        .parse()
        .unwrap()
}

/// `seq` of every trade in the lake (through a running pipeline if there is one).
pub(crate) fn lake_trade_seqs(data: &Path) -> Vec<u64> {
    sql(data, "SELECT seq FROM trades")
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect()
}

/// The first sink's entry in `/api/v1/status`.
pub(crate) fn sink(status: &serde_json::Value) -> &serde_json::Value {
    &status["sinks"][0]
}

/// Every event processed and the first sink past the last flush the lake committed.
pub(crate) fn caught_up(s: &serde_json::Value) -> bool {
    s["log_lag"].as_u64() == Some(0)
        && s["flushes"].as_u64().unwrap_or(0) > 0
        && sink(s)["lag_flushes"].as_u64() == Some(0)
        && sink(s)["position"].as_u64().is_some()
}

/// A client of a pipeline's Postgres-wire endpoint, its connection driven on the caller's
/// runtime.
pub(crate) async fn pg_client(host: &str, port: u16, user: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &format!("host={host} port={port} user={user} dbname=tickflow"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
}

/// Waits for a process the test started (a producer) to exit, and returns how it did.
pub(crate) fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Trades a running pipeline holds, in the lake and not yet flushed, as its SQL answers.
pub(crate) fn live_trades(server: &Server) -> u64 {
    let (_, body) = http(
        "POST",
        &format!("{}/api/v1/sql", server.url),
        Some(br#"{"sql":"SELECT count(*) AS n FROM trades"}"#),
    );
    serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()["rows"][0]["n"]
        .as_u64()
        .unwrap_or(0)
}

/// The rows of `sql` run through the API of the pipeline at `url`.
pub(crate) fn api_rows(url: &str, sql: &str) -> serde_json::Value {
    let body = serde_json::json!({ "sql": sql }).to_string();
    let (code, text) = http("POST", &format!("{url}/api/v1/sql"), Some(body.as_bytes()));
    assert_eq!(code, 200, "{text}");
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["rows"].clone()
}

/// The counter `name{sink="<sink>"}` in `/metrics`.
pub(crate) fn sink_counter(server: &Server, name: &str, sink: &str) -> u64 {
    labelled_counter(server, name, "sink", sink)
}

/// The counter `name{<label>="<value>"}` in `/metrics`, 0 while it has not counted.
pub(crate) fn labelled_counter(server: &Server, name: &str, label: &str, value: &str) -> u64 {
    let (_, metrics) = http("GET", &format!("{}/metrics", server.url), None);
    let prefix = format!("{name}{{{label}=\"{value}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
