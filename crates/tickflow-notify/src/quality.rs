//! The daily data-quality report: for one day, what each symbol delivered (trades, 1-minute
//! bars, and the holes between them), what was rejected and why (late ticks among them), the
//! alerts each rule sent (stale feeds and gaps among them), and how far each sink lags.
//!
//! Pure: figures in, a [`DailyQuality`] out; where they come from (SQL over the lake, the
//! running pipeline's status) and where the report goes is the caller's business.
//!
//! A gap is a hole between two consecutive final 1-minute bars of a symbol on the day: bars
//! at 14:31 and 14:35 leave 3 minutes missing. The first and last bar bound the day, so a
//! symbol's quiet night or an equity's closed market is not a gap, and the same rule serves
//! a 24-hour crypto book and a 6.5-hour equity session.

use tickflow_model::{Date, Symbol};

use crate::report::escape;

/// What one symbol delivered on the day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolDay {
    pub symbol: Symbol,
    pub trades: u64,
    /// Final 1-minute bars.
    pub bars: u64,
    /// Holes between consecutive bars.
    pub gaps: u64,
    /// Minutes missing in those holes.
    pub missing_minutes: u64,
    pub longest_gap_minutes: u64,
}

/// A sink's lag behind the lake, from a running pipeline's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkLag {
    pub id: String,
    pub kind: String,
    /// Lake flushes committed that the sink has not written.
    pub lag_flushes: u64,
    /// Its last error, if its last attempt failed.
    pub error: Option<String>,
}

/// One day's data quality.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyQuality {
    pub date: Date,
    pub symbols: Vec<SymbolDay>,
    /// DLQ rows by reason, most first.
    pub rejects: Vec<(String, u64)>,
    /// Alerts by rule and kind.
    pub alerts: Vec<(String, String, u64)>,
    /// `None` when no pipeline was running to ask.
    pub sinks: Option<Vec<SinkLag>>,
}

impl DailyQuality {
    /// Rejects of all reasons.
    pub fn rejected(&self) -> u64 {
        self.rejects.iter().map(|(_, n)| n).sum()
    }

    /// Rejects for arriving too late.
    pub fn late(&self) -> u64 {
        self.rejects
            .iter()
            .filter(|(r, _)| r == "late")
            .map(|(_, n)| n)
            .sum()
    }

    /// Holes between bars, over every symbol.
    pub fn gaps(&self) -> u64 {
        self.symbols.iter().map(|s| s.gaps).sum()
    }

    /// `Daily Data Report - 2026-11-23: 12 symbols, 3 gaps (45 min), 41 rejects (7 late)`.
    pub fn subject(&self) -> String {
        let missing: u64 = self.symbols.iter().map(|s| s.missing_minutes).sum();
        format!(
            "Daily Data Report - {}: {} symbol{}, {} gap{} ({missing} min), {} reject{} ({} late)",
            self.date,
            self.symbols.len(),
            plural(self.symbols.len() as u64),
            self.gaps(),
            plural(self.gaps()),
            self.rejected(),
            plural(self.rejected()),
            self.late()
        )
    }

