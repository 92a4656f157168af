//! The PostgreSQL sink against the real server (DESIGN.md: 127.0.0.1:5432, database `test`,
//! or `DATABASE_URL`). Each test works in a schema of its own. Outside CI a test without a
//! server says so and passes; under CI (`CI=true`) it fails.

use std::sync::Arc;
use std::time::Duration;

use tickflow_core::contract::{CollectLog, Counts, Proxy, check_sink};
use tickflow_core::sink::{Flush, Sink};
use tickflow_core::source::Append;
use tickflow_model::{
    Alert, AlertKind, Bar, BarInterval, DailyMetric, Date, Price, Qty, Quote, RejectReason, Rows,
    Severity, Symbol, Trade, TradeId, UnixNanos, Volume,
};
use tickflow_postgres::{PostgresConfig, PostgresSink, TABLES};
use tokio_postgres::NoTls;

fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// A client for checking what the sink wrote, or `None` (outside CI) without a server.
async fn admin() -> Option<tokio_postgres::Client> {
    match tokio_postgres::connect(&url(), NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            Some(client)
        }
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: no PostgreSQL at {}: {e}", url());
            None
        }
        Err(e) => panic!("PostgreSQL at {} is required under CI: {e}", url()),
    }
}

/// A fresh schema for one test.
async fn schema(client: &tokio_postgres::Client, name: &str) -> String {
    let schema = format!("tf_test_{name}");
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    schema
}

fn sink_at(connection: &str, schema: &str, dlq: &Arc<CollectLog>) -> PostgresSink {
    let split = tickflow_postgres::tls::split(connection).unwrap();
    let mut parsed: tokio_postgres::Config = split.rest.parse().unwrap();
    // As the config does: tokio-postgres is told whether to encrypt, never to guess.
    parsed.ssl_mode(if split.mode.encrypts() {
        tokio_postgres::config::SslMode::Require
    } else {
        tokio_postgres::config::SslMode::Disable
    });
    let config = PostgresConfig {
        connection: parsed,
        tls: tickflow_postgres::tls::client(split.mode, split.root_cert.as_deref()).unwrap(),
        schema: schema.into(),
        tables: TABLES.to_vec(),
        compress_after: "7 days".into(),
        timeout: Duration::from_secs(20),
    };
    PostgresSink::new("pg", config, Arc::clone(dlq) as Arc<dyn Append>)
}

const T0: i64 = 1_763_800_000_000_000_000;

fn trade(i: i64, price: &str) -> Trade {
    Trade {
        symbol: Symbol::parse("NVDA").unwrap(),
        // Two trades a microsecond apart by 250 ns: timestamptz alone would merge them.
        ts_event: UnixNanos(T0 + i * 250),
        ts_recv: UnixNanos(T0 + i * 250 + 1_000),
        price: Price::parse(price).unwrap(),
        size: Qty::parse("100").unwrap(),
        trade_id: Some(TradeId::from(format!("t{i}").as_str())),
        exchange: Some("Q".into()),
        source: "sim".into(),
        feed: "sim".into(),
        seq: Some(i as u64),
    }
}

fn quote(i: i64) -> Quote {
    Quote {
        symbol: Symbol::parse("NVDA").unwrap(),
        ts_event: UnixNanos(T0 + i),
        ts_recv: UnixNanos(T0 + i),
        bid: Price::parse("181.20").unwrap(),
        bid_size: Qty::parse("3").unwrap(),
        ask: Price::parse("181.30").unwrap(),
        ask_size: Qty::parse("5").unwrap(),
        source: "sim".into(),
        feed: "sim".into(),
        seq: None,
    }
}

