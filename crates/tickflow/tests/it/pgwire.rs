//! The Postgres-wire endpoint of `tickflow run`: psql and tokio-postgres (the simple and the
//! extended protocol, parameters, prepared statements) get the same rows as `tickflow sql`;
//! psql's `\dt` lists the tables; statements that would write are refused.

use std::path::Path;
use std::process::Command;

use crate::support::{Server, config, run_ok, sql, wait_for};

/// `host:port` of the endpoint, from `server.json`.
pub(crate) fn pg_addr(data: &Path) -> (String, u16) {
    let text = std::fs::read_to_string(data.join("server.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let addr: std::net::SocketAddr = v["pgwire"]
        .as_str()
        .expect("pgwire in server.json")
        .parse()
        .unwrap();
    (addr.ip().to_string(), addr.port())
}

/// A decimal's text without trailing zeros, for comparing the same value printed at
/// different scales.
pub(crate) fn exact(text: &str) -> String {
    if text.contains('.') && text.parse::<f64>().is_ok() {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text.to_string()
    }
}

fn psql(host: &str, port: u16, command: &str) -> std::process::Output {
    Command::new("psql")
        .args([
            "-h",
            host,
            "-p",
            &port.to_string(),
            "-U",
            "tickflow",
            "-d",
            "tickflow",
        ])
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-c", command])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql (Debian postgresql-client) is installed by ./scripts/test")
}

/// A pipeline with 5,000 trades of three symbols, all processed.
pub(crate) fn running(dir: &Path) -> (Server, std::path::PathBuf) {
    let data = dir.join("data");
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, config(&data, "\n[lake]\nflush_interval_ms = 200\n")).unwrap();
    let server = Server::start(&cfg, &data);
    let out = run_ok(&[
        "produce",
        "--count",
        "5000",
        "--batch-size",
        "500",
        "--to",
        &server.url,
    ]);
    assert!(out.contains("5000 acknowledged"), "{out}");
    wait_for(&server, "every trade processed", |s| {
        s["log_lag"].as_u64() == Some(0) && s["rows_durable"]["trades"].as_u64() == Some(5000)
    });
    (server, data)
}

#[test]
fn psql_lists_the_tables_and_answers_as_tickflow_sql_does() {
    let dir = tempfile::tempdir().unwrap();
    let (server, data) = running(dir.path());
    let (host, port) = pg_addr(&data);

    let out = psql(&host, port, "\\dt");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in ["trades", "quotes", "bars", "daily_metrics", "dlq"] {
        assert!(text.contains(table), "\\dt lacks {table}:\n{text}");
    }

    let query = "SELECT symbol, count(*) AS n, sum(size) AS volume FROM trades GROUP BY symbol ORDER BY symbol";
    let out = psql(&host, port, &format!("COPY ({query}) TO STDOUT"));
    // COPY is refused; the same rows come back as an unaligned SELECT.
    assert!(!out.status.success());
    let out = Command::new("psql")
        .args([
            "-h",
            &host,
            "-p",
            &port.to_string(),
            "-U",
            "tickflow",
            "-d",
            "tickflow",
        ])
        .args(["-X", "-A", "-t", "-F", ",", "-c", query])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // NUMERIC text keeps the column's scale (312962.000000000); tickflow sql's JSON shows
    // the fewest digits. The same value either way.
    let psql_rows: Vec<String> = text
        .lines()
        .map(|l| l.split(',').map(exact).collect::<Vec<_>>().join(","))
        .collect();
    let expected: Vec<String> = sql(&data, query)
        .iter()
        .map(|r| {
            format!(
                "{},{},{}",
                r["symbol"].as_str().unwrap(),
                r["n"],
                exact(
                    &r["volume"]
                        .as_str()
                        .map_or_else(|| r["volume"].to_string(), str::to_string)
                )
            )
        })
        .collect();
    assert_eq!(psql_rows, expected, "psql and tickflow sql differ");

    let out = psql(&host, port, "DELETE FROM trades");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("read-only"), "{err}");
    server.stop();
}

