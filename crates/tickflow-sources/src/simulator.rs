//! A deterministic market simulator: a geometric random walk per symbol with drift and
//! volatility, trades and quotes around it, and anomalies injected on purpose so the DLQ,
//! dedupe and alerts have work.
//!
//! The same seed and the same calls give the same events, byte for byte, which makes the demo
//! and the benchmarks repeatable.

use std::sync::Arc;

use tickflow_model::{Event, Price, Qty, Quote, Symbol, Trade, UnixNanos};

use crate::rng::Rng;

mod source;
pub use source::SimulatorSource;

const NANOS_PER_YEAR: f64 = 365.25 * 86_400.0 * 1e9;

/// One simulated instrument.
#[derive(Clone, Debug)]
pub struct SimSymbol {
    pub symbol: Symbol,
    /// Starting price.
    pub price: f64,
    /// Annualized drift, e.g. 0.08.
    pub drift: f64,
    /// Annualized volatility, e.g. 0.35.
    pub volatility: f64,
    /// Decimal places of prices (2 for stocks, more for crypto).
    pub price_precision: u8,
    /// Decimal places of sizes (0 for shares, 4 for crypto).
    pub size_precision: u8,
}

impl SimSymbol {
    /// A symbol with the given start price; stocks trade whole shares, `-USD` pairs fractions.
    pub fn new(symbol: &str, price: f64, volatility: f64) -> Self {
        let crypto = symbol.ends_with("-USD");
        Self {
            symbol: Symbol::parse(symbol)
                .unwrap_or_else(|_| Symbol::parse("SIM").expect("literal symbol is valid")),
            price,
            drift: 0.05,
            volatility,
            price_precision: 2,
            size_precision: if crypto { 4 } else { 0 },
        }
    }

    /// The demo universe: nine stocks and three crypto pairs.
    pub fn demo_universe() -> Vec<SimSymbol> {
        [
            ("AAPL", 230.0, 0.25),
            ("MSFT", 420.0, 0.22),
            ("NVDA", 180.0, 0.50),
            ("AMZN", 210.0, 0.30),
            ("GOOGL", 175.0, 0.28),
            ("TSLA", 340.0, 0.60),
            ("META", 580.0, 0.35),
            ("SPY", 590.0, 0.15),
            ("QUBT", 12.0, 1.20),
            ("BTC-USD", 97_000.0, 0.55),
            ("ETH-USD", 3_400.0, 0.70),
            ("SOL-USD", 240.0, 0.90),
        ]
        .into_iter()
        .map(|(s, p, v)| SimSymbol::new(s, p, v))
        .collect()
    }
}

/// A deliberately bad or unusual event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// A one-off price jump of 6–15% that reverts on the next trade.
    Spike,
    /// A trade with a negative price.
    NegativePrice,
    /// A quote whose bid is above its ask.
    CrossedQuote,
    /// An event time a year ahead.
    AbsurdTimestamp,
    /// An event time an hour behind the market: late.
    Late,
    /// The previous event sent again: dedupe must drop it.
    Duplicate,
}

impl Anomaly {
    /// Every kind, in the order they are drawn.
    pub const ALL: [Anomaly; 6] = [
        Self::Spike,
        Self::NegativePrice,
        Self::CrossedQuote,
        Self::AbsurdTimestamp,
        Self::Late,
        Self::Duplicate,
    ];
}

/// How to simulate.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    pub symbols: Vec<SimSymbol>,
    pub seed: u64,
    /// Share of events that are quotes.
    pub quote_ratio: f64,
    /// Chance per event of an anomaly.
    pub anomaly_rate: f64,
    /// Source name stamped on events.
    pub source: Arc<str>,
    pub feed: Arc<str>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            symbols: SimSymbol::demo_universe(),
            seed: 42,
            quote_ratio: 0.5,
            anomaly_rate: 0.0,
            source: Arc::from("simulator"),
            feed: Arc::from("sim"),
        }
    }
}

#[derive(Debug)]
struct Walk {
    spec: SimSymbol,
    price: f64,
    last_ts: Option<i64>,
    spike_pending: bool,
}

