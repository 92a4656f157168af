//! The processing state as older checkpoint formats laid it out, read into today's.
//!
//! Format 1 stored dedupe keys as a sequence of pairs; format 2 packed them, and stored open
//! bars before a bar could come from a feed (a VWAP and trade count always present, no source,
//! no per-interval origin). Formats 1 to 3 kept alert state by rule position: each rule's last
//! firing and each spike rule's window. Each layout is the same fields in the same order as
//! it was written.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;
use tickflow_core::hash::StableBuild;
use tickflow_model::{Bar, BarInterval, Price, Symbol, UnixNanos, Volume};

use crate::alerts::{AlertState, ReturnWindow, RuleState};
use crate::bars::{IntervalBars, OpenBar};
use crate::daily::DailyState;
use crate::dedupe::{DedupeWindow, LegacyWindow};
use crate::origin::Origin;
use crate::processor::{State, SymbolState};

/// Alert state of formats 1 to 3: the last firing of each threshold rule then each spike
/// rule, and each spike rule's window, by position.
#[derive(Deserialize)]
struct AlertStateV3 {
    last_fired: Vec<Option<i64>>,
    windows: Vec<ReturnWindow>,
    last_price: Option<Price>,
}

impl From<AlertStateV3> for AlertState {
    /// Unnamed states, matched to the rules by position on the first trade (as they were
    /// kept). A threshold that held stays quiet until its cooldown from that firing ends.
    fn from(v3: AlertStateV3) -> Self {
        let thresholds = v3.last_fired.len().saturating_sub(v3.windows.len());
        let mut windows = v3.windows.into_iter();
        let rules = (0..)
            .zip(v3.last_fired)
            .map(|(i, last_sent)| RuleState {
                last_sent,
                window: if i < thresholds {
                    ReturnWindow::default()
                } else {
                    windows.next().unwrap_or_default()
                },
                ..RuleState::default()
            })
            .collect();
        AlertState::from_parts(rules, v3.last_price)
    }
}

#[derive(Deserialize)]
struct BarV2 {
    symbol: Symbol,
    interval: BarInterval,
    start: UnixNanos,
    end: UnixNanos,
    open: Price,
    high: Price,
    low: Price,
    close: Price,
    volume: Volume,
    vwap: Price,
    trade_count: u64,
    is_final: bool,
}

#[derive(Deserialize)]
struct OpenBarV2 {
    bar: BarV2,
    notional: i128,
}

#[derive(Deserialize)]
struct IntervalBarsV2 {
    open: VecDeque<(OpenBarV2, i64, i64)>,
}

impl From<IntervalBarsV2> for IntervalBars {
    fn from(v2: IntervalBarsV2) -> Self {
        let open = v2.open.into_iter().map(|(b, first, last)| {
            let o = b.bar;
            let bar = Bar {
                symbol: o.symbol,
                interval: o.interval,
                start: o.start,
                end: o.end,
                open: o.open,
                high: o.high,
                low: o.low,
                close: o.close,
                volume: o.volume,
                vwap: Some(o.vwap),
                trade_count: Some(o.trade_count),
                is_final: o.is_final,
                source: None,
            };
            (OpenBar::from_parts(bar, b.notional), first, last)
        });
        IntervalBars::from_parts(open.collect())
    }
}

/// Format 2's per-symbol state, and format 1's with `W` its dedupe layout.
#[derive(Deserialize)]
struct SymbolStateOld<W> {
    watermark: i64,
    dedupe: W,
    bars: [IntervalBarsV2; 5],
    daily: DailyState,
    alerts: AlertStateV3,
}

impl<W: Into<DedupeWindow>> From<SymbolStateOld<W>> for SymbolState {
    fn from(s: SymbolStateOld<W>) -> Self {
        SymbolState {
            watermark: s.watermark,
            dedupe: s.dedupe.into(),
            bars: s.bars.map(Into::into),
            daily: s.daily,
            alerts: s.alerts.into(),
            // Every interval so far was built from trades; the spans they covered are not
            // known, so a feed's bar is judged only against what is built from now on.
            origins: Default::default(),
        }
    }
}

impl From<LegacyWindow> for DedupeWindow {
    fn from(w: LegacyWindow) -> Self {
        w.0
    }
}

#[derive(Deserialize)]
pub(crate) struct StateOld<W> {
    symbols: HashMap<Symbol, SymbolStateOld<W>, StableBuild>,
}

/// Format 3's per-symbol state.
#[derive(Deserialize)]
struct SymbolStateV3 {
    watermark: i64,
    dedupe: DedupeWindow,
    bars: [IntervalBars; 5],
    daily: DailyState,
    alerts: AlertStateV3,
    origins: [Origin; 5],
}

/// Checkpoint format 3's state.
#[derive(Deserialize)]
pub(crate) struct StateV3 {
    symbols: HashMap<Symbol, SymbolStateV3, StableBuild>,
}

impl From<StateV3> for State {
    fn from(old: StateV3) -> Self {
        State::from_symbols(
            old.symbols
                .into_iter()
                .map(|(symbol, s)| {
                    let state = SymbolState {
                        watermark: s.watermark,
                        dedupe: s.dedupe,
                        bars: s.bars,
                        daily: s.daily,
                        alerts: s.alerts.into(),
                        origins: s.origins,
                    };
                    (symbol, state)
                })
                .collect(),
        )
    }
}

/// Checkpoint format 1's state.
pub(crate) type StateV1 = StateOld<LegacyWindow>;
/// Checkpoint format 2's state.
pub(crate) type StateV2 = StateOld<DedupeWindow>;

impl<W: Into<DedupeWindow>> From<StateOld<W>> for State {
    fn from(old: StateOld<W>) -> Self {
        State::from_symbols(
            old.symbols
                .into_iter()
                .map(|(symbol, s)| (symbol, s.into()))
                .collect(),
        )
    }
}