#[test]
fn tokio_postgres_binds_parameters_and_reuses_prepared_statements() {
    let dir = tempfile::tempdir().unwrap();
    let (server, data) = running(dir.path());
    let (host, port) = pg_addr(&data);
    let expected: std::collections::BTreeMap<String, i64> = sql(
        &data,
        "SELECT symbol, count(*) AS n FROM trades GROUP BY symbol",
    )
    .iter()
    .map(|r| {
        (
            r["symbol"].as_str().unwrap().to_string(),
            r["n"].as_i64().unwrap(),
        )
    })
    .collect();
    assert!(expected.len() >= 2, "{expected:?}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = crate::support::pg_client(&host, port, "tickflow").await;
        // The simple protocol.
        let rows = client
            .simple_query("SELECT count(*) FROM trades")
            .await
            .unwrap();
        let count = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        assert_eq!(count.as_deref(), Some("5000"));
        // The extended protocol: one statement prepared, run with each symbol bound.
        let by_symbol = client
            .prepare("SELECT count(*) FROM trades WHERE symbol = $1")
            .await
            .unwrap();
        for (symbol, n) in &expected {
            let row = client.query_one(&by_symbol, &[symbol]).await.unwrap();
            assert_eq!(row.get::<_, i64>(0), *n, "{symbol}");
        }
        // Typed results: exact decimals as text, times as timestamps.
        let row = client
            .query_one(
                "SELECT CAST(min(price) AS VARCHAR), count(*) FROM trades WHERE symbol <> $1",
                &[&"NONE"],
            )
            .await
            .unwrap();
        assert!(row.get::<_, String>(0).parse::<f64>().unwrap() > 0.0);
        assert_eq!(row.get::<_, i64>(1), 5000);

        let err = client
            .execute("INSERT INTO trades (symbol) VALUES ('X')", &[])
            .await
            .unwrap_err();
        let db = err.as_db_error().expect("a database error");
        assert_eq!(db.code().code(), "25006", "{db:?}");
        assert!(db.message().contains("read-only"), "{}", db.message());
        let err = client
            .simple_query("CREATE TABLE x (a INT)")
            .await
            .unwrap_err();
        let db = err.as_db_error().expect("a database error");
        assert!(db.message().contains("CREATE TABLE"), "{}", db.message());
        // The connection is still good after a refusal.
        assert_eq!(client.query("SELECT 1", &[]).await.unwrap().len(), 1);
    });
    server.stop();
}

/// The rows of a simple query, as text.
async fn rows(client: &tokio_postgres::Client, sql: String) -> Vec<Vec<String>> {
    client
        .simple_query(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {:?}", e.as_db_error()))
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .collect()
}

/// Grafana's `buildSchemaConstraint()`: the schemas in `search_path`.
const GRAFANA_SCHEMAS: &str = "quote_ident(table_schema) IN (SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END FROM generate_series(array_lower(string_to_array(current_setting('search_path'),','),1), array_upper(string_to_array(current_setting('search_path'),','),1)) as i, string_to_array(current_setting('search_path'),',') s)";

/// What Grafana's PostgreSQL data source sends (postgresMetaQuery.ts and pgx), each as a
/// simple query: the health check, the version check, the table and column lists, and a
/// candlestick panel's query after macro expansion.
#[test]
fn grafana_lists_tables_and_columns_and_draws_candles() {
    let dir = tempfile::tempdir().unwrap();
    let (server, data) = running(dir.path());
    let (host, port) = pg_addr(&data);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = crate::support::pg_client(&host, port, "grafana").await;
        // pgx's ping.
        assert!(rows(&client, "-- ping".into()).await.is_empty());
        let version = rows(
            &client,
            "SELECT current_setting('server_version_num')::int/100 as version".into(),
        )
        .await;
        assert_eq!(version, vec![vec!["1500".to_string()]]);
        let tables = rows(
            &client,
            format!(
                "SELECT CASE WHEN {GRAFANA_SCHEMAS} THEN quote_ident(table_name) ELSE quote_ident(table_schema) || '.' || quote_ident(table_name) END AS \"table\" FROM information_schema.tables WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog', '_timescaledb_cache', '_timescaledb_catalog', '_timescaledb_internal', '_timescaledb_config', 'timescaledb_information', 'timescaledb_experimental') ORDER BY CASE WHEN {GRAFANA_SCHEMAS} THEN 0 ELSE 1 END, 1"
            ),
        )
        .await;
        let tables: Vec<&str> = tables.iter().map(|r| r[0].as_str()).collect();
        // Qualified: the search-path test in Grafana's query does not hold here, so Grafana
        // asks for the columns of `public.bars`, which the next query answers.
        assert!(
            tables.contains(&"public.bars") && tables.contains(&"public.trades"),
            "{tables:?}"
        );
        let columns = rows(
            &client,
            format!(
                "SELECT quote_ident(column_name) AS \"column\", data_type AS \"type\" FROM information_schema.columns WHERE CASE WHEN array_length(parse_ident('public.bars'),1) = 2 THEN quote_ident(table_schema) = (parse_ident('public.bars'))[1] AND quote_ident(table_name) = (parse_ident('public.bars'))[2] ELSE quote_ident(table_name) = 'public.bars' AND {GRAFANA_SCHEMAS} END"
            ),
        )
        .await;
        let names: Vec<&str> = columns.iter().map(|r| r[0].as_str()).collect();
        for c in ["symbol", "start", "open", "high", "low", "close", "volume"] {
            assert!(names.contains(&c), "{c} missing from {names:?}");
        }
        // A candlestick panel: one frame of time, open, high, low, close, volume.
        let candles = rows(
            &client,
            "SELECT start AS \"time\", open, high, low, close, volume FROM bars WHERE symbol = 'NVDA' AND \"interval\" = '1s' AND start BETWEEN '2000-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z' ORDER BY 1".into(),
        )
        .await;
        let expected = crate::support::sql_count(
            &data,
            "SELECT count(*) FROM bars WHERE symbol = 'NVDA' AND \"interval\" = '1s'",
        );
        assert!(expected > 0);
        assert_eq!(candles.len() as i64, expected);
        for c in &candles {
            let [open, high, low, close]: [f64; 4] =
                std::array::from_fn(|i| c[i + 1].parse().unwrap());
            assert!(low <= open.min(close) && high >= open.max(close), "{c:?}");
        }
    });
    server.stop();
}

