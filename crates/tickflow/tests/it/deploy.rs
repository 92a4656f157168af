//! The files under `deploy/` are checked by the tools that read them.

use std::process::Command;

/// `systemd-analyze verify` takes the unit without a word, with the unit's binary path
/// pointing at the one just built. It prints problems and still exits 0, so its output must
/// be empty.
#[test]
fn the_systemd_unit_verifies() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is required under CI: ./scripts/test installs systemd"
        );
        eprintln!("skipped: no systemd-analyze");
        return;
    };
    assert!(version.status.success());
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/systemd/tickflow.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/tickflow run --config"));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tickflow.service");
    let text = text.replace("/usr/local/bin/tickflow", env!("CARGO_BIN_EXE_tickflow"));
    std::fs::write(&copy, &text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");

    // The check is real: a misspelt setting is reported.
    std::fs::write(&copy, text.replace("RestartSec=2", "RestartSec=two")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("Failed to parse") && said.contains("two"),
        "{said}"
    );
}

/// The Python environment with checkov (and the HCL parser it brings): `./scripts/test`
/// makes it under ~/.cache/tickflow/checkov, or TICKFLOW_CHECKOV_VENV names another.
fn checkov_venv() -> Option<std::path::PathBuf> {
    let venv = std::env::var_os("TICKFLOW_CHECKOV_VENV")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::PathBuf::from(h).join(".cache/tickflow/checkov"))
        })?;
    if venv.join("bin/checkov").exists() {
        Some(venv)
    } else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "checkov is required under CI: ./scripts/test installs it in {}",
            venv.display()
        );
        eprintln!("skipped: no checkov in {}", venv.display());
        None
    }
}

