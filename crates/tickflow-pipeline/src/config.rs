//! Configuration in three steps: raw TOML ([`RawConfig`], serde) → validated [`Plan`] (every
//! problem collected, each with file, line and key) → running [`crate::Pipeline`].
//!
//! `${VAR}` and `${VAR:-default}` are replaced from the environment before parsing, so secrets
//! stay out of files. Unknown keys are errors: a typo must not silently become a default.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tickflow_model::{Severity, Symbol};
use tickflow_process::validate::Limits;
use tickflow_process::{Condition, ProcessorConfig, SpikeRule, ThresholdRule};
use tickflow_sources::{SimSymbol, SimulatorConfig};

use crate::error::{ConfigError, Problem};

/// The demo configuration, embedded so `tickflow demo` needs no file.
pub const DEMO_TOML: &str = include_str!("../../../config/demo.toml");

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: Option<String>,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub processing: RawProcessing,
    #[serde(default)]
    pub lake: RawLake,
    #[serde(default)]
    pub sources: Vec<RawSource>,
    #[serde(default)]
    pub alerts: RawAlerts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub bind: Option<String>,
    pub port: Option<i64>,
    pub max_body_mb: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub segment_mb: Option<i64>,
    pub retention_hours: Option<i64>,
    pub retention_gb: Option<f64>,
    pub fsync: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcessing {
    pub lateness_ms: Option<i64>,
    pub max_future_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLake {
    pub flush_interval_ms: Option<i64>,
    pub flush_rows: Option<i64>,
    pub symbol_buckets: Option<i64>,
    pub compact_interval_secs: Option<i64>,
    pub compact_target_mb: Option<i64>,
}

/// One `[[sources]]` entry; `type` picks the variant. Adding a source adds a variant here.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawSource {
    Simulator {
        rate: Option<i64>,
        seed: Option<u64>,
        anomaly_rate: Option<f64>,
        quote_ratio: Option<f64>,
        history_days: Option<i64>,
        history_step_secs: Option<i64>,
        symbols: Option<Vec<String>>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    #[serde(default)]
    pub threshold: Vec<RawThreshold>,
    #[serde(default)]
    pub spike: Vec<RawSpike>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThreshold {
    pub name: String,
    pub symbol: Option<String>,
    pub condition: String,
    pub cooldown_secs: Option<i64>,
    pub severity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpike {
    pub name: String,
    pub symbol: Option<String>,
    pub window: Option<i64>,
    pub k: Option<f64>,
    pub min_samples: Option<i64>,
    pub min_return_pct: Option<f64>,
    pub cooldown_secs: Option<i64>,
    pub severity: Option<String>,
}

/// Where the HTTP API listens.
#[derive(Clone, Debug)]
pub struct HttpPlan {
    pub bind: IpAddr,
    pub port: u16,
    pub max_body_bytes: usize,
}

/// Log settings.
#[derive(Clone, Debug)]
pub struct LogPlan {
    pub segment_bytes: u64,
    pub retention_age: Option<Duration>,
    pub retention_bytes: Option<u64>,
    pub fsync: bool,
}

/// When the lake flushes.
#[derive(Clone, Debug)]
pub struct LakePlan {
    pub flush_interval: Duration,
    pub flush_rows: usize,
    /// Shared `bucket=NN` folders for symbols; 0 = one `symbol=SYM` folder each.
    pub symbol_buckets: u32,
    /// How often small files are merged; `None` = never.
    pub compact_every: Option<Duration>,
    pub compact: tickflow_lake::CompactPolicy,
}

/// A simulator to run.
#[derive(Clone, Debug)]
pub struct SimulatorPlan {
    pub config: SimulatorConfig,
    /// Live events per second; 0 = as fast as possible.
    pub rate: u64,
    pub history_days: u32,
    pub history_step_nanos: i64,
}

/// A validated configuration, ready to start.
#[derive(Clone, Debug)]
pub struct Plan {
    pub data_dir: PathBuf,
    pub http: HttpPlan,
    pub log: LogPlan,
    pub processing: ProcessorConfig,
    pub lake: LakePlan,
    pub simulator: Option<SimulatorPlan>,
}

/// Replaces `${VAR}` and `${VAR:-default}`; an unset variable without default is a problem.
fn interpolate(text: &str, problems: &mut Vec<(usize, String)>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match (std::env::var(name), default) {
            (Ok(v), _) => out.push_str(&v),
            (Err(_), Some(d)) => out.push_str(d),
            (Err(_), None) => {
                let offset = text.len() - rest.len() + start;
                problems.push((offset, format!("environment variable {name} is not set (use ${{{name}:-default}} for a default)")));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// `alerts.threshold[0].name` from serde_ignored's path.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        P::Map { parent, key } => {
            let parent = key_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            key_path(parent)
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Finds the byte span of the value at a dotted path like `alerts.threshold[1].condition`.
fn span_of(root: &toml::de::DeTable<'_>, path: &str) -> Option<std::ops::Range<usize>> {
    let mut table = root;
    let mut span = None;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (key, index) = match part.split_once('[') {
            Some((k, idx)) => (k, idx.trim_end_matches(']').parse::<usize>().ok()),
            None => (*part, None),
        };
        let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == key)?;
        span = Some(k.span());
        let mut value = v;
        if let Some(i) = index {
            let toml::de::DeValue::Array(items) = value.get_ref() else {
                return span;
            };
            value = items.get(i)?;
            span = Some(value.span());
        }
        if i + 1 == parts.len() {
            return Some(value.span());
        }
        match value.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            _ => return span,
        }
    }
    span
}

/// Collects problems with their key paths while validating.
struct Checker {
    problems: Vec<(String, String)>,
}

impl Checker {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push((key.into(), message.into()));
    }

    fn range(&mut self, key: &str, value: Option<i64>, default: i64, min: i64, max: i64) -> i64 {
        match value {
            None => default,
            Some(v) if (min..=max).contains(&v) => v,
            Some(v) => {
                self.add(key, format!("{v} is out of range {min}..={max}"));
                default
            }
        }
    }

    fn symbol(&mut self, key: &str, value: Option<&str>) -> Option<Symbol> {
        value.and_then(|s| {
            Symbol::parse(s)
                .map_err(|e| self.add(key, e.to_string()))
                .ok()
        })
    }

    fn severity(&mut self, key: &str, value: Option<&str>) -> Severity {
        match value {
            None => Severity::default(),
            Some("info") => Severity::Info,
            Some("warning") => Severity::Warning,
            Some("critical") => Severity::Critical,
            Some(other) => {
                self.add(
                    key,
                    format!("unknown severity {other:?}: expected info, warning or critical"),
                );
                Severity::default()
            }
        }
    }
}

fn validate(raw: RawConfig, checker: &mut Checker) -> Plan {
    let c = checker;
    // Relative to the working directory, like every other path a command line takes.
    let data_dir = raw
        .data_dir
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./tickflow-data"));
    let bind = match raw
        .http
        .bind
        .as_deref()
        .unwrap_or("127.0.0.1")
        .parse::<IpAddr>()
    {
        Ok(ip) => ip,
        Err(_) => {
            c.add(
                "http.bind",
                format!(
                    "{:?} is not an IP address",
                    raw.http.bind.unwrap_or_default()
                ),
            );
            IpAddr::from([127, 0, 0, 1])
        }
    };
    let http = HttpPlan {
        bind,
        port: c.range("http.port", raw.http.port, 8750, 0, 65_535) as u16,
        max_body_bytes: c.range("http.max_body_mb", raw.http.max_body_mb, 16, 1, 1024) as usize
            * 1024
            * 1024,
    };
    let retention_gb = match raw.log.retention_gb {
        Some(v) if v.is_nan() || v <= 0.0 => {
            c.add("log.retention_gb", format!("{v} must be positive"));
            None
        }
        other => other,
    };
    let log = LogPlan {
        segment_bytes: c.range("log.segment_mb", raw.log.segment_mb, 128, 1, 4096) as u64
            * 1024
            * 1024,
        retention_age: raw.log.retention_hours.map(|_| {
            Duration::from_secs(
                3600 * c.range(
                    "log.retention_hours",
                    raw.log.retention_hours,
                    168,
                    1,
                    24 * 3650,
                ) as u64,
            )
        }),
        retention_bytes: retention_gb.map(|gb| (gb * 1024.0 * 1024.0 * 1024.0) as u64),
        fsync: raw.log.fsync.unwrap_or(true),
    };
    let mut thresholds = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, t) in raw.alerts.threshold.into_iter().enumerate() {
        let key = |f: &str| format!("alerts.threshold[{i}].{f}");
        if !names.insert(t.name.clone()) {
            c.add(key("name"), format!("duplicate rule name {:?}", t.name));
        }
        let condition = t
            .condition
            .parse::<Condition>()
            .map_err(|e| c.add(key("condition"), e))
            .ok();
        let symbol = c.symbol(&key("symbol"), t.symbol.as_deref());
        let cooldown = c.range(&key("cooldown_secs"), t.cooldown_secs, 60, 0, 86_400 * 30);
        let severity = c.severity(&key("severity"), t.severity.as_deref());
        if let Some(condition) = condition {
            thresholds.push(ThresholdRule {
                name: t.name,
                symbol,
                condition,
                cooldown_nanos: cooldown * 1_000_000_000,
                severity,
            });
        }
    }
    let mut spikes = Vec::new();
    for (i, s) in raw.alerts.spike.into_iter().enumerate() {
        let key = |f: &str| format!("alerts.spike[{i}].{f}");
        if !names.insert(s.name.clone()) {
            c.add(key("name"), format!("duplicate rule name {:?}", s.name));
        }
        let k = s.k.unwrap_or(6.0);
        if k.is_nan() || k <= 0.0 || k.is_infinite() {
            c.add(
                key("k"),
                format!("{k} must be a positive number of standard deviations"),
            );
        }
        let window = c.range(&key("window"), s.window, 200, 2, 100_000) as usize;
        let min_samples = c.range(&key("min_samples"), s.min_samples, 50, 2, 100_000) as usize;
        if min_samples > window {
            c.add(
                key("min_samples"),
                format!("{min_samples} is larger than window {window}"),
            );
        }
        let min_return_pct = s.min_return_pct.unwrap_or(1.0);
        if min_return_pct.is_nan() || !(0.0..=100.0).contains(&min_return_pct) {
            c.add(
                key("min_return_pct"),
                format!("{min_return_pct} must be a percentage in 0..=100"),
            );
        }
        spikes.push(SpikeRule {
            name: s.name,
            symbol: c.symbol(&key("symbol"), s.symbol.as_deref()),
            window,
            k,
            min_samples,
            min_return: min_return_pct / 100.0,
            cooldown_nanos: c.range(&key("cooldown_secs"), s.cooldown_secs, 60, 0, 86_400 * 30)
                * 1_000_000_000,
            severity: c.severity(&key("severity"), s.severity.as_deref()),
        });
    }
    let processing = ProcessorConfig {
        lateness_nanos: c.range(
            "processing.lateness_ms",
            raw.processing.lateness_ms,
            2000,
            0,
            86_400_000,
        ) * 1_000_000,
        limits: Limits {
            max_future_nanos: c.range(
                "processing.max_future_secs",
                raw.processing.max_future_secs,
                300,
                1,
                86_400 * 7,
            ) * 1_000_000_000,
            ..Limits::default()
        },
        thresholds,
        spikes,
    };
    let lake = LakePlan {
        flush_interval: Duration::from_millis(c.range(
            "lake.flush_interval_ms",
            raw.lake.flush_interval_ms,
            1000,
            10,
            3_600_000,
        ) as u64),
        flush_rows: c.range(
            "lake.flush_rows",
            raw.lake.flush_rows,
            1_000_000,
            1,
            100_000_000,
        ) as usize,
        symbol_buckets: c.range("lake.symbol_buckets", raw.lake.symbol_buckets, 0, 0, 4096) as u32,
        compact_every: match c.range(
            "lake.compact_interval_secs",
            raw.lake.compact_interval_secs,
            60,
            0,
            86_400,
        ) {
            0 => None,
            secs => Some(Duration::from_secs(secs as u64)),
        },
        compact: tickflow_lake::CompactPolicy {
            target_bytes: c.range(
                "lake.compact_target_mb",
                raw.lake.compact_target_mb,
                128,
                1,
                4096,
            ) as u64
                * 1024
                * 1024,
            ..tickflow_lake::CompactPolicy::default()
        },
    };
    let mut simulator = None;
    for (i, source) in raw.sources.into_iter().enumerate() {
        let key = |f: &str| format!("sources[{i}].{f}");
        match source {
            RawSource::Simulator {
                rate,
                seed,
                anomaly_rate,
                quote_ratio,
                history_days,
                history_step_secs,
                symbols,
            } => {
                if simulator.is_some() {
                    c.add(key("type"), "only one simulator source is supported");
                }
                let mut probability = |f: &str, v: Option<f64>, default: f64| match v {
                    Some(p) if (0.0..=1.0).contains(&p) => p,
                    Some(p) => {
                        c.add(key(f), format!("{p} is not a probability in 0..=1"));
                        default
                    }
                    None => default,
                };
                let anomaly_rate = probability("anomaly_rate", anomaly_rate, 0.0);
                let quote_ratio = probability("quote_ratio", quote_ratio, 0.5);
                let universe = SimSymbol::demo_universe();
                let symbols = match symbols {
                    None => universe,
                    Some(list) if list.is_empty() => {
                        c.add(
                            key("symbols"),
                            "list at least one symbol, or leave the key out for the demo universe",
                        );
                        universe
                    }
                    Some(list) => list
                        .iter()
                        .filter_map(|s| match Symbol::parse(s) {
                            Ok(sym) => Some(
                                universe
                                    .iter()
                                    .find(|u| u.symbol == sym)
                                    .cloned()
                                    .unwrap_or_else(|| SimSymbol::new(sym.as_str(), 100.0, 0.4)),
                            ),
                            Err(e) => {
                                c.add(key("symbols"), e.to_string());
                                None
                            }
                        })
                        .collect(),
                };
                simulator = Some(SimulatorPlan {
                    config: SimulatorConfig {
                        symbols,
                        seed: seed.unwrap_or(42),
                        quote_ratio,
                        anomaly_rate,
                        source: Arc::from("simulator"),
                        feed: Arc::from("sim"),
                    },
                    rate: c.range(&key("rate"), rate, 20_000, 0, 100_000_000) as u64,
                    history_days: c.range(&key("history_days"), history_days, 0, 0, 3650) as u32,
                    history_step_nanos: c.range(
                        &key("history_step_secs"),
                        history_step_secs,
                        300,
                        1,
                        86_400,
                    ) * 1_000_000_000,
                });
            }
        }
    }
    Plan {
        data_dir,
        http,
        log,
        processing,
        lake,
        simulator,
    }
}

/// Parses and validates configuration text; `file` names it in errors.
///
/// # Errors
/// Every problem found, each with line and key.
pub fn parse(text: &str, file: &Path) -> Result<Plan, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        file: file.to_path_buf(),
        problems,
    };
    let mut env_problems = Vec::new();
    let text = interpolate(text, &mut env_problems);
    let mut problems: Vec<Problem> = env_problems
        .into_iter()
        .map(|(off, m)| Problem {
            line: Some(line_of(&text, off)),
            key: String::new(),
            message: m,
        })
        .collect();
    let root = match toml::de::DeTable::parse(&text) {
        Ok(root) => root,
        Err(e) => {
            problems.push(Problem {
                line: e.span().map(|s| line_of(&text, s.start)),
                key: String::new(),
                message: e.message().to_string(),
            });
            return Err(fail(problems));
        }
    };
    let locate = |key: &str| span_of(root.get_ref(), key).map(|s| line_of(&text, s.start));
    // First pass: every unknown key at once (serde stops at the first otherwise).
    let mut unknown = Vec::new();
    if let Ok(de) = toml::de::Deserializer::parse(&text) {
        let _: Result<LenientConfig, _> =
            serde_ignored::deserialize(de, |path| unknown.push(key_path(&path)));
    }
    for key in unknown {
        problems.push(Problem {
            line: locate(&key),
            key: key.clone(),
            message: "unknown key".to_string(),
        });
    }
    let raw: RawConfig = match toml::from_str(&text) {
        Ok(raw) => raw,
        Err(e) => {
            if problems.is_empty() {
                problems.push(Problem {
                    line: e.span().map(|s| line_of(&text, s.start)),
                    key: String::new(),
                    message: e.message().trim().to_string(),
                });
            }
            return Err(fail(problems));
        }
    };
    let mut checker = Checker {
        problems: Vec::new(),
    };
    let plan = validate(raw, &mut checker);
    for (key, message) in checker.problems {
        problems.push(Problem {
            line: locate(&key),
            key,
            message,
        });
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(fail(problems))
    }
}

