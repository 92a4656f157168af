//! Processed rows as JSON lines on S3, laid out for Athena: the old pipeline's
//! `processed/` output, beside the Parquet lake.
//!
//! Each write (a flush, or a run of flushes a sink catching up reads from the lake at once)
//! puts, per table and UTC day, one object
//! `<prefix>/<table>/dt=YYYY-MM-DD/<first flush, 12 digits>-<sink id>.json` holding one JSON
//! object per line, then the sink's position, `<prefix>/_tickflow/<sink id>.json`. The
//! objects' names follow from the sink and the first flush, so flushes written again after a
//! crash replace them, with the same rows or (a longer run) more: nothing doubles; and sinks of several pipelines
//! (Lambda environments, processes sharing a stream) can share a prefix. Bars are written once final: an open bar
//! changes until then, and a line cannot be updated in place. The partition is named `dt`,
//! since `daily_metrics` has a `date` column of its own.
//!
//! Times are UTC in Hive's text form (`2026-12-04 15:00:00.123456789`), which both Athena JSON
//! SerDes read as `timestamp`; prices and sizes are JSON numbers written with their exact
//! digits, read as `decimal(38,9)`. [`athena_ddl`] gives each table's
//! `CREATE EXTERNAL TABLE` with partition projection, so no crawler or `MSCK REPAIR` is
//! needed.

use std::sync::Arc;

use futures::StreamExt as _;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tickflow_core::rows_json;
use tickflow_core::sink::{Flush, Sink, SinkError};
use tickflow_model::Date;

use crate::ObjectLake;

/// The tables the JSON sink can write.
pub const TABLES: [&str; 5] = rows_json::TABLES;

/// Hive's times, which Athena reads; bars once final, since a line cannot be replaced.
const STYLE: rows_json::Style = rows_json::Style {
    times: rows_json::Times::Hive,
    final_bars_only: true,
};

/// A JSON sink's settings: where (the same settings as a lake on S3) and which tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonSinkConfig {
    /// `s3://bucket/processed`, with endpoint, region and keys as for the lake.
    pub store: ObjectLake,
    pub tables: Vec<String>,
}

/// Writes flushes as JSON lines; see the module docs.
pub struct JsonSink {
    id: String,
    config: JsonSinkConfig,
    store: Option<(Arc<dyn ObjectStore>, String)>,
    /// The last flush written (from the store at open): the next write holds the flushes
    /// after it, and its objects are named by the first of them.
    written: Option<u64>,
}

impl std::fmt::Debug for JsonSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSink")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl JsonSink {
    pub fn new(id: &str, config: JsonSinkConfig) -> Self {
        Self {
            id: id.to_string(),
            config,
            store: None,
            written: None,
        }
    }

    fn position_key(&self, prefix: &str) -> Key {
        Key::from(format!("{prefix}/_tickflow/{}.json", self.id))
    }
}

#[async_trait::async_trait]
impl Sink for JsonSink {
    async fn open(&mut self) -> Result<Option<u64>, SinkError> {
        let (store, prefix) = self.config.store.connect()?;
        let key = self.position_key(&prefix);
        let position = match store.get(&key).await {
            Ok(got) => {
                let bytes = got.bytes().await?;
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| format!("{key}: {e}"))?;
                Some(
                    v["flush"]
                        .as_u64()
                        .ok_or_else(|| format!("{key}: no flush number"))?,
                )
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(Box::new(e)),
        };
        self.store = Some((store, prefix));
        self.written = position;
        Ok(position)
    }

