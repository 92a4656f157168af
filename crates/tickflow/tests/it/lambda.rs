//! `tickflow lambda` under a stand-in of the Lambda Runtime API that plays the SQS event
//! source mapping against moto_server: it receives up to 10 messages, invokes the function,
//! and deletes the messages the answer does not list as failed.
//! A poison message goes to the dead-letter queue while its batch-mates are stored; an
//! environment killed in mid-invocation loses and doubles nothing in DynamoDB; an answer lists
//! only the messages that failed.

use std::collections::{HashMap, VecDeque};
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tickflow_aws::{Client, Service};
use tickflow_core::contract::s3_bucket;

use crate::aws::{block_on, call, moto, unique};
use crate::support::bin;

fn trade(i: usize, now: i64) -> String {
    format!(
        "{{\"type\":\"trade\",\"symbol\":\"L{:02}\",\"ts_event\":{},\"price\":\"{}.5\",\"size\":\"1\",\"trade_id\":\"lt{i}\"}}",
        i % 7,
        now - 1_000_000 * (100 - i as i64),
        100 + i
    )
}

/// What the function answered an invocation.
#[derive(Clone, Debug)]
enum Answer {
    Response(Value),
    Error(String, Value),
}

#[derive(Default)]
struct State {
    pending: VecDeque<(String, String)>,
    taken: Vec<String>,
    answers: HashMap<String, Answer>,
    init_errors: Vec<Value>,
}