/// Reads, parses and validates a config file.
///
/// # Errors
/// The file cannot be read, or any problem [`parse`] reports.
pub fn load(path: &Path) -> Result<Plan, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        problems: vec![Problem {
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }],
    })?;
    parse(&text, path)
}

/// Mirrors [`RawConfig`] without `deny_unknown_fields`, so serde_ignored can list every
/// unknown key in one pass.
#[derive(Debug, Default, Deserialize)]
#[allow(dead_code)]
struct LenientConfig {
    data_dir: Option<toml::Value>,
    #[serde(default)]
    http: Option<LenientHttp>,
    #[serde(default)]
    log: Option<LenientLog>,
    #[serde(default)]
    processing: Option<LenientProcessing>,
    #[serde(default)]
    lake: Option<LenientLake>,
    #[serde(default)]
    sources: Vec<LenientSource>,
    #[serde(default)]
    alerts: Option<LenientAlerts>,
}

macro_rules! lenient {
    ($name:ident { $($field:ident),* }) => {
        #[derive(Debug, Default, Deserialize)]
        #[allow(dead_code)]
        struct $name { $($field: Option<toml::Value>),* }
    };
}
lenient!(LenientHttp {
    bind,
    port,
    max_body_mb
});
lenient!(LenientLog {
    segment_mb,
    retention_hours,
    retention_gb,
    fsync
});
lenient!(LenientProcessing {
    lateness_ms,
    max_future_secs
});
lenient!(LenientLake {
    flush_interval_ms,
    flush_rows,
    symbol_buckets,
    compact_interval_secs,
    compact_target_mb
});
lenient!(LenientSource {
    r#type,
    rate,
    seed,
    anomaly_rate,
    quote_ratio,
    history_days,
    history_step_secs,
    symbols
});
lenient!(LenientThreshold {
    name,
    symbol,
    condition,
    cooldown_secs,
    severity
});
lenient!(LenientSpike {
    name,
    symbol,
    window,
    k,
    min_samples,
    min_return_pct,
    cooldown_secs,
    severity
});

