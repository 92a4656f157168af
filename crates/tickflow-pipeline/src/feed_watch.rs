//! Detectors that watch the feeds themselves rather than their events, beside processing:
//!
//! - **Stale feeds**: a source that has sent nothing for a while, by the wall clock, while
//!   its market is open. Event time cannot see it (no event, no time), so once a second each
//!   source's event count is compared with the last one seen. A source silent for `after`
//!   fires once; its next events resolve it. A source that never sends anything fires
//!   `after` the start; the watch is not checkpointed, so a feed still silent after a
//!   restart fires again.
//! - **Gaps**: what a streaming source missed while disconnected, as its gap ledger records
//!   it (`tickflow_sources::gaps`): `detected` fires, `filled` resolves, `unfillable` fires
//!   again as data lost. Gaps recorded before the watch began are history, not news.
//!
//! Their alerts are appended to the log, so they are stored and delivered once, as every
//! other alert is.

use std::collections::HashMap;

use tickflow_core::hash::stable_hash;
use tickflow_model::{Alert, AlertKind, Price, Severity, Symbol, UnixNanos};
use tickflow_sources::calendar;
use tickflow_sources::gaps::Gap;

/// When a silence counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hours {
    /// Always: crypto, or a feed expected around the clock.
    #[default]
    Always,
    /// Only in the NYSE regular session, counted from its opening bell.
    Nyse,
}

impl std::str::FromStr for Hours {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "nyse" => Ok(Self::Nyse),
            other => Err(format!(
                "unknown calendar {other:?}: expected always or nyse"
            )),
        }
    }
}

/// One `[[alerts.stale_feed]]` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct StaleRule {
    pub name: String,
    /// The source id it watches; every source when `None`.
    pub source: Option<String>,
    pub after_nanos: i64,
    pub hours: Hours,
    pub severity: Severity,
    pub resolve: bool,
}

#[derive(Debug)]
struct Watched {
    events: u64,
    /// Wall time the count last moved (or the watch began).
    since: i64,
    /// The silence that was alerted, by when it began.
    alerted: Option<i64>,
}

/// The detector's state: per rule and source, the count last seen and since when.
#[derive(Debug, Default)]
pub struct StaleWatch {
    rules: Vec<StaleRule>,
    watched: HashMap<(usize, String), Watched>,
}

impl StaleWatch {
    pub fn new(rules: Vec<StaleRule>) -> Self {
        Self {
            rules,
            watched: HashMap::new(),
        }
    }

    /// Whether there is anything to watch.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Looks at each source's event count at wall time `now`; returns the alerts due: a
    /// silence past its rule's `after` (in hours that count), or events again after one.
    pub fn check(&mut self, now: UnixNanos, sources: &[(String, u64)]) -> Vec<Alert> {
        let mut out = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            for (source, events) in sources {
                if rule.source.as_ref().is_some_and(|s| s != source) {
                    continue;
                }
                let w = self
                    .watched
                    .entry((i, source.clone()))
                    .or_insert_with(|| Watched {
                        events: *events,
                        since: now.0,
                        alerted: None,
                    });
                if *events != w.events {
                    w.events = *events;
                    let silent = now.0 - w.since;
                    w.since = now.0;
                    if let Some(began) = w.alerted.take()
                        && rule.resolve
                    {
                        let message = format!(
                            "source {source}: events again after {} of silence",
                            seconds(silent)
                        );
                        out.push(alert(
                            rule,
                            source,
                            (now, began),
                            AlertKind::Resolved,
                            silent,
                            message,
                        ));
                    }
                    continue;
                }
                if w.alerted.is_some() {
                    continue;
                }
                // Silence counts only while the market is open, from its opening bell.
                let counted_from = match rule.hours {
                    Hours::Always => w.since,
                    Hours::Nyse => match calendar::session(calendar::exchange_date(now)) {
                        Some((open, close)) if open <= now && now < close => w.since.max(open.0),
                        _ => continue,
                    },
                };
                let silent = now.0 - counted_from;
                if silent >= rule.after_nanos {
                    w.alerted = Some(counted_from);
                    let message = format!(
                        "source {source}: no events for {}{}",
                        seconds(silent),
                        match rule.hours {
                            Hours::Always => "",
                            Hours::Nyse => " while NYSE is open",
                        }
                    );
                    out.push(alert(
                        rule,
                        source,
                        (now, counted_from),
                        AlertKind::Fired,
                        silent,
                        message,
                    ));
                }
            }
        }
        out
    }
}

/// One `[[alerts.gap]]` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct GapRule {
    pub name: String,
    /// The source id it watches; every source when `None`.
    pub source: Option<String>,
    /// Shorter gaps are left out.
    pub min_nanos: i64,
    pub severity: Severity,
}

/// The gap detector's state: the state each gap was last seen in.
#[derive(Debug, Default)]
pub struct GapWatch {
    rules: Vec<GapRule>,
    seen: HashMap<(String, String, String, i64), String>,
    started: bool,
}

impl GapWatch {
    pub fn new(rules: Vec<GapRule>) -> Self {
        Self {
            rules,
            ..Self::default()
        }
    }