/// A YAML file as JSON, read by PyYAML from checkov's venv.
fn yaml(venv: &std::path::Path, path: &std::path::Path) -> serde_json::Value {
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import json, sys, yaml\nprint(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every `.tf` file of `dir` as the HCL parser reads it, by file name.
fn parse_terraform(venv: &std::path::Path, dir: &std::path::Path) -> serde_json::Value {
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import glob, json, os, sys, hcl2\nprint(json.dumps({os.path.basename(f): hcl2.load(open(f)) for f in sorted(glob.glob(os.path.join(sys.argv[1], '*.tf')))}))",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Terraform does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The AWS calls in a connector's source: the operation named in each `json(`,
/// `json_waiting(` or `query(` call.
fn calls_in(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for opener in ["json(", "json_waiting(", "query("] {
        for (at, _) in source.match_indices(opener) {
            let rest = source[at + opener.len()..].trim_start();
            if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split_once('"')) {
                out.push(name.0.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The IAM action an operation needs; batch forms need the single one's.
fn action(service: &str, operation: &str) -> String {
    let operation = match operation {
        "DeleteMessageBatch" => "DeleteMessage",
        "ChangeMessageVisibilityBatch" => "ChangeMessageVisibility",
        "SendMessageBatch" => "SendMessage",
        other => other,
    };
    format!("{service}:{operation}")
}

/// Calls the connectors make that the Lambda function never does, and why.
const NOT_ON_THE_LAMBDA_PATH: &[(&str, &str)] = &[
    (
        "CreateTable",
        "config/lambda.toml sets create_tables = false: Terraform makes the tables",
    ),
    ("DescribeTable", "only with create_tables"),
    ("GetQueueUrl", "tickflow produce only"),
    ("SendMessageBatch", "tickflow produce only"),
    (
        "ChangeMessageVisibilityBatch",
        "the mapping keeps messages hidden; `tickflow run` extends it",
    ),
];

/// What the Lambda path needs beyond the connectors' own calls: the S3 JSON sink's object
/// store (its `put` and `get`, and listing so a missing position reads as 404, not 403) and
/// CloudWatch Logs for the runtime's stderr.
const BESIDES: &[&str] = &[
    "s3:PutObject",
    "s3:GetObject",
    "s3:ListBucket",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
];

/// The strings of an attribute: the parser puts a value in a list, and a list in another.
fn strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items.iter().flat_map(strings).collect(),
        other => panic!("not a string attribute: {other}"),
    }
}

/// The actions the function's policy grants, and its statements' resources.
fn granted(parsed: &serde_json::Value) -> (Vec<String>, Vec<String>) {
    let mut actions = Vec::new();
    let mut resources = Vec::new();
    for data in parsed["iam.tf"]["data"].as_array().unwrap() {
        let Some(function) = data["aws_iam_policy_document"]["function"].as_object() else {
            continue;
        };
        for statement in function["statement"].as_array().unwrap() {
            let effect = statement.get("effect").map(strings);
            assert!(effect.is_none_or(|e| e == ["Allow"]), "{statement}");
            actions.extend(strings(&statement["actions"]));
            resources.extend(strings(&statement["resources"]));
        }
    }
    actions.sort();
    actions.dedup();
    (actions, resources)
}

#[test]
fn the_terraform_parses_passes_checkov_and_grants_only_what_tickflow_calls() {
    let Some(venv) = checkov_venv() else { return };
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = crates.join("../deploy/terraform");
    let parsed = parse_terraform(&venv, &dir);

    let (actions, resources) = granted(&parsed);
    // Every call the connectors make is granted, unless the Lambda path never makes it; and
    // nothing else is.
    let mut wanted: Vec<String> = BESIDES.iter().map(|a| (*a).to_string()).collect();
    for (service, file) in [
        ("sqs", "tickflow-aws/src/sqs.rs"),
        ("sns", "tickflow-aws/src/sns.rs"),
        ("dynamodb", "tickflow-aws/src/dynamodb.rs"),
    ] {
        let calls = calls_in(&std::fs::read_to_string(crates.join(file)).unwrap());
        assert!(!calls.is_empty(), "{file}: no calls found");
        for call in calls {
            if !NOT_ON_THE_LAMBDA_PATH.iter().any(|(c, _)| *c == call) {
                wanted.push(action(service, &call));
            }
        }
    }
    let json_sink = std::fs::read_to_string(crates.join("tickflow-lake/src/json_sink.rs")).unwrap();
    assert!(json_sink.contains("store.put(") && json_sink.contains("store.get("));
    wanted.sort();
    wanted.dedup();
    assert_eq!(
        actions, wanted,
        "the function's role and tickflow's calls differ"
    );
    for r in &resources {
        assert!(
            !r.contains('*') || r.ends_with("/processed/*") || r.ends_with(":*"),
            "{r}"
        );
    }
    // The mapping reports partial batch failures, which `tickflow lambda` answers with.
    let lambda = parsed["lambda.tf"].to_string();
    assert!(lambda.contains("ReportBatchItemFailures"), "{lambda}");
    assert!(lambda.contains("provided.al2023"), "{lambda}");

    let checkov = |dir: &std::path::Path| {
        Command::new(venv.join("bin/checkov"))
            .args([
                "--quiet",
                "--compact",
                "--framework",
                "terraform",
                "--directory",
            ])
            .arg(dir)
            .env("BC_SKIP_MAPPING", "TRUE")
            .env("CHECKOV_RUN_SCA_PACKAGE_SCAN_V2", "false")
            .output()
            .unwrap()
    };
    let out = checkov(&dir);
    assert!(
        out.status.success(),
        "checkov: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The checks are real: a wildcard grant and an open bucket are both caught.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tf") {
            std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let iam = copy.path().join("iam.tf");
    let text = std::fs::read_to_string(&iam).unwrap();
    std::fs::write(&iam, text.replace("[\"sns:Publish\"]", "[\"sns:*\"]")).unwrap();
    let (actions, _) = granted(&parse_terraform(&venv, copy.path()));
    assert!(actions.contains(&"sns:*".to_string()) && actions != wanted);
    let storage = copy.path().join("storage.tf");
    let text = std::fs::read_to_string(&storage).unwrap();
    std::fs::write(
        &storage,
        text.replace(
            "block_public_acls       = true",
            "block_public_acls       = false",
        ),
    )
    .unwrap();
    let out = checkov(copy.path());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && said.contains("CKV_AWS_53"),
        "{said}"
    );
}

/// The compose file as YAML reads it (PyYAML, from checkov's environment). No Docker Compose
/// runs here: the test checks what can be checked without pulling images.
#[test]
fn the_compose_file_runs_tickflow_with_kafka_and_timescaledb_on_a_config_that_checks() {
    let Some(venv) = checkov_venv() else { return };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/compose");
    let compose = yaml(&venv, &dir.join("compose.yaml"));
    let services = compose["services"].as_object().unwrap();
    for (name, service) in services {
        if let Some(image) = service["image"].as_str() {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
            assert!(!tag.is_empty() && tag != "latest", "{name}: pin {image}");
        }
    }
    let tickflow = &services["tickflow"];
    for dependency in ["kafka", "timescaledb"] {
        assert_eq!(
            tickflow["depends_on"][dependency]["condition"], "service_healthy",
            "{dependency}"
        );
        assert!(
            services[dependency]["healthcheck"]["test"].is_array(),
            "{dependency}"
        );
    }
    let dockerfile = std::fs::read_to_string(
        dir.join("../..")
            .join(tickflow["build"]["dockerfile"].as_str().unwrap()),
    )
    .unwrap();
    assert!(dockerfile.contains("--features kafka"), "{dockerfile}");
    let mount = tickflow["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .find(|v| v.ends_with(":/etc/tickflow/tickflow.toml:ro"))
        .expect("the config is mounted");
    let config = dir.join(mount.split(':').next().unwrap());
    // The config checks with the environment compose gives it.
    let mut check = crate::support::bin();
    check.args(["check", "--config", config.to_str().unwrap()]);
    for (k, v) in tickflow["environment"].as_object().unwrap() {
        let v = v.as_str().unwrap();
        // `${VAR:?…}` is compose's: the value comes from the operator's environment.
        if v.starts_with("${") {
            check.env(k, format!("operator-secret-{}-0123456789", k.len()));
        } else {
            check.env(k, v);
        }
    }
    let out = check.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if cfg!(feature = "kafka") {
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("Kafka topics market_ticks at kafka:9092, group tickflow-market, the old market_ticks messages (size 1 each)"),
            "{text}"
        );
    }
}

/// The `tickflow_` metric names `text` refers to, histogram series under their family name.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tickflow_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if name.len() == "tickflow_".len() {
            continue; // prose about the prefix, not a name
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        names.insert(family.to_string());
    }
    names
}

#[test]
fn the_grafana_dashboard_and_prometheus_rules_read_only_metrics_tickflow_exposes() {
    let Some(venv) = checkov_venv() else { return };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dashboard_text =
        std::fs::read_to_string(root.join("deploy/grafana/tickflow-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard_text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for panel in panels {
        assert!(
            panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "{}",
            panel["title"]
        );
    }
    let rules_path = root.join("deploy/prometheus/tickflow-rules.yml");
    let rules = yaml(&venv, &rules_path);
    let rules = rules["groups"][0]["rules"].as_array().unwrap();
    assert!(rules.len() >= 8);
    for rule in rules {
        assert!(
            rule["alert"].is_string() && rule["expr"].is_string(),
            "{rule}"
        );
        assert!(rule["annotations"]["summary"].is_string(), "{rule}");
    }

    // What a running pipeline exposes, and what connectors add as they run (documented).
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        crate::support::config(
            &data,
            "\n[[sources]]\ntype = \"simulator\"\nrate = 100\nhistory_days = 0\n",
        ),
    )
    .unwrap();
    let server = crate::support::Server::start(&cfg, &data);
    let (_, exposed) = crate::support::http("GET", &format!("{}/metrics", server.url), None);
    server.stop();
    let exposed = metric_names(&exposed);
    let operations = std::fs::read_to_string(root.join("docs/OPERATIONS.md")).unwrap();
    let documented = metric_names(&operations);
    let rules_text = std::fs::read_to_string(&rules_path).unwrap();
    for name in metric_names(&dashboard_text)
        .into_iter()
        .chain(metric_names(&rules_text))
    {
        assert!(
            exposed.contains(&name) || documented.contains(&name),
            "{name} is neither in /metrics nor among the documented connector metrics"
        );
    }
    for always in [
        "tickflow_processed_total",
        "tickflow_process_latency_seconds",
        "tickflow_stream_clients",
    ] {
        assert!(exposed.contains(always), "{always} missing from /metrics");
    }
}
