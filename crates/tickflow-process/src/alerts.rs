//! Alert rules: price thresholds per symbol and a return-spike detector, evaluated on each
//! trade in event time, so a replay fires exactly the same alerts.
//!
//! A threshold is a state, and fires on its edge: once when the condition becomes true, not on
//! every trade while it holds. It is armed again only after the price has cleared the
//! threshold by the rule's hysteresis band, so a price hovering at the threshold fires once.
//! While it holds, a reminder may follow every `reminder` interval; when it clears, a
//! `resolved` alert may follow. A condition that comes back within the cooldown of the last
//! alert is held, and fires when the cooldown ends if it still holds.
//!
//! A spike is an event, not a state: each detection fires, at most once per cooldown.
//!
//! Any rule may coalesce bursts: once one of its alerts has gone out, its further alerts (of
//! any symbol) within the `coalesce` window are recorded as `coalesced` and not sent, and one
//! `digest` alert when the window ends says how many there were and for which symbols.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tickflow_model::{Alert, AlertKind, BarInterval, Price, Severity, Symbol, Trade, UnixNanos};

use tickflow_core::hash::stable_hash;

use crate::rules::indicators::{Layout, Series};
use crate::rules::{Expr, Row, Source};

/// `price > X` or `price < X`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Above(Price),
    Below(Price),
}

impl FromStr for Condition {
    type Err = String;

    /// Parses `price > 200` or `price < 150.5`.
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("expected `price > X` or `price < X`, got {s:?}");
        let rest = s
            .trim()
            .strip_prefix("price")
            .ok_or_else(usage)?
            .trim_start();
        let (op, value) = rest.split_at(rest.chars().next().map_or(0, char::len_utf8));
        let value = Price::parse(value.trim()).map_err(|e| format!("{e} in {s:?}"))?;
        match op {
            ">" => Ok(Self::Above(value)),
            "<" => Ok(Self::Below(value)),
            _ => Err(usage()),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Above(p) => write!(f, "price > {p}"),
            Self::Below(p) => write!(f, "price < {p}"),
        }
    }
}

impl Condition {
    /// The threshold price.
    pub fn threshold(self) -> Price {
        match self {
            Self::Above(x) | Self::Below(x) => x,
        }
    }

    fn holds(self, price: Price) -> bool {
        match self {
            Self::Above(x) => price > x,
            Self::Below(x) => price < x,
        }
    }
}

/// How far past its threshold a price must go back before a threshold rule counts as clear:
/// a price (`0.5`) or a percentage of the threshold (`0.25%`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hysteresis {
    #[default]
    None,
    Price(Price),
    /// Hundredths of a percent are kept exactly: `0.25%` is 25 basis points.
    Percent(Price),
}

impl FromStr for Hysteresis {
    type Err = String;

    /// Parses `0.5` (a price) or `0.25%` (a share of the threshold).
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let (number, percent) = match text.strip_suffix('%') {
            Some(n) => (n.trim_end(), true),
            None => (text, false),
        };
        let value = Price::parse(number).map_err(|e| {
            format!("{e}: expected a price such as 0.5 or a percentage such as 0.25%, got {s:?}")
        })?;
        if value.raw() < 0 {
            return Err(format!("{s:?} is negative"));
        }
        Ok(match (value.raw(), percent) {
            (0, _) => Self::None,
            (_, true) => Self::Percent(value),
            (_, false) => Self::Price(value),
        })
    }
}

impl fmt::Display for Hysteresis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("0"),
            Self::Price(p) => write!(f, "{p}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// When and how a rule's alerts go out, whatever the rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Firing {
    pub severity: Severity,
    /// Least event time between two alerts of the rule for one symbol.
    pub cooldown_nanos: i64,
    /// While a condition holds, it is sent again this long after it was last sent.
    pub reminder_nanos: Option<i64>,
    /// A `resolved` alert follows when a condition that was sent clears.
    pub resolve: bool,
    /// Alerts of the rule within this long after one was sent are folded into a digest.
    pub coalesce_nanos: Option<i64>,
}

