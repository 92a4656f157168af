//! Contract tests that every connector runs once (docs/CONNECTORS.md): the same checks for
//! every source and every sink, so a new one proves the guarantees the pipeline relies on.
//!
//! They are async and runtime-agnostic: call them from the test runtime of the connector's
//! crate. They panic with a message naming the broken rule, as tests do.

use std::collections::BTreeMap;
use std::sync::Arc;

use tickflow_model::{
    Alert, AlertDelivery, AlertKind, Bar, BarInterval, DailyMetric, Date, DeliveryStatus,
    DlqRecord, Price, Qty, Quote, RejectReason, Rows, Severity, Symbol, Trade, UnixNanos, Volume,
};

use crate::codec::{Batch, Decoder, rejected};
use crate::metrics::Metrics;
use crate::sink::{Flush, Sink};
use crate::source::{Append, Source, SourceContext, SourceError};

mod proxy;
pub use proxy::{Fault, Proxy};

/// Rows per table that the sink holds, by table name, as its store reports them.
pub type Counts = BTreeMap<String, u64>;

/// Rows of every table, `n` of each, with natural keys that differ for each `batch`.
pub fn sample_rows(batch: u64, n: u64) -> Rows {
    let day = 86_400_000_000_000i64;
    // 2026-11-23 14:30 UTC, then one day further for each batch.
    let base = 1_795_444_200_000_000_000i64 + batch as i64 * day;
    let symbol = |i: u64| {
        Symbol::parse(["NVDA", "BTC-USD", "AAPL"][i as usize % 3]).expect("a valid symbol")
    };
    let price = |i: u64| Price::from_raw(181_250_000_000 + i as i64 * 10_000_000, 2);
    let source: Arc<str> = Arc::from("contract");
    let mut rows = Rows::default();
    for i in 0..n {
        let ts = UnixNanos(base + i as i64 * 1_000_000);
        rows.trades.push(Trade {
            symbol: symbol(i),
            ts_event: ts,
            ts_recv: UnixNanos(ts.0 + 5),
            price: price(i),
            size: Qty::from_raw(100_000_000_000, 0),
            trade_id: Some(format!("{batch}-{i}").as_str().into()),
            exchange: (i % 2 == 0).then(|| Arc::from("V, \"quoted\"")),
            source: Arc::clone(&source),
            feed: Arc::from("contract:test"),
            seq: Some(batch * 1_000_000 + i),
        });
        rows.quotes.push(Quote {
            symbol: symbol(i),
            ts_event: ts,
            ts_recv: UnixNanos(ts.0 + 5),
            bid: price(i),
            bid_size: Qty::from_raw(3_000_000_000, 0),
            ask: Price::from_raw(price(i).raw() + 10_000_000, 2),
            ask_size: Qty::from_raw(5_500_000_000, 1),
            source: Arc::clone(&source),
            feed: Arc::from("contract:test"),
            seq: (i % 3 != 0).then_some(batch * 1_000_000 + i),
        });
        let start = BarInterval::M1.start_of(UnixNanos(base + i as i64 * 60_000_000_000));
        rows.bars.push(Bar {
            symbol: symbol(i),
            interval: BarInterval::M1,
            start,
            end: UnixNanos(start.0 + BarInterval::M1.nanos()),
            open: price(i),
            high: price(i + 3),
            low: price(i),
            close: price(i + 1),
            volume: Volume::from_raw(1_000_000_000_000, 0),
            vwap: (i % 4 != 0).then(|| price(i + 2)),
            trade_count: (i % 4 != 0).then_some(10 + i),
            is_final: true,
            source: (i % 4 == 0).then(|| Arc::from("contract:feed")),
        });
        rows.daily_metrics.push(DailyMetric {
            symbol: symbol(i),
            date: Date(UnixNanos(base).date().0 + i as i32),
            open: price(i),
            high: price(i + 5),
            low: price(i),
            close: price(i + 2),
            volume: Volume::from_raw(5_000_000_000_000, 0),
            volatility: 2.75,
            rolling_avg_5d: price(i + 1),
            daily_pct_change: (i > 0).then_some(-1.25),
        });
        rows.alerts.push(Alert {
            alert_id: format!("contract-{batch}-{i}"),
            rule: "contract_rule".into(),
            symbol: symbol(i),
            ts,
            value: price(i),
            threshold: "> 100".into(),
            message: format!("price {} crossed 100, with a comma", price(i)),
            severity: Severity::Warning,
            delivered_to: "log".into(),
            kind: if i % 3 == 2 {
                AlertKind::Resolved
            } else {
                AlertKind::Fired
            },
        });
        rows.dlq.push(DlqRecord {
            ts,
            source: "contract".into(),
            offset: (i % 2 == 0).then_some(batch * 1_000 + i),
            reason: RejectReason::NonPositivePrice,
            error: "price -1 is not positive".into(),
            payload: "{\"type\":\"trade\",\"symbol\":\"NVDA\",\"price\":\"-1\"}\n2nd line".into(),
        });
        rows.alert_deliveries.push(AlertDelivery {
            alert_id: format!("contract-{batch}-{i}"),
            notifier: "contract, a channel".into(),
            ts,
            status: DeliveryStatus::ALL[i as usize % 2],
            attempts: 1 + i as u32,
            error: (i % 2 == 1).then(|| format!("attempt {i}: 451 try again, \"later\"")),
        });
    }
    rows
}

