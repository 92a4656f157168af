//! SQS and SNS against `moto_server` (127.0.0.1:5000, or `TICKFLOW_TEST_S3`), which
//! `scripts/test` starts. Under CI it must be there; elsewhere the tests say they skipped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use std::sync::Arc;

use tickflow_aws::dynamodb::{DynamoConfig, DynamoSink, Kind, Oversize, TableConfig};
use tickflow_aws::sns::{SnsConfig, SnsNotifier};
use tickflow_aws::sqs::SqsSource;
use tickflow_aws::{AwsConfig, Client, Error, Service};
use tickflow_core::contract::{Appended, CollectLog, check_notifier, check_source, moto_endpoint};
use tickflow_core::notify::{DeliveryError, Notifier};
use tickflow_core::sink::{Flush, Sink};
use tickflow_core::source::Append;
use tickflow_model::Event;

fn moto() -> Option<AwsConfig> {
    let endpoint = moto_endpoint()?;
    Some(AwsConfig {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        session_token: None,
    })
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn sqs(aws: &AwsConfig) -> Client {
    Client::new(aws, Service::Sqs, Duration::from_secs(30)).unwrap()
}

fn call(client: &Client, op: &str, body: Value) -> Value {
    block_on(client.json(op, &body)).unwrap_or_else(|e| panic!("{op}: {e}"))
}

fn create_queue(client: &Client, name: &str) -> String {
    let answer = call(client, "CreateQueue", json!({"QueueName": name}));
    answer["QueueUrl"].as_str().unwrap().to_string()
}

fn send(client: &Client, queue: &str, bodies: &[String]) {
    let entries: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"Id": i.to_string(), "MessageBody": b}))
        .collect();
    let answer = call(
        client,
        "SendMessageBatch",
        json!({"QueueUrl": queue, "Entries": entries}),
    );
    assert_eq!(
        answer["Successful"].as_array().map_or(0, Vec::len),
        bodies.len(),
        "{answer}"
    );
}

/// Every message on the queue now, with its attributes; received, so hidden for a while.
fn drain(client: &Client, queue: &str) -> Vec<Value> {
    block_on(drain_async(client, queue))
}

async fn drain_async(client: &Client, queue: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let answer = client
            .json(
                "ReceiveMessage",
                &json!({"QueueUrl": queue, "MaxNumberOfMessages": 10, "MessageAttributeNames": ["All"], "VisibilityTimeout": 60}),
            )
            .await
            .expect("ReceiveMessage");
        let Some(messages) = answer["Messages"].as_array().filter(|m| !m.is_empty()) else {
            return out;
        };
        out.extend(messages.iter().cloned());
    }
}

fn source(aws: &AwsConfig, queue: &str, dlq: Option<&str>, max_receives: u32) -> SqsSource {
    SqsSource {
        aws: aws.clone(),
        queue_url: queue.to_string(),
        wait: Duration::from_secs(1),
        max_receives,
        dead_letter_queue_url: dlq.map(str::to_string),
        retry_max: Duration::from_millis(200),
        timeout: Duration::from_secs(30),
        format: Default::default(),
    }
}

/// Runs the source a batch at a time until `records` events and rejects have come.
fn take(source: &SqsSource, records: usize) -> Appended {
    let mut all = Appended::default();
    while all.events.len() + all.rejected.len() < records {
        let got = check_source(Box::new(source.clone()), 1);
        all.events.extend(got.events);
        all.rejected.extend(got.rejected);
        all.batches += got.batches;
    }
    all
}

fn trade(i: usize) -> String {
    format!(
        "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":\"2026-12-04T15:00:0{i}Z\",\"price\":\"500.{i}\",\"size\":\"1\",\"trade_id\":\"t{i}\"}}"
    )
}

fn trade_ids(events: &[Event]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Trade(t) => t.trade_id.as_deref().map(str::to_string),
            _ => None,
        })
        .collect();
    ids.sort();
    ids
}

fn queue_is_empty(client: &Client, queue: &str) -> bool {
    let answer = call(
        client,
        "GetQueueAttributes",
        json!({"QueueUrl": queue, "AttributeNames": ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]}),
    );
    answer["Attributes"]["ApproximateNumberOfMessages"] == "0"
        && answer["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"
}