impl Default for Firing {
    fn default() -> Self {
        Self {
            severity: Severity::Warning,
            cooldown_nanos: 60_000_000_000,
            reminder_nanos: None,
            resolve: false,
            coalesce_nanos: None,
        }
    }
}

/// Fires when a symbol's trade price crosses a threshold; see the module docs.
#[derive(Clone, Debug)]
pub struct ThresholdRule {
    pub name: String,
    /// `None` applies the rule to every symbol.
    pub symbol: Option<Symbol>,
    pub condition: Condition,
    pub hysteresis: Hysteresis,
    pub firing: Firing,
}

impl ThresholdRule {
    /// The price the rule counts as clear at: the threshold moved back by the hysteresis band.
    pub fn clear_level(&self) -> Price {
        let x = self.condition.threshold();
        let band = match self.hysteresis {
            Hysteresis::None => 0,
            Hysteresis::Price(p) => p.raw(),
            Hysteresis::Percent(p) => Price::from_ratio(
                i128::from(x.raw()) * i128::from(p.raw()),
                100 * 1_000_000_000,
                9,
            )
            .map_or(0, |b| b.raw().abs()),
        };
        let raw = match self.condition {
            Condition::Above(_) => x.raw().saturating_sub(band),
            Condition::Below(_) => x.raw().saturating_add(band),
        };
        Price::from_raw(raw, x.precision().max(self.band_precision())).normalized()
    }

    fn band_precision(&self) -> u8 {
        match self.hysteresis {
            Hysteresis::None => 0,
            Hysteresis::Price(p) => p.precision(),
            Hysteresis::Percent(_) => 9,
        }
    }

    /// Cleared: back past the clear level (at it counts as clear when there is no band).
    fn cleared(&self, price: Price, clear: Price) -> bool {
        let banded = self.hysteresis != Hysteresis::None;
        match self.condition {
            Condition::Above(_) if banded => price <= clear,
            Condition::Below(_) if banded => price >= clear,
            condition => !condition.holds(price),
        }
    }
}

/// Fires when a trade's return from the previous trade is more than `k` standard deviations
/// from the mean of the last `window` returns.
#[derive(Clone, Debug)]
pub struct SpikeRule {
    pub name: String,
    pub symbol: Option<Symbol>,
    pub window: usize,
    pub k: f64,
    /// Returns needed before the detector may fire, so a cold start is quiet.
    pub min_samples: usize,
    /// Smallest absolute return (a fraction, 0.01 = 1%) that may fire. Prices move in ticks:
    /// a quiet symbol's standard deviation can be tiny, and one cent would be "14σ".
    pub min_return: f64,
    /// Reminders and resolves do not apply to an event.
    pub firing: Firing,
}

/// Fires when a SQL condition over the rows it watches becomes true, on its edge as a
/// threshold does (without a band: the condition is the rule); see [`crate::rules`].
#[derive(Clone, Debug)]
pub struct ExprRule {
    pub name: String,
    /// `None` applies the rule to every symbol (the condition may still name some).
    pub symbol: Option<Symbol>,
    pub when: Expr,
    pub firing: Firing,
}

/// Every rule, with the levels derived from them, as the processor evaluates them.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    thresholds: Vec<ThresholdRule>,
    clear_levels: Vec<Price>,
    spikes: Vec<SpikeRule>,
    exprs: Vec<ExprRule>,
    /// The series the expression rules' indicators read, and each rule's indicator slots.
    layout: Layout,
    expr_slots: Vec<Vec<usize>>,
    /// Told apart from the rules a symbol's state was laid out for (see [`AlertState`]).
    generation: u64,
}