/// Whether a client library is there; under CI (`CI=true`) it must be (./scripts/test
/// installs it).
fn client_available(what: &str, check: &mut Command) -> bool {
    let ok = check.output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} is required under CI: ./scripts/test installs it"
        );
        eprintln!("skipped: {what} is not installed (./scripts/test installs it)");
    }
    ok
}

const BY_SYMBOL: &str = "SELECT symbol, count(*) AS n FROM trades WHERE symbol <> 'NONE' GROUP BY symbol ORDER BY symbol";

/// (symbol, count) as `tickflow sql` answers [`BY_SYMBOL`].
fn expected_by_symbol(data: &Path) -> Vec<(String, i64)> {
    sql(data, BY_SYMBOL)
        .iter()
        .map(|r| {
            (
                r["symbol"].as_str().unwrap().to_string(),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// psycopg 3 binds `%s` as a server-side parameter (the extended protocol).
const PSYCOPG: &str = r#"
import json, sys, psycopg
with psycopg.connect(host=sys.argv[1], port=int(sys.argv[2]), user="tickflow", dbname="tickflow", autocommit=True) as conn:
    rows = conn.execute("SELECT symbol, count(*) AS n FROM trades WHERE symbol <> %s GROUP BY symbol ORDER BY symbol", ("NONE",)).fetchall()
    try:
        conn.execute("DELETE FROM trades")
        refused = None
    except psycopg.Error as e:
        refused = e.sqlstate
    print(json.dumps({"rows": [[s, int(n)] for s, n in rows], "refused": refused}))
"#;

/// node-postgres (npm `pg`), with a `$1` parameter.
const NODE_PG: &str = r#"
const { Client } = require("pg");
(async () => {
  const c = new Client({ host: process.argv[1], port: Number(process.argv[2]), user: "tickflow", database: "tickflow" });
  await c.connect();
  const r = await c.query("SELECT symbol, count(*) AS n FROM trades WHERE symbol <> $1 GROUP BY symbol ORDER BY symbol", ["NONE"]);
  let refused = null;
  try { await c.query("DELETE FROM trades"); } catch (e) { refused = e.code; }
  await c.end();
  console.log(JSON.stringify({ rows: r.rows.map((x) => [x.symbol, Number(x.n)]), refused }));
})().catch((e) => { console.error(e); process.exit(1); });
"#;

fn client_answer(out: std::process::Output) -> (Vec<(String, i64)>, String) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let rows = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_i64().unwrap()))
        .collect();
    (rows, v["refused"].as_str().unwrap_or("").to_string())
}

#[test]
fn psycopg_and_node_postgres_bind_parameters_and_get_the_rows_tickflow_sql_gets() {
    let python = client_available(
        "psycopg (PyPI)",
        Command::new("python3").args(["-c", "import psycopg"]),
    );
    let node = client_available(
        "node-postgres (npm pg)",
        Command::new("node").args(["-e", "require('pg')"]),
    );
    if !python && !node {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, data) = running(dir.path());
    let (host, port) = pg_addr(&data);
    let expected = expected_by_symbol(&data);
    assert!(expected.len() >= 2, "{expected:?}");
    if python {
        let out = Command::new("python3")
            .args(["-c", PSYCOPG, &host, &port.to_string()])
            .output()
            .unwrap();
        let (rows, refused) = client_answer(out);
        assert_eq!(rows, expected, "psycopg");
        assert_eq!(
            refused, "25006",
            "psycopg: a write is refused as on a read replica"
        );
    }
    if node {
        let out = Command::new("node")
            .args(["-e", NODE_PG, &host, &port.to_string()])
            .output()
            .unwrap();
        let (rows, refused) = client_answer(out);
        assert_eq!(rows, expected, "node-postgres");
        assert_eq!(refused, "25006", "node-postgres");
    }
    server.stop();
}

/// The pipeline is still running and psql gets the 5,000 trades [`running`] stored.
fn still_answers(server: &mut Server, host: &str, port: u16) {
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the pipeline exited"
    );
    let out = psql(host, port, "SELECT count(*) FROM trades");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("5000"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_message_that_panics_the_decoder_ends_its_connection_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, data) = running(dir.path());
    let (host, port) = pg_addr(&data);
    // Found by the pgwire fuzz target: pgwire's decoder reads a C string of a Parse message
    // past the message's length and panics (regressions/pgwire/).
    let bytes =
        include_bytes!("../../../tickflow-fuzz/regressions/pgwire/parse-cstring-past-message.bin");
    for _ in 0..3 {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect((host.as_str(), port)).unwrap();
        socket.write_all(bytes).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        // The server answers what it could decode, then closes the connection.
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
    }
    still_answers(&mut server, &host, port);
    server.stop();
}