#[test]
fn a_poison_message_reaches_the_dead_letter_queue_while_its_nine_batch_mates_are_stored() {
    let Some(aws) = moto() else { return };
    let client = sqs(&aws);
    let queue = create_queue(&client, &unique("ticks"));
    let dlq = create_queue(&client, &unique("ticks-dlq"));
    let mut bodies: Vec<String> = (0..9).map(trade).collect();
    bodies.insert(4, "{\"type\":\"trade\",\"symbol\":".to_string());
    send(&client, &queue, &bodies);

    let got = take(&source(&aws, &queue, Some(&dlq), 5), 10);
    let expected: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
    assert_eq!(trade_ids(&got.events), expected);
    assert_eq!(got.rejected.len(), 1, "{:?}", got.rejected);
    let (error, payload) = &got.rejected[0];
    assert!(error.contains("message "), "{error}");
    assert_eq!(payload, &bodies[4]);
    assert!(queue_is_empty(&client, &queue), "every message deleted");

    let dead = drain(&client, &dlq);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["Body"], bodies[4]);
    let why = dead[0]["MessageAttributes"]["tickflow_reason"]["StringValue"]
        .as_str()
        .unwrap_or_default();
    assert!(!why.is_empty(), "{dead:?}");
    assert_eq!(
        dead[0]["MessageAttributes"]["tickflow_source_queue"]["StringValue"],
        queue
    );
}

#[test]
fn messages_in_another_shape_are_read_through_a_field_mapping() {
    use tickflow_core::mapping::{Fields, Format, TimeUnit};
    let Some(aws) = moto() else { return };
    let client = sqs(&aws);
    let queue = create_queue(&client, &unique("shaped"));
    // The test-event producer's own shape: epoch milliseconds, a nested quote, no trade id.
    let bodies: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "{{\"ticker\":\"NVDA\",\"at\":176545080000{i},\"last\":{{\"px\":\"500.{i}5\",\"qty\":{i}.5}},\"padding\":\"xxxx\"}}"
            )
        })
        .collect();
    send(&client, &queue, &bodies);
    let mut shaped = source(&aws, &queue, None, 5);
    shaped.format = Format::Fields(Fields {
        symbol: "/ticker".into(),
        price: "/last/px".into(),
        size: Some("/last/qty".into()),
        size_default: None,
        ts_event: "/at".into(),
        time_unit: TimeUnit::Millis,
        trade_id: None,
        exchange: None,
    });
    let got = take(&shaped, 3);
    assert!(got.rejected.is_empty(), "{:?}", got.rejected);
    let mut trades: Vec<String> = got
        .events
        .iter()
        .map(|e| match e {
            Event::Trade(t) => format!("{} {} {} {}", t.symbol, t.ts_event.0, t.price, t.size),
            other => panic!("{other:?}"),
        })
        .collect();
    trades.sort();
    assert_eq!(
        trades,
        [
            "NVDA 1765450800000000000 500.05 0.5",
            "NVDA 1765450800001000000 500.15 1.5",
            "NVDA 1765450800002000000 500.25 2.5"
        ]
    );
}

#[test]
fn a_message_received_more_than_max_receives_times_is_sent_on_unread() {
    let Some(aws) = moto() else { return };
    let client = sqs(&aws);
    let queue = create_queue(&client, &unique("again"));
    let dlq = create_queue(&client, &unique("again-dlq"));
    send(&client, &queue, &[trade(1)]);
    // Two receives that never delete: a consumer that kept failing on it.
    for _ in 0..2 {
        let answer = call(
            &client,
            "ReceiveMessage",
            json!({"QueueUrl": queue, "MaxNumberOfMessages": 1, "VisibilityTimeout": 0}),
        );
        assert_eq!(answer["Messages"].as_array().map_or(0, Vec::len), 1);
    }
    let got = take(&source(&aws, &queue, Some(&dlq), 2), 1);
    assert!(got.events.is_empty(), "{:?}", got.events);
    assert!(
        got.rejected[0].0.contains("received 3 times"),
        "{:?}",
        got.rejected
    );
    assert!(queue_is_empty(&client, &queue));
    assert_eq!(drain(&client, &dlq).len(), 1);
}

#[test]
fn a_queue_that_appears_later_is_retried_until_it_answers() {
    let Some(aws) = moto() else { return };
    let client = sqs(&aws);
    let name = unique("later");
    let url = format!("{}123456789012/{name}", client.url());
    let missing = block_on(client.json(
        "GetQueueAttributes",
        &json!({"QueueUrl": url, "AttributeNames": ["All"]}),
    ));
    assert!(
        matches!(&missing, Err(e @ Error::Service { .. }) if !e.is_retryable()),
        "{missing:?}"
    );
    // The source starts against the missing queue; the queue and a tick come a moment later.
    let (creator, later) = (client.clone(), url.clone());
    let made = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(create_queue(&creator, &name), later);
        send(&creator, &later, &[trade(7)]);
    });
    let got = take(&source(&aws, &url, None, 5), 1);
    made.join().unwrap();
    assert_eq!(trade_ids(&got.events), vec!["t7".to_string()]);
}