impl Rules {
    /// Rules to evaluate; `generation` must differ from that of any rules used before by the
    /// same processor.
    pub fn new(
        thresholds: Vec<ThresholdRule>,
        spikes: Vec<SpikeRule>,
        exprs: Vec<ExprRule>,
        generation: u64,
    ) -> Self {
        let mut layout = Layout::default();
        let expr_slots = exprs
            .iter()
            .map(|r| layout.add(r.when.indicators()))
            .collect();
        Self {
            clear_levels: thresholds.iter().map(ThresholdRule::clear_level).collect(),
            thresholds,
            spikes,
            exprs,
            layout,
            expr_slots,
            generation,
        }
    }

    /// Distinguishes these rules from those a processor used before.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Threshold rules, in configured order.
    pub fn thresholds(&self) -> &[ThresholdRule] {
        &self.thresholds
    }

    /// Spike rules, in configured order.
    pub fn spikes(&self) -> &[SpikeRule] {
        &self.spikes
    }

    /// Expression rules, in configured order.
    pub fn exprs(&self) -> &[ExprRule] {
        &self.exprs
    }

    /// Whether these rules' indicators need history that `before`'s did not keep: a reload
    /// that adds or lengthens a window, which a warm-up should then fill.
    pub fn need_more_history_than(&self, before: &Rules) -> bool {
        self.layout.needs_more_than(&before.layout)
    }

    /// How many of the newest final bars of `interval` (or daily rows, for `None`) the
    /// expression rules' indicators read: what a warm-up at start should load.
    pub fn lookback(&self, interval: Option<BarInterval>) -> usize {
        let source = match interval {
            Some(i) => Source::Bars(i),
            None => Source::DailyMetrics,
        };
        self.layout
            .series
            .iter()
            .filter(|((s, _), _)| *s == source)
            .map(|(_, len)| *len)
            .max()
            .unwrap_or(0)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.thresholds
            .iter()
            .map(|r| r.name.as_str())
            .chain(self.spikes.iter().map(|r| r.name.as_str()))
            .chain(self.exprs.iter().map(|r| r.name.as_str()))
    }

    fn firing(&self, rule: &str) -> Option<&Firing> {
        let thresholds = self.thresholds.iter().map(|r| (&r.name, &r.firing));
        let spikes = self.spikes.iter().map(|r| (&r.name, &r.firing));
        let exprs = self.exprs.iter().map(|r| (&r.name, &r.firing));
        thresholds
            .chain(spikes)
            .chain(exprs)
            .find(|(name, _)| *name == rule)
            .map(|(_, f)| f)
    }
}

/// Rolling mean and variance of the last `window` returns.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ReturnWindow {
    returns: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    updates: u64,
}

impl ReturnWindow {
    fn push(&mut self, r: f64, window: usize) {
        self.returns.push_back(r);
        self.sum += r;
        self.sum_sq += r * r;
        while self.returns.len() > window.max(1) {
            if let Some(old) = self.returns.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
        self.updates += 1;
        // Re-sum now and then so floating error cannot build up over millions of updates.
        if self.updates.is_multiple_of(1024) {
            self.sum = self.returns.iter().sum();
            self.sum_sq = self.returns.iter().map(|x| x * x).sum();
        }
    }

    fn mean_std(&self) -> (f64, f64) {
        let n = self.returns.len() as f64;
        let mean = self.sum / n;
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        (mean, var.sqrt())
    }
}

/// One rule's state for one symbol.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct RuleState {
    /// The rule's name; empty when read from a checkpoint that did not record it.
    pub(crate) name: String,
    /// Event time the condition became true, while it holds (thresholds).
    pub(crate) active_since: Option<i64>,
    /// Whether the current activation was sent (the cooldown may hold it back).
    pub(crate) sent: bool,
    /// Event time of the last alert sent (fired or reminder).
    pub(crate) last_sent: Option<i64>,
    /// Recent returns (spikes).
    pub(crate) window: ReturnWindow,
    /// Alerts of this rule and symbol so far (thresholds), part of each one's id.
    pub(crate) seq: u64,
}