fn bar(close: &str, is_final: bool) -> Bar {
    Bar {
        symbol: Symbol::parse("NVDA").unwrap(),
        interval: BarInterval::M1,
        start: UnixNanos(T0),
        end: UnixNanos(T0 + 60_000_000_000),
        open: Price::parse("181.00").unwrap(),
        high: Price::parse("182.00").unwrap(),
        low: Price::parse("180.50").unwrap(),
        close: Price::parse(close).unwrap(),
        volume: Volume::parse("1200").unwrap(),
        vwap: Some(Price::parse("181.4").unwrap()),
        trade_count: Some(12),
        is_final,
        source: None,
    }
}

fn daily() -> DailyMetric {
    DailyMetric {
        symbol: Symbol::parse("NVDA").unwrap(),
        date: Date::parse("2026-11-20").unwrap(),
        open: Price::parse("180.00").unwrap(),
        high: Price::parse("185.00").unwrap(),
        low: Price::parse("179.00").unwrap(),
        close: Price::parse("184.00").unwrap(),
        volume: Volume::parse("1000000").unwrap(),
        volatility: 3.26,
        rolling_avg_5d: Price::parse("182.5").unwrap(),
        daily_pct_change: Some(1.5),
    }
}

fn alert() -> Alert {
    Alert {
        alert_id: "a1".into(),
        rule: "nvda-above-180".into(),
        symbol: Symbol::parse("NVDA").unwrap(),
        ts: UnixNanos(T0),
        value: Price::parse("181.25").unwrap(),
        threshold: "180".into(),
        message: "NVDA above 180".into(),
        severity: Severity::Warning,
        delivered_to: "log".into(),
        kind: AlertKind::Fired,
    }
}

fn flush(seq: u64, rows: Rows) -> Flush {
    Flush {
        seq,
        rows: Arc::new(rows),
    }
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn every_table_is_written_once_with_exact_values_and_its_position() {
    let Some(db) = admin().await else { return };
    let s = schema(&db, "tables").await;
    let dlq = Arc::new(CollectLog::default());
    let mut sink = sink_at(&url(), &s, &dlq);
    assert_eq!(
        sink.open().await.unwrap(),
        None,
        "a new store has no position"
    );

    let rows = Rows {
        trades: (0..10).map(|i| trade(i, "181.25")).collect(),
        quotes: (0..5).map(quote).collect(),
        // The bar twice in one flush, open then final: the final one is stored.
        bars: vec![bar("181.10", false), bar("181.90", true)],
        daily_metrics: vec![daily()],
        alerts: vec![alert()],
        ..Rows::default()
    };
    sink.write(&flush(1, rows.clone())).await.unwrap();

    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM {s}.trades")).await,
        10
    );
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM {s}.quotes")).await,
        5
    );
    let row = db
        .query_one(
            &format!(
                "SELECT price::text, size::text, ts_event_ns FROM {s}.trades WHERE trade_id = 't3'"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "181.25");
    assert_eq!(row.get::<_, String>(1), "100");
    assert_eq!(row.get::<_, i64>(2), T0 + 750);
    let stored = db
        .query_one(
            &format!("SELECT close::text, final, vwap::text FROM {s}.bars"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(stored.get::<_, String>(0), "181.90");
    assert!(stored.get::<_, bool>(1));
    assert_eq!(stored.get::<_, String>(2), "181.4");
    // The old pipeline's table, column for column.
    let old = db
        .query_one(
            &format!(
                "SELECT date::text, symbol, open::text, high::text, low::text, close::text, volume::text, volatility, rolling_avg::text, daily_pct_change FROM {s}.stock_data"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(old.get::<_, String>(0), "2026-11-20");
    assert_eq!(old.get::<_, String>(5), "184.00");
    assert_eq!(old.get::<_, String>(6), "1000000");
    assert_eq!(old.get::<_, String>(8), "182.5");
    assert_eq!(old.get::<_, Option<f64>>(9), Some(1.5));
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM {s}.alerts WHERE severity = 'warning'")
        )
        .await,
        1
    );

    // A new process finds the position, and the same flush handed again changes nothing.
    let mut again = sink_at(&url(), &s, &dlq);
    assert_eq!(again.open().await.unwrap(), Some(1));
    again.write(&flush(1, rows.clone())).await.unwrap();
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM {s}.trades")).await,
        10
    );

    // A later flush repeating stored ticks (the store behind the lake after a restore)
    // adds only the new ones; the bar is updated in place.
    let mut next = rows.clone();
    next.trades.extend((10..15).map(|i| trade(i, "182.00")));
    next.bars = vec![bar("183.00", true)];
    again.write(&flush(2, next)).await.unwrap();
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM {s}.trades")).await,
        15
    );
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM {s}.quotes")).await,
        5
    );
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM {s}.bars WHERE close = 183")
        )
        .await,
        1
    );
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM {s}.bars")).await,
        1
    );
    assert_eq!(
        count(
            &db,
            &format!("SELECT flush FROM {s}._tickflow_sinks WHERE sink = 'pg'")
        )
        .await,
        2
    );
    assert!(dlq.rejected().is_empty());
}

