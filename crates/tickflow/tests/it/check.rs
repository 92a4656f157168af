use crate::support::{bin, run};

#[test]
fn every_example_config_passes_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut checked = 0;
    let certs = tempfile::tempdir().unwrap();
    let (_, cert, key) = crate::tls::certificate(certs.path(), "exposed");
    for entry in std::fs::read_dir(&dir).expect("config dir") {
        let path = entry.expect("entry").path();
        // A build without the `kafka` feature refuses Kafka connectors, by design.
        if (path.ends_with("kafka.toml") || path.ends_with("kafka-log.toml"))
            && !cfg!(feature = "kafka")
        {
            continue;
        }
        if path.extension().is_some_and(|e| e == "toml") {
            // The examples take their secrets from the environment, as a deployment would.
            let out = bin()
                .env("VENDOR_A_TOKEN", "a-test-token-0123456789")
                .env("TICKFLOW_API_TOKEN", "api-test-token-0123456789")
                .env("TICKFLOW_INGEST_TOKEN", "ingest-test-token-0123456789")
                .env("TICKFLOW_PG_PASSWORD", "pg-test-password-0123456789")
                .env("TICKFLOW_TLS_CERT", &cert)
                .env("TICKFLOW_TLS_KEY", &key)
                .env("APCA_API_KEY_ID", "PKTESTKEY0123")
                .env("APCA_API_SECRET_KEY", "alpaca-secret-0123456789")
                .env("POLYGON_API_KEY", "polygon-key-0123456789")
                .env("ALPHA_VANTAGE_API_KEY", "av-key-0123456789")
                .env(
                    "DATABASE_URL",
                    "postgres://tickflow:pg-secret-0123456789@127.0.0.1:5432/test",
                )
                .args(["check", "--config", path.to_str().unwrap()])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains(": ok"),
                "{}: {text}{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            if path.ends_with("exposed.toml") {
                assert!(
                    text.contains("  access: queries and admin token required; ingest vendor-a token, http token; postgres wire password required"),
                    "{text}"
                );
                assert!(!text.contains("test-token"), "no secret shown: {text}");
                assert!(
                    text.contains("  tls: HTTPS and the Postgres wire"),
                    "{text}"
                );
            }
            if path.ends_with("nats-log.toml") {
                assert!(
                    text.contains("  log NATS JetStream nats://127.0.0.1:4222 stream TICKFLOW_LOG subject tickflow.log (consumer tickflow-processor, 1 replica(s))"),
                    "{text}"
                );
            }
            if path.ends_with("partitioned-log.toml") {
                assert!(
                    text.contains("stream TICKFLOW_PARTS subject tickflow.parts (consumer tickflow-processor, 1 replica(s)), in 8 partitions by symbol"),
                    "{text}"
                );
            }
            if path.ends_with("email.toml") {
                assert!(
                    text.contains("notifier desk: e-mail via smtp://smtp.example.com:587 (starttls) to desk@example.com, Ops <ops@example.com>"),
                    "{text}"
                );
                assert!(!text.contains("change-me"), "{text}");
                assert!(
                    text.contains(
                        "job weekly_report: weekly_report at \"0 16 * * SAT\" (UTC), next "
                    ),
                    "{text}"
                );
            }
            if path.ends_with("s3-lake.toml") {
                assert!(
                    text.contains("  lake s3://my-bucket/tickflow, ticks kept 90 days"),
                    "{text}"
                );
            }
            if path.ends_with("demo.toml") {
                assert!(
                    text.contains("http 127.0.0.1:8750, postgres wire 127.0.0.1:8751"),
                    "{text}"
                );
            }
            for secret in [
                "a-test-token-0123456789",
                "PKTESTKEY0123",
                "alpaca-secret-0123456789",
                "polygon-key-0123456789",
                "av-key-0123456789",
                "pg-secret-0123456789",
            ] {
                assert!(!text.contains(secret), "{text}");
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 14,
        "expected the example configs, found {checked}"
    );
}

#[test]
fn check_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[http]\nport = 70000\n\n[[alerts.threshold]]\nname = \"x\"\nsymbol = \"NV DA\"\ncondition = \"price => 3\"\n").unwrap();
    let out = run(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    for needle in [
        format!("{file}:2: http.port"),
        format!("{file}:6: alerts.threshold[0].symbol"),
        format!("{file}:7: alerts.threshold[0].condition"),
        "3 problem(s) found".to_string(),
    ] {
        assert!(err.contains(&needle), "{needle:?} not in:\n{err}");
    }
}