/// The topic, and a queue subscribed to it that shows what was published.
fn topic_with_queue(aws: &AwsConfig, fifo: bool) -> (String, String) {
    let sns = Client::new(aws, Service::Sns, Duration::from_secs(30)).unwrap();
    let client = sqs(aws);
    let name = unique("alerts");
    let (topic_name, attributes): (String, Vec<(&str, &str)>) = if fifo {
        (
            format!("{name}.fifo"),
            vec![
                ("Attributes.entry.1.key", "FifoTopic"),
                ("Attributes.entry.1.value", "true"),
            ],
        )
    } else {
        (name.clone(), vec![])
    };
    let mut params = vec![("Name", topic_name.as_str())];
    params.extend(attributes);
    let xml = block_on(sns.query("CreateTopic", "2010-03-31", &params)).unwrap();
    let topic = between(&xml, "<TopicArn>", "</TopicArn>");
    let queue_name = if fifo {
        format!("{name}-q.fifo")
    } else {
        format!("{name}-q")
    };
    let queue = if fifo {
        call(
            &client,
            "CreateQueue",
            json!({"QueueName": queue_name, "Attributes": {"FifoQueue": "true"}}),
        )["QueueUrl"]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        create_queue(&client, &queue_name)
    };
    let arn = call(
        &client,
        "GetQueueAttributes",
        json!({"QueueUrl": queue, "AttributeNames": ["QueueArn"]}),
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
            ("Endpoint", &arn),
        ],
    ))
    .unwrap();
    (topic, queue)
}

fn between(text: &str, open: &str, close: &str) -> String {
    let start = text.find(open).map(|i| i + open.len()).expect(open);
    let end = text[start..].find(close).expect(close) + start;
    text[start..end].to_string()
}

/// The SNS envelopes delivered to the queue so far.
fn envelopes(client: &Client, queue: &str) -> Vec<Value> {
    block_on(envelopes_async(client, queue))
}

async fn envelopes_async(client: &Client, queue: &str) -> Vec<Value> {
    drain_async(client, queue)
        .await
        .iter()
        .map(|m| serde_json::from_str(m["Body"].as_str().unwrap()).unwrap())
        .collect()
}

