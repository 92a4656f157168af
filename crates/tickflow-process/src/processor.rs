use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tickflow_core::ingest;
use tickflow_model::{
    Bar, BarInterval, DailyMetric, DlqRecord, Event, FedBar, RejectReason, Rows, Symbol, UnixNanos,
};

use crate::alerts::{self, AlertState, Bursts, ExprRule, Rules, SpikeRule, ThresholdRule};
use crate::bars::IntervalBars;
use crate::daily::DailyState;
use crate::days::Days;
use crate::dedupe::{DedupeWindow, natural_key};
use crate::legacy;
use crate::origin::{Origin, Verdict};
use crate::rules::Row;
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
    pub exprs: Vec<ExprRule>,
    /// Where each symbol's day starts, for daily bars and metrics.
    pub days: Days,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            lateness_nanos: 2_000_000_000,
            limits: Limits::default(),
            thresholds: Vec::new(),
            spikes: Vec::new(),
            exprs: Vec::new(),
            days: Days::default(),
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
pub(crate) struct SymbolState {
    /// Newest event time seen (trades and quotes).
    pub(crate) watermark: i64,
    pub(crate) dedupe: DedupeWindow,
    pub(crate) bars: [IntervalBars; 5],
    pub(crate) daily: DailyState,
    pub(crate) alerts: AlertState,
    /// Per interval, whether its bars are built from trades or come from a feed.
    pub(crate) origins: [Origin; 5],
}

/// The processor's whole state, checkpointed with the log offset it corresponds to.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    symbols: HashMap<Symbol, SymbolState, StableBuild>,
    /// Each coalescing rule's open burst, across symbols.
    bursts: Bursts,
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
        legacy::StateV1::deserialize(deserializer).map(Into::into)
    }

    /// Reads a state in the layout of checkpoint format 2, from before bars came from feeds.
    ///
    /// # Errors
    /// The deserializer's, for bytes that are not such a state.
    pub fn deserialize_v2<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<State, D::Error> {
        legacy::StateV2::deserialize(deserializer).map(Into::into)
    }

    /// Reads a state in the layout of checkpoint format 3, whose alert state was kept by rule
    /// position, from before alerts fired on edges.
    ///
    /// # Errors
    /// The deserializer's, for bytes that are not such a state.
    pub fn deserialize_v3<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<State, D::Error> {
        legacy::StateV3::deserialize(deserializer).map(Into::into)
    }

    pub(crate) fn from_symbols(symbols: HashMap<Symbol, SymbolState, StableBuild>) -> Self {
        Self {
            symbols,
            bursts: Bursts::default(),
        }
    }
}

/// Validates, dedupes and aggregates events one at a time; see the crate docs.
#[derive(Debug)]
pub struct Processor {
    config: ProcessorConfig,
    rules: Rules,
    state: State,
}

impl Processor {
    /// A processor with empty state.
    pub fn new(config: ProcessorConfig) -> Self {
        Self::with_state(config, State::default())
    }

    /// A processor resuming from a checkpointed state.
    pub fn with_state(config: ProcessorConfig, state: State) -> Self {
        let rules = Rules::new(
            config.thresholds.clone(),
            config.spikes.clone(),
            config.exprs.clone(),
            1,
        );
        Self {
            config,
            rules,
            state,
        }
    }

    /// Replaces the alert rules (a reload). A rule that keeps its name keeps its state: a
    /// condition that holds stays fired, a spike window stays warm.
    pub fn set_rules(
        &mut self,
        thresholds: Vec<ThresholdRule>,
        spikes: Vec<SpikeRule>,
        exprs: Vec<ExprRule>,
    ) {
        let generation = self.rules.generation() + 1;
        self.config.thresholds.clone_from(&thresholds);
        self.config.spikes.clone_from(&spikes);
        self.config.exprs.clone_from(&exprs);
        self.rules = Rules::new(thresholds, spikes, exprs, generation);
    }

    /// Puts stored history in front of the expression rules' indicator windows, so they
    /// do not start empty: final `bars` and `daily` rows, in any order, from before what the
    /// processor has produced since (a start: the lake after recovery). A
    /// window gets only rows older than what it already holds, so warming up again after a
    /// reload is safe.
    pub fn warm(&mut self, bars: &[Bar], daily: &[DailyMetric]) {
        if self.rules.exprs().is_empty() {
            return;
        }
        let mut bars: Vec<&Bar> = bars.iter().filter(|b| b.is_final).collect();
        bars.sort_by_key(|b| (b.symbol.as_str(), b.interval, b.start));
        bars.dedup_by_key(|b| (b.symbol.as_str(), b.interval, b.start));
        let mut daily: Vec<&DailyMetric> = daily.iter().collect();
        daily.sort_by_key(|m| (m.symbol.as_str(), m.date));
        daily.dedup_by_key(|m| (m.symbol.as_str(), m.date));
        let mut by_symbol: HashMap<&Symbol, Vec<Row<'_>>> = HashMap::new();
        for bar in bars {
            by_symbol
                .entry(&bar.symbol)
                .or_default()
                .push(Row::Bar(bar));
        }
        let mut prev: Option<&DailyMetric> = None;
        for metric in daily {
            let prev_close = prev.filter(|p| p.symbol == metric.symbol).map(|p| p.close);
            let end = self.config.days.end_of(&metric.symbol, metric.date);
            by_symbol
                .entry(&metric.symbol)
                .or_default()
                .push(Row::Daily {
                    metric,
                    prev_close,
                    end,
                });
            prev = Some(metric);
        }
        for (symbol, rows) in by_symbol {
            let state = self.state.symbols.entry(symbol.clone()).or_default();
            state.alerts.warm(symbol, &self.rules, &rows);
        }
    }

