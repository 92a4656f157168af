//! Every parser tickflow feeds with bytes it did not write, as a fuzz target: one function
//! per parser that takes any bytes and must return without panicking. Where a parser
//! accepts its input, the target also checks what it produced (an event the ingest parser
//! took must decode from the log; a record read back from a damaged log must be one that
//! was written), so a fuzzer finds wrong answers as well as crashes.
//!
//! [`Target::ALL`] lists them with their seed inputs. `tests/smoke.rs` runs each through
//! [`mutate`] in `./scripts/test`; `fuzz/` runs the same functions under libFuzzer with
//! cargo-fuzz for as long as one likes (docs/reliability.md).

use std::path::Path;
use std::sync::Arc;

use tickflow_model::UnixNanos;

/// A parser under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// HTTP ingest bodies (NDJSON or a JSON array of events).
    Ingest,
    /// A log record's bytes, as the processor decodes them.
    Codec,
    /// Config files.
    Config,
    /// A log segment file, opened and read as after a crash.
    LogSegment,
    /// The processing checkpoint, with a valid checksum so the decoder behind it is reached.
    Checkpoint,
    /// Replay files: CSV and NDJSON.
    ReplayCsv,
    ReplayNdjson,
    /// Databento's DBN files.
    Dbn,
    /// Vendors' WebSocket frames.
    Alpaca,
    Polygon,
    Coinbase,
    Binance,
    /// Postgres-wire messages from a client (pgwire's decoder).
    Pgwire,
    /// Vendors' REST answers: history pages (gap repair, backfill) and the quote poller's.
    AlpacaRest,
    PolygonRest,
    CoinbaseRest,
    BinanceRest,
    RestPoll,
}