/// The messages a server sent until it was ready for the next query (or closed): each
/// message's type byte and body.
fn read_until_ready(socket: &mut std::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
    use std::io::Read;
    let mut messages = Vec::new();
    loop {
        let mut head = [0u8; 5];
        if socket.read_exact(&mut head).is_err() {
            return messages;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        if socket.read_exact(&mut body).is_err() {
            return messages;
        }
        let ready = head[0] == b'Z';
        messages.push((head[0], body));
        if ready {
            return messages;
        }
    }
}

/// Statements that are not UTF-8, or that never end, get a clear refusal: an error naming
/// the problem, or the connection closed; the pipeline answers the next client.
#[test]
fn malformed_utf8_and_unterminated_messages_are_refused_and_the_endpoint_goes_on() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (mut server, data) = running(dir.path());
    let (host, port) = pg_addr(&data);
    let signed_in = || {
        let mut socket = std::net::TcpStream::connect((host.as_str(), port)).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let startup = b"\0\x03\0\0user\0tickflow\0database\0tickflow\0\0";
        let mut message = (startup.len() as u32 + 4).to_be_bytes().to_vec();
        message.extend_from_slice(startup);
        socket.write_all(&message).unwrap();
        let greeting = read_until_ready(&mut socket);
        assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "signed in");
        socket
    };
    let query = |sql: &[u8]| {
        let mut message = vec![b'Q'];
        message.extend_from_slice(&(sql.len() as u32 + 5).to_be_bytes());
        message.extend_from_slice(sql);
        message.push(0);
        message
    };

    // A statement whose text is not UTF-8.
    let mut socket = signed_in();
    socket
        .write_all(&query(b"SELECT '\xff\xfe' AS bad"))
        .unwrap();
    let answer = read_until_ready(&mut socket);
    let error = answer
        .iter()
        .find(|(kind, _)| *kind == b'E')
        .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
        .unwrap_or_default();
    assert!(
        error.contains("22021") && error.contains("not UTF-8"),
        "refused with the reason: {answer:?}"
    );
    assert!(
        !answer.iter().any(|(kind, _)| *kind == b'D'),
        "no rows for a statement that is not text: {answer:?}"
    );

    // A message that announces more than it sends, then the client goes away.
    let mut socket = signed_in();
    let mut cut = query(b"SELECT count(*) FROM trades");
    cut.truncate(cut.len() - 10);
    socket.write_all(&cut).unwrap();
    drop(socket);

    // A startup message that is not UTF-8.
    let mut socket = std::net::TcpStream::connect((host.as_str(), port)).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let startup = b"\0\x03\0\0user\0\xff\xfe\0database\0tickflow\0\0";
    let mut message = (startup.len() as u32 + 4).to_be_bytes().to_vec();
    message.extend_from_slice(startup);
    socket.write_all(&message).unwrap();
    let answer = read_until_ready(&mut socket);
    assert!(
        answer.iter().any(|(kind, body)| *kind == b'E'
            && String::from_utf8_lossy(body).contains("startup parameters are not UTF-8")),
        "refused with the reason: {answer:?}"
    );
    // Not signed in: a query on that connection gets no rows.
    if socket.write_all(&query(b"SELECT 1 AS one")).is_ok() {
        let answer = read_until_ready(&mut socket);
        assert!(
            !answer.iter().any(|(kind, _)| *kind == b'D'),
            "a connection refused at startup ran a query: {answer:?}"
        );
    }

    still_answers(&mut server, &host, port);
    server.stop();
}
