//! The S3 JSON sink against moto_server (`scripts/test` starts it): the sink contract, and
//! objects laid out as the Athena DDL says, one JSON object per line.

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use tickflow_core::contract::{Counts, check_sink, s3_bucket, s3_endpoint};
use tickflow_lake::ObjectLake;
use tickflow_lake::json_sink::{JsonSink, JsonSinkConfig, TABLES};

fn config(bucket: &str) -> JsonSinkConfig {
    JsonSinkConfig {
        store: ObjectLake {
            url: format!("s3://{bucket}/processed"),
            endpoint: Some(s3_endpoint()),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
        },
        tables: TABLES.iter().map(|t| (*t).to_string()).collect(),
    }
}

/// Lines per table under the prefix, and every object's key.
async fn lines(config: &JsonSinkConfig) -> (Counts, Vec<String>) {
    let (store, prefix) = config.store.connect().unwrap();
    let objects: Vec<_> = store
        .list(Some(&prefix.as_str().into()))
        .try_collect()
        .await
        .unwrap();
    let mut counts = Counts::new();
    let mut keys = Vec::new();
    for o in objects {
        let key = o.location.to_string();
        keys.push(key.clone());
        let table = key
            .strip_prefix(&format!("{prefix}/"))
            .and_then(|k| k.split('/').next())
            .unwrap()
            .to_string();
        if table == "_tickflow" {
            continue;
        }
        let bytes = store.get(&o.location).await.unwrap().bytes().await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v.is_object(), "{line}");
        }
        *counts.entry(table).or_default() += text.lines().count() as u64;
    }
    (counts, keys)
}

#[test]
fn the_json_sink_keeps_the_sink_contract_in_athenas_layout() {
    let Some(bucket) = s3_bucket("tf-json") else {
        return;
    };
    let config = config(&bucket);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(check_sink(
        || JsonSink::new("athena", config.clone()),
        async || lines(&config).await.0,
        &TABLES,
    ));
    let (_, keys) = rt.block_on(lines(&config));
    let data: Vec<&String> = keys.iter().filter(|k| !k.contains("_tickflow")).collect();
    assert!(!data.is_empty());
    for k in &data {
        let parts: Vec<&str> = k.split('/').collect();
        // processed/<table>/dt=YYYY-MM-DD/<flush>.json
        assert_eq!(parts.len(), 4, "{k}");
        assert!(TABLES.contains(&parts[1]), "{k}");
        assert!(parts[2].starts_with("dt=") && parts[2].len() == 13, "{k}");
        assert!(parts[3].ends_with(".json") && parts[3].len() == 17, "{k}");
    }
    assert!(
        keys.iter().any(|k| k == "processed/_tickflow/athena.json"),
        "{keys:?}"
    );
}