#[tokio::test]
async fn migrations_run_once_per_schema() {
    let Some(db) = admin().await else { return };
    let s = schema(&db, "migrations").await;
    let dlq = Arc::new(CollectLog::default());
    for _ in 0..2 {
        let mut sink = sink_at(&url(), &s, &dlq);
        sink.open().await.unwrap();
    }
    let versions = db
        .query(
            &format!("SELECT version FROM {s}._tickflow_migrations"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(versions.len(), tickflow_postgres::schema::MIGRATIONS.len());
}

#[tokio::test]
async fn a_refused_row_goes_to_the_dlq_alone() {
    let Some(db) = admin().await else { return };
    let s = schema(&db, "refused").await;
    let dlq = Arc::new(CollectLog::default());
    let mut sink = sink_at(&url(), &s, &dlq);
    sink.open().await.unwrap();
    // A rule of the user's own, which one row breaks.
    db.batch_execute(&format!(
        "ALTER TABLE {s}.trades ADD CONSTRAINT sane_price CHECK (price < 1000)"
    ))
    .await
    .unwrap();
    let mut trades: Vec<Trade> = (0..100).map(|i| trade(i, "181.25")).collect();
    trades[37] = trade(37, "5000.5");
    let rows = Rows {
        trades,
        bars: vec![bar("181.90", true)],
        ..Rows::default()
    };
    sink.write(&flush(1, rows)).await.unwrap();

    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM {s}.trades")).await,
        99
    );
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM {s}.trades WHERE trade_id = 't37'")
        )
        .await,
        0
    );
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM {s}.bars")).await,
        1
    );
    let rejected = dlq.rejected();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let (reason, error, payload) = &rejected[0];
    assert_eq!(*reason, RejectReason::SinkRefused);
    assert!(error.contains("sane_price"), "{error}");
    assert!(payload.contains(r#""price":"5000.5""#), "{payload}");
    assert!(payload.contains(r#""trade_id":"t37""#), "{payload}");
}

#[tokio::test]
async fn a_lost_connection_fails_the_flush_and_the_retry_reconnects_and_catches_up() {
    let Some(db) = admin().await else { return };
    let s = schema(&db, "reconnect").await;
    let dlq = Arc::new(CollectLog::default());
    let proxy = Proxy::start("127.0.0.1:5432");
    let proxy_url = format!(
        "host=127.0.0.1 port={} user=postgres dbname=test",
        proxy.port
    );
    let mut sink = sink_at(&proxy_url, &s, &dlq);
    sink.open().await.unwrap();
    let batch = |seq: i64| Rows {
        trades: (seq * 100..seq * 100 + 100)
            .map(|i| trade(i, "181.25"))
            .collect(),
        ..Rows::default()
    };
    sink.write(&flush(1, batch(1))).await.unwrap();

    proxy.cut();
    let err = sink.write(&flush(2, batch(2))).await.unwrap_err();
    assert!(err.to_string().contains("PostgreSQL"), "{err}");
    // Still down: every retry fails, and nothing is half written.
    assert!(sink.write(&flush(2, batch(2))).await.is_err());
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM {s}.trades")).await,
        100
    );

    proxy.restore();
    sink.write(&flush(2, batch(2))).await.unwrap();
    sink.write(&flush(3, batch(3))).await.unwrap();
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM {s}.trades")).await,
        300
    );
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(DISTINCT trade_id) FROM {s}.trades")
        )
        .await,
        300
    );
}

