//! Alert rules: price thresholds per symbol and a return-spike detector, each with a cooldown
//! per (rule, symbol) measured in event time, so a replay fires exactly the same alerts.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tickflow_model::{Alert, Price, Severity, Symbol, Trade};

use tickflow_core::hash::stable_hash;

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

/// Fires while a symbol's trade price is beyond a threshold, at most once per cooldown.
#[derive(Clone, Debug)]
pub struct ThresholdRule {
    pub name: String,
    /// `None` applies the rule to every symbol.
    pub symbol: Option<Symbol>,
    pub condition: Condition,
    pub cooldown_nanos: i64,
    pub severity: Severity,
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
    pub cooldown_nanos: i64,
    pub severity: Severity,
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

/// Per-symbol alert state: cooldowns by rule position and spike windows.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AlertState {
    last_fired: Vec<Option<i64>>,
    windows: Vec<ReturnWindow>,
    last_price: Option<Price>,
    /// Positions of the threshold and spike rules that apply to this symbol, found on its
    /// first trade, so each trade costs the rules that concern it, not every rule configured.
    #[serde(skip)]
    applicable: Option<(Vec<u32>, Vec<u32>)>,
}

fn applicable_rules(
    symbol: &Symbol,
    thresholds: &[ThresholdRule],
    spikes: &[SpikeRule],
) -> (Vec<u32>, Vec<u32>) {
    let applies = |s: &Option<Symbol>| s.as_ref().is_none_or(|s| s == symbol);
    (
        (0u32..)
            .zip(thresholds)
            .filter(|(_, r)| applies(&r.symbol))
            .map(|(i, _)| i)
            .collect(),
        (0u32..)
            .zip(spikes)
            .filter(|(_, r)| applies(&r.symbol))
            .map(|(i, _)| i)
            .collect(),
    )
}

/// Evaluates every rule for one trade, appending fired alerts.
pub(crate) fn evaluate(
    state: &mut AlertState,
    thresholds: &[ThresholdRule],
    spikes: &[SpikeRule],
    trade: &Trade,
    out: &mut Vec<Alert>,
) {
    let rules = thresholds.len() + spikes.len();
    if state.last_fired.len() != rules {
        state.last_fired.resize(rules, None);
    }
    if state.windows.len() != spikes.len() {
        state
            .windows
            .resize_with(spikes.len(), ReturnWindow::default);
    }
    let ts = trade.ts_event.0;
    let (threshold_ix, spike_ix) = state
        .applicable
        .get_or_insert_with(|| applicable_rules(&trade.symbol, thresholds, spikes));
    let last_fired = &mut state.last_fired;
    let mut cooled = |i: usize, cooldown: i64| {
        let ok = last_fired[i].is_none_or(|last| ts.saturating_sub(last) >= cooldown);
        if ok {
            last_fired[i] = Some(ts);
        }
        ok
    };
    for &i in threshold_ix.iter() {
        let (i, rule) = (i as usize, &thresholds[i as usize]);
        let (hit, threshold) = match rule.condition {
            Condition::Above(x) => (trade.price > x, x),
            Condition::Below(x) => (trade.price < x, x),
        };
        if hit && cooled(i, rule.cooldown_nanos) {
            out.push(alert(
                &rule.name,
                trade,
                threshold.to_string(),
                format!(
                    "{} {} ({})",
                    trade.symbol,
                    rule.condition
                        .to_string()
                        .replace("price", &trade.price.to_string()),
                    rule.condition
                ),
                rule.severity,
            ));
        }
    }
    let Some(prev) = state.last_price.replace(trade.price) else {
        return;
    };
    if prev.raw() == 0 {
        return;
    }
    let r = (trade.price.raw() - prev.raw()) as f64 / prev.raw() as f64;
    for &j in spike_ix.iter() {
        let (j, rule) = (j as usize, &spikes[j as usize]);
        let window = &mut state.windows[j];
        if window.returns.len() >= rule.min_samples.max(2) {
            let (mean, std) = window.mean_std();
            let z = if std > 0.0 {
                (r - mean).abs() / std
            } else {
                0.0
            };
            if z > rule.k
                && r.abs() >= rule.min_return
                && cooled(thresholds.len() + j, rule.cooldown_nanos)
            {
                let msg = format!(
                    "{} moved {:+.3}% in one trade ({} -> {}), {z:.1}σ over the last {} returns",
                    trade.symbol,
                    r * 100.0,
                    prev,
                    trade.price,
                    window.returns.len()
                );
                out.push(alert(
                    &rule.name,
                    trade,
                    format!("{}σ", rule.k),
                    msg,
                    rule.severity,
                ));
            }
        }
        window.push(r, rule.window);
    }
}

fn alert(
    rule: &str,
    trade: &Trade,
    threshold: String,
    message: String,
    severity: Severity,
) -> Alert {
    let id = stable_hash(
        &[rule.as_bytes(), trade.symbol.as_str().as_bytes()],
        &[trade.ts_event.0],
    );
    Alert {
        alert_id: format!("{id:016x}"),
        rule: rule.to_string(),
        symbol: trade.symbol.clone(),
        ts: trade.ts_event,
        value: trade.price,
        threshold,
        message,
        severity,
        delivered_to: "log".to_string(),
    }
}
