//! NATS JetStream as a sink: every row of the kept tables published as a JSON line (the SQL
//! tables' columns, exact decimals, RFC 3339 times) on `<prefix>.<table>.<symbol>`, for
//! other programs to consume: `tickflow.bars.NVDA`, `tickflow.alerts.BTC-USD`.
//!
//! Each message carries `Nats-Msg-Id: <sink id>:<flush>:<table>:<symbol>:<row key>`, the
//! same however the flush was read back (memory or the lake), so a flush published again
//! after a failure is dropped by the stream's duplicate window (two minutes unless the
//! stream says otherwise). Within a flush, only the last version of a row (a bar that
//! changed twice) is published. The sink waits for the stream to acknowledge every message of a
//! flush, then records the flush in `<dir>/position`, fsynced. A flush written again after
//! the window has passed (a sink down for longer) publishes its rows again: consumers that
//! must not see a row twice drop repeats by the row's key. Open bars are published as they
//! change, so a consumer sees a bar grow; `final` says when it no longer will.

use std::path::PathBuf;

use async_nats::jetstream::{self, stream};
use tickflow_core::rows_json::{self, Style, Times};
use tickflow_core::sink::{Flush, Sink, SinkError};

/// The tables the sink can publish.
pub const TABLES: [&str; 5] = rows_json::TABLES;

/// Messages published before their acknowledgements are awaited.
const IN_FLIGHT: usize = 1000;

const STYLE: Style = Style {
    times: Times::Rfc3339,
    final_bars_only: false,
};

/// A NATS sink's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsSinkConfig {
    pub url: String,
    /// The first token of every subject.
    pub subject_prefix: String,
    pub tables: Vec<String>,
    /// A stream made for `<prefix>.>` when missing; without one, a stream must already take
    /// the subjects.
    pub stream: Option<String>,
    /// Where the position is kept.
    pub dir: PathBuf,
}

/// Publishes rows to JetStream; see the module docs.
#[derive(Debug)]
pub struct NatsSink {
    id: String,
    config: NatsSinkConfig,
    js: Option<jetstream::Context>,
    /// The last flush written (from the position file at open).
    written: Option<u64>,
}

impl NatsSink {
    pub fn new(id: &str, config: NatsSinkConfig) -> Self {
        Self {
            id: id.to_string(),
            config,
            js: None,
            written: None,
        }
    }

    fn position_path(&self) -> PathBuf {
        self.config.dir.join("position")
    }
}

/// A symbol as one subject token: the characters NATS gives a meaning become `_`.
pub fn token(symbol: &str) -> String {
    symbol
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[async_trait::async_trait]
impl Sink for NatsSink {
    async fn open(&mut self) -> Result<Option<u64>, SinkError> {
        let client = async_nats::connect(&self.config.url)
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.config.url))?;
        let js = jetstream::new(client);
        if let Some(name) = &self.config.stream {
            js.get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{}.>", self.config.subject_prefix)],
                ..Default::default()
            })
            .await
            .map_err(|e| format!("opening stream {name}: {e}"))?;
        }
        self.js = Some(js);
        std::fs::create_dir_all(&self.config.dir)
            .map_err(|e| format!("{}: {e}", self.config.dir.display()))?;
        let path = self.position_path();
        self.written = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                text.trim()
                    .parse()
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{}: {e}", path.display()).into()),
        };
        Ok(self.written)
    }

    async fn write(&mut self, flush: &Flush) -> Result<(), SinkError> {
        let Some(js) = &self.js else {
            return Err("the NATS sink is not open".into());
        };
        // Ids carry the first flush of the write: a run of flushes read again after a crash
        // (as many as were committed by then) repeats the ids an earlier, shorter run sent,
        // which the stream's duplicate window drops.
        if self.written >= Some(flush.seq) {
            // Published, position and all: handed again by a caller that did not see it end.
            return Ok(());
        }
        let first = self.written.map_or(flush.seq, |w| w + 1);
        let mut messages: Vec<(String, String, bytes::Bytes)> = Vec::new();
        let mut by_id: std::collections::HashMap<String, usize> = Default::default();
        for table in &self.config.tables {
            rows_json::each(table, &flush.rows, STYLE, &mut |line| {
                let subject = format!(
                    "{}.{table}.{}",
                    self.config.subject_prefix,
                    token(line.symbol)
                );
                let id = format!("{}:{first}:{table}:{}:{}", self.id, line.symbol, line.key);
                let message = (
                    subject,
                    id.clone(),
                    bytes::Bytes::from(line.text.to_string()),
                );
                match by_id.get(&id) {
                    Some(&at) => messages[at] = message,
                    None => {
                        by_id.insert(id, messages.len());
                        messages.push(message);
                    }
                }
            });
        }
        // A window of acknowledgements at a time: the client holds only so many open.
        let mut acks = Vec::with_capacity(IN_FLIGHT);
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            for (subject, id, payload) in messages.by_ref().take(IN_FLIGHT) {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                let ack = js
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await
                    .map_err(|e| format!("publishing to {subject}: {e}"))?;
                acks.push((subject, ack));
            }
            for (subject, ack) in acks.drain(..) {
                ack.await
                    .map_err(|e| format!("{subject}: no stream stored it: {e}"))?;
            }
        }
        let path = self.position_path();
        let tmp = path.with_extension("tmp");
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{}", flush.seq)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.config.dir)?.sync_all()
        })();
        written.map_err(|e| format!("{}: {e}", path.display()))?;
        self.written = Some(flush.seq);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_symbol_with_dots_is_one_subject_token() {
        assert_eq!(super::token("BRK.B"), "BRK_B");
        assert_eq!(super::token("BTC-USD"), "BTC-USD");
    }
}
