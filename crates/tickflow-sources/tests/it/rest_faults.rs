//! A vendor's REST history behind the fault proxy: while the answer to each new page of a
//! gap's trades is on its way, the link fails in turn (refused, reset, blackholed, cut in
//! half, slowed). The client retries each page until it arrives whole, and the gap's trades
//! come out in order, each once: no page is skipped or read twice on a page edge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tickflow_core::contract::{Fault, Proxy};
use tickflow_model::{Event, Symbol, UnixNanos};
use tickflow_sources::binance::BinanceSource;
use tickflow_sources::history::{self, Request, What};
use tickflow_sources::rest::Retry;

/// Binance's raw trade `id` happened at this many ms plus `id`.
const BASE_MS: u64 = 1_715_096_000_000;

fn row(id: u64) -> String {
    format!(
        r#"{{"id":{id},"price":"63000.{id}","qty":"0.01","quoteQty":"630","time":{},"isBuyerMaker":false,"isBestMatch":true}}"#,
        BASE_MS + id
    )
}

/// The fault in force, and the proxy's counts of hits and of connections when it was
/// injected.
type Injected = Mutex<Option<(Fault, u64, u64)>>;

#[test]
fn a_history_read_through_every_fault_returns_every_trade_once_in_order() {
    let proxy: Arc<OnceLock<Proxy>> = Arc::default();
    let injected: Arc<Injected> = Arc::default();
    let faults = Arc::new(Mutex::new(std::collections::VecDeque::from(Fault::ALL)));
    let asked: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let (rest, _seen) = {
        let (proxy, injected, faults, asked) = (
            Arc::clone(&proxy),
            Arc::clone(&injected),
            Arc::clone(&faults),
            Arc::clone(&asked),
        );
        crate::support::rest_server(move |_, uri| {
            if uri.starts_with("/api/v3/aggTrades") {
                let body = r#"[{"a":90,"p":"63000.1","q":"0.02","f":100,"l":101,"T":1715096000100,"m":false,"M":true}]"#;
                return (200, Vec::new(), body.to_string());
            }
            let from: u64 = uri
                .split("fromId=")
                .nth(1)
                .and_then(|v| v.split('&').next())
                .and_then(|v| v.parse().ok())
                .unwrap();
            let times = {
                let mut asked = asked.lock().unwrap();
                let n = asked.entry(from).or_default();
                *n += 1;
                *n
            };
            // The first answer to each new page meets the next fault on its way back.
            if times == 1
                && let Some(fault) = faults.lock().unwrap().pop_front()
            {
                let proxy = proxy.get().unwrap();
                *injected.lock().unwrap() = Some((fault, proxy.injected(), proxy.connections()));
                proxy.inject(fault);
            }
            let rows: Vec<String> = (from..=6_500).take(1000).map(row).collect();
            (200, Vec::new(), format!("[{}]", rows.join(",")))
        })
    };
    let address = rest.trim_start_matches("http://").to_string();
    let _ = proxy.set(Proxy::start(&address));
    let through = format!("http://127.0.0.1:{}", proxy.get().unwrap().port);

    // Heals a fault once it has failed the answer and a retry: two hits, or behind a
    // blackhole (which acts on nothing until healed) a new connection, the client having
    // given up on the held one. A slow link is left slow: it gets through.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let healer = {
        let (proxy, injected, done) =
            (Arc::clone(&proxy), Arc::clone(&injected), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut healed = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let proxy = proxy.get().unwrap();
                let mut now = injected.lock().unwrap();
                if let Some((fault, before, connections)) = *now
                    && !fault.lets_through()
                    && if fault == Fault::Blackhole {
                        proxy.connections() > connections
                    } else {
                        proxy.injected() >= before + 2
                    }
                {
                    proxy.heal();
                    healed.push((fault, proxy.injected() - before));
                    *now = None;
                }
                drop(now);
                std::thread::sleep(Duration::from_millis(5));
            }
            healed
        })
    };

    let source = BinanceSource {
        url: String::new(),
        symbols: vec![Symbol::parse("BTC-USDT").unwrap()],
        stale_after: Duration::from_secs(30),
        ping_every: Duration::from_secs(10),
        retry_max: Duration::from_millis(100),
        rest_url: through,
        key: None,
        repair_gaps: true,
        repair_hold: tickflow_sources::gaps::DEFAULT_HOLD,
    };
    // A partition is noticed by the request's own timeout, well over the 0.7 s a page takes
    // on the slow link; plenty of tries, short waits.
    let retry = Retry {
        attempts: 50,
        max_backoff: Duration::from_millis(200),
        timeout: Duration::from_secs(3),
        ..Retry::default()
    };
    let h = source.history("binance", retry).unwrap();
    let request = Request {
        symbol: "BTC-USDT".into(),
        what: What::Trades,
        from: UnixNanos(((BASE_MS + 100) * 1_000_000) as i64),
        to: UnixNanos(((BASE_MS + 6_000) * 1_000_000) as i64),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut ids = Vec::new();
    let n = rt
        .block_on(history::fetch(&h, &request, |events| {
            for e in events {
                let Event::Trade(t) = e else { panic!("{e:?}") };
                ids.push(t.trade_id.as_deref().unwrap().parse::<u64>().unwrap());
            }
            Ok::<_, ()>(())
        }))
        .unwrap();
    done.store(true, std::sync::atomic::Ordering::Release);
    let healed = healer.join().unwrap();

    assert_eq!(n, 5_901);
    assert_eq!(
        ids,
        (100..=6_000).collect::<Vec<u64>>(),
        "in order, each once"
    );
    assert!(faults.lock().unwrap().is_empty(), "every fault was met");
    let asked = asked.lock().unwrap().clone();
    let mut pages: Vec<(u64, usize)> = asked.into_iter().collect();
    pages.sort_unstable();
    // The four faults that stop an answer make its page be asked again.
    let retried = pages.iter().filter(|(_, n)| *n > 1).count();
    assert!(
        retried >= 4,
        "pages and how often each was asked: {pages:?}"
    );
    assert_eq!(
        healed.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
        [
            Fault::Refuse,
            Fault::Reset,
            Fault::Blackhole,
            Fault::Partial
        ]
    );
    eprintln!(
        "history through every fault: {n} trades; pages asked {pages:?}; hits per fault {healed:?}; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