/// Generates events; see the module docs.
#[derive(Debug)]
pub struct Simulator {
    config: SimulatorConfig,
    rng: Rng,
    walks: Vec<Walk>,
    seq: u64,
    last_event: Option<Event>,
    /// Anomalies injected so far, by kind (same order as [`Anomaly::ALL`]).
    pub injected: [u64; 6],
}

impl Simulator {
    /// A simulator at its starting prices.
    pub fn new(config: SimulatorConfig) -> Self {
        let walks = config
            .symbols
            .iter()
            .map(|s| Walk {
                spec: s.clone(),
                price: s.price,
                last_ts: None,
                spike_pending: false,
            })
            .collect();
        Self {
            rng: Rng::new(config.seed),
            walks,
            seq: 0,
            last_event: None,
            injected: [0; 6],
            config,
        }
    }

    /// Symbols simulated.
    pub fn symbols(&self) -> impl Iterator<Item = &Symbol> {
        self.walks.iter().map(|w| &w.spec.symbol)
    }

    /// Coarse history: one trade and one quote (none when `quote_ratio` is 0) per symbol every
    /// `step` nanoseconds over `[from, to)`, in event-time order, without anomalies (history
    /// should be clean).
    pub fn history(
        &mut self,
        from: UnixNanos,
        to: UnixNanos,
        step: i64,
        ts_recv: UnixNanos,
        out: &mut Vec<Event>,
    ) {
        let mut ts = from.0;
        while ts < to.0 {
            for i in 0..self.walks.len() {
                let jitter = self.rng.below((step / 2).max(1) as u64) as i64;
                out.push(self.trade(i, ts + jitter, ts_recv));
                if self.config.quote_ratio > 0.0 {
                    out.push(self.quote(i, ts + jitter + 1, ts_recv));
                }
            }
            ts += step;
        }
    }

    /// `n` live events for round-robin symbols, stamped at `now` (event times spread over the
    /// last millisecond so they are distinct), with anomalies at the configured rate.
    pub fn next_batch(&mut self, n: usize, now: UnixNanos, out: &mut Vec<Event>) {
        let syms = self.walks.len();
        if syms == 0 {
            return;
        }
        for k in 0..n {
            let i = self.rng.below(syms as u64) as usize;
            let ts = now.0 - 1_000_000 + (k as i64 * 1_000_000 / n.max(1) as i64);
            let anomaly =
                if self.config.anomaly_rate > 0.0 && self.rng.f64() < self.config.anomaly_rate {
                    Some(Anomaly::ALL[self.rng.below(Anomaly::ALL.len() as u64) as usize])
                } else {
                    None
                };
            let event = match anomaly {
                Some(a) => self.anomaly(a, i, ts, now),
                None if self.rng.f64() < self.config.quote_ratio => self.quote(i, ts, now),
                None => self.trade(i, ts, now),
            };
            if anomaly.is_none() {
                // Only clean events are re-sent as duplicates, so each anomaly has one cause.
                self.last_event = Some(event.clone());
            }
            out.push(event);
        }
    }

    fn anomaly(&mut self, a: Anomaly, i: usize, ts: i64, now: UnixNanos) -> Event {
        self.injected[Anomaly::ALL.iter().position(|x| *x == a).unwrap_or(0)] += 1;
        match a {
            Anomaly::Spike => {
                self.walks[i].spike_pending = true;
                self.trade(i, ts, now)
            }
            Anomaly::NegativePrice => {
                let mut e = self.trade(i, ts, now);
                if let Event::Trade(t) = &mut e {
                    t.price = Price::from_raw(-t.price.raw(), t.price.precision());
                }
                e
            }
            Anomaly::CrossedQuote => {
                let mut e = self.quote(i, ts, now);
                if let Event::Quote(q) = &mut e {
                    std::mem::swap(&mut q.bid, &mut q.ask);
                    q.bid = Price::from_raw(q.bid.raw() + q.bid.raw() / 100, q.bid.precision());
                }
                e
            }
            Anomaly::AbsurdTimestamp => self.trade(i, ts + 365 * 86_400 * 1_000_000_000, now),
            Anomaly::Late => self.trade(i, ts - 3_600 * 1_000_000_000, now),
            Anomaly::Duplicate => match &self.last_event {
                Some(e) => e.clone(),
                None => self.trade(i, ts, now),
            },
        }
    }

