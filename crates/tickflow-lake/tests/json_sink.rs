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

/// A sink catching up reads a run of flushes at once, as many as are committed by then. A run
/// read again after a crash that came before its position was stored is longer: it must
/// replace what the shorter run wrote, day by day, not add to it.
#[test]
fn a_run_of_flushes_written_again_longer_after_a_crash_doubles_nothing() {
    use std::sync::Arc;
    use tickflow_core::sink::{Flush, Sink};
    let Some(bucket) = s3_bucket("tf-json-run") else {
        return;
    };
    let mut config = config(&bucket);
    config.tables = vec!["trades".to_string()];
    // Flush b holds 4 trades on a day of its own.
    let run = |last: u64| {
        let mut rows = tickflow_lake::Rows::default();
        for b in 1..=last {
            rows.trades
                .extend(tickflow_core::contract::sample_rows(b, 4).trades);
        }
        Flush {
            seq: last,
            rows: Arc::new(rows),
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sink = JsonSink::new("athena", config.clone());
        assert_eq!(sink.open().await.unwrap(), None);
        sink.write(&Flush::empty(0)).await.unwrap();
        sink.write(&run(2)).await.unwrap();
        // The crash came before the position was stored.
        let (store, prefix) = config.store.connect().unwrap();
        store
            .put(
                &format!("{prefix}/_tickflow/athena.json").into(),
                r#"{"flush":0}"#.into(),
            )
            .await
            .unwrap();
        let mut again = JsonSink::new("athena", config.clone());
        assert_eq!(again.open().await.unwrap(), Some(0));
        again.write(&run(3)).await.unwrap();
        // Handed again once written: nothing more.
        again.write(&run(3)).await.unwrap();
    });
    let (counts, keys) = rt.block_on(lines(&config));
    assert_eq!(counts["trades"], 12, "each trade once: {keys:?}");
}
