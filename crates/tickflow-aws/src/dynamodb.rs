//! DynamoDB as a sink: trades, quotes, bars and daily metrics, each kind in a table of its
//! own, idempotent on the natural key.
//!
//! Every table has the partition key `pk` and the sort key `sk`, both strings, made from the
//! row's natural key, so writing a row again overwrites it with the same item:
//!
//! | kind | `pk` | `sk` |
//! |---|---|---|
//! | trades | symbol | event time (ns, 19 digits) `#` source `#` trade id, sequence or price×size |
//! | quotes | symbol | event time (ns, 19 digits) `#` source `#` sequence or prices and sizes |
//! | bars | symbol `#` interval | start (ns, 19 digits) |
//! | daily_metrics | symbol | date (`YYYY-MM-DD`) |
//!
//! The other attributes are the row's columns: prices and sizes as exact `N` numbers, times
//! as RFC 3339 text, and `written_at`, when the item was last written (the "insert time" of
//! the pipelines this replaces). A flush's items go out in `BatchWriteItem` calls of 25, eight
//! at a time; what DynamoDB leaves unprocessed (throttling) is sent again with backoff. Then
//! the sink's position, the last flush written in full, is put in the state table. A crash in
//! between writes the same items again: nothing doubles.
//!
//! An item must fit DynamoDB's 400 KB (taken as 400,000 bytes). `fields` keeps only the named attributes of a kind.
//! An item still too large is trimmed (its longest text attributes cut) with
//! `oversize = "trim"`, or by default sent to the DLQ as `sink_refused` with its size; an
//! item DynamoDB refuses as invalid goes there too. Neither ever fails the batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tickflow_core::codec::{Batch, Rejected};
use tickflow_core::sink::{Flush, Sink, SinkError};
use tickflow_core::source::Append;
use tickflow_model::{Bar, DailyMetric, Quote, RejectReason, Trade, UnixNanos};

use crate::client::{AwsConfig, Client, Error, Service};

/// An item as DynamoDB's JSON writes it: attribute name to typed value.
type Item = Map<String, Value>;
/// Items DynamoDB would not take: (table index, item, why).
type Refused = Vec<(usize, Item, String)>;

/// DynamoDB's item limit, attribute names and values, read conservatively: "400 KB" as
/// 400,000 bytes (the service takes a little more; moto_server takes 405,000).
pub const ITEM_LIMIT: usize = 400_000;
/// The most puts in one `BatchWriteItem`.
const BATCH: usize = 25;
/// `BatchWriteItem` calls in flight at once.
const IN_FLIGHT: usize = 8;
/// Rounds of resending what DynamoDB left unprocessed before the flush is retried whole.
const UNPROCESSED_ROUNDS: u32 = 8;

/// The row kinds the sink can keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Trades,
    Quotes,
    Bars,
    DailyMetrics,
}

impl Kind {
    /// Every kind, by the name the config uses (the lake's table names).
    pub const ALL: [(&'static str, Kind); 4] = [
        ("trades", Kind::Trades),
        ("quotes", Kind::Quotes),
        ("bars", Kind::Bars),
        ("daily_metrics", Kind::DailyMetrics),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("trades", |(n, _)| n)
    }
}

/// What to do with an item over [`ITEM_LIMIT`] once projected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oversize {
    /// To the DLQ as `sink_refused`, with its size.
    Reject,
    /// Cut its longest text attributes until it fits.
    Trim,
}

/// Where one kind of row goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableConfig {
    pub kind: Kind,
    pub name: String,
    /// Only these attributes (besides `pk` and `sk`); all when `None`.
    pub fields: Option<Vec<String>>,
}

/// A DynamoDB sink's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamoConfig {
    pub aws: AwsConfig,
    pub tables: Vec<TableConfig>,
    /// Where each sink's position is kept (`pk` = the sink's id, `sk` = `position`).
    pub state_table: String,
    /// Create missing tables (on-demand billing) when the sink opens.
    pub create_tables: bool,
    pub oversize: Oversize,
    /// For each call, connection included.
    pub timeout: Duration,
}

