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
            timeout: None,
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
    // Bars are written once final, so the contract counts the others; the bars are
    // checked below.
    let mut kept = config.clone();
    kept.tables.retain(|t| t != "bars");
    rt.block_on(check_sink(
        || JsonSink::new("athena", kept.clone()),
        async || lines(&kept).await.0,
        &["trades", "quotes", "daily_metrics", "alerts"],
    ));
    let mut bars_only = config.clone();
    bars_only.store.url = format!("s3://{bucket}/bars-only");
    bars_only.tables = vec!["bars".to_string()];
    let mut rows = tickflow_core::contract::sample_rows(1, 6);
    for b in rows.bars.iter_mut().step_by(2) {
        b.is_final = false;
    }
    let finals = rows.bars.iter().filter(|b| b.is_final).count() as u64;
    assert!(
        finals > 0 && finals < rows.bars.len() as u64,
        "the sample has both kinds"
    );
    rt.block_on(async {
        let mut sink = JsonSink::new("bars", bars_only.clone());
        tickflow_core::sink::Sink::open(&mut sink).await.unwrap();
        let flush = tickflow_core::sink::Flush {
            seq: 1,
            rows: std::sync::Arc::new(rows),
        };
        tickflow_core::sink::Sink::write(&mut sink, &flush)
            .await
            .unwrap();
        tickflow_core::sink::Sink::write(&mut sink, &flush)
            .await
            .unwrap();
    });
    assert_eq!(rt.block_on(lines(&bars_only)).0["bars"], finals);
    let (_, keys) = rt.block_on(lines(&kept));
    let data: Vec<&String> = keys.iter().filter(|k| !k.contains("_tickflow")).collect();
    assert!(!data.is_empty());
    for k in &data {
        let parts: Vec<&str> = k.split('/').collect();
        // processed/<table>/dt=YYYY-MM-DD/<flush>-<sink id>.json
        assert_eq!(parts.len(), 4, "{k}");
        assert!(TABLES.contains(&parts[1]), "{k}");
        assert!(parts[2].starts_with("dt=") && parts[2].len() == 13, "{k}");
        assert!(
            parts[3].ends_with("-athena.json") && parts[3].len() == 24,
            "{k}"
        );
    }
    assert!(
        keys.iter().any(|k| k == "processed/_tickflow/athena.json"),
        "{keys:?}"
    );
}