#[tokio::test]
async fn keeps_the_sink_contract() {
    let Some(db) = admin().await else { return };
    let s = schema(&db, "contract").await;
    let dlq = Arc::new(CollectLog::default());
    let probe = async || {
        let mut counts = Counts::new();
        for table in TABLES {
            let exists = db
                .query_opt(&format!("SELECT to_regclass('{s}.{table}')::text"), &[])
                .await
                .unwrap()
                .and_then(|r| r.get::<_, Option<String>>(0))
                .is_some();
            let n = if exists {
                count(&db, &format!("SELECT count(*) FROM {s}.{table}")).await
            } else {
                0
            };
            counts.insert(table.to_string(), n as u64);
        }
        counts
    };
    check_sink(|| sink_at(&url(), &s, &dlq), probe, &TABLES).await;
}

/// Over TLS the sink checks the server's certificate: against the `sslrootcert` file it
/// connects (the server's own certificate, made for `localhost`, is its root here); against
/// the system's roots, or under another name, it is refused with the reason, and
/// `verify-ca` checks the chain and not the name.
#[tokio::test]
async fn over_tls_the_sink_checks_the_servers_certificate() {
    let Some(admin) = admin().await else { return };
    if std::env::var("DATABASE_URL").is_ok() {
        eprintln!("skipped: the TLS test needs the local server");
        return;
    }
    let setting = |name: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(
        setting("ssl").await,
        "on",
        "the test server serves TLS (scripts/test)"
    );
    let root = setting("ssl_cert_file").await;
    let schema = schema(&admin, "tls").await;
    let dlq = Arc::new(CollectLog::default());
    let at = |host: &str, mode: &str, root: Option<&str>| {
        let root = root.map_or(String::new(), |r| format!("&sslrootcert={r}"));
        format!("postgres://postgres@{host}:5432/test?sslmode={mode}{root}")
    };

    let mut sink = sink_at(&at("localhost", "verify-full", Some(&root)), &schema, &dlq);
    assert_eq!(sink.open().await.unwrap(), None);
    let one = flush(
        1,
        Rows {
            trades: vec![trade(1, "100.5")],
            ..Rows::default()
        },
    );
    sink.write(&one).await.unwrap();
    let stored: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {schema}.trades"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);

    let refused =
        |mut sink: PostgresSink| async move { sink.open().await.unwrap_err().to_string() };
    // Another CA's root: the system's may hold the test server's certificate (Debian keeps
    // it in /etc/ssl/certs).
    let other = tempfile::tempdir().unwrap();
    let other_root = other.path().join("other.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=another CA", "-keyout"])
        .arg(other.path().join("other.key"))
        .arg("-out")
        .arg(&other_root)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let other_root = other_root.to_str().unwrap();
    let e = refused(sink_at(
        &at("localhost", "verify-full", Some(other_root)),
        &schema,
        &dlq,
    ))
    .await;
    assert!(e.contains("TLS") && e.contains("UnknownIssuer"), "{e}");
    let e = refused(sink_at(
        &at("127.0.0.1", "require", Some(&root)),
        &schema,
        &dlq,
    ))
    .await;
    assert!(e.contains("not valid for name"), "{e}");
    let mut sink = sink_at(&at("127.0.0.1", "verify-ca", Some(&root)), &schema, &dlq);
    assert_eq!(sink.open().await.unwrap(), Some(1));
}