    /// Whether there is anything to watch.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Compares the ledgers' gaps (each in its latest state) with what was seen before, and
    /// returns the alerts for what changed. The first call only takes note.
    pub fn check(&mut self, now: UnixNanos, gaps: &[Gap]) -> Vec<Alert> {
        let mut out = Vec::new();
        let first = !std::mem::replace(&mut self.started, true);
        for g in gaps {
            let key = (g.source.clone(), g.symbol.clone(), g.kind.clone(), g.from.0);
            let before = self.seen.insert(key, g.state.clone());
            if first || before.as_deref() == Some(g.state.as_str()) {
                continue;
            }
            let span = g.to.0.saturating_sub(g.from.0);
            let what = format!(
                "{} {} {}: gap of {} from {} to {}",
                g.source,
                g.symbol,
                g.kind,
                seconds(span),
                g.from,
                g.to
            );
            let mut due = Vec::new();
            if before.is_none() {
                due.push((AlertKind::Fired, format!("{what} detected")));
            }
            match g.state.as_str() {
                "filled" => due.push((
                    AlertKind::Resolved,
                    format!("{what} filled with {} events", g.events),
                )),
                "unfillable" => due.push((
                    AlertKind::Fired,
                    format!(
                        "{what} cannot be filled, the data is lost: {}",
                        g.detail.as_deref().unwrap_or("no reason given")
                    ),
                )),
                _ => {}
            }
            for rule in &self.rules {
                if rule.source.as_ref().is_some_and(|s| *s != g.source) || span < rule.min_nanos {
                    continue;
                }
                for (n, (kind, message)) in (0i64..).zip(&due) {
                    // A gap seen first as unfillable fires twice: detected, then lost.
                    let id = stable_hash(
                        &[
                            rule.name.as_bytes(),
                            g.source.as_bytes(),
                            g.symbol.as_bytes(),
                            g.kind.as_bytes(),
                            g.state.as_bytes(),
                            kind.as_str().as_bytes(),
                        ],
                        &[g.from.0, n],
                    );
                    out.push(Alert {
                        alert_id: format!("{id:016x}"),
                        rule: rule.name.clone(),
                        symbol: Symbol::parse(&g.symbol)
                            .or_else(|_| Symbol::parse(&g.source))
                            .or_else(|_| Symbol::parse("SOURCE"))
                            .expect("a valid symbol"),
                        ts: now,
                        value: Price::from_raw(span / 1_000_000 * 1_000_000, 3),
                        threshold: seconds(rule.min_nanos),
                        message: message.clone(),
                        severity: rule.severity,
                        delivered_to: "log".to_string(),
                        kind: *kind,
                    });
                }
            }
        }
        out
    }
}

fn seconds(nanos: i64) -> String {
    format!("{} s", nanos / 1_000_000_000)
}