impl DynamoConfig {
    /// The attribute names each kind's items have, for checking `fields`.
    pub fn attributes(kind: Kind) -> &'static [&'static str] {
        match kind {
            Kind::Trades => &[
                "symbol",
                "ts_event",
                "ts_event_ns",
                "ts_recv",
                "price",
                "size",
                "trade_id",
                "exchange",
                "source",
                "feed",
                "seq",
                "written_at",
            ],
            Kind::Quotes => &[
                "symbol",
                "ts_event",
                "ts_event_ns",
                "ts_recv",
                "bid",
                "bid_size",
                "ask",
                "ask_size",
                "source",
                "feed",
                "seq",
                "written_at",
            ],
            Kind::Bars => &[
                "symbol",
                "interval",
                "start",
                "end",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "vwap",
                "trade_count",
                "final",
                "source",
                "written_at",
            ],
            Kind::DailyMetrics => &[
                "symbol",
                "date",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "volatility",
                "rolling_avg_5d",
                "daily_pct_change",
                "written_at",
            ],
        }
    }

    /// What is wrong with the settings, by key.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .aws
            .problems()
            .into_iter()
            .map(|(k, m)| (k.to_string(), m))
            .collect();
        let table_name = |n: &str| {
            (3..=255).contains(&n.len())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        };
        if self.tables.is_empty() {
            out.push((
                "tables".into(),
                "name a table for at least one of trades, quotes, bars, daily_metrics".into(),
            ));
        }
        for t in &self.tables {
            if !table_name(&t.name) {
                out.push((
                    format!("tables.{}", t.kind.name()),
                    format!(
                        "{:?} is not a DynamoDB table name (3–255 of A-Z a-z 0-9 _ - .)",
                        t.name
                    ),
                ));
            }
            for f in t.fields.iter().flatten() {
                if !Self::attributes(t.kind).contains(&f.as_str()) {
                    out.push((
                        format!("fields.{}", t.kind.name()),
                        format!(
                            "{f:?} is not an attribute of {}: {}",
                            t.kind.name(),
                            Self::attributes(t.kind).join(", ")
                        ),
                    ));
                }
            }
        }
        if !table_name(&self.state_table) {
            out.push((
                "state_table".into(),
                format!("{:?} is not a DynamoDB table name", self.state_table),
            ));
        }
        out
    }
}

/// A DynamoDB sink; see the module docs.
#[derive(Debug)]
pub struct DynamoSink {
    id: String,
    config: DynamoConfig,
    client: Option<Client>,
    dlq: Arc<dyn Append>,
}

impl DynamoSink {
    /// A sink named `id`; items refused go to `dlq` (the log).
    pub fn new(id: &str, config: DynamoConfig, dlq: Arc<dyn Append>) -> Self {
        Self {
            id: id.to_string(),
            config,
            client: None,
            dlq,
        }
    }

    fn client(&self) -> Result<&Client, SinkError> {
        self.client
            .as_ref()
            .ok_or_else(|| "the DynamoDB sink is not open".into())
    }

