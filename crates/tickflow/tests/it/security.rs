//! Who may connect (docs/security.md): an API reachable from other machines refuses to
//! start without its secrets; with them, the query and ingest tokens are separate, the
//! dashboard signs in with a cookie, Postgres-wire clients give a password, and an address
//! that keeps guessing is held off.

use std::os::unix::fs::PermissionsExt;

use crate::pgwire::pg_addr;
use crate::support::{Server, bin, config, exchange, http, http_with, retry_after};

const QUERY: &str = "query-token-0123456789abcdef";
const INGEST: &str = "ingest-token-0123456789abcdef";
const PASSWORD: &str = "pg-password-0123456789";

#[test]
fn an_api_open_to_other_machines_is_refused_without_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("open.toml");
    std::fs::write(&cfg, "data_dir = \"./d\"\n\n[http]\nbind = \"0.0.0.0\"\n").unwrap();
    for command in ["check", "run"] {
        let out = bin()
            .args([command, "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{command}");
        let err = String::from_utf8_lossy(&out.stderr);
        for needle in [
            "open.toml:4: http.bind: 0.0.0.0 is reachable from other machines: set http.token",
            "HTTP ingest source \"http\" needs a token",
            "set pgwire.password",
        ] {
            assert!(
                err.contains(needle),
                "{command}: {needle:?} missing from:\n{err}"
            );
        }
    }
    // A secret file others may read is refused, naming the file.
    let secret = dir.path().join("token");
    std::fs::write(&secret, format!("{QUERY}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"./d\"\n\n[http]\ntoken_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let out = bin()
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.token_file: ") && err.contains("may be read by other users (mode 644)"),
        "{err}"
    );
    assert!(!err.contains(QUERY), "the secret is not shown: {err}");
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// (status, lower-cased head) of a raw HTTP/1.0 exchange.
fn head(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let (code, head, _) = exchange(method, url, headers, body);
    (code, head)
}

#[test]
fn tokens_keep_queries_ingest_and_the_postgres_wire_apart_and_guessing_is_held_off() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let password = dir.path().join("pg-password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = config(&data, "")
        .replace(
            "[http]\nport = 0\n",
            &format!("[http]\nport = 0\ntoken = \"{QUERY}\"\ningest_token = \"${{TICKFLOW_TEST_UNSET_INGEST_TOKEN:-{INGEST}}}\"\n"),
        )
        .replace(
            "[pgwire]\nport = 0\n",
            &format!("[pgwire]\nport = 0\npassword_file = \"{}\"\n", password.display()),
        );
    std::fs::write(&cfg, text).unwrap();
    let server = Server::start(&cfg, &data);
    let url = &server.url;

    // Open: health and the dashboard's files.
    assert_eq!(http("GET", &format!("{url}/healthz"), None).0, 200);
    assert_eq!(http("GET", &format!("{url}/"), None).0, 200);
    assert_eq!(http("GET", &format!("{url}/app.js"), None).0, 200);
    // Queries take the query token only.
    let status = format!("{url}/api/v1/status");
    let (code, head_text) = head("GET", &status, &[], b"");
    assert_eq!(code, 401);
    assert!(
        head_text.contains("www-authenticate: bearer"),
        "{head_text}"
    );
    assert_eq!(
        http_with("GET", &status, &[("authorization", &bearer(QUERY))], None).0,
        200
    );
    assert_eq!(
        http_with("GET", &status, &[("authorization", &bearer(INGEST))], None).0,
        401
    );
    let (code, body) = http_with("GET", &format!("{url}/metrics"), &[], None);
    assert_eq!(code, 401, "{body}");
    let sql = br#"{"sql":"SELECT count(*) AS n FROM trades"}"#;
    assert_eq!(
        http_with("POST", &format!("{url}/api/v1/sql"), &[], Some(sql)).0,
        401
    );
    // Ingest takes the ingest token only.
    let tick = br#"{"type":"trade","symbol":"NVDA","ts_event":1733900000000000000,"price":"180","size":"1","trade_id":"1"}"#;
    let ingest = format!("{url}/api/v1/ingest");
    assert_eq!(http("POST", &ingest, Some(tick)).0, 401);
    assert_eq!(
        http_with(
            "POST",
            &ingest,
            &[("authorization", &bearer(QUERY))],
            Some(tick)
        )
        .0,
        401
    );
    let (code, body) = http_with(
        "POST",
        &ingest,
        &[("authorization", &bearer(INGEST))],
        Some(tick),
    );
    assert_eq!(code, 200, "{body}");

    // SQL reads the tables and nothing else: no files, no writes, no engine settings.
    let copy = dir.path().join("copied.csv");
    for statement in [
        "CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '/etc/passwd'".to_string(),
        format!("COPY (SELECT 1 AS one) TO '{}'", copy.display()),
        "SELECT * FROM '/etc/passwd'".to_string(),
        "INSERT INTO trades SELECT * FROM trades".to_string(),
        "SET datafusion.execution.memory_pool_size = '1000000000000'".to_string(),
    ] {
        let body = serde_json::json!({ "sql": statement }).to_string();
        let (code, answer) = http_with(
            "POST",
            &format!("{url}/api/v1/sql"),
            &[("authorization", &bearer(QUERY))],
            Some(body.as_bytes()),
        );
        assert_eq!(code, 400, "{statement}: {answer}");
        assert!(!answer.contains("root:"), "{statement}: {answer}");
    }
    assert!(!copy.exists(), "COPY wrote a file");

    // The dashboard signs in once; the cookie then opens the API, the stream included.
    let login = format!("{url}/api/v1/login");
    let (code, _) = head("POST", &login, &[], br#"{"token":"not-the-token"}"#);
    assert_eq!(code, 401);
    let (code, head_text) = head(
        "POST",
        &login,
        &[],
        format!("{{\"token\":\"{QUERY}\"}}").as_bytes(),
    );
    assert_eq!(code, 200);
    assert!(
        head_text.contains("set-cookie: tickflow_token=")
            && head_text.contains("httponly")
            && head_text.contains("samesite=strict"),
        "{head_text}"
    );
    let cookie = format!("tickflow_token={QUERY}");
    assert_eq!(
        http_with("GET", &status, &[("cookie", &cookie)], None).0,
        200
    );

    // The commands that ask the running pipeline send $TICKFLOW_TOKEN.
    let out = bin()
        .args(["status", "--data-dir", data.to_str().unwrap(), "--json"])
        .env("TICKFLOW_TOKEN", QUERY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args(["status", "--data-dir", data.to_str().unwrap()])
        .env_remove("TICKFLOW_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Postgres-wire clients give the password.
    let (host, port) = pg_addr(&data);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let connect = |password: &str| {
        let dsn =
            format!("host={host} port={port} user=anyone dbname=tickflow password={password}");
        rt.block_on(async {
            match tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    client
                        .simple_query("SELECT 1")
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.as_db_error().map_or(e.to_string(), |d| {
                    format!("{} {}", d.code().code(), d.message())
                })),
            }
        })
    };
    assert_eq!(connect(PASSWORD), Ok(()));
    // The server asks for SCRAM-SHA-256, so the password itself never crosses the wire.
    let mut socket = std::net::TcpStream::connect((host.as_str(), port)).unwrap();
    let mut hello = Vec::new();
    hello.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    hello.extend_from_slice(b"user\0anyone\0\0");
    let mut startup = ((hello.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&hello);
    std::io::Write::write_all(&mut socket, &startup).unwrap();
    let mut answer = [0u8; 64];
    let n = std::io::Read::read(&mut socket, &mut answer).unwrap();
    let answer = &answer[..n];
    assert_eq!(answer[0], b'R', "{answer:?}");
    assert_eq!(
        &answer[5..9],
        &10u32.to_be_bytes(),
        "AuthenticationSASL: {answer:?}"
    );
    assert!(
        answer.windows(14).any(|w| w == b"SCRAM-SHA-256\0"),
        "{answer:?}"
    );
    drop(socket);
    let wrong = connect("wrong-password-000000").unwrap_err();
    assert!(
        wrong.starts_with("28P01 password authentication failed"),
        "{wrong}"
    );

    // Wrong credentials are counted by surface…
    let (_, metrics) = http_with(
        "GET",
        &format!("{url}/metrics"),
        &[("authorization", &bearer(QUERY))],
        None,
    );
    for line in [
        "tickflow_auth_failures_total{surface=\"api\"} 2",
        "tickflow_auth_failures_total{surface=\"ingest\"} 1",
        "tickflow_auth_failures_total{surface=\"pgwire\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    // …and an address that keeps failing at one surface is refused there, even with the
    // right token, until its window ends; its other surfaces are not held.
    let failed_so_far = 2;
    for _ in failed_so_far..tickflow_core::auth::Limiter::MAX_FAILURES {
        assert_eq!(
            http_with(
                "GET",
                &status,
                &[("authorization", "Bearer guess-0123456789")],
                None
            )
            .0,
            401
        );
    }
    let (code, head_text) = head("GET", &status, &[("authorization", &bearer(QUERY))], b"");
    assert_eq!(code, 429, "{head_text}");
    let wait = retry_after(&head_text);
    assert!((1..=60).contains(&wait), "{wait}");
    let (code, body) = http_with(
        "POST",
        &ingest,
        &[("authorization", &bearer(INGEST))],
        Some(tick),
    );
    assert_eq!(code, 200, "ingest is another surface: {body}");
    assert_eq!(connect(PASSWORD), Ok(()), "so is the Postgres wire");
    for _ in 1..tickflow_core::auth::Limiter::MAX_FAILURES {
        let wrong = connect("wrong-password-000000").unwrap_err();
        assert!(wrong.starts_with("28P01"), "{wrong}");
    }
    let held = connect(PASSWORD).unwrap_err();
    assert!(held.starts_with("53300 too many failed attempts"), "{held}");
    // Health stays open for the load balancer.
    assert_eq!(http("GET", &format!("{url}/healthz"), None).0, 200);
    server.stop();
}
