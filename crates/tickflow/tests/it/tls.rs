//! `[tls]`: HTTPS and the Postgres wire over TLS with a certificate of the operator's, checked
//! by clients that verify it (curl, psql); plain text refused on both; a key that is not the
//! certificate's, or that others may read, named by `check` (docs/security.md).

use std::path::Path;
use std::process::Command;

use crate::support::{Server, bin, config};

/// A private CA and a server certificate it signed for `localhost` and 127.0.0.1, with the
/// server's key (mode 600), made by openssl in `dir`: (CA, server certificate, key).
pub(crate) fn certificate(dir: &Path, name: &str) -> (String, String, String) {
    let path = |suffix: &str| dir.join(format!("{name}-{suffix}")).display().to_string();
    let (ca, ca_key) = (path("ca.pem"), path("ca-key.pem"));
    let (cert, key, request, ext) = (
        path("cert.pem"),
        path("key.pem"),
        path("req.csr"),
        path("ext.cnf"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=tickflow test CA"],
        ]
        .concat()
        .into_iter()
        .chain(["-keyout", &ca_key, "-out", &ca])
        .collect(),
        [&["req"][..], &ec, &["-subj", "/CN=localhost"]]
            .concat()
            .into_iter()
            .chain(["-keyout", &key, "-out", &request])
            .collect(),
        vec![
            "x509",
            "-req",
            "-in",
            &request,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .expect("openssl (./scripts/test installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    set_mode(Path::new(&key), 0o600);
    (ca, cert, key)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

const TOKEN: &str = "tls-test-token-0123456789";

fn tls_config(data: &Path, cert: &str, key: &str) -> String {
    config(
        data,
        &format!(
            "token = \"{TOKEN}\"\n\n[lake]\nflush_interval_ms = 50\n\n[tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
        ),
    )
}

/// curl's answer: (exit code, HTTP status or 0, the response with its head).
fn curl(args: &[&str]) -> (i32, u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (out.status.code().unwrap_or(-1), code, text)
}

fn psql(conninfo: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([conninfo, "-X", "-A", "-t", "-c", sql])
        .output()
        .expect("psql")
}

#[test]
fn https_and_the_postgres_wire_are_served_over_tls_and_plain_text_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path(), "server");
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, tls_config(&data, &cert, &key)).unwrap();
    let out = bin()
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("tls: HTTPS and the Postgres wire"), "{text}");

    let server = Server::start(&cfg, &data);
    let url = server.url.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let port = url.rsplit(':').next().unwrap().to_string();

    // A client that checks the certificate against the operator's CA gets through.
    let (exit, code, body) = curl(&["--cacert", &ca, &format!("{url}/healthz")]);
    assert_eq!((exit, code), (0, 200), "{body}");
    let trade = format!(
        "{{\"type\":\"trade\",\"symbol\":\"NVDA\",\"ts_event\":{},\"price\":\"181.5\",\"size\":\"3\"}}",
        tickflow_model::UnixNanos::now().0
    );
    let (exit, code, body) = curl(&[
        "--cacert",
        &ca,
        "-H",
        "content-type: application/json",
        "--data-binary",
        &trade,
        &format!("{url}/api/v1/ingest"),
    ]);
    assert_eq!((exit, code), (0, 200), "{body}");
    // The dashboard's cookie is Secure under TLS.
    let (exit, code, body) = curl(&[
        "--cacert",
        &ca,
        "-H",
        "content-type: application/json",
        "--data-binary",
        &format!("{{\"token\":\"{TOKEN}\"}}"),
        &format!("{url}/api/v1/login"),
    ]);
    assert_eq!((exit, code), (0, 200), "{body}");
    let cookie = body
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {body}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    // One that does not know the CA refuses the certificate (curl's 60: peer certificate
    // cannot be authenticated); plain HTTP gets no answer.
    let (exit, _, body) = curl(&[&format!("{url}/healthz")]);
    assert_eq!(exit, 60, "{body}");
    let (exit, code, body) = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert!(exit != 0 && code == 0, "plain HTTP answered: {body}");

    // tickflow's own commands trust the CA given as SSL_CERT_FILE.
    let out = bin()
        .env("SSL_CERT_FILE", &ca)
        .env("TICKFLOW_TOKEN", TOKEN)
        .args(["status", "--url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The Postgres wire: psql verifies the certificate and the host name.
    let pg = server_pgwire(&data);
    let verified = format!(
        "host=localhost port={pg} user=desk dbname=tickflow sslmode=verify-full sslrootcert={ca}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = psql(&verified, "SELECT count(*) FROM trades");
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if stdout == "1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the trade never showed: {stdout}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = psql(
        &format!("host=127.0.0.1 port={pg} user=desk dbname=tickflow sslmode=disable"),
        "SELECT 1",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "plain text was served");
    assert!(stderr.contains("TLS is required"), "{stderr}");
    server.stop();
}

/// The Postgres-wire port of the pipeline on `data`, from its server.json.
fn server_pgwire(data: &Path) -> String {
    let text = std::fs::read_to_string(data.join("server.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["pgwire"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_key_that_is_not_the_certificates_or_that_others_may_read_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, _) = certificate(dir.path(), "one");
    let (_, _, other_key) = certificate(dir.path(), "two");
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    let check = |text: String| {
        std::fs::write(&cfg, text).unwrap();
        let out = bin()
            .args(["check", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = check(tls_config(&data, &cert, &other_key));
    assert!(
        stderr.contains("tls.key_file") && stderr.contains("does not go with tls.cert_file"),
        "{stderr}"
    );
    set_mode(Path::new(&other_key), 0o644);
    let stderr = check(tls_config(&data, &cert, &other_key));
    assert!(
        stderr.contains("tls.key_file") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    let stderr = check(tls_config(&data, &other_key, &cert).replace("key_file", "#"));
    assert!(stderr.contains("tls.key_file: missing"), "{stderr}");
    // A certificate file that holds no certificate.
    set_mode(Path::new(&other_key), 0o600);
    let stderr = check(tls_config(&data, &other_key, &other_key));
    assert!(
        stderr.contains("tls.cert_file") && stderr.contains("no certificate"),
        "{stderr}"
    );
}