fn notifier(aws: &AwsConfig, topic: &str) -> SnsNotifier {
    SnsNotifier::new(SnsConfig {
        aws: aws.clone(),
        topic_arn: topic.to_string(),
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

#[test]
fn an_alert_reaches_the_topic_with_its_key_fields_and_subject() {
    let Some(aws) = moto() else { return };
    let (topic, queue) = topic_with_queue(&aws, false);
    let client = sqs(&aws);
    let sns = notifier(&aws, &topic);
    let mut seen: Vec<Value> = Vec::new();
    block_on(check_notifier(&sns, "sns", async || {
        seen.extend(envelopes_async(&client, &queue).await);
        seen.iter()
            .map(|e| {
                e["MessageAttributes"]["idempotency_key"]["Value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }));
    let first = &seen[0];
    let message: Value = serde_json::from_str(first["Message"].as_str().unwrap()).unwrap();
    let key = first["MessageAttributes"]["idempotency_key"]["Value"]
        .as_str()
        .unwrap();
    assert_eq!(message["idempotency_key"], key);
    assert!(
        message["alert_id"]
            .as_str()
            .is_some_and(|id| key.starts_with(id))
    );
    assert_eq!(
        first["MessageAttributes"]["symbol"]["Value"],
        message["symbol"]
    );
    let subject = first["Subject"].as_str().unwrap_or_default();
    assert!(
        subject.contains(message["symbol"].as_str().unwrap()),
        "{subject}"
    );
}

#[test]
fn a_fifo_topic_drops_a_repeated_alert_by_its_key() {
    let Some(aws) = moto() else { return };
    let (topic, queue) = topic_with_queue(&aws, true);
    let client = sqs(&aws);
    let sns = notifier(&aws, &topic);
    let rows = tickflow_core::contract::sample_rows(1, 1);
    let alert = &rows.alerts[0];
    for _ in 0..2 {
        block_on(sns.deliver(alert, "k1:sns")).unwrap();
    }
    let got = envelopes(&client, &queue);
    assert_eq!(got.len(), 1, "{got:?}");
}

#[test]
fn a_missing_topic_is_permanent_and_an_unreachable_endpoint_is_retried() {
    let Some(aws) = moto() else { return };
    let rows = tickflow_core::contract::sample_rows(1, 1);
    let alert = &rows.alerts[0];
    let missing = notifier(&aws, "arn:aws:sns:us-east-1:123456789012:no-such-topic");
    let e = block_on(missing.deliver(alert, "k:sns")).unwrap_err();
    assert!(matches!(e, DeliveryError::Permanent(_)), "{e}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = AwsConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..aws
    };
    let e =
        block_on(notifier(&down, "arn:aws:sns:us-east-1:123456789012:x").deliver(alert, "k:sns"))
            .unwrap_err();
    assert!(matches!(e, DeliveryError::Retry(_)), "{e}");
}

fn dynamo_config(aws: &AwsConfig, prefix: &str, oversize: Oversize) -> DynamoConfig {
    DynamoConfig {
        aws: aws.clone(),
        tables: Kind::ALL
            .iter()
            .map(|(name, kind)| TableConfig {
                kind: *kind,
                name: format!("{prefix}-{name}"),
                fields: None,
            })
            .collect(),
        state_table: format!("{prefix}-state"),
        create_tables: true,
        oversize,
        timeout: Duration::from_secs(30),
    }
}

/// Items per kind, by a consistent scan of each table.
async fn item_counts(client: &Client, config: &DynamoConfig) -> tickflow_core::contract::Counts {
    let mut counts = tickflow_core::contract::Counts::new();
    for t in &config.tables {
        let answer = client
            .json(
                "Scan",
                &json!({"TableName": t.name, "Select": "COUNT", "ConsistentRead": true}),
            )
            .await;
        let n = match answer {
            Ok(a) => a["Count"].as_u64().unwrap_or(0),
            // Not created yet: no rows.
            Err(Error::Service { code, .. }) if code == "ResourceNotFoundException" => 0,
            Err(e) => panic!("Scan {}: {e}", t.name),
        };
        counts.insert(t.kind.name().to_string(), n);
    }
    counts
}

#[test]
fn the_dynamodb_sink_keeps_the_sink_contract() {
    let Some(aws) = moto() else { return };
    let prefix = unique("contract");
    let config = dynamo_config(&aws, &prefix, Oversize::Reject);
    let dlq = Arc::new(CollectLog::default());
    let ddb = Client::new(&aws, Service::DynamoDb, Duration::from_secs(30)).unwrap();
    block_on(tickflow_core::contract::check_sink(
        || DynamoSink::new("ddb", config.clone(), Arc::clone(&dlq) as Arc<dyn Append>),
        async || item_counts(&ddb, &config).await,
        &["trades", "quotes", "bars", "daily_metrics"],
    ));
    assert!(dlq.rejected().is_empty(), "{:?}", dlq.rejected());
}

#[test]
fn an_item_too_large_goes_to_the_dlq_and_its_batch_mates_are_stored_exactly() {
    let Some(aws) = moto() else { return };
    let prefix = unique("oversize");
    let mut config = dynamo_config(&aws, &prefix, Oversize::Reject);
    config.tables.retain(|t| t.kind == Kind::Trades);
    let dlq = Arc::new(CollectLog::default());
    let mut rows = tickflow_core::contract::sample_rows(1, 30);
    rows.trades[7].trade_id = Some(tickflow_model::TradeId::from("x".repeat(500_000).as_str()));
    let flush = Flush {
        seq: 1,
        rows: Arc::new(rows.clone()),
    };
    let mut sink = DynamoSink::new("ddb", config.clone(), Arc::clone(&dlq) as Arc<dyn Append>);
    block_on(async {
        assert_eq!(sink.open().await.unwrap(), None);
        sink.write(&flush).await.unwrap();
    });
    let refused = dlq.rejected();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].0 == tickflow_model::RejectReason::SinkRefused
            && refused[0].1.contains("over DynamoDB's 400000"),
        "{}",
        refused[0].1
    );
    let ddb = Client::new(&aws, Service::DynamoDb, Duration::from_secs(30)).unwrap();
    assert_eq!(block_on(item_counts(&ddb, &config))["trades"], 29);
    // Prices are exact decimals, not floats.
    let t = &rows.trades[0];
    let items = call(
        &ddb,
        "Query",
        json!({
            "TableName": config.tables[0].name,
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": t.symbol.as_str()}},
            "ConsistentRead": true
        }),
    );
    let prices: Vec<String> = items["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["price"]["N"].as_str().unwrap().to_string())
        .collect();
    assert!(prices.contains(&t.price.to_string()), "{prices:?}");

    // Trimmed instead: all 30 stored, the long id cut to fit.
    let prefix = unique("trim");
    let mut config = dynamo_config(&aws, &prefix, Oversize::Trim);
    config.tables.retain(|t| t.kind == Kind::Trades);
    let mut sink = DynamoSink::new("ddb", config.clone(), Arc::clone(&dlq) as Arc<dyn Append>);
    block_on(async {
        sink.open().await.unwrap();
        sink.write(&flush).await.unwrap();
    });
    assert_eq!(block_on(item_counts(&ddb, &config))["trades"], 30);
    assert_eq!(dlq.rejected().len(), 1, "nothing more refused");
}