/// Per-symbol alert state: each rule's, by name, and the previous price for returns.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AlertState {
    pub(crate) rules: Vec<RuleState>,
    pub(crate) last_price: Option<Price>,
    /// The [`Rules::generation`] `rules` is laid out for: thresholds then spikes, in order.
    /// A checkpoint does not keep it, so the first trade after a start matches states to the
    /// rules by name, and a rule added, removed or reordered by a reload keeps its state.
    #[serde(skip)]
    layout: u64,
    /// Positions of the threshold, spike and expression rules that apply to this symbol,
    /// so each trade costs the rules that concern it, not every rule configured.
    #[serde(skip)]
    applicable: (Vec<u32>, Vec<u32>, Vec<u32>),
    /// The recent bars and daily rows the expression rules' indicators read. Not
    /// checkpointed: a start warms them up from the lake, which holds exactly the rows the
    /// checkpointed state had produced.
    #[serde(skip)]
    series: Series,
}

impl AlertState {
    pub(crate) fn from_parts(rules: Vec<RuleState>, last_price: Option<Price>) -> Self {
        Self {
            rules,
            last_price,
            ..Self::default()
        }
    }

    fn lay_out(&mut self, symbol: &Symbol, rules: &Rules) {
        let mut old = std::mem::take(&mut self.rules);
        let count = rules.thresholds.len() + rules.spikes.len() + rules.exprs.len();
        // A checkpoint from before states were named kept them by position.
        let positional = old.len() == count && old.iter().all(|s| s.name.is_empty());
        self.rules = rules
            .names()
            .enumerate()
            .map(|(i, name)| {
                let mut state = if positional {
                    std::mem::take(&mut old[i])
                } else {
                    old.iter()
                        .position(|s| s.name == name)
                        .map(|j| old.swap_remove(j))
                        .unwrap_or_default()
                };
                state.name = name.to_string();
                state
            })
            .collect();
        let applies = |s: &Option<Symbol>| s.as_ref().is_none_or(|s| s == symbol);
        self.applicable = (
            (0u32..)
                .zip(&rules.thresholds)
                .filter(|(_, r)| applies(&r.symbol))
                .map(|(i, _)| i)
                .collect(),
            (0u32..)
                .zip(&rules.spikes)
                .filter(|(_, r)| applies(&r.symbol))
                .map(|(i, _)| i)
                .collect(),
            (0u32..)
                .zip(&rules.exprs)
                .filter(|(_, r)| applies(&r.symbol))
                .map(|(i, _)| i)
                .collect(),
        );
        self.series.lay_out(&rules.layout);
        self.layout = rules.generation;
    }

    /// Lays the state out for `rules` if it was laid out for others.
    fn ensure(&mut self, symbol: &Symbol, rules: &Rules) {
        if self.layout != rules.generation {
            self.lay_out(symbol, rules);
        }
    }

    /// Puts history in front of the indicators' series: the symbol's final bars and daily
    /// rows from before anything this state holds, oldest first.
    pub(crate) fn warm(&mut self, symbol: &Symbol, rules: &Rules, rows: &[Row<'_>]) {
        self.ensure(symbol, rules);
        self.series.warm(&rules.layout, rows);
    }
}

/// Where a rule stands after a row, for [`step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    /// The condition holds.
    Holds,
    /// Not held, but not clear either: inside a hysteresis band, or unknown (NULL).
    Between,
    /// Clear: the rule is armed again.
    Clear,
}