impl Target {
    pub const ALL: [Target; 18] = [
        Target::Ingest,
        Target::Codec,
        Target::Config,
        Target::LogSegment,
        Target::Checkpoint,
        Target::ReplayCsv,
        Target::ReplayNdjson,
        Target::Dbn,
        Target::Alpaca,
        Target::Polygon,
        Target::Coinbase,
        Target::Binance,
        Target::Pgwire,
        Target::AlpacaRest,
        Target::PolygonRest,
        Target::CoinbaseRest,
        Target::BinanceRest,
        Target::RestPoll,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Ingest => "ingest",
            Target::Codec => "codec",
            Target::Config => "config",
            Target::LogSegment => "log_segment",
            Target::Checkpoint => "checkpoint",
            Target::ReplayCsv => "replay_csv",
            Target::ReplayNdjson => "replay_ndjson",
            Target::Dbn => "dbn",
            Target::Alpaca => "alpaca",
            Target::Polygon => "polygon",
            Target::Coinbase => "coinbase",
            Target::Binance => "binance",
            Target::Pgwire => "pgwire",
            Target::AlpacaRest => "alpaca_rest",
            Target::PolygonRest => "polygon_rest",
            Target::CoinbaseRest => "coinbase_rest",
            Target::BinanceRest => "binance_rest",
            Target::RestPoll => "rest_poll",
        }
    }

    /// Runs the parser on `data`; panics only on a finding.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::Ingest => ingest(data),
            Target::Codec => codec(data),
            Target::Config => config(data),
            Target::LogSegment => log_segment(data),
            Target::Checkpoint => checkpoint(data),
            Target::ReplayCsv => replay(data, "day.csv"),
            Target::ReplayNdjson => replay(data, "day.ndjson"),
            Target::Dbn => replay(data, "day.dbn"),
            Target::Alpaca => frame(data, Vendor::Alpaca),
            Target::Polygon => frame(data, Vendor::Polygon),
            Target::Coinbase => frame(data, Vendor::Coinbase),
            Target::Binance => frame(data, Vendor::Binance),
            Target::Pgwire => pgwire_messages(data),
            Target::AlpacaRest => answer(data, Vendor::Alpaca),
            Target::PolygonRest => answer(data, Vendor::Polygon),
            Target::CoinbaseRest => answer(data, Vendor::Coinbase),
            Target::BinanceRest => answer(data, Vendor::Binance),
            Target::RestPoll => poll_answer(data),
        }
    }

    /// Valid inputs the mutations start from.
    pub fn seeds(self) -> Vec<Vec<u8>> {
        let lines = |text: &str| -> Vec<Vec<u8>> {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.as_bytes().to_vec())
                .collect()
        };
        match self {
            Target::Ingest => vec![
                INGEST_SEED.as_bytes().to_vec(),
                format!("[{}]", INGEST_SEED.trim().replace('\n', ",")).into_bytes(),
            ],
            Target::Codec => {
                let mut batch = tickflow_core::codec::Batch::default();
                let _ = tickflow_core::ingest::parse_body_into(
                    INGEST_SEED,
                    "http",
                    UnixNanos(1_733_900_000_000_000_000),
                    &mut batch,
                );
                batch.records().map(<[u8]>::to_vec).collect()
            }
            Target::Config => vec![
                include_bytes!("../../../config/demo.toml").to_vec(),
                include_bytes!("../../../config/rules.toml").to_vec(),
                include_bytes!("../../../config/exposed.toml").to_vec(),
            ],
            Target::LogSegment => vec![segment_seed()],
            Target::Checkpoint => vec![checkpoint_seed()],
            Target::ReplayCsv => vec![REPLAY_CSV_SEED.as_bytes().to_vec()],
            Target::ReplayNdjson => vec![INGEST_SEED.as_bytes().to_vec()],
            Target::Dbn => vec![dbn_seed()],
            Target::Alpaca => lines(include_str!(
                "../../tickflow-sources/src/alpaca/testdata/frames.ndjson"
            )),
            Target::Polygon => vec![
                include_bytes!("../../tickflow-sources/src/polygon/testdata/stream.json").to_vec(),
            ],
            Target::Coinbase => lines(include_str!(
                "../../tickflow-sources/src/coinbase/testdata/frames.ndjson"
            )),
            Target::Binance => lines(include_str!(
                "../../tickflow-sources/src/binance/testdata/frames.ndjson"
            )),
            Target::Pgwire => vec![pgwire_seed()],
            Target::AlpacaRest => vec![
                include_bytes!("../../tickflow-sources/src/alpaca/testdata/history-trades.json")
                    .to_vec(),
                include_bytes!("../../tickflow-sources/src/alpaca/testdata/history-bars.json")
                    .to_vec(),
            ],
            Target::PolygonRest => vec![
                include_bytes!("../../tickflow-sources/src/polygon/testdata/aggs-page1.json")
                    .to_vec(),
                include_bytes!("../../tickflow-sources/src/polygon/testdata/grouped.json").to_vec(),
            ],
            Target::CoinbaseRest => vec![COINBASE_REST_SEED.as_bytes().to_vec()],
            Target::BinanceRest => vec![
                BINANCE_AGG_SEED.as_bytes().to_vec(),
                BINANCE_TRADES_SEED.as_bytes().to_vec(),
            ],
            Target::RestPoll => vec![
                include_bytes!("../../tickflow-sources/src/rest_poll/testdata/global-quote.json")
                    .to_vec(),
            ],
        }
    }
}

