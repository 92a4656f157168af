use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tickflow_core::ingest;
use tickflow_model::{Bar, BarInterval, DlqRecord, Event, RejectReason, Rows, Symbol, UnixNanos};

use crate::alerts::{self, AlertState, SpikeRule, ThresholdRule};
use crate::bars::IntervalBars;
use crate::daily::DailyState;
use crate::dedupe::{DedupeWindow, LegacyWindow, natural_key};
use crate::validate::{self, Limits};
use tickflow_core::hash::StableBuild;

/// What processing needs to know; built from the validated config.
#[derive(Clone, Debug)]
pub struct ProcessorConfig {
    /// How far behind a symbol's newest event time a tick may arrive and still count.
    pub lateness_nanos: i64,
    pub limits: Limits,
    pub thresholds: Vec<ThresholdRule>,
    pub spikes: Vec<SpikeRule>,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            lateness_nanos: 2_000_000_000,
            limits: Limits::default(),
            thresholds: Vec::new(),
            spikes: Vec::new(),
        }
    }
}

/// Rows produced by processing, grouped by table, plus what was dropped.
#[derive(Debug, Default)]
pub struct Output {
    pub rows: Rows,
    pub duplicates: u64,
}

/// Everything one symbol's processing remembers.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SymbolState {
    /// Newest event time seen (trades and quotes).
    watermark: i64,
    dedupe: DedupeWindow,
    bars: [IntervalBars; 5],
    daily: DailyState,
    alerts: AlertState,
}

/// The processor's whole state, checkpointed with the log offset it corresponds to.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    symbols: HashMap<Symbol, SymbolState, StableBuild>,
}

impl State {
    /// Symbols seen.
    pub fn symbol_count(&self) -> usize {
        self.symbols.len()
    }

    /// Reads a state in the layout of checkpoint format 1, whose dedupe keys were a
    /// sequence of pairs; the derived `Deserialize` reads the current layout.
    ///
    /// # Errors
    /// The deserializer's, for bytes that are not such a state.
    pub fn deserialize_v1<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<State, D::Error> {
        let v1 = StateV1::deserialize(deserializer)?;
        let symbols = v1
            .symbols
            .into_iter()
            .map(|(symbol, s)| {
                let state = SymbolState {
                    watermark: s.watermark,
                    dedupe: s.dedupe.0,
                    bars: s.bars,
                    daily: s.daily,
                    alerts: s.alerts,
                };
                (symbol, state)
            })
            .collect();
        Ok(State { symbols })
    }
}

/// [`SymbolState`] as checkpoint format 1 laid it out: the same fields in the same order.
#[derive(Deserialize)]
struct SymbolStateV1 {
    watermark: i64,
    dedupe: LegacyWindow,
    bars: [IntervalBars; 5],
    daily: DailyState,
    alerts: AlertState,
}

#[derive(Deserialize)]
struct StateV1 {
    symbols: HashMap<Symbol, SymbolStateV1, StableBuild>,
}

/// Validates, dedupes and aggregates events one at a time; see the crate docs.
#[derive(Debug)]
pub struct Processor {
    config: ProcessorConfig,
    state: State,
}

impl Processor {
    /// A processor with empty state.
    pub fn new(config: ProcessorConfig) -> Self {
        Self::with_state(config, State::default())
    }

    /// A processor resuming from a checkpointed state.
    pub fn with_state(config: ProcessorConfig, state: State) -> Self {
        Self { config, state }
    }

    /// The state to checkpoint.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Processes one event read at `offset` of the log; `now` stamps DLQ rows.
    pub fn process(&mut self, offset: Option<u64>, event: Event, now: UnixNanos, out: &mut Output) {
        if let Err((reason, error)) = validate::check(&event, &self.config.limits) {
            out.rows
                .dlq
                .push(dlq_row(&event, offset, reason, error, now));
            return;
        }
        let lateness = self.config.lateness_nanos;
        let ts = event.ts_event().0;
        let state = match self.state.symbols.get_mut(event.symbol()) {
            Some(s) => s,
            None => self
                .state
                .symbols
                .entry(event.symbol().clone())
                .or_default(),
        };
        if ts < state.watermark.saturating_sub(lateness) {
            let error = format!(
                "ts_event {} is more than {}ms behind the newest event {}",
                event.ts_event(),
                lateness / 1_000_000,
                UnixNanos(state.watermark)
            );
            out.rows
                .dlq
                .push(dlq_row(&event, offset, RejectReason::Late, error, now));
            return;
        }
        if !state.dedupe.insert(ts, natural_key(&event)) {
            out.duplicates += 1;
            return;
        }
        // A tick from a skewed clock may be ahead of its receipt by up to max_future; letting it
        // move the watermark that far would make minutes of correct ticks "late". The watermark
        // therefore advances at most to ts_recv + lateness.
        let mark = ts.min(event.ts_recv().0.saturating_add(lateness));
        let advanced = mark > state.watermark;
        if advanced {
            state.watermark = mark;
            state.dedupe.evict_before(mark.saturating_sub(lateness));
        }
        match event {
            Event::Trade(trade) => {
                for (interval, bars) in BarInterval::ALL.into_iter().zip(state.bars.iter_mut()) {
                    bars.add(&trade.symbol, interval, &trade);
                }
                alerts::evaluate(
                    &mut state.alerts,
                    &self.config.thresholds,
                    &self.config.spikes,
                    &trade,
                    &mut out.rows.alerts,
                );
                out.rows.trades.push(trade);
            }
            Event::Quote(quote) => out.rows.quotes.push(quote),
        }
        if advanced {
            let first_new = out.rows.bars.len();
            for bars in &mut state.bars {
                bars.close_until(state.watermark, lateness, &mut out.rows.bars);
            }
            for bar in &out.rows.bars[first_new..] {
                if bar.interval == BarInterval::D1 {
                    out.rows
                        .daily_metrics
                        .push(state.daily.on_final_daily_bar(bar));
                }
            }
        }
    }

    /// Sends an undecodable record to the DLQ, keeping its bytes (hex) for inspection.
    pub fn reject_malformed(
        offset: u64,
        bytes: &[u8],
        error: &str,
        now: UnixNanos,
        out: &mut Output,
    ) {
        let payload: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        out.rows.dlq.push(DlqRecord {
            ts: now,
            source: "log".into(),
            offset: Some(offset),
            reason: RejectReason::Malformed,
            error: error.to_string(),
            payload,
        });
    }

    /// A rejected record in the log (input a source could not read, an alert no attempt
    /// could deliver): into the DLQ with its source, reason, error and payload.
    pub fn reject_input(
        offset: u64,
        reason: RejectReason,
        source: &str,
        error: &str,
        payload: &str,
        now: UnixNanos,
        out: &mut Output,
    ) {
        out.rows.dlq.push(DlqRecord {
            ts: now,
            source: source.to_string(),
            offset: Some(offset),
            reason,
            error: error.to_string(),
            payload: payload.to_string(),
        });
    }

    /// Bars not yet final, for queries that want the latest picture.
    pub fn open_bars(&self) -> Vec<Bar> {
        self.state
            .symbols
            .values()
            .flat_map(|s| s.bars.iter().flat_map(IntervalBars::open_bars))
            .collect()
    }
}

fn dlq_row(
    event: &Event,
    offset: Option<u64>,
    reason: RejectReason,
    error: String,
    now: UnixNanos,
) -> DlqRecord {
    DlqRecord {
        ts: now,
        source: event.source().to_string(),
        offset,
        reason,
        error,
        payload: ingest::to_json(event),
    }
}

#[cfg(test)]
mod tests;