    /// Moves the walk to `ts` and returns the price there.
    fn step(&mut self, i: usize, ts: i64) -> f64 {
        let z = self.rng.normal();
        let w = &mut self.walks[i];
        let dt = w
            .last_ts
            .map_or(0.0, |last| (ts - last).max(0) as f64 / NANOS_PER_YEAR);
        w.last_ts = Some(ts);
        let sigma = w.spec.volatility;
        w.price *= ((w.spec.drift - sigma * sigma / 2.0) * dt + sigma * dt.sqrt() * z).exp();
        w.price = w.price.max(0.01);
        w.price
    }

    fn price(precision: u8, value: f64) -> Price {
        // Round at the display precision first, then scale: no float residue below it.
        let units = (value * 10f64.powi(i32::from(precision))).round() as i64;
        Price::from_raw(
            units * 10i64.pow(u32::from(9 - precision.min(9))),
            precision,
        )
    }

    fn trade(&mut self, i: usize, ts: i64, now: UnixNanos) -> Event {
        let mut p = self.step(i, ts);
        if std::mem::take(&mut self.walks[i].spike_pending) {
            p *= 1.06 + self.rng.f64() * 0.09;
        }
        let spec = &self.walks[i].spec;
        let (pp, sp) = (spec.price_precision, spec.size_precision);
        let symbol = spec.symbol.clone();
        let size_units = if sp == 0 {
            1 + self.rng.below(500)
        } else {
            1 + self.rng.below(20_000)
        };
        self.seq += 1;
        Event::Trade(Trade {
            symbol,
            ts_event: UnixNanos(ts),
            ts_recv: now,
            price: Self::price(pp, p),
            size: Qty::from_raw(size_units * 10u64.pow(u32::from(9 - sp.min(9))), sp),
            trade_id: None,
            exchange: None,
            source: Arc::clone(&self.config.source),
            feed: Arc::clone(&self.config.feed),
            seq: Some(self.seq),
        })
    }

    fn quote(&mut self, i: usize, ts: i64, now: UnixNanos) -> Event {
        let mid = self.step(i, ts);
        let spread = (mid * 0.0002).max(0.01);
        let spec = &self.walks[i].spec;
        let (pp, sp) = (spec.price_precision, spec.size_precision);
        let symbol = spec.symbol.clone();
        let lot = 10u64.pow(u32::from(9 - sp.min(9)));
        let (bs, asz) = (1 + self.rng.below(50), 1 + self.rng.below(50));
        let bid = Self::price(pp, mid - spread / 2.0);
        let ask = Self::price(pp, mid + spread / 2.0).max(bid);
        self.seq += 1;
        Event::Quote(Quote {
            symbol,
            ts_event: UnixNanos(ts),
            ts_recv: now,
            bid,
            bid_size: Qty::from_raw(bs * lot * 100, sp),
            ask,
            ask_size: Qty::from_raw(asz * lot * 100, sp),
            source: Arc::clone(&self.config.source),
            feed: Arc::clone(&self.config.feed),
            seq: Some(self.seq),
        })
    }
}

#[cfg(test)]
mod tests {
    use tickflow_model::RejectReason;
    use tickflow_process::{Output, Processor, ProcessorConfig};

    use super::*;

    const NOW: UnixNanos = UnixNanos(1_795_305_600_000_000_000);