/// A client's first messages as psql sends them: SSL request, startup, password, a simple
/// query, then an extended one (parse, bind, describe, execute, sync) and terminate.
fn pgwire_seed() -> Vec<u8> {
    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }
    let mut out = Vec::new();
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&80_877_103i32.to_be_bytes());
    let startup = b"\0\x03\0\0user\0desk\0database\0tickflow\0\0";
    out.extend_from_slice(&(startup.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(startup);
    out.extend(message(b'p', b"secret-password\0"));
    out.extend(message(b'Q', b"SELECT count(*) FROM trades\0"));
    out.extend(message(b'P', b"s1\0SELECT $1::int\0\0\x01\0\0\0\x17"));
    out.extend(message(b'B', b"\0s1\0\0\0\0\x01\0\0\0\x011\0\0"));
    out.extend(message(b'D', b"P\0"));
    out.extend(message(b'E', b"\0\0\0\0\0"));
    out.extend(message(b'S', b""));
    out.extend(message(b'X', b""));
    out
}

/// Panics of pgwire's decoder that [`pgwire_messages`] contained (see there).
pub static PGWIRE_CONTAINED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The Postgres-wire decoder in each state a connection goes through (the first message,
/// the startup, then the rest): every frame is decoded or refused.
///
/// pgwire's decoder reads a message's C strings past the message's own length, so some
/// malformed messages panic in it (`regressions/pgwire/`). The server runs each connection
/// on a task of its own, which contains the panic: that connection ends, the rest go on
/// (`it/pgwire.rs` sends such a message to a running pipeline). So a panic here is counted
/// in [`PGWIRE_CONTAINED`], not a finding; anything else still is.
pub fn pgwire_messages(data: &[u8]) {
    use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};
    for (ssl, startup) in [(true, true), (false, true), (false, false)] {
        let mut context = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        context.awaiting_frontend_ssl = ssl;
        context.awaiting_frontend_startup = startup;
        let mut buf = bytes::BytesMut::from(data);
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // After the first message a connection is past the start, as the server moves on.
            while let Ok(Some(_)) = PgWireFrontendMessage::decode(&mut buf, &context) {
                context.awaiting_frontend_ssl = false;
                context.awaiting_frontend_startup = false;
                if buf.is_empty() {
                    break;
                }
            }
        }));
        if decoded.is_err() {
            PGWIRE_CONTAINED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

const INGEST_SEED: &str = r#"{"type":"trade","symbol":"NVDA","ts_event":1733900000000000000,"price":"180.25","size":"10","trade_id":"1","exchange":"XNAS"}
{"type":"quote","symbol":"AAPL","ts_event":1733900000000000001,"bid":"229.10","bid_size":"100","ask":"229.12","ask_size":"200"}
{"type":"bar","symbol":"MSFT","interval":"1m","start":"2024-12-11T07:33:00Z","open":"440","high":"441","low":"439.5","close":"440.5","volume":"1200"}
"#;

const REPLAY_CSV_SEED: &str = "type,symbol,ts_event,price,size,trade_id\ntrade,NVDA,2024-12-11T14:30:00.000000001Z,180.25,10,1\ntrade,NVDA,1733927400000000002,180.30,5,2\n";

/// HTTP ingest: whatever it accepts must be records the processor can read back.
pub fn ingest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // the API refuses a body that is not UTF-8 before parsing it
    };
    let mut batch = tickflow_core::codec::Batch::default();
    if tickflow_core::ingest::parse_body_into(text, "http", UnixNanos::now(), &mut batch).is_ok() {
        let mut decoder = tickflow_core::codec::Decoder::new();
        for record in batch.records() {
            if tickflow_core::codec::rejected(record).is_none()
                && let Err(e) = decoder.decode(record)
            {
                panic!("ingest accepted an event the log cannot decode: {e}");
            }
        }
    }
}

/// The log's record decoder, on bytes a damaged or foreign log might hold.
pub fn codec(data: &[u8]) {
    let _ = tickflow_core::codec::rejected(data);
    let _ = tickflow_core::codec::alert(data);
    let _ = tickflow_core::codec::delivery(data);
    let _ = tickflow_core::codec::symbol_of(data);
    if let Ok(event) = tickflow_core::codec::Decoder::new().decode(data) {
        // What decodes must encode to bytes that decode to the same event.
        let bytes = tickflow_core::codec::to_bytes(&event);
        let again = tickflow_core::codec::Decoder::new()
            .decode(&bytes)
            .expect("a re-encoded event decodes");
        assert_eq!(again, event, "re-encoding changed the event");
    }
}

/// Config files: every problem is reported, nothing panics.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // `load` refuses a file that is not UTF-8 with that message
    };
    let _ = tickflow_pipeline::config::parse(text, Path::new("fuzz.toml"));
}

/// A log directory holding one segment with these bytes: open (recovery) and read all.
pub fn log_segment(data: &[u8]) {
    let dir = scratch();
    let log_dir = dir.path().join("log");
    std::fs::create_dir_all(&log_dir).expect("log dir");
    std::fs::write(log_dir.join(format!("{:020}.log", 0)), data).expect("segment");
    let mut config = tickflow_log::LogConfig::new(&log_dir);
    config.fsync = false;
    let Ok(log) = tickflow_log::Log::open(config) else {
        return;
    };
    let mut offset = log.start_offset();
    let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
    while offset < log.next_offset() {
        if log.read(offset, 1000, &mut batch).is_err() || batch.is_empty() {
            break;
        }
        for (o, record) in &batch {
            assert_eq!(*o, offset, "records are served in order without gaps");
            assert!(
                data.windows(record.len().max(1))
                    .any(|w| record.is_empty() || w == record.as_slice()),
                "a record read back is not in the file"
            );
            offset += 1;
        }
    }
    // Appending after recovery works: the torn tail, if any, is gone.
    let next = log.next_offset();
    if let Ok(o) = log.append(b"after") {
        assert_eq!(o, next);
    }
}