fn table_lens(rows: &Rows) -> [(&'static str, u64); 7] {
    [
        ("trades", rows.trades.len() as u64),
        ("quotes", rows.quotes.len() as u64),
        ("bars", rows.bars.len() as u64),
        ("daily_metrics", rows.daily_metrics.len() as u64),
        ("alerts", rows.alerts.len() as u64),
        ("dlq", rows.dlq.len() as u64),
        ("alert_deliveries", rows.alert_deliveries.len() as u64),
    ]
}

/// What a sink that keeps `tables` should hold after the given flushes.
fn expected(tables: &[&str], flushes: &[&Rows]) -> Counts {
    let mut counts = Counts::new();
    for rows in flushes {
        for (table, n) in table_lens(rows) {
            if tables.contains(&table) {
                *counts.entry(table.to_string()).or_default() += n;
            }
        }
    }
    counts
}

fn nonzero(counts: Counts) -> Counts {
    counts.into_iter().filter(|(_, n)| *n > 0).collect()
}

/// The sink contract, on a fresh store. `make` opens a new handle on the same store (as a
/// restart would), `probe` counts the rows the store holds per table, and `tables` names the
/// tables this sink keeps. Checks: a new store has no position; a flush's rows arrive once
/// and its position with them; a flush handed again doubles nothing; a new handle resumes
/// at the stored position; a flush without rows still moves the position.
///
/// # Panics
/// When the sink breaks a rule, with a message naming it.
pub async fn check_sink<S, M, P>(mut make: M, mut probe: P, tables: &[&str])
where
    S: Sink,
    M: FnMut() -> S,
    P: AsyncFnMut() -> Counts,
{
    let first = sample_rows(1, 5);
    let second = sample_rows(2, 7);
    let mut sink = make();
    let position = sink.open().await.expect("a new store opens");
    assert_eq!(position, None, "a new store has no position");
    assert_eq!(
        nonzero(probe().await),
        Counts::new(),
        "a new store holds no rows"
    );

    let flush1 = Flush {
        seq: 1,
        rows: Arc::new(first.clone()),
    };
    sink.write(&flush1).await.expect("flush 1 is written");
    assert_eq!(
        nonzero(probe().await),
        expected(tables, &[&first]),
        "every kept row of flush 1 is stored once"
    );
    sink.write(&flush1).await.expect("flush 1 handed again");
    assert_eq!(
        nonzero(probe().await),
        expected(tables, &[&first]),
        "a flush handed again after a failure doubles no row"
    );
    drop(sink);

    let mut sink = make();
    assert_eq!(
        sink.open().await.expect("the store opens again"),
        Some(1),
        "a new handle resumes at the stored position"
    );
    let flush2 = Flush {
        seq: 2,
        rows: Arc::new(second.clone()),
    };
    sink.write(&flush2).await.expect("flush 2 is written");
    sink.write(&Flush::empty(3)).await.expect("an empty flush");
    assert_eq!(
        nonzero(probe().await),
        expected(tables, &[&first, &second]),
        "flush 2 adds its rows"
    );
    drop(sink);
    let mut sink = make();
    assert_eq!(
        sink.open().await.expect("the store opens a third time"),
        Some(3),
        "a flush without rows moves the position"
    );
}

/// What a source appended during [`check_source`].
#[derive(Debug, Default)]
pub struct Appended {
    pub events: Vec<tickflow_model::Event>,
    /// (error, payload) of each unreadable input.
    pub rejected: Vec<(String, String)>,
    pub batches: usize,
}

/// How long [`check_source`] waits for a source that should long have appended its batches.
const WATCHDOG: std::time::Duration = std::time::Duration::from_secs(120);

/// A log in memory that asks the source to stop after a number of batches.
#[derive(Debug)]
struct MemoryLog {
    appended: std::sync::Mutex<(Appended, Decoder)>,
    stop_after: usize,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Append for MemoryLog {
    fn append(&self, _source: &str, batch: &Batch) -> Result<std::ops::Range<u64>, SourceError> {
        let mut guard = self.appended.lock().unwrap_or_else(|e| e.into_inner());
        let (appended, decoder) = &mut *guard;
        let first = appended.events.len() + appended.rejected.len();
        for record in batch.records() {
            match rejected(record) {
                Some(r) => appended
                    .rejected
                    .push((r.error.to_string(), r.payload.to_string())),
                None => appended.events.push(decoder.decode(record)?),
            }
        }
        appended.batches += 1;
        if appended.batches >= self.stop_after {
            self.stop.send_replace(true);
        }
        Ok(first as u64..(first + batch.len()) as u64)
    }
}

/// The source contract. The source runs against a log in memory under the id `contract`;
/// after `stop_after` batches the stop signal is raised. Checks: the source returns once
/// stopped (or once its finite input ends) having appended at most one batch more; every
/// record is an event or a rejected input (never garbage); its events are counted under its
/// id. Returns what it appended, for the connector's own checks (its bad input in
/// `rejected`, with the reason).
///
/// # Panics
/// When the source breaks a rule, with a message naming it.
pub fn check_source(source: Box<dyn Source>, stop_after: usize) -> Appended {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let log = Arc::new(MemoryLog {
        appended: std::sync::Mutex::new((Appended::default(), Decoder::new())),
        stop_after,
        stop,
    });
    let metrics = Arc::new(Metrics::default());
    let ctx = SourceContext::new(
        "contract",
        Arc::clone(&log) as Arc<dyn Append>,
        Arc::clone(&metrics),
        stop_rx,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the source");
    // Bounded by batches, not time; the watchdog only turns a source that never reaches
    // them into a failure that says so, instead of a test that hangs.
    let result = runtime.block_on(async { tokio::time::timeout(WATCHDOG, source.run(ctx)).await });
    let Ok(result) = result else {
        let guard = log.appended.lock().unwrap_or_else(|e| e.into_inner());
        panic!(
            "the source appended {} of the {stop_after} batches asked for in {WATCHDOG:?}: {} events, rejected {:?}",
            guard.0.batches,
            guard.0.events.len(),
            guard.0.rejected
        );
    };
    if let Err(e) = &result {
        panic!("the source failed: {e}");
    }
    let (appended, _) =
        std::mem::take(&mut *log.appended.lock().unwrap_or_else(|e| e.into_inner()));
    assert!(
        appended.batches <= stop_after + 1,
        "the source appended {} batches though asked to stop after {stop_after}",
        appended.batches
    );
    let records = (appended.events.len() + appended.rejected.len()) as u64;
    assert_eq!(
        metrics.source_events.snapshot(),
        if records == 0 {
            vec![]
        } else {
            vec![("contract".to_string(), records)]
        },
        "every appended record is counted under the source's id"
    );
    appended
}

/// A log that keeps what is appended to it: where a sink's refused rows land in its tests.
#[derive(Debug, Default)]
pub struct CollectLog(std::sync::Mutex<Vec<Batch>>);

impl Append for CollectLog {
    fn append(&self, _source: &str, batch: &Batch) -> Result<std::ops::Range<u64>, SourceError> {
        let mut batches = self.0.lock().unwrap_or_else(|e| e.into_inner());
        batches.push(batch.clone());
        Ok(0..batch.len() as u64)
    }
}

impl CollectLog {
    /// (reason, error, payload) of every rejected record appended.
    ///
    /// # Panics
    /// When a record appended is not a rejected input.
    pub fn rejected(&self) -> Vec<(RejectReason, String, String)> {
        let batches = self.0.lock().unwrap_or_else(|e| e.into_inner());
        batches
            .iter()
            .flat_map(|b| b.records())
            .map(|r| {
                let r = rejected(r).expect("a rejected record");
                (r.reason, r.error.to_string(), r.payload.to_string())
            })
            .collect()
    }
}

/// The notifier contract, against a channel whose receipts `received` reads back (the
/// idempotency keys it was sent, in order). Checks: an alert arrives with its key; the same
/// alert delivered again carries the same key, so the receiver can drop it; another alert
/// has another key.
///
/// # Panics
/// When the notifier breaks a rule, with a message naming it.
pub async fn check_notifier<R>(notifier: &dyn crate::notify::Notifier, id: &str, mut received: R)
where
    R: AsyncFnMut() -> Vec<String>,
{
    use crate::notify::idempotency_key;
    let rows = sample_rows(1, 2);
    let (a, b) = (&rows.alerts[0], &rows.alerts[1]);
    let (key_a, key_b) = (idempotency_key(a, id), idempotency_key(b, id));
    assert_ne!(key_a, key_b, "two alerts, two keys");
    notifier
        .deliver(a, &key_a)
        .await
        .expect("the first delivery");
    assert_eq!(
        received().await,
        vec![key_a.clone()],
        "the alert arrives with its key"
    );
    notifier
        .deliver(a, &key_a)
        .await
        .expect("the same alert again");
    notifier.deliver(b, &key_b).await.expect("another alert");
    assert_eq!(
        received().await,
        vec![key_a.clone(), key_a, key_b],
        "a repeat carries the same key; another alert its own"
    );
}

/// The S3 endpoint tests use: `moto_server`, started by `scripts/test` on
/// `127.0.0.1:5000`, or `TICKFLOW_TEST_S3`.
pub fn s3_endpoint() -> String {
    std::env::var("TICKFLOW_TEST_S3").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// [`s3_endpoint`] when moto_server answers there (it serves every AWS service on one port);
/// `None` outside CI when it does not.
///
/// # Panics
/// Under CI (`CI=true`) when nothing answers.
pub fn moto_endpoint() -> Option<String> {
    let endpoint = s3_endpoint();
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    if std::net::TcpStream::connect(addr).is_ok() {
        return Some(endpoint);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "moto_server is required under CI at {endpoint}"
    );
    eprintln!("skipped: no moto_server at {endpoint}");
    None
}

/// Creates a bucket named `prefix-<unique>` on [`s3_endpoint`] and returns its name; `None`
/// (outside CI) when nothing answers there. moto takes an unsigned `PUT /bucket`.
///
/// # Panics
/// Under CI (`CI=true`) when the endpoint cannot be reached or refuses the bucket.
pub fn s3_bucket(prefix: &str) -> Option<String> {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let endpoint = s3_endpoint();
    let host = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let bucket = format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        UnixNanos::now().0 % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    );
    let answer = std::net::TcpStream::connect(&host).and_then(|mut s| {
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    });
    match answer {
        Ok(a) if a.split_whitespace().nth(1) == Some("200") => Some(bucket),
        Ok(a) => panic!("{endpoint} refused bucket {bucket}: {a}"),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: no S3 (moto_server) at {endpoint}: {e}");
            None
        }
        Err(e) => panic!("S3 (moto_server) at {endpoint} is required under CI: {e}"),
    }
}

/// aiosmtpd on a loopback port (`testdata/smtp_server.py`, PyPI `aiosmtpd`, installed by
/// `scripts/test`): each message it accepts is a file in `dir`, in arrival order; it answers
/// 451 while `dir/refuse` exists and 550 while `dir/reject` does. Stopped when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    pub port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    /// Starts one storing into `dir`; `None` (outside CI) when aiosmtpd cannot run here.
    ///
    /// # Panics
    /// Under CI (`CI=true`) when it does not start.
    pub fn start(dir: &std::path::Path) -> Option<Self> {
        Self::start_with(dir, &[])
    }

    /// Starts one that speaks TLS, `starttls` or `tls` (from the first byte), with a
    /// certificate signed by a private CA it writes to `dir/ca.pem`, and takes mail only
    /// after a login as `user` with `password`.
    ///
    /// # Panics
    /// As [`SmtpServer::start`].
    pub fn start_secure(
        dir: &std::path::Path,
        mode: &str,
        user: &str,
        password: &str,
    ) -> Option<Self> {
        Self::start_with(dir, &[mode, user, password])
    }

    fn start_with(dir: &std::path::Path, args: &[&str]) -> Option<Self> {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/smtp_server.py");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a loopback port")
            .port();
        let mut child = std::process::Command::new("python3")
            .arg(&script)
            .arg(dir)
            .arg(port.to_string())
            .args(args)
            .env("SMTP_SERVER_LOG", dir.join("server.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        // Bounded by polls, not by a clock a slow machine could outrun.
        for _ in 0..600 {
            if dir.join("ready").exists() {
                return Some(Self {
                    port,
                    dir: dir.to_path_buf(),
                    child,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "aiosmtpd is required under CI: {status}"
                );
                eprintln!("skipped: aiosmtpd did not start ({status})");
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("aiosmtpd did not become ready");
    }

    /// Every message accepted, raw, in arrival order.
    ///
    /// # Panics
    /// When its directory cannot be read.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&self.dir)
            .expect("the server's directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("a message"))
            .collect()
    }

    /// Turns `refuse` (451) or `reject` (550) on or off.
    ///
    /// # Panics
    /// When the flag file cannot be written or removed.
    pub fn answer(&self, flag: &str, on: bool) {
        let path = self.dir.join(flag);
        if on {
            std::fs::write(path, b"").expect("the flag");
        } else {
            std::fs::remove_file(path).expect("the flag");
        }
    }
}

/// A header's value in a raw message, if it has it.
pub fn mail_header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let head = message.split("\r\n\r\n").next()?;
    head.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