#[derive(Debug, Default, Deserialize)]
#[allow(dead_code)]
struct LenientAlerts {
    #[serde(default)]
    threshold: Vec<LenientThreshold>,
    #[serde(default)]
    spike: Vec<LenientSpike>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_valid() {
        let plan = parse(DEMO_TOML, Path::new("config/demo.toml")).unwrap();
        let sim = plan.simulator.expect("demo runs the simulator");
        assert_eq!(sim.config.symbols.len(), 12);
        assert_eq!(sim.history_days, 90);
        assert!(!plan.processing.thresholds.is_empty());
        assert!(!plan.processing.spikes.is_empty());
    }

    #[test]
    fn reports_every_problem_with_line_and_key() {
        let text = "data_dir = \"x\"\n\n[http]\nport = 99999\nbnid = \"0.0.0.0\"\n\n[[alerts.threshold]]\nname = \"a\"\ncondition = \"price >> 3\"\nseverity = \"loud\"\n\n[[alerts.spike]]\nname = \"a\"\nk = -1.0\n\n[lake]\nflush_ms = 0\n";
        let err = parse(text, Path::new("bad.toml")).unwrap_err();
        let shown = err.to_string();
        for needle in [
            "bad.toml:5: http.bnid: unknown key",
            "bad.toml:17: lake.flush_ms: unknown key",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
        // Unknown keys stop typed parsing; fix them and the value problems all show at once.
        let text = text
            .replace("bnid", "bind")
            .replace("flush_ms", "flush_rows");
        let shown = parse(&text, Path::new("bad.toml")).unwrap_err().to_string();
        for needle in [
            "bad.toml:4: http.port: 99999 is out of range",
            "bad.toml:9: alerts.threshold[0].condition: invalid decimal \"> 3\"",
            "bad.toml:10: alerts.threshold[0].severity: unknown severity \"loud\"",
            "bad.toml:13: alerts.spike[0].name: duplicate rule name",
            "bad.toml:14: alerts.spike[0].k: -1 must be a positive",
            "bad.toml:17: lake.flush_rows: 0 is out of range",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
    }

    #[test]
    fn interpolates_environment() {
        let plan = parse(
            "data_dir = \"${TICKFLOW_TEST_UNSET_DIR:-/tmp/tf}\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(plan.data_dir, PathBuf::from("/tmp/tf"));
        let err = parse(
            "\n[http]\nbind = \"${TICKFLOW_TEST_UNSET_VAR}\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("x.toml:3") && err.contains("TICKFLOW_TEST_UNSET_VAR is not set"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("[http]\nport = \n", Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:2"), "{err}");
    }

    #[test]
    fn symbol_buckets_are_read_and_bounded() {
        let plan = parse(
            "data_dir = \"x\"\n[lake]\nsymbol_buckets = 64\n",
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!(plan.lake.symbol_buckets, 64);
        let plan = parse("data_dir = \"x\"\n", Path::new("a.toml")).unwrap();
        assert_eq!(
            plan.lake.symbol_buckets, 0,
            "a folder per symbol unless asked"
        );
        let err = parse(
            "data_dir = \"x\"\n[lake]\nsymbol_buckets = 5000\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("a.toml:3: lake.symbol_buckets: 5000 is out of range 0..=4096"),
            "{err}"
        );
    }

    #[test]
    fn compaction_is_on_by_default_and_can_be_turned_off() {
        let plan = parse("data_dir = \"x\"\n", Path::new("a.toml")).unwrap();
        assert_eq!(plan.lake.compact_every, Some(Duration::from_secs(60)));
        assert_eq!(plan.lake.compact.target_bytes, 128 << 20);
        let plan = parse(
            "data_dir = \"x\"\n[lake]\ncompact_interval_secs = 0\ncompact_target_mb = 16\n",
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!(plan.lake.compact_every, None);
        assert_eq!(plan.lake.compact.target_bytes, 16 << 20);
        let err = parse(
            "data_dir = \"x\"\n[lake]\ncompact_target_mb = 0\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("a.toml:3: lake.compact_target_mb: 0 is out of range"),
            "{err}"
        );
    }
}