/// The Runtime API stand-in: invocations queue up for `GET .../next`, answers are kept.
#[derive(Clone)]
struct RuntimeApi {
    state: Arc<(Mutex<State>, Condvar)>,
    wake: Arc<tokio::sync::Notify>,
    addr: String,
    /// How long each invocation is given, from when it is taken.
    timeout_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl RuntimeApi {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let api = RuntimeApi {
            state: Arc::default(),
            wake: Arc::default(),
            addr: listener.local_addr().unwrap().to_string(),
            timeout_ms: Arc::new(std::sync::atomic::AtomicU64::new(60_000)),
        };
        let served = api.clone();
        std::thread::spawn(move || {
            block_on(async move {
                let app = axum::Router::new().fallback(
                    move |method: axum::http::Method, uri: axum::http::Uri, body: String| {
                        let api = served.clone();
                        async move { api.answer(&method, uri.path(), &body).await }
                    },
                );
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        api
    }

    async fn answer(
        &self,
        method: &axum::http::Method,
        path: &str,
        body: &str,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let path = path.trim_start_matches("/2018-06-01");
        if method == axum::http::Method::GET && path == "/runtime/invocation/next" {
            loop {
                let woken = self.wake.notified();
                let next = {
                    let (lock, cv) = &*self.state;
                    let mut s = lock.lock().unwrap();
                    let next = s.pending.pop_front();
                    if let Some((id, _)) = &next {
                        s.taken.push(id.clone());
                        cv.notify_all();
                    }
                    next
                };
                if let Some((id, event)) = next {
                    let deadline = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis()
                        + u128::from(self.timeout_ms.load(std::sync::atomic::Ordering::SeqCst));
                    return (
                        [
                            ("lambda-runtime-aws-request-id", id),
                            ("lambda-runtime-deadline-ms", deadline.to_string()),
                            (
                                "lambda-runtime-invoked-function-arn",
                                "arn:aws:lambda:us-east-1:123456789012:function:tickflow".into(),
                            ),
                        ],
                        event,
                    )
                        .into_response();
                }
                woken.await;
            }
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap();
        match parts.as_slice() {
            ["runtime", "invocation", id, "response"] => {
                s.answers.insert((*id).to_string(), Answer::Response(value));
            }
            ["runtime", "invocation", id, "error"] => {
                let kind = value["errorType"].as_str().unwrap_or_default().to_string();
                s.answers
                    .insert((*id).to_string(), Answer::Error(kind, value));
            }
            ["runtime", "init", "error"] => s.init_errors.push(value),
            _ => return axum::http::StatusCode::NOT_FOUND.into_response(),
        }
        cv.notify_all();
        (axum::http::StatusCode::ACCEPTED, "{\"status\":\"OK\"}").into_response()
    }

    /// Queues an invocation and returns its request id.
    fn push(&self, event: &Value) -> String {
        let id = unique("req");
        self.state
            .0
            .lock()
            .unwrap()
            .pending
            .push_back((id.clone(), event.to_string()));
        self.wake.notify_waiters();
        self.wake.notify_one();
        id
    }

    /// Waits until `ready` holds for the state; bounded only so a broken build cannot hang.
    fn wait<T>(&self, what: &str, mut ready: impl FnMut(&State) -> Option<T>) -> T {
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap();
        loop {
            if let Some(t) = ready(&s) {
                return t;
            }
            let (next, timeout) = cv.wait_timeout(s, Duration::from_secs(120)).unwrap();
            assert!(!timeout.timed_out(), "waited 120 s for {what}");
            s = next;
        }
    }

    fn invoke(&self, event: &Value) -> Answer {
        let id = self.push(event);
        self.wait("an answer", |s| s.answers.get(&id).cloned())
    }
}

/// `tickflow lambda` as one execution environment.
struct Function(Child);

impl Function {
    fn start(api: &RuntimeApi, config: &std::path::Path, environment: &str) -> Self {
        let mut command = bin();
        command.arg("lambda");
        Self::spawn(command, api, config, environment)
    }

    /// As Lambda starts a custom runtime: the binary named `bootstrap`, with no arguments.
    fn bootstrap(api: &RuntimeApi, config: &std::path::Path, environment: &str) -> Self {
        let dir = config.parent().unwrap().join(format!("task-{environment}"));
        std::fs::create_dir_all(&dir).unwrap();
        let bootstrap = dir.join("bootstrap");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tickflow"), &bootstrap).unwrap();
        let mut command = std::process::Command::new(bootstrap);
        command.env("RUST_LOG", "warn");
        Self::spawn(command, api, config, environment)
    }

    fn spawn(
        mut command: std::process::Command,
        api: &RuntimeApi,
        config: &std::path::Path,
        environment: &str,
    ) -> Self {
        Function(
            command
                .env("TICKFLOW_CONFIG", config)
                .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
                .env(
                    "AWS_LAMBDA_LOG_STREAM_NAME",
                    format!("2026/12/06/[$LATEST]{environment}"),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn tickflow lambda"),
        )
    }

    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The event source mapping: one receive of up to 10 messages, as an SQS event.
fn receive(sqs: &Client, queue: &str, arn: &str) -> Option<(Value, Vec<(String, String)>)> {
    let answer = call(
        sqs,
        "ReceiveMessage",
        json!({"QueueUrl": queue, "MaxNumberOfMessages": 10, "VisibilityTimeout": 2, "MessageSystemAttributeNames": ["ApproximateReceiveCount"]}),
    );
    let messages = answer["Messages"].as_array().filter(|m| !m.is_empty())?;
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": m["Attributes"]["ApproximateReceiveCount"].as_str().unwrap_or("1"), "SentTimestamp": "1"},
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    let handles = messages
        .iter()
        .map(|m| {
            (
                m["MessageId"].as_str().unwrap().to_string(),
                m["ReceiptHandle"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    Some((json!({"Records": records}), handles))
}

/// Deletes the messages an answer did not list; returns the listed ids.
fn settle(sqs: &Client, queue: &str, handles: &[(String, String)], answer: &Answer) -> Vec<String> {
    let Answer::Response(body) = answer else {
        panic!("the invocation failed: {answer:?}");
    };
    let failed: Vec<String> = body["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("no batchItemFailures in {body}"))
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect();
    let entries: Vec<Value> = handles
        .iter()
        .filter(|(id, _)| !failed.contains(id))
        .enumerate()
        .map(|(i, (_, h))| json!({"Id": i.to_string(), "ReceiptHandle": h}))
        .collect();
    if !entries.is_empty() {
        call(
            sqs,
            "DeleteMessageBatch",
            json!({"QueueUrl": queue, "Entries": entries}),
        );
    }
    failed
}

/// Invokes the function with what the queue holds until it is empty (messages a killed
/// environment held come back after their 2 s visibility timeout); returns the failures.
fn pump(api: &RuntimeApi, sqs: &Client, queue: &str, arn: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let mut empty_receives = 0;
    let mut rounds = 0;
    while empty_receives < 3 {
        rounds += 1;
        assert!(
            rounds < 200,
            "the queue never emptied; failures so far {failures:?}"
        );
        match receive(sqs, queue, arn) {
            Some((event, handles)) => {
                empty_receives = 0;
                let answer = api.invoke(&event);
                failures.extend(settle(sqs, queue, &handles, &answer));
            }
            None => {
                empty_receives += 1;
                std::thread::sleep(Duration::from_millis(1500));
            }
        }
    }
    failures
}

fn send(sqs: &Client, queue: &str, bodies: &[String]) {
    for chunk in bodies.chunks(10) {
        let entries: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| json!({"Id": i.to_string(), "MessageBody": b}))
            .collect();
        call(
            sqs,
            "SendMessageBatch",
            json!({"QueueUrl": queue, "Entries": entries}),
        );
    }
}

#[test]
fn lambda_stores_every_message_once_across_a_killed_environment_and_fails_only_the_bad_ones() {
    let Some(aws) = moto() else { return };
    let sqs = Client::new(&aws, Service::Sqs, Duration::from_secs(30)).unwrap();
    let name = unique("lambda-ticks");
    let queue = call(&sqs, "CreateQueue", json!({"QueueName": name}))["QueueUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let dlq = call(
        &sqs,
        "CreateQueue",
        json!({"QueueName": unique("lambda-dlq")}),
    )["QueueUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let arn = format!("arn:aws:sqs:us-east-1:123456789012:{name}");
    let endpoint = aws.endpoint.clone().unwrap();
    let tables = unique("tfl");
    let bucket = s3_bucket("tf-lambda").expect("moto_server answers");
    let dir = tempfile::tempdir().unwrap();
    let write_config = |file: &str, data: &str, dead_letters: bool| {
        let dlq_line = if dead_letters {
            format!("dead_letter_queue_url = \"{dlq}\"\n")
        } else {
            String::new()
        };
        let path = dir.path().join(file);
        std::fs::write(
            &path,
            format!(
                "data_dir = \"{}\"\n\n[http]\nport = 0\n\n[pgwire]\nenabled = false\n\n[[sources]]\ntype = \"sqs\"\nid = \"queue\"\nqueue_url = \"{queue}\"\n{dlq_line}region = \"us-east-1\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n\n[[sinks]]\ntype = \"dynamodb\"\nid = \"ddb\"\ntables = {{ trades = \"{tables}-trades\" }}\nstate_table = \"{tables}-state\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n\n[[sinks]]\ntype = \"s3_json\"\nid = \"athena\"\nurl = \"s3://{bucket}/processed\"\ntables = [\"trades\"]\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
                dir.path().join(data).display()
            ),
        )
        .unwrap();
        let out = bin()
            .args(["check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    };
    let first = write_config("a.toml", "env-a", true);
    let second = write_config("b.toml", "env-b", false);
    let api = RuntimeApi::start();
    let now = tickflow_model::UnixNanos::now().0;

    // 20 ticks and a poison message: the poison reaches the dead-letter queue with its
    // reason, the answer lists nothing, and every tick is in DynamoDB.
    let mut bodies: Vec<String> = (0..20).map(|i| trade(i, now)).collect();
    bodies.insert(5, "{\"type\":\"trade\",\"symbol\":".to_string());
    send(&sqs, &queue, &bodies);
    let a = Function::start(&api, &first, "aaaaaaaa1111");
    let failures = pump(&api, &sqs, &queue, &arn);
    assert!(failures.is_empty(), "{failures:?}");
    let dead = call(
        &sqs,
        "ReceiveMessage",
        json!({"QueueUrl": dlq, "MaxNumberOfMessages": 10, "MessageAttributeNames": ["All"]}),
    );
    let dead = dead["Messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["Body"], bodies[5]);
    let reason = dead[0]["MessageAttributes"]["tickflow_reason"]["StringValue"]
        .as_str()
        .unwrap_or_default();
    assert!(!reason.is_empty(), "{dead:?}");

    // An environment killed once it has taken an invocation: the mapping's messages come
    // back, a new environment (a fresh /tmp) stores them, nothing doubles in DynamoDB.
    let more: Vec<String> = (20..30).map(|i| trade(i, now)).collect();
    send(&sqs, &queue, &more);
    let (event, _) = receive(&sqs, &queue, &arn).expect("the new messages");
    let id = api.push(&event);
    api.wait("the environment to take the invocation", |s| {
        s.taken.contains(&id).then_some(())
    });
    a.kill();
    let b = Function::bootstrap(&api, &second, "bbbbbbbb2222");
    let failures = pump(&api, &sqs, &queue, &arn);
    assert!(failures.is_empty(), "{failures:?}");

    let ddb = Client::new(&aws, Service::DynamoDb, Duration::from_secs(30)).unwrap();
    let scan = call(
        &ddb,
        "Scan",
        json!({"TableName": format!("{tables}-trades"), "ConsistentRead": true}),
    );
    let items = scan["Items"].as_array().unwrap();
    let mut ids: Vec<&str> = items
        .iter()
        .map(|i| i["trade_id"]["S"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(items.len(), 30, "{scan}");
    assert_eq!(ids.len(), 30);
    // Each environment keeps its own position, so neither skips the other's flushes.
    let state = call(
        &ddb,
        "Scan",
        json!({"TableName": format!("{tables}-state"), "ConsistentRead": true}),
    );
    let positions = state["Items"].as_array().unwrap();
    assert!(
        positions
            .iter()
            .any(|p| p.to_string().contains("bbbbbbbb2222")),
        "{state}"
    );
    // The Athena JSON: every tick at least once, under file names of each environment's own.
    let keys = s3_keys(&bucket, "processed/trades/");
    assert!(
        keys.iter()
            .any(|k| k.ends_with("-athena-bbbbbbbb2222.json")),
        "{keys:?}"
    );

    // One bad message among good ones, and no dead-letter queue: only it is listed.
    let records: Vec<Value> = ["{\"type\":\"trade\"", &trade(40, now), &trade(41, now)]
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({"messageId": format!("m{i}"), "body": body, "attributes": {"ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs", "eventSourceARN": arn})
        })
        .collect();
    match api.invoke(&json!({"Records": records})) {
        Answer::Response(body) => assert_eq!(
            body,
            json!({"batchItemFailures": [{"itemIdentifier": "m0"}]})
        ),
        other => panic!("{other:?}"),
    }
    // An event that is not from SQS fails as a whole, with the reason.
    match api.invoke(&json!({"detail-type": "Scheduled Event"})) {
        Answer::Error(kind, body) => {
            assert_eq!(kind, "InvalidEvent");
            assert!(
                body["errorMessage"].as_str().unwrap().contains("Records"),
                "{body}"
            );
        }
        other => panic!("{other:?}"),
    }
    drop(b);

    // A config with a mistake is reported at init, with the key.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "data_dir = \"x\"\n[lake]\nflush_interval_ms = \"soon\"\n",
    )
    .unwrap();
    let mut c = Function::start(&api, &bad, "cccccccc3333");
    let status = c.0.wait().unwrap();
    assert!(!status.success());
    let init = api.wait("the init error", |s| s.init_errors.first().cloned());
    assert_eq!(init["errorType"], "Runtime.ConfigError");
    assert!(
        init["errorMessage"]
            .as_str()
            .unwrap()
            .contains("flush_interval_ms"),
        "{init}"
    );
}

/// The keys of every object under `prefix` in moto's `bucket`.
fn s3_keys(bucket: &str, prefix: &str) -> Vec<String> {
    let store = crate::aws::moto_store(bucket);
    block_on(async {
        let listed: Vec<object_store::ObjectMeta> = futures_util::TryStreamExt::try_collect(
            store.list(Some(&prefix.trim_end_matches('/').into())),
        )
        .await
        .unwrap();
        listed.iter().map(|m| m.location.to_string()).collect()
    })
}

#[test]
fn an_invocation_the_sinks_cannot_take_in_time_lists_its_messages_and_their_return_stores_them_once()
 {
    use std::sync::atomic::Ordering;
    let Some(aws) = moto() else { return };
    let endpoint = aws.endpoint.clone().unwrap();
    let proxy = tickflow_core::contract::Proxy::start(endpoint.trim_start_matches("http://"));
    let through = format!("http://127.0.0.1:{}", proxy.port);
    let sqs = Client::new(&aws, Service::Sqs, Duration::from_secs(30)).unwrap();
    let name = unique("lambda-late");
    let queue = call(&sqs, "CreateQueue", json!({"QueueName": name}))["QueueUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let dlq = call(
        &sqs,
        "CreateQueue",
        json!({"QueueName": unique("lambda-late-dlq")}),
    )["QueueUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let arn = format!("arn:aws:sqs:us-east-1:123456789012:{name}");
    let tables = unique("tfll");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("late.toml");
    // DynamoDB behind the proxy; the dead-letter queue straight at moto.
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n\n[pgwire]\nenabled = false\n\n[[sources]]\ntype = \"sqs\"\nid = \"queue\"\nqueue_url = \"{queue}\"\ndead_letter_queue_url = \"{dlq}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n\n[[sinks]]\ntype = \"dynamodb\"\nid = \"ddb\"\ntables = {{ trades = \"{tables}-trades\" }}\nstate_table = \"{tables}-state\"\nendpoint = \"{through}\"\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n",
            dir.path().join("env").display()
        ),
    )
    .unwrap();
    let api = RuntimeApi::start();
    let function = Function::start(&api, &cfg, "dddddddd4444");
    let now = tickflow_model::UnixNanos::now().0;
    let record = |id: &str, body: &str| json!({"messageId": id, "body": body, "attributes": {"ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs", "eventSourceARN": arn});
    let event = json!({"Records": [
        record("a", &trade(50, now)),
        record("bad", "{\"type\":"),
        record("b", &trade(51, now)),
    ]});
    // A first invocation settles the sink's table before DynamoDB goes away.
    match api.invoke(&json!({"Records": [record("warm", &trade(49, now))]})) {
        Answer::Response(body) => assert_eq!(body, json!({"batchItemFailures": []})),
        other => panic!("{other:?}"),
    }

    proxy.cut();
    api.timeout_ms.store(3_000, Ordering::SeqCst);
    // DynamoDB unreachable past the deadline: the readable messages come again; the bad one
    // is in the dead-letter queue already and is not.
    match api.invoke(&event) {
        Answer::Response(body) => assert_eq!(
            body,
            json!({"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]})
        ),
        other => panic!("{other:?}"),
    }
    proxy.restore();
    api.timeout_ms.store(60_000, Ordering::SeqCst);
    // SQS would deliver them again: now they are stored, once.
    let again = json!({"Records": [record("a", &trade(50, now)), record("b", &trade(51, now))]});
    match api.invoke(&again) {
        Answer::Response(body) => assert_eq!(body, json!({"batchItemFailures": []})),
        other => panic!("{other:?}"),
    }
    drop(function);
    let ddb = Client::new(&aws, Service::DynamoDb, Duration::from_secs(30)).unwrap();
    let scan = call(
        &ddb,
        "Scan",
        json!({"TableName": format!("{tables}-trades"), "ConsistentRead": true}),
    );
    let mut ids: Vec<&str> = scan["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["trade_id"]["S"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["lt49", "lt50", "lt51"]);
    let dead = call(
        &sqs,
        "ReceiveMessage",
        json!({"QueueUrl": dlq, "MaxNumberOfMessages": 10}),
    );
    assert_eq!(dead["Messages"].as_array().map_or(0, Vec::len), 1, "{dead}");
}