    async fn write(&mut self, flush: &Flush) -> Result<(), SinkError> {
        let Some((store, prefix)) = &self.store else {
            return Err("the JSON sink is not open".into());
        };
        // A sink catching up reads several flushes from the lake at once, and how many depends
        // on what was committed by then: named by the last, a range read again after a crash
        // could hold rows an earlier, shorter range already wrote under another name. Named
        // by the first, it replaces each of that range's objects with one holding all of it.
        if self.written >= Some(flush.seq) {
            // Written, position and all: handed again by a caller that did not see it end.
            return Ok(());
        }
        let first = self.written.map_or(flush.seq, |w| w + 1);
        let mut objects: std::collections::BTreeMap<(String, Date), String> = Default::default();
        for table in &self.config.tables {
            rows_json::each(table, &flush.rows, STYLE, &mut |line| {
                let text = objects.entry((table.clone(), line.date)).or_default();
                text.push_str(line.text);
                text.push('\n');
            });
        }
        let puts = objects.into_iter().map(|((table, date), text)| {
            let key = Key::from(format!(
                "{prefix}/{table}/dt={date}/{first:012}-{}.json",
                self.id
            ));
            let store = Arc::clone(store);
            async move { store.put(&key, PutPayload::from(text)).await }
        });
        let results: Vec<_> = futures::stream::iter(puts)
            .buffer_unordered(16)
            .collect()
            .await;
        for r in results {
            r?;
        }
        let position = serde_json::json!({"flush": flush.seq}).to_string();
        store
            .put(&self.position_key(prefix), PutPayload::from(position))
            .await?;
        self.written = Some(flush.seq);
        Ok(())
    }
}

/// The Athena (Hive DDL) columns of a JSON table.
fn columns(table: &str) -> &'static str {
    match table {
        "trades" => {
            "symbol string, ts_event timestamp, ts_recv timestamp, price decimal(38,9), size decimal(38,9), trade_id string, exchange string, source string, feed string, seq bigint"
        }
        "quotes" => {
            "symbol string, ts_event timestamp, ts_recv timestamp, bid decimal(38,9), bid_size decimal(38,9), ask decimal(38,9), ask_size decimal(38,9), source string, feed string, seq bigint"
        }
        "bars" => {
            "symbol string, `interval` string, `start` timestamp, `end` timestamp, open decimal(38,9), high decimal(38,9), low decimal(38,9), close decimal(38,9), volume decimal(38,9), vwap decimal(38,9), trade_count bigint, `final` boolean, source string"
        }
        "daily_metrics" => {
            "symbol string, `date` date, open decimal(38,9), high decimal(38,9), low decimal(38,9), close decimal(38,9), volume decimal(38,9), volatility double, rolling_avg_5d decimal(38,9), daily_pct_change double"
        }
        _ => {
            "alert_id string, rule string, symbol string, ts timestamp, value decimal(38,9), threshold string, message string, severity string, kind string"
        }
    }
}

/// `CREATE EXTERNAL TABLE` for `table` of a JSON sink writing under `url`
/// (`s3://bucket/processed`), in `database`, named `<table>_json`: the OpenX JSON SerDe,
/// partitioned by `dt` with projection from 2000 to now.
pub fn athena_ddl(database: &str, url: &str, table: &str) -> String {
    let location = format!("{}/{table}/", url.trim_end_matches('/'));
    format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS {database}.{table}_json (\n  {}\n)\nPARTITIONED BY (dt string)\nROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\nWITH SERDEPROPERTIES ('ignore.malformed.json' = 'true')\nSTORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'\nOUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'\nLOCATION '{location}'\nTBLPROPERTIES (\n  'projection.enabled' = 'true',\n  'projection.dt.type' = 'date',\n  'projection.dt.format' = 'yyyy-MM-dd',\n  'projection.dt.range' = '2000-01-01,NOW',\n  'projection.dt.interval' = '1',\n  'projection.dt.interval.unit' = 'DAYS',\n  'storage.location.template' = '{location}dt=${{dt}}/'\n);\n",
        columns(table)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ddl_projects_the_dt_partition_onto_the_sinks_layout() {
        let ddl = athena_ddl("tickflow", "s3://bucket/processed/", "daily_metrics");
        assert!(ddl.contains("tickflow.daily_metrics_json"), "{ddl}");
        assert!(
            ddl.contains("LOCATION 's3://bucket/processed/daily_metrics/'"),
            "{ddl}"
        );
        assert!(
            ddl.contains(
                "'storage.location.template' = 's3://bucket/processed/daily_metrics/dt=${dt}/'"
            ),
            "{ddl}"
        );
        assert!(ddl.contains("`date` date"), "{ddl}");
    }
}