/// Moves one rule's state for one symbol on a row at `ts`, and says what to send, if
/// anything: fired on the edge (once the cooldown allows), reminders while it holds, a
/// resolve when a sent condition clears.
fn step(s: &mut RuleState, firing: &Firing, level: Level, ts: i64) -> Option<AlertKind> {
    match (s.active_since, level) {
        (None, Level::Holds) => {
            s.active_since = Some(ts);
            s.sent = false;
        }
        (None, _) | (Some(_), Level::Between) => return None,
        (Some(_), Level::Clear) => {
            s.active_since = None;
            let resolved = firing.resolve && s.sent;
            s.sent = false;
            if !resolved {
                return None;
            }
            s.seq += 1;
            return Some(AlertKind::Resolved);
        }
        (Some(_), Level::Holds) => {}
    }
    let since_sent = |l: Option<i64>| l.map_or(i64::MAX, |l| ts.saturating_sub(l));
    let kind = if !s.sent {
        (since_sent(s.last_sent) >= firing.cooldown_nanos).then_some(AlertKind::Fired)
    } else {
        firing
            .reminder_nanos
            .filter(|r| since_sent(s.last_sent) >= *r)
            .map(|_| AlertKind::Reminder)
    }?;
    // Folded into a digest, it still counts as sent: the digest told the reader.
    s.sent = true;
    s.last_sent = Some(ts);
    s.seq += 1;
    Some(kind)
}

/// A rule's coalescing window: open from an alert sent until `until`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Burst {
    until: i64,
    /// Alerts coalesced so far.
    count: u64,
    /// The first few symbols they were for, for the digest's message.
    symbols: Vec<Symbol>,
    last_value: Option<Price>,
    threshold: String,
    severity: Severity,
    /// Symbols beyond the ones named were coalesced.
    more_symbols: bool,
}

/// Symbols a digest names before it says "and N more".
const DIGEST_SYMBOLS: usize = 10;

/// Open bursts by rule name, shared by every symbol.
pub(crate) type Bursts = BTreeMap<String, Burst>;

/// Evaluates every rule for one trade, appending its alerts.
pub(crate) fn evaluate(
    state: &mut AlertState,
    bursts: &mut Bursts,
    rules: &Rules,
    trade: &Trade,
    out: &mut Vec<Alert>,
) {
    state.ensure(&trade.symbol, rules);
    let first_new = out.len();
    let ts = trade.ts_event.0;
    let price = trade.price;
    let subject = Subject {
        symbol: &trade.symbol,
        ts,
        value: price,
    };
    for &i in &state.applicable.0 {
        let i = i as usize;
        let (rule, s) = (&rules.thresholds[i], &mut state.rules[i]);
        let clear = rules.clear_levels[i];
        let level = if rule.condition.holds(price) {
            Level::Holds
        } else if rule.cleared(price, clear) {
            Level::Clear
        } else {
            Level::Between
        };
        let Some(kind) = step(s, &rule.firing, level, ts) else {
            continue;
        };
        let message = match kind {
            AlertKind::Resolved => format!(
                "{} back to {price}: {} cleared{}",
                trade.symbol,
                rule.condition,
                if clear == rule.condition.threshold() {
                    String::new()
                } else {
                    format!(" (clear at {clear})")
                }
            ),
            AlertKind::Reminder => format!(
                "{} still {}: {price}, since {}",
                trade.symbol,
                rule.condition,
                UnixNanos(s.active_since.unwrap_or(ts))
            ),
            _ => format!(
                "{} {} ({})",
                trade.symbol,
                rule.condition
                    .to_string()
                    .replace("price", &price.to_string()),
                rule.condition
            ),
        };
        out.push(alert(
            &rule.name,
            &subject,
            (kind, s.seq),
            rule.condition.threshold().to_string(),
            message,
            rule.firing.severity,
        ));
    }
    spikes(state, rules, trade, out);
    exprs(state, rules, &Row::Trade(trade), out);
    coalesce_new(bursts, rules, &mut out[first_new..]);
}