    /// The report as plain text, for the terminal and the mail's text part.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n\n", self.subject());
        out.push_str(&format!(
            "{:<12} {:>9} {:>7} {:>5} {:>9} {:>8}\n",
            "symbol", "trades", "bars", "gaps", "missing", "longest"
        ));
        for s in &self.symbols {
            out.push_str(&format!(
                "{:<12} {:>9} {:>7} {:>5} {:>7} m {:>6} m\n",
                s.symbol.as_str(),
                s.trades,
                s.bars,
                s.gaps,
                s.missing_minutes,
                s.longest_gap_minutes
            ));
        }
        out.push_str("\nrejected by reason:\n");
        if self.rejects.is_empty() {
            out.push_str("  none\n");
        }
        for (reason, n) in &self.rejects {
            out.push_str(&format!("  {reason:<20} {n:>9}\n"));
        }
        out.push_str("\nalerts by rule:\n");
        if self.alerts.is_empty() {
            out.push_str("  none\n");
        }
        for (rule, kind, n) in &self.alerts {
            out.push_str(&format!("  {rule:<28} {kind:<10} {n:>7}\n"));
        }
        out.push_str("\nsinks:\n");
        match &self.sinks {
            None => out.push_str("  no pipeline running: lag unknown\n"),
            Some(sinks) if sinks.is_empty() => out.push_str("  none configured\n"),
            Some(sinks) => {
                for s in sinks {
                    out.push_str(&format!(
                        "  {:<16} {:<10} {:>5} flush(es) behind{}\n",
                        s.id,
                        s.kind,
                        s.lag_flushes,
                        s.error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        out
    }

    /// The report as an HTML page.
    pub fn html(&self) -> String {
        let mut symbols = String::new();
        for s in &self.symbols {
            let class = if s.gaps > 0 { " class=\"bad\"" } else { "" };
            symbols.push_str(&format!(
                "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(s.symbol.as_str()),
                s.trades,
                s.bars,
                s.gaps,
                s.missing_minutes,
                s.longest_gap_minutes
            ));
        }
        let rows = |items: Vec<Vec<String>>| -> String {
            if items.is_empty() {
                return "<tr><td colspan=\"3\">none</td></tr>\n".to_string();
            }
            items
                .into_iter()
                .map(|cells| {
                    let cells: String = cells
                        .iter()
                        .map(|c| format!("<td>{}</td>", escape(c)))
                        .collect();
                    format!("<tr>{cells}</tr>\n")
                })
                .collect()
        };
        let rejects = rows(
            self.rejects
                .iter()
                .map(|(r, n)| vec![r.clone(), n.to_string()])
                .collect(),
        );
        let alerts = rows(
            self.alerts
                .iter()
                .map(|(r, k, n)| vec![r.clone(), k.clone(), n.to_string()])
                .collect(),
        );
        let sinks = match &self.sinks {
            None => "<p>No pipeline was running: sink lag unknown.</p>".to_string(),
            Some(sinks) => format!(
                "<table><tr><th>sink</th><th>type</th><th>flushes behind</th><th>error</th></tr>\n{}</table>",
                rows(
                    sinks
                        .iter()
                        .map(|s| vec![
                            s.id.clone(),
                            s.kind.clone(),
                            s.lag_flushes.to_string(),
                            s.error.clone().unwrap_or_default()
                        ])
                        .collect()
                )
            ),
        };
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{subject}</title>\n<style>body{{font-family:sans-serif}}table{{border-collapse:collapse;margin-bottom:1em}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}.bad{{background:#fde8e8}}</style></head>\n<body>\n<h1>{subject}</h1>\n<h2>Symbols</h2>\n<p>A gap is a hole between two consecutive 1-minute bars of the day.</p>\n<table><tr><th>symbol</th><th>trades</th><th>1m bars</th><th>gaps</th><th>minutes missing</th><th>longest gap (min)</th></tr>\n{symbols}</table>\n<h2>Rejected by reason</h2>\n<table><tr><th>reason</th><th>rows</th></tr>\n{rejects}</table>\n<h2>Alerts by rule</h2>\n<table><tr><th>rule</th><th>kind</th><th>alerts</th></tr>\n{alerts}</table>\n<h2>Sinks</h2>\n{sinks}\n</body></html>\n",
            subject = escape(&self.subject()),
        )
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> DailyQuality {
        DailyQuality {
            date: Date::parse("2026-11-23").unwrap(),
            symbols: vec![
                SymbolDay {
                    symbol: Symbol::parse("NVDA").unwrap(),
                    trades: 1200,
                    bars: 386,
                    gaps: 2,
                    missing_minutes: 4,
                    longest_gap_minutes: 3,
                },
                SymbolDay {
                    symbol: Symbol::parse("AAPL").unwrap(),
                    trades: 900,
                    bars: 390,
                    gaps: 0,
                    missing_minutes: 0,
                    longest_gap_minutes: 0,
                },
            ],
            rejects: vec![("late".into(), 7), ("negative_price".into(), 1)],
            alerts: vec![("feed-silent".into(), "fired".into(), 1)],
            sinks: None,
        }
    }

    #[test]
    fn the_subject_counts_symbols_gaps_and_rejects() {
        assert_eq!(
            report().subject(),
            "Daily Data Report - 2026-11-23: 2 symbols, 2 gaps (4 min), 8 rejects (7 late)"
        );
        let quiet = DailyQuality {
            symbols: Vec::new(),
            rejects: vec![("late".into(), 1)],
            ..report()
        };
        assert_eq!(
            quiet.subject(),
            "Daily Data Report - 2026-11-23: 0 symbols, 0 gaps (0 min), 1 reject (1 late)"
        );
    }

    #[test]
    fn text_and_html_hold_every_figure() {
        let r = report();
        let text = r.text();
        assert!(
            text.contains("NVDA              1200     386     2       4 m      3 m"),
            "{text}"
        );
        assert!(text.contains("  late                         7"), "{text}");
        assert!(text.contains("no pipeline running: lag unknown"), "{text}");
        let html = r.html();
        assert!(html.contains("<tr class=\"bad\"><td>NVDA</td><td>1200</td><td>386</td><td>2</td><td>4</td><td>3</td></tr>"), "{html}");
        assert!(
            html.contains("<tr><td>feed-silent</td><td>fired</td><td>1</td></tr>"),
            "{html}"
        );
        let with_sinks = DailyQuality {
            sinks: Some(vec![SinkLag {
                id: "pg".into(),
                kind: "postgres".into(),
                lag_flushes: 3,
                error: Some("connection refused".into()),
            }]),
            ..r
        };
        assert!(
            with_sinks.text().contains(
                "  pg               postgres       3 flush(es) behind: connection refused"
            ),
            "{}",
            with_sinks.text()
        );
    }
}