/// An alert of `rule` about `source` at `now`, for the silence that began at `began`.
fn alert(
    rule: &StaleRule,
    source: &str,
    (now, began): (UnixNanos, i64),
    kind: AlertKind,
    silent: i64,
    message: String,
) -> Alert {
    let id = stable_hash(
        &[
            rule.name.as_bytes(),
            source.as_bytes(),
            kind.as_str().as_bytes(),
        ],
        &[began],
    );
    Alert {
        alert_id: format!("{id:016x}"),
        rule: rule.name.clone(),
        // The source stands where a symbol would: what went quiet.
        symbol: Symbol::parse(source)
            .or_else(|_| Symbol::parse("SOURCE"))
            .expect("a valid symbol"),
        ts: now,
        value: Price::from_raw(silent / 1_000_000 * 1_000_000, 3),
        threshold: seconds(rule.after_nanos),
        message,
        severity: rule.severity,
        delivered_to: "log".to_string(),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;
    /// Tuesday 2026-11-24 15:00 UTC: 10:00 in New York, in session.
    const OPEN: i64 = 1_795_532_400 * SEC;

    fn rule(hours: Hours) -> StaleRule {
        StaleRule {
            name: "quiet".into(),
            source: None,
            after_nanos: 60 * SEC,
            hours,
            severity: Severity::Critical,
            resolve: true,
        }
    }

    fn at(watch: &mut StaleWatch, t: i64, counts: &[(&str, u64)]) -> Vec<(String, AlertKind)> {
        let sources: Vec<(String, u64)> = counts.iter().map(|(s, n)| (s.to_string(), *n)).collect();
        watch
            .check(UnixNanos(OPEN + t * SEC), &sources)
            .into_iter()
            .map(|a| (a.message, a.kind))
            .collect()
    }

    #[test]
    fn a_silent_source_fires_once_and_resolves_when_events_return() {
        let mut w = StaleWatch::new(vec![rule(Hours::Always)]);
        assert!(at(&mut w, 0, &[("alpaca", 10), ("coinbase", 5)]).is_empty());
        assert!(at(&mut w, 30, &[("alpaca", 20), ("coinbase", 5)]).is_empty());
        // coinbase has been silent since 0, alpaca since 30.
        assert_eq!(
            at(&mut w, 60, &[("alpaca", 20), ("coinbase", 5)]),
            [(
                "source coinbase: no events for 60 s".to_string(),
                AlertKind::Fired
            )]
        );
        assert!(
            at(&mut w, 89, &[("alpaca", 20), ("coinbase", 5)]).is_empty(),
            "once"
        );
        let later = at(&mut w, 95, &[("alpaca", 20), ("coinbase", 6)]);
        assert_eq!(
            later,
            [
                (
                    "source alpaca: no events for 65 s".to_string(),
                    AlertKind::Fired
                ),
                (
                    "source coinbase: events again after 95 s of silence".to_string(),
                    AlertKind::Resolved
                ),
            ]
        );
    }

    fn gap(state: &str, events: u64) -> Gap {
        Gap {
            source: "alpaca".into(),
            symbol: "NVDA".into(),
            kind: "trades".into(),
            from: UnixNanos(OPEN),
            to: UnixNanos(OPEN + 42 * SEC),
            state: state.into(),
            events,
            detail: (state == "unfillable").then(|| "no history of quotes".into()),
            recorded_at: UnixNanos(OPEN),
        }
    }

    #[test]
    fn a_gap_fires_when_detected_and_resolves_when_filled_and_old_ones_are_history() {
        let rule = GapRule {
            name: "gaps".into(),
            source: None,
            min_nanos: 10 * SEC,
            severity: Severity::Warning,
        };
        let mut w = GapWatch::new(vec![rule.clone()]);
        let now = UnixNanos(OPEN);
        let old = Gap {
            from: UnixNanos(OPEN - 3600 * SEC),
            ..gap("filled", 3)
        };
        assert!(
            w.check(now, std::slice::from_ref(&old)).is_empty(),
            "history"
        );
        let kinds = |alerts: Vec<Alert>| -> Vec<(AlertKind, String)> {
            alerts.into_iter().map(|a| (a.kind, a.message)).collect()
        };
        let detected = kinds(w.check(now, &[old.clone(), gap("detected", 0)]));
        assert_eq!(detected.len(), 1, "{detected:?}");
        assert_eq!(detected[0].0, AlertKind::Fired);
        assert!(
            detected[0]
                .1
                .starts_with("alpaca NVDA trades: gap of 42 s from "),
            "{detected:?}"
        );
        assert!(detected[0].1.ends_with(" detected"), "{detected:?}");
        assert!(
            w.check(now, &[old.clone(), gap("detected", 0)]).is_empty(),
            "once"
        );
        let filled = kinds(w.check(now, &[old.clone(), gap("filled", 17)]));
        assert_eq!(filled.len(), 1);
        assert_eq!(filled[0].0, AlertKind::Resolved);
        assert!(filled[0].1.ends_with("filled with 17 events"), "{filled:?}");
        // Seen first as unfillable: detected and lost at once. Too short for a rule: nothing.
        let mut w = GapWatch::new(vec![rule.clone()]);
        w.check(now, &[]);
        let lost = kinds(w.check(now, &[gap("unfillable", 0)]));
        assert_eq!(
            lost.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [AlertKind::Fired, AlertKind::Fired]
        );
        assert!(
            lost[1]
                .1
                .ends_with("the data is lost: no history of quotes"),
            "{lost:?}"
        );
        let mut w2 = GapWatch::new(vec![rule.clone()]);
        w2.check(now, &[]);
        let ids: Vec<String> = w2
            .check(now, &[gap("unfillable", 0)])
            .into_iter()
            .map(|a| a.alert_id)
            .collect();
        assert_ne!(ids[0], ids[1], "two alerts, two ids");
        let mut w = GapWatch::new(vec![GapRule {
            min_nanos: 60 * SEC,
            ..rule
        }]);
        w.check(now, &[]);
        assert!(w.check(now, &[gap("detected", 0)]).is_empty());
    }

    #[test]
    fn on_the_nyse_calendar_silence_counts_only_in_session_from_the_bell() {
        let mut w = StaleWatch::new(vec![rule(Hours::Nyse)]);
        // 09:00 New York, half an hour before the bell: quiet is expected.
        let before = -3600;
        assert!(at(&mut w, before, &[("alpaca", 1)]).is_empty());
        assert!(at(&mut w, -1900, &[("alpaca", 1)]).is_empty());
        // 09:30:59 is 59 s after the bell; 09:31 is a minute.
        let bell = -1800;
        assert!(at(&mut w, bell + 59, &[("alpaca", 1)]).is_empty());
        let fired = at(&mut w, bell + 60, &[("alpaca", 1)]);
        assert_eq!(fired.len(), 1);
        assert!(
            fired[0]
                .0
                .ends_with("no events for 60 s while NYSE is open"),
            "{fired:?}"
        );
        // Saturday: closed, nothing fires however long it is quiet.
        let mut w = StaleWatch::new(vec![rule(Hours::Nyse)]);
        let saturday = 4 * 86_400;
        assert!(at(&mut w, saturday, &[("alpaca", 1)]).is_empty());
        assert!(at(&mut w, saturday + 3600, &[("alpaca", 1)]).is_empty());
    }
}