/// Evaluates the expression rules on a quote, a final bar or a day's metrics; a final row
/// first joins the indicators' series.
pub(crate) fn evaluate_row(
    state: &mut AlertState,
    bursts: &mut Bursts,
    rules: &Rules,
    row: &Row<'_>,
    out: &mut Vec<Alert>,
) {
    if rules.exprs.is_empty() {
        return;
    }
    state.ensure(row.symbol(), rules);
    state.series.push(&rules.layout, row);
    let first_new = out.len();
    exprs(state, rules, row, out);
    coalesce_new(bursts, rules, &mut out[first_new..]);
}

fn coalesce_new(bursts: &mut Bursts, rules: &Rules, new: &mut [Alert]) {
    for a in new {
        if let Some(firing) = rules.firing(&a.rule) {
            coalesce(bursts, firing, a);
        }
    }
}

fn exprs(state: &mut AlertState, rules: &Rules, row: &Row<'_>, out: &mut Vec<Alert>) {
    if state.applicable.2.is_empty() {
        return;
    }
    let watch = row.watch();
    let offset = rules.thresholds.len() + rules.spikes.len();
    let ts = row.ts();
    for &k in &state.applicable.2 {
        let k = k as usize;
        let rule = &rules.exprs[k];
        if rule.when.watch() != watch {
            continue;
        }
        let (series, slots) = (&mut state.series, &rules.expr_slots[k]);
        let mut indicator = |i: usize| series.value(&rules.layout, slots[i]);
        let level = match rule.when.eval(row, &mut indicator) {
            Some(true) => Level::Holds,
            Some(false) => Level::Clear,
            None => Level::Between,
        };
        let s = &mut state.rules[offset + k];
        let Some(kind) = step(s, &rule.firing, level, ts) else {
            continue;
        };
        let values = rule.when.describe(row, &mut indicator);
        let (symbol, when) = (row.symbol(), rule.when.text());
        let message = match kind {
            AlertKind::Resolved => format!("{symbol} {watch}: no longer {when} ({values})"),
            AlertKind::Reminder => format!(
                "{symbol} {watch}: still {when} ({values}), since {}",
                UnixNanos(s.active_since.unwrap_or(ts))
            ),
            _ => format!("{symbol} {watch}: {when} ({values})"),
        };
        let subject = Subject {
            symbol,
            ts,
            value: row.price(),
        };
        out.push(alert(
            &rule.name,
            &subject,
            (kind, s.seq),
            when.to_string(),
            message,
            rule.firing.severity,
        ));
    }
}

/// What an alert is about: a symbol, at an event time, at a price.
struct Subject<'a> {
    symbol: &'a Symbol,
    ts: i64,
    value: Price,
}

fn spikes(state: &mut AlertState, rules: &Rules, trade: &Trade, out: &mut Vec<Alert>) {
    let Some(prev) = state.last_price.replace(trade.price) else {
        return;
    };
    if prev.raw() == 0 {
        return;
    }
    let ts = trade.ts_event.0;
    let r = (trade.price.raw() - prev.raw()) as f64 / prev.raw() as f64;
    let offset = rules.thresholds.len();
    for &j in &state.applicable.1 {
        let j = j as usize;
        let (rule, s) = (&rules.spikes[j], &mut state.rules[offset + j]);
        let window = &mut s.window;
        if window.returns.len() >= rule.min_samples.max(2) {
            let (mean, std) = window.mean_std();
            let z = if std > 0.0 {
                (r - mean).abs() / std
            } else {
                0.0
            };
            let cooled = s
                .last_sent
                .is_none_or(|l| ts.saturating_sub(l) >= rule.firing.cooldown_nanos);
            if z > rule.k && r.abs() >= rule.min_return && cooled {
                s.last_sent = Some(ts);
                let msg = format!(
                    "{} moved {:+.3}% in one trade ({} -> {}), {z:.1}σ over the last {} returns",
                    trade.symbol,
                    r * 100.0,
                    prev,
                    trade.price,
                    window.returns.len()
                );
                let subject = Subject {
                    symbol: &trade.symbol,
                    ts,
                    value: trade.price,
                };
                out.push(alert(
                    &rule.name,
                    &subject,
                    (AlertKind::Fired, 0),
                    format!("{}σ", rule.k),
                    msg,
                    rule.firing.severity,
                ));
            }
        }
        window.push(r, rule.window);
    }
}