/// The checkpoint file, with its checksum made valid so the state decoder sees the bytes.
pub fn checkpoint(data: &[u8]) {
    let mut bytes = data.to_vec();
    if bytes.len() >= 28 {
        let crc = crc32fast::hash(&bytes[28..]);
        bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    }
    let dir = scratch();
    let path = tickflow_pipeline::checkpoint::path(dir.path());
    std::fs::create_dir_all(path.parent().expect("checkpoint dir")).expect("dir");
    std::fs::write(&path, &bytes).expect("checkpoint");
    let _ = tickflow_pipeline::checkpoint::read(dir.path());
}

/// One replay file named `name` (its extension picks the reader).
pub fn replay(data: &[u8], name: &str) {
    let dir = scratch();
    let path = dir.path().join(name);
    std::fs::write(&path, data).expect("replay file");
    let _ = tickflow_sources::replay::read_day(&[path], "replay");
}

#[derive(Clone, Copy)]
enum Vendor {
    Alpaca,
    Polygon,
    Coinbase,
    Binance,
}

/// One WebSocket text frame from a vendor.
fn frame(data: &[u8], vendor: Vendor) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // a text frame that is not UTF-8 is refused by the WebSocket layer
    };
    let source: Arc<str> = Arc::from("vendor");
    let feed: Arc<str> = Arc::from("feed");
    let now = UnixNanos::now();
    match vendor {
        Vendor::Alpaca => {
            let _ = tickflow_sources::alpaca::parse::parse(text, &source, &feed, now);
        }
        Vendor::Polygon => {
            let _ = tickflow_sources::polygon::parse::parse(text, &source, &feed, now);
        }
        Vendor::Coinbase => {
            let _ = tickflow_sources::coinbase::parse::parse(text, &source, &feed, now);
        }
        Vendor::Binance => {
            let symbols =
                tickflow_sources::binance::parse::symbol_map(&[tickflow_model::Symbol::parse(
                    "BTC-USDT",
                )
                .expect("symbol")]);
            let _ = tickflow_sources::binance::parse::parse(text, &symbols, &source, now);
        }
    }
}

const COINBASE_REST_SEED: &str = r#"[{"time":"2026-12-07T15:00:00.002Z","trade_id":2,"price":"100.5","size":"0.2","side":"buy"},{"time":"2026-12-07T15:00:00.001Z","trade_id":1,"price":"100.25","size":"0.1","side":"sell"}]"#;
const BINANCE_AGG_SEED: &str =
    r#"[{"a":7,"p":"100.5","q":"0.1","f":11,"l":12,"T":1765119600001,"m":true,"M":true}]"#;
const BINANCE_TRADES_SEED: &str = r#"[{"id":11,"price":"100.5","qty":"0.1","quoteQty":"10.05","time":1765119600001,"isBuyerMaker":true,"isBestMatch":true},{"id":12,"price":"100.75","qty":"0.2","quoteQty":"20.15","time":1765119600002,"isBuyerMaker":false,"isBestMatch":true}]"#;

/// Events a vendor's answer was read into must be what the log carries: each encodes to
/// bytes that decode to the same event.
fn carried(events: &[tickflow_model::Event]) {
    for event in events {
        let bytes = tickflow_core::codec::to_bytes(event);
        let again = tickflow_core::codec::Decoder::new()
            .decode(&bytes)
            .unwrap_or_else(|e| panic!("a vendor's event the log cannot carry: {e}"));
        assert_eq!(&again, event, "the log changed a vendor's event");
    }
}

