//! `tickflow run` on AWS against moto_server: ticks from an SQS queue, trades into DynamoDB
//! and as JSON for Athena on S3, alerts to an SNS topic.
//! A poison message reaches the dead-letter queue while its nine batch-mates are stored, and a
//! SIGKILL and restart lose and double nothing.

use std::time::Duration;

use serde_json::{Value, json};
use tickflow_aws::{AwsConfig, Client, Service};
use tickflow_core::contract::{moto_endpoint, s3_bucket, s3_endpoint};

use crate::support::{Server, bin, config, sql, sql_count, wait_for};

pub(crate) fn moto() -> Option<AwsConfig> {
    let endpoint = moto_endpoint()?;
    Some(AwsConfig {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        session_token: None,
    })
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub(crate) fn call(client: &Client, op: &str, body: Value) -> Value {
    block_on(client.json(op, &body)).unwrap_or_else(|e| panic!("{op}: {e}"))
}

pub(crate) fn create_queue(client: &Client, name: &str) -> String {
    call(client, "CreateQueue", json!({"QueueName": name}))["QueueUrl"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A new SNS topic named from `name`, and a queue subscribed to it that shows what was
/// published: (topic ARN, queue URL).
pub(crate) fn watched_topic(sqs: &Client, sns: &Client, name: &str) -> (String, String) {
    let watch = create_queue(sqs, &unique(&format!("{name}-watch")));
    let xml = block_on(sns.query("CreateTopic", "2010-03-31", &[("Name", &unique(name))])).unwrap();
    let topic = xml
        .split("<TopicArn>")
        .nth(1)
        .and_then(|t| t.split("</TopicArn>").next())
        .unwrap()
        .to_string();
    let watch_arn = call(
        sqs,
        "GetQueueAttributes",
        json!({"QueueUrl": watch, "AttributeNames": ["QueueArn"]}),
    )["Attributes"]["QueueArn"]
        .as_str()
        .unwrap()
        .to_string();
    block_on(sns.query(
        "Subscribe",
        "2010-03-31",
        &[
            ("TopicArn", &topic),
            ("Protocol", "sqs"),
            ("Endpoint", &watch_arn),
        ],
    ))
    .unwrap();
    (topic, watch)
}

/// Every message on the queue now; received, so hidden for a minute.
pub(crate) fn drain(client: &Client, queue: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let answer = call(
            client,
            "ReceiveMessage",
            json!({"QueueUrl": queue, "MaxNumberOfMessages": 10, "MessageAttributeNames": ["All"], "VisibilityTimeout": 60}),
        );
        match answer["Messages"].as_array() {
            Some(m) if !m.is_empty() => out.extend(m.iter().cloned()),
            _ => return out,
        }
    }
}

pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        tickflow_model::UnixNanos::now().0
    )
}

fn trade(i: usize, now: i64) -> String {
    format!(
        "{{\"type\":\"trade\",\"symbol\":\"S{i:03}\",\"ts_event\":{},\"price\":\"{}.25\",\"size\":\"2\",\"trade_id\":\"t{i}\"}}",
        now - 1_000_000 * (20 - i as i64),
        200 + i
    )
}