/// Opens a burst for a sent alert of a coalescing rule, or folds the alert into the open one.
fn coalesce(bursts: &mut Bursts, firing: &Firing, alert: &mut Alert) {
    let Some(window) = firing.coalesce_nanos else {
        return;
    };
    let ts = alert.ts.0;
    match bursts.get_mut(&alert.rule) {
        Some(burst) if ts < burst.until => {
            alert.kind = AlertKind::Coalesced;
            burst.count += 1;
            if !burst.symbols.contains(&alert.symbol) {
                if burst.symbols.len() < DIGEST_SYMBOLS {
                    burst.symbols.push(alert.symbol.clone());
                } else {
                    burst.more_symbols = true;
                }
            }
            burst.last_value = Some(alert.value);
            burst.severity = burst.severity.max(alert.severity);
        }
        _ => {
            bursts.insert(
                alert.rule.clone(),
                Burst {
                    until: ts.saturating_add(window),
                    threshold: alert.threshold.clone(),
                    severity: alert.severity,
                    ..Burst::default()
                },
            );
        }
    }
}

/// Ends the bursts whose window has passed by event time `now`, each with a digest of what
/// it coalesced (none when it coalesced nothing).
pub(crate) fn close_bursts(bursts: &mut Bursts, now: i64, out: &mut Vec<Alert>) {
    bursts.retain(|rule, burst| {
        if now < burst.until {
            return true;
        }
        if let (Some(symbol), Some(value)) = (burst.symbols.first(), burst.last_value) {
            let named = burst
                .symbols
                .iter()
                .map(Symbol::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let message = format!(
                "{} more {rule} alert{} until {}: {named}{}",
                burst.count,
                if burst.count == 1 { "" } else { "s" },
                UnixNanos(burst.until),
                if burst.more_symbols { " …" } else { "" }
            );
            let id = stable_hash(
                &[rule.as_bytes(), b"digest", symbol.as_str().as_bytes()],
                &[burst.until, burst.count as i64],
            );
            out.push(Alert {
                alert_id: format!("{id:016x}"),
                rule: rule.clone(),
                symbol: symbol.clone(),
                ts: UnixNanos(burst.until),
                value,
                threshold: std::mem::take(&mut burst.threshold),
                message,
                severity: burst.severity,
                delivered_to: "log".to_string(),
                kind: AlertKind::Digest,
            });
        }
        false
    });
}

/// An alert of `rule` about `subject`. Its id is made from the rule, the symbol, the event
/// time and, except for a spike, the kind and the count of the rule's alerts for the symbol,
/// so rows at the same nanosecond that fire, resolve and fire again differ.
fn alert(
    rule: &str,
    subject: &Subject<'_>,
    (kind, seq): (AlertKind, u64),
    threshold: String,
    message: String,
    severity: Severity,
) -> Alert {
    let symbol = subject.symbol.as_str().as_bytes();
    // A spike's id is the one it always had (seq 0).
    let id = match seq {
        0 => stable_hash(&[rule.as_bytes(), symbol], &[subject.ts]),
        _ => stable_hash(
            &[rule.as_bytes(), symbol, kind.as_str().as_bytes()],
            &[subject.ts, seq as i64],
        ),
    };
    Alert {
        alert_id: format!("{id:016x}"),
        rule: rule.to_string(),
        symbol: subject.symbol.clone(),
        ts: UnixNanos(subject.ts),
        value: subject.value,
        threshold,
        message,
        severity,
        delivered_to: "log".to_string(),
        kind,
    }
}

#[cfg(test)]
mod tests;