    /// Creates `table` with the `pk`/`sk` key when it does not exist, and waits until it is
    /// active.
    async fn ensure_table(client: &Client, table: &str) -> Result<(), Error> {
        let describe = json!({"TableName": table});
        for _ in 0..120 {
            match client.json("DescribeTable", &describe).await {
                Ok(answer) if answer["Table"]["TableStatus"] == "ACTIVE" => return Ok(()),
                Ok(_) => {}
                Err(Error::Service { code, .. }) if code == "ResourceNotFoundException" => {
                    let created = client
                        .json(
                            "CreateTable",
                            &json!({
                                "TableName": table,
                                "AttributeDefinitions": [
                                    {"AttributeName": "pk", "AttributeType": "S"},
                                    {"AttributeName": "sk", "AttributeType": "S"}
                                ],
                                "KeySchema": [
                                    {"AttributeName": "pk", "KeyType": "HASH"},
                                    {"AttributeName": "sk", "KeyType": "RANGE"}
                                ],
                                "BillingMode": "PAY_PER_REQUEST"
                            }),
                        )
                        .await;
                    match created {
                        Ok(_) => {}
                        // Another process created it meanwhile.
                        Err(Error::Service { code, .. }) if code == "ResourceInUseException" => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(Error::Transport(format!(
            "table {table} did not become active within a minute"
        )))
    }

    /// Puts `items` (table index, item), [`BATCH`] a call and [`IN_FLIGHT`] calls at once;
    /// returns those DynamoDB refused as invalid, with why.
    async fn put_all(&self, items: Vec<(usize, Item)>) -> Result<Refused, SinkError> {
        let client = self.client()?;
        let chunks: Vec<Vec<(usize, Item)>> =
            items.chunks(BATCH).map(<[(usize, Item)]>::to_vec).collect();
        let results: Vec<Result<Refused, SinkError>> = futures_util::stream::iter(chunks)
            .map(|chunk| self.put_chunk(client, chunk))
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        let mut refused = Vec::new();
        for r in results {
            refused.extend(r?);
        }
        Ok(refused)
    }

    /// One `BatchWriteItem`, with what it leaves unprocessed sent again; an invalid batch is
    /// put item by item, so only the invalid items are refused.
    async fn put_chunk(
        &self,
        client: &Client,
        chunk: Vec<(usize, Item)>,
    ) -> Result<Refused, SinkError> {
        let mut request: Map<String, Value> = Map::new();
        for (table, item) in &chunk {
            let name = &self.config.tables[*table].name;
            if let Some(puts) = request
                .entry(name.clone())
                .or_insert_with(|| Value::Array(Vec::new()))
                .as_array_mut()
            {
                puts.push(json!({"PutRequest": {"Item": item}}));
            }
        }
        let mut delay = Duration::from_millis(50);
        for _ in 0..UNPROCESSED_ROUNDS {
            let answer = client
                .json("BatchWriteItem", &json!({"RequestItems": request}))
                .await;
            let answer = match answer {
                Ok(a) => a,
                Err(Error::Service { code, .. }) if code == "ValidationException" => {
                    return self.put_one_by_one(client, chunk).await;
                }
                Err(e) => return Err(Box::new(e)),
            };
            match answer["UnprocessedItems"].as_object() {
                Some(left) if !left.is_empty() => {
                    request = left.clone();
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                _ => return Ok(Vec::new()),
            }
        }
        Err(format!(
            "DynamoDB left items unprocessed after {UNPROCESSED_ROUNDS} rounds (throttled); the flush is tried again"
        )
        .into())
    }

    async fn put_one_by_one(
        &self,
        client: &Client,
        chunk: Vec<(usize, Item)>,
    ) -> Result<Refused, SinkError> {
        let mut refused = Vec::new();
        for (table, item) in chunk {
            let name = &self.config.tables[table].name;
            match client
                .json("PutItem", &json!({"TableName": name, "Item": item}))
                .await
            {
                Ok(_) => {}
                Err(Error::Service { code, message, .. }) if code == "ValidationException" => {
                    refused.push((table, item, message));
                }
                Err(e) => return Err(Box::new(e)),
            }
        }
        Ok(refused)
    }

    /// Sends refused items to the DLQ with why.
    fn refuse(&self, refused: &[(usize, Item, String)]) -> Result<(), SinkError> {
        if refused.is_empty() {
            return Ok(());
        }
        let now = UnixNanos::now();
        let mut batch = Batch::default();
        for (table, item, why) in refused {
            let t = &self.config.tables[*table];
            let error = format!(
                "DynamoDB refused an item of {} (table {}): {why}",
                t.kind.name(),
                t.name
            );
            let payload = Value::Object(item.clone()).to_string();
            batch.push_rejected(&Rejected {
                reason: RejectReason::SinkRefused,
                ts_recv: now,
                source: &self.id,
                error: &error,
                payload: &payload,
            });
        }
        self.dlq
            .append(&self.id, &batch)
            .map_err(|e| format!("sending {} refused item(s) to the DLQ: {e}", refused.len()))?;
        tracing::warn!(sink = %self.id, items = refused.len(), "items refused; in the DLQ as sink_refused");
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for DynamoSink {
    async fn open(&mut self) -> Result<Option<u64>, SinkError> {
        let client = Client::new(&self.config.aws, Service::DynamoDb, self.config.timeout)?;
        if self.config.create_tables {
            for table in self
                .config
                .tables
                .iter()
                .map(|t| t.name.as_str())
                .chain([self.config.state_table.as_str()])
            {
                Self::ensure_table(&client, table)
                    .await
                    .map_err(|e| format!("table {table}: {e}"))?;
            }
        }
        let answer = client
            .json(
                "GetItem",
                &json!({
                    "TableName": self.config.state_table,
                    "Key": {"pk": {"S": self.id}, "sk": {"S": "position"}},
                    "ConsistentRead": true
                }),
            )
            .await
            .map_err(|e| format!("reading the position from {}: {e}", self.config.state_table))?;
        self.client = Some(client);
        let flush = answer["Item"]["flush"]["N"].as_str();
        flush
            .map(|n| {
                n.parse::<u64>()
                    .map_err(|e| format!("the stored position {n:?}: {e}").into())
            })
            .transpose()
    }

    async fn write(&mut self, flush: &Flush) -> Result<(), SinkError> {
        let written_at = UnixNanos::now();
        // One item per key: a flush may hold a bar twice (open, then final); the last wins,
        // and BatchWriteItem refuses two puts on one key.
        let mut by_key: HashMap<(usize, String, String), usize> = HashMap::new();
        let mut items: Vec<(usize, Item)> = Vec::new();
        let mut refused = Vec::new();
        for (i, table) in self.config.tables.iter().enumerate() {
            let rows: Vec<Item> = match table.kind {
                Kind::Trades => flush
                    .rows
                    .trades
                    .iter()
                    .map(|r| trade(r, written_at))
                    .collect(),
                Kind::Quotes => flush
                    .rows
                    .quotes
                    .iter()
                    .map(|r| quote(r, written_at))
                    .collect(),
                Kind::Bars => flush.rows.bars.iter().map(|r| bar(r, written_at)).collect(),
                Kind::DailyMetrics => flush
                    .rows
                    .daily_metrics
                    .iter()
                    .map(|r| daily(r, written_at))
                    .collect(),
            };
            for mut item in rows {
                if let Some(fields) = &table.fields {
                    item.retain(|k, _| k == "pk" || k == "sk" || fields.iter().any(|f| f == k));
                }
                if let Err(why) = fit(&mut item, self.config.oversize) {
                    refused.push((i, item, why));
                    continue;
                }
                let key = (
                    i,
                    item["pk"]["S"].as_str().unwrap_or_default().to_string(),
                    item["sk"]["S"].as_str().unwrap_or_default().to_string(),
                );
                match by_key.get(&key) {
                    Some(&at) => items[at] = (i, item),
                    None => {
                        by_key.insert(key, items.len());
                        items.push((i, item));
                    }
                }
            }
        }
        refused.extend(self.put_all(items).await?);
        self.refuse(&refused)?;
        let client = self.client()?;
        let put = client
            .json(
                "PutItem",
                &json!({
                    "TableName": self.config.state_table,
                    "Item": {
                        "pk": {"S": self.id},
                        "sk": {"S": "position"},
                        "flush": {"N": flush.seq.to_string()},
                        "written_at": {"S": written_at.to_string()}
                    },
                    "ConditionExpression": "attribute_not_exists(#f) OR #f < :f",
                    "ExpressionAttributeNames": {"#f": "flush"},
                    "ExpressionAttributeValues": {":f": {"N": flush.seq.to_string()}}
                }),
            )
            .await;
        match put {
            Ok(_) => Ok(()),
            // Already there (a flush handed again): nothing to move.
            Err(Error::Service { code, .. }) if code == "ConditionalCheckFailedException" => Ok(()),
            Err(e) => Err(format!("recording the position: {e}").into()),
        }
    }
}

fn s(v: impl std::fmt::Display) -> Value {
    json!({ "S": v.to_string() })
}

fn n(v: impl std::fmt::Display) -> Value {
    json!({ "N": v.to_string() })
}

/// Event times sort as text when written with all 19 digits.
fn nanos(t: UnixNanos) -> String {
    format!("{:019}", t.0.max(0))
}

/// DynamoDB's longest sort key, in bytes.
const SORT_KEY_MAX: usize = 1024;

/// A tick's sort key: event time, source and natural key; a natural key that would make it
/// longer than DynamoDB allows (a vendor's very long trade id) is replaced by its stable
/// hash, so the item is still written once.
fn sort_key(ts: UnixNanos, source: &str, key: &str) -> String {
    let full = format!("{}#{source}#{key}", nanos(ts));
    if full.len() <= SORT_KEY_MAX {
        return full;
    }
    let hash = tickflow_core::hash::stable_hash(&[key.as_bytes()], &[]);
    let source: String = source.chars().take(256).collect();
    format!("{}#{source}#h:{hash:016x}", nanos(ts))
}

fn put(item: &mut Item, name: &str, value: Option<Value>) {
    if let Some(v) = value {
        item.insert(name.to_string(), v);
    }
}

fn trade(t: &Trade, written_at: UnixNanos) -> Item {
    let key = match (&t.trade_id, t.seq) {
        (Some(id), _) => format!("id:{id}"),
        (None, Some(seq)) => format!("#{seq}"),
        (None, None) => format!("={}x{}", t.price, t.size),
    };
    let mut item = Map::new();
    item.insert("pk".into(), s(&t.symbol));
    item.insert("sk".into(), s(sort_key(t.ts_event, &t.source, &key)));
    item.insert("symbol".into(), s(&t.symbol));
    item.insert("ts_event".into(), s(t.ts_event));
    item.insert("ts_event_ns".into(), n(t.ts_event.0));
    item.insert("ts_recv".into(), s(t.ts_recv));
    item.insert("price".into(), n(t.price));
    item.insert("size".into(), n(t.size));
    put(&mut item, "trade_id", t.trade_id.as_ref().map(s));
    put(&mut item, "exchange", t.exchange.as_deref().map(s));
    item.insert("source".into(), s(&t.source));
    item.insert("feed".into(), s(&t.feed));
    put(&mut item, "seq", t.seq.map(n));
    item.insert("written_at".into(), s(written_at));
    item
}

fn quote(q: &Quote, written_at: UnixNanos) -> Item {
    let key = match q.seq {
        Some(seq) => format!("#{seq}"),
        None => format!("={}x{}/{}x{}", q.bid, q.bid_size, q.ask, q.ask_size),
    };
    let mut item = Map::new();
    item.insert("pk".into(), s(&q.symbol));
    item.insert("sk".into(), s(sort_key(q.ts_event, &q.source, &key)));
    item.insert("symbol".into(), s(&q.symbol));
    item.insert("ts_event".into(), s(q.ts_event));
    item.insert("ts_event_ns".into(), n(q.ts_event.0));
    item.insert("ts_recv".into(), s(q.ts_recv));
    item.insert("bid".into(), n(q.bid));
    item.insert("bid_size".into(), n(q.bid_size));
    item.insert("ask".into(), n(q.ask));
    item.insert("ask_size".into(), n(q.ask_size));
    item.insert("source".into(), s(&q.source));
    item.insert("feed".into(), s(&q.feed));
    put(&mut item, "seq", q.seq.map(n));
    item.insert("written_at".into(), s(written_at));
    item
}

fn bar(b: &Bar, written_at: UnixNanos) -> Item {
    let mut item = Map::new();
    item.insert(
        "pk".into(),
        s(format!("{}#{}", b.symbol, b.interval.as_str())),
    );
    item.insert("sk".into(), s(nanos(b.start)));
    item.insert("symbol".into(), s(&b.symbol));
    item.insert("interval".into(), s(b.interval.as_str()));
    item.insert("start".into(), s(b.start));
    item.insert("end".into(), s(b.end));
    item.insert("open".into(), n(b.open));
    item.insert("high".into(), n(b.high));
    item.insert("low".into(), n(b.low));
    item.insert("close".into(), n(b.close));
    item.insert("volume".into(), n(b.volume));
    put(&mut item, "vwap", b.vwap.map(n));
    put(&mut item, "trade_count", b.trade_count.map(n));
    item.insert("final".into(), json!({ "BOOL": b.is_final }));
    put(&mut item, "source", b.source.as_deref().map(s));
    item.insert("written_at".into(), s(written_at));
    item
}

fn daily(d: &DailyMetric, written_at: UnixNanos) -> Item {
    let finite = |v: f64| v.is_finite().then(|| n(v));
    let mut item = Map::new();
    item.insert("pk".into(), s(&d.symbol));
    item.insert("sk".into(), s(d.date));
    item.insert("symbol".into(), s(&d.symbol));
    item.insert("date".into(), s(d.date));
    item.insert("open".into(), n(d.open));
    item.insert("high".into(), n(d.high));
    item.insert("low".into(), n(d.low));
    item.insert("close".into(), n(d.close));
    item.insert("volume".into(), n(d.volume));
    put(&mut item, "volatility", finite(d.volatility));
    item.insert("rolling_avg_5d".into(), n(d.rolling_avg_5d));
    put(
        &mut item,
        "daily_pct_change",
        d.daily_pct_change.and_then(finite),
    );
    item.insert("written_at".into(), s(written_at));
    item
}

/// An attribute value's size as DynamoDB counts it (numbers: about a byte per two digits).
fn value_size(v: &Value) -> usize {
    if let Some(t) = v["S"].as_str() {
        t.len()
    } else if let Some(t) = v["N"].as_str() {
        t.len().div_ceil(2) + 1
    } else {
        1
    }
}

fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Makes `item` fit [`ITEM_LIMIT`] as `oversize` says; why not, when it cannot.
fn fit(item: &mut Item, oversize: Oversize) -> Result<(), String> {
    let keys_fit = item["pk"]["S"].as_str().is_some_and(|k| k.len() <= 2048)
        && item["sk"]["S"]
            .as_str()
            .is_some_and(|k| k.len() <= SORT_KEY_MAX);
    if !keys_fit {
        return Err(
            "its key is longer than DynamoDB allows (pk 2048 bytes, sk 1024 bytes)".to_string(),
        );
    }
    let size = item_size(item);
    if size <= ITEM_LIMIT {
        return Ok(());
    }
    if oversize == Oversize::Reject {
        return Err(format!(
            "the item is {size} bytes, over DynamoDB's {ITEM_LIMIT}; set fields to keep fewer attributes, or oversize = \"trim\""
        ));
    }
    // A kilobyte under the limit: a number's size is an estimate.
    let target = ITEM_LIMIT - 1024;
    while item_size(item) > target {
        let longest = item
            .iter()
            .filter(|(k, v)| *k != "pk" && *k != "sk" && v["S"].is_string())
            .max_by_key(|(_, v)| value_size(v))
            .map(|(k, _)| k.clone());
        let Some(name) = longest else {
            return Err(format!(
                "the item is {} bytes and has no text left to trim",
                item_size(item)
            ));
        };
        let over = item_size(item) - target;
        let text = item[&name]["S"].as_str().unwrap_or_default();
        let mut keep = text.len().saturating_sub(over);
        while !text.is_char_boundary(keep) {
            keep -= 1;
        }
        let cut = text[..keep].to_string();
        item.insert(name, s(cut));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big_trade() -> Item {
        let rows = tickflow_core::contract::sample_rows(1, 1);
        let mut item = trade(&rows.trades[0], UnixNanos(0));
        item.insert("trade_id".into(), s("x".repeat(ITEM_LIMIT)));
        item
    }

    #[test]
    fn an_item_over_the_limit_is_refused_or_trimmed_as_configured() {
        let mut item = big_trade();
        let why = fit(&mut item, Oversize::Reject).unwrap_err();
        assert!(why.contains("over DynamoDB's 400000"), "{why}");
        let mut item = big_trade();
        fit(&mut item, Oversize::Trim).unwrap();
        assert!(item_size(&item) <= ITEM_LIMIT);
        assert!(item["trade_id"]["S"].as_str().unwrap().len() > ITEM_LIMIT - 2048);
        assert_eq!(item["price"], big_trade()["price"], "numbers are never cut");
    }

    #[test]
    fn keys_sort_by_event_time_and_name_the_natural_key() {
        let rows = tickflow_core::contract::sample_rows(1, 3);
        let items: Vec<_> = rows.trades.iter().map(|t| trade(t, UnixNanos(0))).collect();
        let sks: Vec<&str> = items
            .iter()
            .map(|i| i["sk"]["S"].as_str().unwrap())
            .collect();
        assert!(sks.windows(2).all(|w| w[0] <= w[1]), "{sks:?}");
        assert!(
            sks[0].len() > 19 && sks[0].as_bytes()[19] == b'#',
            "{sks:?}"
        );
        let bar = bar(&rows.bars[0], UnixNanos(0));
        assert!(bar["pk"]["S"].as_str().unwrap().contains('#'));
        let long = "x".repeat(5000);
        let (a, b) = (
            sort_key(UnixNanos(1), "src", &long),
            sort_key(UnixNanos(1), "src", &format!("{long}y")),
        );
        assert!(a.len() <= SORT_KEY_MAX && a.contains("#h:"), "{a}");
        assert_ne!(a, b, "another long key, another sort key");
        assert_eq!(a, sort_key(UnixNanos(1), "src", &long), "stable");
        assert_eq!(bar["final"]["BOOL"], rows.bars[0].is_final);
    }

    #[test]
    fn unknown_fields_and_bad_table_names_are_named_by_key() {
        let config = DynamoConfig {
            aws: AwsConfig::default(),
            tables: vec![TableConfig {
                kind: Kind::Trades,
                name: "t".into(),
                fields: Some(vec!["price".into(), "colour".into()]),
            }],
            state_table: "tickflow-sink-positions".into(),
            create_tables: true,
            oversize: Oversize::Reject,
            timeout: Duration::from_secs(5),
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].0, "tables.trades");
        assert_eq!(problems[1].0, "fields.trades");
        assert!(problems[1].1.contains("\"colour\""));
    }
}