#[test]
fn sqs_to_dynamodb_and_sns_stores_every_tick_once_and_sends_the_poison_message_on() {
    let Some(aws) = moto() else { return };
    let sqs = Client::new(&aws, Service::Sqs, Duration::from_secs(30)).unwrap();
    let sns = Client::new(&aws, Service::Sns, Duration::from_secs(30)).unwrap();
    let queue = create_queue(&sqs, &unique("ticks"));
    let dlq = create_queue(&sqs, &unique("ticks-dlq"));
    let (topic, watch) = watched_topic(&sqs, &sns, "alerts");

    let now = tickflow_model::UnixNanos::now().0;
    let mut bodies: Vec<String> = (0..9).map(|i| trade(i, now)).collect();
    bodies.insert(
        3,
        "{\"type\":\"trade\",\"symbol\":\"BAD\",\"price\":".to_string(),
    );
    let entries: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"Id": i.to_string(), "MessageBody": b}))
        .collect();
    call(
        &sqs,
        "SendMessageBatch",
        json!({"QueueUrl": queue, "Entries": entries}),
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let endpoint = aws.endpoint.as_deref().unwrap();
    let tables = unique("tf");
    let bucket = s3_bucket("tf-athena").expect("moto_server answers");
    let extra = format!(
        "\n[lake]\nflush_interval_ms = 100\n\n[[sources]]\ntype = \"sqs\"\nid = \"queue\"\nqueue_url = \"{queue}\"\ndead_letter_queue_url = \"{dlq}\"\nwait_secs = 1\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n\n[[alerts.threshold]]\nname = \"above-100\"\ncondition = \"price > 100\"\ncooldown_secs = 0\nnotify = [\"sns\"]\n\n[[sinks]]\ntype = \"dynamodb\"\nid = \"ddb\"\ntables = {{ trades = \"{tables}-trades\" }}\nstate_table = \"{tables}-state\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n\n[[sinks]]\ntype = \"s3_json\"\nid = \"athena\"\nurl = \"s3://{bucket}/processed\"\ntables = [\"trades\", \"alerts\"]\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n\n[[notifiers]]\ntype = \"sns\"\nid = \"sns\"\ntopic_arn = \"{topic}\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n"
    );
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, config(&data, &extra)).unwrap();
    let server = Server::start(&cfg, &data);
    let caught_up = |s: &Value| {
        s["rows_durable"]["trades"].as_i64() == Some(9)
            && s["sinks"].as_array().is_some_and(|sinks| {
                sinks.len() == 2
                    && sinks
                        .iter()
                        .all(|n| n["lag_flushes"] == 0 && n["position"].as_u64().is_some())
            })
            && s["notifiers"]
                .as_array()
                .and_then(|n| n.first())
                .is_some_and(|n| n["lag_flushes"] == 0 && n["position"].as_u64().is_some())
    };
    wait_for(
        &server,
        "the queue's ticks stored and their alerts sent",
        caught_up,
    );
    // A SIGKILL and a restart: nothing is received again, nothing doubled.
    server.kill();
    let server = Server::start(&cfg, &data);
    wait_for(&server, "the restart caught up", |s| {
        s["log_lag"].as_u64() == Some(0)
    });
    server.stop();

    assert_eq!(sql_count(&data, "SELECT count(*) FROM trades"), 9);
    assert_eq!(
        sql_count(&data, "SELECT count(DISTINCT trade_id) FROM trades"),
        9
    );
    let dlq_rows = sql(&data, "SELECT reason, source, error, payload FROM dlq");
    assert_eq!(dlq_rows.len(), 1, "{dlq_rows:?}");
    assert_eq!(dlq_rows[0]["reason"], "malformed");
    assert_eq!(dlq_rows[0]["source"], "queue");
    assert_eq!(dlq_rows[0]["payload"], bodies[3]);
    let dead = drain(&sqs, &dlq);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["Body"], bodies[3]);
    assert!(drain(&sqs, &queue).is_empty(), "every message deleted");

    let published = drain(&sqs, &watch);
    let mut keys: Vec<String> = published
        .iter()
        .map(|m| {
            let envelope: Value = serde_json::from_str(m["Body"].as_str().unwrap()).unwrap();
            envelope["MessageAttributes"]["idempotency_key"]["Value"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 9, "{published:?}");
    assert_eq!(published.len(), 9, "each alert published once");
    assert_eq!(
        sql_count(
            &data,
            "SELECT count(*) FROM alerts WHERE delivered_to = 'log,sns'"
        ),
        9
    );

    let ddb = Client::new(&aws, Service::DynamoDb, Duration::from_secs(30)).unwrap();
    let scan = call(
        &ddb,
        "Scan",
        json!({"TableName": format!("{tables}-trades"), "ConsistentRead": true}),
    );
    let items = scan["Items"].as_array().unwrap();
    assert_eq!(items.len(), 9, "{scan}");
    let mut prices: Vec<&str> = items
        .iter()
        .map(|i| i["price"]["N"].as_str().unwrap())
        .collect();
    prices.sort_unstable();
    assert_eq!(prices[0], "200.25", "exact decimals: {prices:?}");

    // The Athena JSON: every trade once, under processed/trades/dt=<day>/.
    let lines = s3_lines(&bucket, "processed/trades/");
    assert_eq!(lines.len(), 9, "{lines:?}");
    assert!(
        lines.iter().any(|l| l["price"] == json!(200.25)),
        "{lines:?}"
    );
    assert_eq!(s3_lines(&bucket, "processed/alerts/").len(), 9);
    let out = bin()
        .args(["athena-ddl", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let ddl = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{ddl}");
    assert!(
        ddl.contains("CREATE EXTERNAL TABLE IF NOT EXISTS tickflow.trades_json")
            && ddl.contains(&format!("LOCATION 's3://{bucket}/processed/trades/'"))
            && ddl.contains("tickflow.alerts_json")
            && !ddl.contains("quotes_json"),
        "{ddl}"
    );
}

/// `athena-ddl` describes a lake on S3 from the config alone (nothing is listed or read, so
/// no S3 is needed), and says what is missing when there is nothing to describe.
#[test]
fn athena_ddl_prints_the_parquet_lakes_tables_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("lake.toml");
    let lake = concat!(
        "\n[lake]\nurl = \"s3://b/lake\"\nendpoint = \"http://127.0.0.1:9\"\n",
        "region = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
    );
    std::fs::write(&cfg, config(&data, lake)).unwrap();
    let out = bin()
        .args(["athena-ddl", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let ddl = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{ddl}");
    assert!(
        ddl.contains("CREATE EXTERNAL TABLE IF NOT EXISTS tickflow.trades (")
            && ddl.contains("STORED AS PARQUET\nLOCATION 's3://b/lake/trades/';")
            && ddl.contains("MSCK REPAIR TABLE tickflow.trades;")
            && ddl.contains("LOCATION 's3://b/lake/dlq/'\nTBLPROPERTIES")
            && !ddl.contains("_json"),
        "{ddl}"
    );

    std::fs::write(&cfg, config(&data, "")).unwrap();
    let out = bin()
        .args(["athena-ddl", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("s3_json") && err.contains("[lake] url"),
        "{err}"
    );
}

/// moto's `bucket` as an object store.
pub(crate) fn moto_store(bucket: &str) -> std::sync::Arc<dyn object_store::ObjectStore> {
    let store = tickflow_lake::ObjectLake {
        url: format!("s3://{bucket}/processed"),
        endpoint: Some(s3_endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        timeout: None,
    };
    store.connect().unwrap().0
}

/// The JSON lines of every object under `prefix` in moto's `bucket`.
pub(crate) fn s3_lines(bucket: &str, prefix: &str) -> Vec<Value> {
    use object_store::ObjectStoreExt;
    let store = moto_store(bucket);
    block_on(async {
        let listed: Vec<object_store::ObjectMeta> = futures_util::TryStreamExt::try_collect(
            store.list(Some(&prefix.trim_end_matches('/').into())),
        )
        .await
        .unwrap();
        assert!(!listed.is_empty(), "nothing under {prefix}");
        let mut out = Vec::new();
        for meta in listed {
            let key = meta.location.to_string();
            assert!(key.contains("/dt=") && key.ends_with(".json"), "{key}");
            let bytes = store
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let text = String::from_utf8(bytes.to_vec()).unwrap();
            out.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
        out
    })
}

#[test]
fn produce_sends_one_message_per_event_to_sqs_and_the_pipeline_stores_each_once() {
    let Some(aws) = moto() else { return };
    let sqs = Client::new(&aws, Service::Sqs, Duration::from_secs(30)).unwrap();
    let name = unique("produced");
    let queue = create_queue(&sqs, &name);
    let endpoint = aws.endpoint.clone().unwrap();
    let out = bin()
        .args(["produce", "--count", "95", "--batch-size", "10"])
        .args(["--to", &format!("sqs://{name}")])
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("95 acknowledged") && text.contains("in 10 requests"),
        "{text}"
    );
    let too_big = bin()
        .args([
            "produce",
            "--count",
            "20",
            "--batch-size",
            "20",
            "--to",
            "sqs://x",
        ])
        .output()
        .unwrap();
    assert!(!too_big.status.success());
    assert!(String::from_utf8_lossy(&too_big.stderr).contains("at most 10"));

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\n\n[[sources]]\ntype = \"sqs\"\nid = \"queue\"\nqueue_url = \"{queue}\"\nwait_secs = 1\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n"
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    wait_for(&server, "the produced ticks stored", |s| {
        s["rows_durable"]["trades"].as_i64() == Some(95)
    });
    server.stop();
    assert_eq!(
        sql_count(&data, "SELECT count(DISTINCT seq) FROM trades"),
        95
    );
    assert!(drain(&sqs, &queue).is_empty());
}

/// Every follower (sinks and notifiers) has written the last committed flush.
fn followers_caught_up(s: &Value) -> bool {
    s["log_lag"].as_u64() == Some(0)
        && s["flushes"].as_u64().unwrap_or(0) > 0
        && ["sinks", "notifiers"].iter().all(|kind| {
            s[kind].as_array().is_some_and(|all| {
                all.iter()
                    .all(|f| f["lag_flushes"] == 0 && f["position"].as_u64().is_some())
            })
        })
}

/// Items in a DynamoDB table, counted page by page.
pub(crate) fn dynamo_count(ddb: &Client, table: &str) -> u64 {
    let mut total = 0;
    let mut start: Option<Value> = None;
    loop {
        let mut request = json!({"TableName": table, "Select": "COUNT", "ConsistentRead": true});
        if let Some(key) = start.take() {
            request["ExclusiveStartKey"] = key;
        }
        let page = call(ddb, "Scan", request);
        total += page["Count"].as_u64().unwrap();
        match page.get("LastEvaluatedKey") {
            Some(key) if !key.is_null() => start = Some(key.clone()),
            _ => return total,
        }
    }
}

#[test]
fn aws_cut_away_stalls_nothing_and_dynamodb_s3_json_and_sns_catch_up_once() {
    let Some(aws) = moto() else { return };
    let endpoint = aws.endpoint.clone().unwrap();
    let target = endpoint.trim_start_matches("http://").to_string();
    let proxy = tickflow_core::contract::Proxy::start(&target);
    let through = format!("http://127.0.0.1:{}", proxy.port);
    let sqs = Client::new(&aws, Service::Sqs, Duration::from_secs(30)).unwrap();
    let sns = Client::new(&aws, Service::Sns, Duration::from_secs(30)).unwrap();
    let (topic, watch) = watched_topic(&sqs, &sns, "cut");
    let tables = unique("tfcut");
    let bucket = s3_bucket("tf-cut").expect("moto_server answers");
    let keys =
        "region = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        config(
            &data,
            &format!(
                "\n[lake]\nflush_interval_ms = 100\nsink_buffer_rows = 1000\n\n[[alerts.threshold]]\nname = \"nvda-above-1\"\nsymbol = \"NVDA\"\ncondition = \"price > 1\"\nnotify = [\"sns\"]\n\n[[alerts.threshold]]\nname = \"zzz-above-1\"\nsymbol = \"ZZZ\"\ncondition = \"price > 1\"\nnotify = [\"sns\"]\n\n[[sinks]]\ntype = \"dynamodb\"\nid = \"ddb\"\ntables = {{ trades = \"{tables}-trades\" }}\nstate_table = \"{tables}-state\"\nendpoint = \"{through}\"\n{keys}\n[[sinks]]\ntype = \"s3_json\"\nid = \"athena\"\nurl = \"s3://{bucket}/processed\"\ntables = [\"trades\"]\nendpoint = \"{through}\"\n{keys}\n[[notifiers]]\ntype = \"sns\"\nid = \"sns\"\ntopic_arn = \"{topic}\"\nendpoint = \"{through}\"\nmax_attempts = 1000\nretry_max_ms = 200\n{keys}"
            ),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, &data);
    let produce = |count: &str, start: &str| {
        let out = bin()
            .args(["produce", "--count", count, "--batch-size", "500"])
            .args(["--start-seq", start, "--to", &server.url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("{count} acknowledged")), "{text}");
    };
    produce("3000", "0");
    wait_for(
        &server,
        "the followers write the first rows",
        followers_caught_up,
    );

    proxy.cut();
    produce("3000", "3000");
    // An alert raised while AWS is away, for the SNS notifier to retry.
    let zzz = format!(
        r#"{{"type":"trade","symbol":"ZZZ","ts_event":{},"price":"5","size":"1","trade_id":"z1"}}"#,
        tickflow_model::UnixNanos::now().0
    );
    let (status, body) = crate::support::http(
        "POST",
        &format!("{}/api/v1/ingest", server.url),
        Some(zzz.as_bytes()),
    );
    assert!(status < 300, "{status} {body}");
    // Ingest, processing, alerts and the lake carry on while AWS is away.
    wait_for(&server, "the lake takes every trade", |s| {
        s["log_lag"].as_u64() == Some(0) && s["rows_durable"]["trades"].as_u64() == Some(6001)
    });
    wait_for(&server, "every follower reports its failures", |s| {
        ["sinks", "notifiers"].iter().all(|kind| {
            s[kind].as_array().is_some_and(|all| {
                all.iter().all(|f| {
                    f["state"] == "retrying"
                        && f["errors"].as_u64().unwrap_or(0) >= 1
                        && f["lag_flushes"].as_u64().unwrap_or(0) > 0
                })
            })
        })
    });
    proxy.restore();
    wait_for(&server, "the followers catch up", followers_caught_up);
    server.stop();

    let ddb = Client::new(&aws, Service::DynamoDb, Duration::from_secs(30)).unwrap();
    assert_eq!(dynamo_count(&ddb, &format!("{tables}-trades")), 6001);
    let lines = s3_lines(&bucket, "processed/trades/");
    let mut seqs: Vec<u64> = lines.iter().filter_map(|l| l["seq"].as_u64()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(lines.len(), 6001, "each trade once in the JSON");
    assert_eq!(
        seqs.len(),
        6000,
        "the produced trades, and ZZZ's without a seq"
    );
    let alerts = sql_count(&data, "SELECT count(*) FROM alerts") as usize;
    assert_eq!(
        sql_count(&data, "SELECT count(*) FROM alerts WHERE symbol = 'ZZZ'"),
        1
    );
    let published = drain(&sqs, &watch);
    let mut ids: Vec<String> = published
        .iter()
        .map(|m| {
            let envelope: Value = serde_json::from_str(m["Body"].as_str().unwrap()).unwrap();
            envelope["MessageAttributes"]["idempotency_key"]["Value"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), alerts, "every alert published, once by key");
}