    /// The alert rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
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
        let event = match event {
            Event::Bar(fed) => return self.process_fed_bar(offset, fed, now, out),
            other => other,
        };
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
        // Only an event that counts moves a burst's window on: a late or repeated one changes
        // nothing.
        if !self.state.bursts.is_empty() {
            alerts::close_bursts(&mut self.state.bursts, ts, &mut out.rows.alerts);
        }
        // A tick from a skewed clock may be ahead of its receipt by up to max_future; letting it
        // move the watermark that far would make minutes of correct ticks "late". The watermark
        // therefore advances at most to ts_recv + lateness.
        let mark = ts.min(event.ts_recv().0.saturating_add(lateness));
        if mark > state.watermark {
            state.watermark = mark;
            state.dedupe.evict_before(mark.saturating_sub(lateness));
            // Bars the event completes close first, so rules on it see them as history. Its
            // own bar is never among them: it ends after the event, which is not late.
            let first_new = out.rows.bars.len();
            for bars in &mut state.bars {
                bars.close_until(state.watermark, lateness, &mut out.rows.bars);
            }
            state.emitted(
                first_new,
                out,
                (&self.rules, &self.config.days),
                &mut self.state.bursts,
            );
        }
        match event {
            Event::Trade(trade) => {
                for ((interval, bars), origin) in BarInterval::ALL
                    .into_iter()
                    .zip(state.bars.iter_mut())
                    .zip(&state.origins)
                {
                    if origin.built_from_trades() {
                        bars.add(&trade.symbol, interval, &trade, &self.config.days);
                    }
                }
                alerts::evaluate(
                    &mut state.alerts,
                    &mut self.state.bursts,
                    &self.rules,
                    &trade,
                    &mut out.rows.alerts,
                );
                out.rows.trades.push(trade);
            }
            Event::Quote(quote) => {
                alerts::evaluate_row(
                    &mut state.alerts,
                    &mut self.state.bursts,
                    &self.rules,
                    &Row::Quote(&quote),
                    &mut out.rows.alerts,
                );
                out.rows.quotes.push(quote);
            }
            Event::Bar(_) => {}
        }
    }

    /// A bar a feed sent whole: stored, kept out as a duplicate, or refused, by the rule in
    /// [`crate::origin`]; a daily one also gives the day's metrics.
    fn process_fed_bar(
        &mut self,
        offset: Option<u64>,
        fed: FedBar,
        now: UnixNanos,
        out: &mut Output,
    ) {
        let bar = fed.bar;
        let state = match self.state.symbols.get_mut(&bar.symbol) {
            Some(s) => s,
            None => self.state.symbols.entry(bar.symbol.clone()).or_default(),
        };
        let i = interval_index(bar.interval);
        match state.origins[i].feed(bar.start.0, bar.end.0) {
            Verdict::Duplicate => out.duplicates += 1,
            Verdict::BeforeFirst { first } => {
                let error = format!(
                    "this {} bar starts at {}, before {}'s first bar from a feed ({}): a feed's bars must arrive in time order, history first",
                    bar.interval,
                    bar.start,
                    bar.symbol,
                    UnixNanos(first)
                );
                let event = Event::Bar(FedBar { bar, ..fed });
                out.rows
                    .dlq
                    .push(dlq_row(&event, offset, RejectReason::Late, error, now));
            }
            Verdict::Store { takes_over } => {
                if takes_over {
                    let first_new = out.rows.bars.len();
                    state.bars[i].hand_over(bar.start.0, &mut out.rows.bars);
                    state.emitted(
                        first_new,
                        out,
                        (&self.rules, &self.config.days),
                        &mut self.state.bursts,
                    );
                }
                let first_new = out.rows.bars.len();
                out.rows.bars.push(bar);
                state.finals(
                    first_new,
                    out,
                    (&self.rules, &self.config.days),
                    &mut self.state.bursts,
                );
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

impl SymbolState {
    /// Bookkeeping for the built bars just emitted from `first_new` on: their origin's span,
    /// then what every final bar gets ([`SymbolState::finals`]).
    fn emitted(
        &mut self,
        first_new: usize,
        out: &mut Output,
        (rules, days): (&Rules, &Days),
        bursts: &mut Bursts,
    ) {
        for bar in &out.rows.bars[first_new..] {
            self.origins[interval_index(bar.interval)].built(bar.start.0, bar.end.0);
        }
        self.finals(first_new, out, (rules, days), bursts);
    }

    /// For the final bars from `first_new` on, built or fed: the rules on bars, and a daily
    /// one's metrics and the rules on those.
    fn finals(
        &mut self,
        first_new: usize,
        out: &mut Output,
        (rules, days): (&Rules, &Days),
        bursts: &mut Bursts,
    ) {
        let rows = &mut out.rows;
        for bar in &rows.bars[first_new..] {
            alerts::evaluate_row(
                &mut self.alerts,
                bursts,
                rules,
                &Row::Bar(bar),
                &mut rows.alerts,
            );
            if bar.interval == BarInterval::D1 {
                let prev_close = self.daily.last_close();
                let metric = self
                    .daily
                    .on_final_daily_bar(bar, days.date(&bar.symbol, bar.start));
                let row = Row::Daily {
                    metric: &metric,
                    prev_close,
                    end: bar.end.0,
                };
                alerts::evaluate_row(&mut self.alerts, bursts, rules, &row, &mut rows.alerts);
                rows.daily_metrics.push(metric);
            }
        }
    }
}

/// Where `interval` sits in a symbol's per-interval arrays, which follow [`BarInterval::ALL`].
fn interval_index(interval: BarInterval) -> usize {
    BarInterval::ALL
        .iter()
        .position(|i| *i == interval)
        .unwrap_or(0)
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