/// One REST answer from a vendor's history, as gap repair and backfill read it.
fn answer(data: &[u8], vendor: Vendor) {
    use tickflow_sources::history::{History, Request, What};
    let Ok(text) = std::str::from_utf8(data) else {
        return; // the client refuses a body that is not UTF-8 before reading it
    };
    let source: Arc<str> = Arc::from("vendor");
    let feed: Arc<str> = Arc::from("feed");
    let now = UnixNanos::now();
    match vendor {
        Vendor::Alpaca => {
            for what in [What::Trades, What::Bars(tickflow_model::BarInterval::M1)] {
                if let Ok((events, _)) =
                    tickflow_sources::alpaca::history::read(text, what, &source, &feed, now)
                {
                    carried(&events);
                }
            }
        }
        Vendor::Polygon => {
            let only = ["AAPL".to_string()];
            for only in [None, Some(&only[..])] {
                if let Ok(page) = tickflow_sources::polygon::rest::read(
                    text,
                    tickflow_model::BarInterval::D1,
                    only,
                    &source,
                    &feed,
                    now,
                ) {
                    carried(&page.events);
                }
            }
        }
        Vendor::Coinbase => {
            if let Ok((events, _)) =
                tickflow_sources::coinbase::history::read(text, "BTC-USD", &source, &feed, now)
            {
                carried(&events);
            }
        }
        Vendor::Binance => {
            static HISTORY: std::sync::OnceLock<
                tickflow_sources::binance::history::BinanceHistory,
            > = std::sync::OnceLock::new();
            let history =
                HISTORY.get_or_init(|| tickflow_sources::binance::history::BinanceHistory {
                    base: "http://127.0.0.1:1".into(),
                    rest: tickflow_sources::rest::Rest::new(
                        "binance",
                        &[],
                        Arc::new(tickflow_sources::rest::Limiter::new(1)),
                        tickflow_sources::rest::Retry::default(),
                    )
                    .expect("a client"),
                    source: Arc::from("vendor"),
                });
            let request = Request {
                symbol: "BTC-USDT".into(),
                what: What::Trades,
                from: UnixNanos(1_765_119_600_000_000_000),
                to: UnixNanos(1_765_119_700_000_000_000),
            };
            if let Ok(page) = history.read_page(text, &request, now) {
                carried(&page.events);
            }
        }
    }
}

/// One answer to the quote poller (Alpha Vantage's shape).
fn poll_answer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source: Arc<str> = Arc::from("vendor");
    let feed: Arc<str> = Arc::from("feed");
    let symbol = tickflow_model::Symbol::parse("IBM").expect("symbol");
    if let Ok(bar) = tickflow_sources::rest_poll::parse::read(
        text,
        &tickflow_sources::rest_poll::parse::Shape::AlphaVantage,
        &symbol,
        tickflow_model::BarInterval::M1,
        &source,
        &feed,
        UnixNanos::now(),
    ) {
        carried(&[tickflow_model::Event::Bar(bar)]);
    }
}

/// A temporary directory, in memory where the machine has one.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("temp dir")
}

/// A segment of a few records, written by the log itself.
fn segment_seed() -> Vec<u8> {
    let dir = scratch();
    let mut config = tickflow_log::LogConfig::new(dir.path());
    config.fsync = false;
    let log = tickflow_log::Log::open(config).expect("log");
    for record in [&b"first"[..], b"", b"a longer third record"] {
        log.append(record).expect("append");
    }
    drop(log);
    std::fs::read(dir.path().join(format!("{:020}.log", 0))).expect("segment")
}

/// A DBN file of trades, quotes and a bar, as Databento writes them.
fn dbn_seed() -> Vec<u8> {
    let dir = scratch();
    let path = dir.path().join("seed.dbn");
    tickflow_sources::databento::write_sample(&path, false).expect("DBN sample");
    std::fs::read(&path).expect("DBN sample")
}

/// A checkpoint of an empty processing state.
fn checkpoint_seed() -> Vec<u8> {
    tickflow_pipeline::checkpoint::encode(7, 3, &tickflow_process::State::default(), 0)
        .expect("encode")
}

/// A small deterministic generator (xorshift64*), so a failing run can be repeated.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Bytes that parsers of JSON, CSV, TOML and binary formats treat specially.
const INTERESTING: &[u8] = b"\0\xff\x7f\x80\"\\{}[],:;-+.0129eE\n\r\t =#'nul";

/// A variant of `input`: one to eight random edits (flips, interesting bytes, insertions,
/// deletions, duplications, truncation, or a splice with `other`), as a fuzzer without
/// coverage feedback would make them.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(8) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                out.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                out.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let copy = out[i..i + n].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, copy);
            }
            5 if len > 0 => out.truncate(rng.below(len)),
            6 if !other.is_empty() => {
                let cut = rng.below(out.len() + 1);
                let from = rng.below(other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                // A number made extreme: parsers of sizes and counts meet their limits.
                if let Some(i) = out.iter().position(u8::is_ascii_digit) {
                    let big = [
                        "99999999999999999999",
                        "-1",
                        "0",
                        "1e308",
                        "18446744073709551616",
                    ];
                    let text = big[rng.below(big.len())].as_bytes();
                    out.splice(i..=i, text.iter().copied());
                }
            }
        }
    }
    out
}