    #[test]
    fn same_seed_same_market() {
        let run = |seed| {
            let mut sim = Simulator::new(SimulatorConfig {
                seed,
                anomaly_rate: 0.01,
                ..Default::default()
            });
            let mut out = Vec::new();
            sim.next_batch(2000, NOW, &mut out);
            out
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn history_has_no_quotes_when_the_quote_ratio_is_zero() {
        let mut sim = Simulator::new(SimulatorConfig {
            quote_ratio: 0.0,
            ..SimulatorConfig::default()
        });
        let mut out = Vec::new();
        sim.history(
            UnixNanos(NOW.0 - 3_600_000_000_000),
            NOW,
            60_000_000_000,
            NOW,
            &mut out,
        );
        assert_eq!(out.len(), 60 * 12);
        assert!(out.iter().all(|e| matches!(e, Event::Trade(_))));
    }

    #[test]
    fn history_is_clean_ordered_and_walks() {
        let mut sim = Simulator::new(SimulatorConfig::default());
        let mut out = Vec::new();
        let day = 86_400 * 1_000_000_000;
        sim.history(
            UnixNanos(NOW.0 - 10 * day),
            NOW,
            300 * 1_000_000_000,
            NOW,
            &mut out,
        );
        assert_eq!(out.len(), 10 * 288 * 12 * 2);
        let mut p = Processor::new(ProcessorConfig::default());
        let mut o = Output::default();
        for e in out {
            p.process(None, e, NOW, &mut o);
        }
        assert!(
            o.rows.dlq.is_empty(),
            "history has no bad ticks: {:?}",
            o.rows.dlq.first()
        );
        // History runs from a UTC midnight (19:00 in New York) to another: a pair has nine
        // whole UTC days and one still open; a stock's first New York day began before
        // the history (and counts, partial), then nine whole ones, and its last is open.
        let days = |pairs: bool| {
            o.rows
                .daily_metrics
                .iter()
                .filter(|m| m.symbol.is_pair() == pairs)
                .count()
        };
        assert_eq!(days(true), 9 * 3, "nine completed UTC days per pair");
        assert_eq!(days(false), 10 * 9, "ten completed New York days per stock");
        let btc: Vec<_> = o
            .rows
            .daily_metrics
            .iter()
            .filter(|m| m.symbol.as_str() == "BTC-USD")
            .collect();
        assert!(
            btc.iter().any(|m| m.close.as_f64() != 97_000.0),
            "prices move"
        );
        assert!(
            btc.iter()
                .all(|m| m.close.as_f64() > 50_000.0 && m.close.as_f64() < 200_000.0)
        );
    }

    #[test]
    fn anomalies_reach_the_dlq_dedupe_and_alerts() {
        let mut sim = Simulator::new(SimulatorConfig {
            anomaly_rate: 0.02,
            ..Default::default()
        });
        let mut events = Vec::new();
        for k in 0..50 {
            sim.next_batch(1000, UnixNanos(NOW.0 + k * 10_000_000), &mut events);
        }
        let spike = tickflow_process::SpikeRule {
            name: "spike".into(),
            symbol: None,
            window: 100,
            k: 5.0,
            min_samples: 30,
            min_return: 0.01,
            firing: tickflow_process::Firing {
                cooldown_nanos: 0,
                ..Default::default()
            },
        };
        let mut p = Processor::new(ProcessorConfig {
            spikes: vec![spike],
            ..Default::default()
        });
        let mut o = Output::default();
        for e in events {
            p.process(None, e, NOW, &mut o);
        }
        let count = |r| o.rows.dlq.iter().filter(|d| d.reason == r).count();
        assert!(sim.injected.iter().all(|&n| n > 0), "{:?}", sim.injected);
        assert_eq!(
            count(RejectReason::NonPositivePrice) as u64,
            sim.injected[1]
        );
        assert_eq!(count(RejectReason::CrossedQuote) as u64, sim.injected[2]);
        assert_eq!(count(RejectReason::AbsurdTimestamp) as u64, sim.injected[3]);
        assert!(count(RejectReason::Late) as u64 >= sim.injected[4]);
        assert!(o.duplicates > 0);
        assert!(
            o.rows.alerts.len() as u64 >= sim.injected[0] / 2,
            "{} alerts for {} spikes",
            o.rows.alerts.len(),
            sim.injected[0]
        );
    }
}
