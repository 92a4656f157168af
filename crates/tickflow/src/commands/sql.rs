//! `tickflow sql`: ask the running pipeline when there is one (it also sees unflushed rows),
//! otherwise read the lake and the last checkpoint directly.

use std::process::ExitCode;

use anyhow::Context;
use tickflow_query::{Format, Snapshot};

use crate::cli::SqlArgs;

pub(crate) fn sql(args: &SqlArgs) -> anyhow::Result<ExitCode> {
    let format: Format = args.format.parse().map_err(anyhow::Error::msg)?;
    let rt = super::runtime()?;
    if let Some(url) = running_server(&args.data_dir) {
        let client = super::api_client(std::time::Duration::from_secs(24 * 3600))?;
        let body = serde_json::json!({ "sql": args.query, "format": if format == Format::Json { "json" } else { &args.format } });
        let started = std::time::Instant::now();
        let sent = rt.block_on(async {
            client
                .post(format!("{url}/api/v1/sql"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
        });
        if let Ok(resp) = sent {
            let status = resp.status();
            let in_server = resp
                .headers()
                .get("server-timing")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("query;dur="))
                .map(str::to_string);
            let text = rt.block_on(resp.text())?;
            if args.timing {
                let round_trip = started.elapsed().as_secs_f64() * 1000.0;
                match in_server {
                    Some(ms) => eprintln!(
                        "Time: {ms} ms in the running pipeline ({round_trip:.3} ms round trip)"
                    ),
                    None => eprintln!("Time: {round_trip:.3} ms"),
                }
            }
            if status.is_success() {
                if format == Format::Json {
                    let v: serde_json::Value = serde_json::from_str(&text)?;
                    println!("{}", v["rows"]);
                } else {
                    print!("{text}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            eprintln!("error: {}", v["error"].as_str().unwrap_or(&text));
            return Ok(ExitCode::from(if status.is_client_error() {
                super::EXIT_USAGE
            } else {
                1
            }));
        }
    }
    if !args.data_dir.exists() {
        anyhow::bail!(
            "no data directory at {} (run `tickflow demo` first, or pass --data-dir)",
            args.data_dir.display()
        );
    }
    let started = std::time::Instant::now();
    let lake = tickflow_pipeline::open_lake(&args.data_dir)
        .with_context(|| format!("opening the lake of {}", args.data_dir.display()))?;
    let inputs = tickflow_pipeline::offline_inputs(&args.data_dir, &lake)
        .with_context(|| format!("reading {}", args.data_dir.display()))?;
    let snapshot = Snapshot {
        files: inputs.files,
        live: inputs.live,
    };
    let mut disabled = std::collections::BTreeSet::new();
    for name in &args.disable {
        match tickflow_query::Rule::ALL
            .into_iter()
            .find(|r| r.name() == name)
        {
            Some(rule) => {
                disabled.insert(rule);
            }
            None => {
                let names: Vec<&str> = tickflow_query::Rule::ALL.iter().map(|r| r.name()).collect();
                eprintln!(
                    "error: --disable {name}: expected one of {}",
                    names.join(", ")
                );
                return Ok(ExitCode::from(super::EXIT_USAGE));
            }
        }
    }
    let engine = tickflow_query::QueryEngine::new()?.with_options(tickflow_query::QueryOptions {
        timeout: args.timeout.map(std::time::Duration::from_secs),
        memory_bytes: args.memory_mb.map(|mb| mb * 1024 * 1024),
        disabled,
    });
    engine.register_lake(&lake)?;
    match rt.block_on(engine.run(snapshot, &args.query)) {
        Ok(result) => {
            if args.timing {
                eprintln!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
            }
            let text = tickflow_query::render(&result, format)?;
            println!("{}", text.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Err(tickflow_query::Error::Sql(message) | tickflow_query::Error::Limit(message)) => {
            eprintln!("error: {message}");
            Ok(ExitCode::from(super::EXIT_USAGE))
        }
        Err(e) => Err(e.into()),
    }
}

/// The URL in `server.json`, if the process that wrote it is still alive.
pub(crate) fn running_server(data_dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(super::run::server_file(data_dir)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let pid = v["pid"].as_u64()?;
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return None;
    }
    v["url"].as_str().map(str::to_string)
}

/// Rows of `query` as JSON objects: asked of the pipeline running on `data_dir` when there is
/// one (it also sees unflushed rows), else read from the lake and the last checkpoint.
///
/// # Errors
/// The query fails, or the data directory cannot be read.
pub(crate) fn query_rows(
    rt: &tokio::runtime::Runtime,
    data_dir: &std::path::Path,
    query: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    if let Some(url) = running_server(data_dir) {
        let body = serde_json::json!({ "sql": query, "format": "json" });
        let client = super::api_client(std::time::Duration::from_secs(300))?;
        let answer = rt.block_on(async {
            let resp = client
                .post(format!("{url}/api/v1/sql"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.text().await?))
        });
        if let Ok((status, text)) = answer {
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("the running pipeline at {url} answered {status}"))?;
            if !status.is_success() {
                anyhow::bail!("{}", v["error"].as_str().unwrap_or(&text));
            }
            return Ok(v["rows"].as_array().cloned().unwrap_or_default());
        }
    }
    if !data_dir.exists() {
        anyhow::bail!("no data directory at {}", data_dir.display());
    }
    let lake = tickflow_pipeline::open_lake(data_dir)
        .with_context(|| format!("opening the lake of {}", data_dir.display()))?;
    let inputs = tickflow_pipeline::offline_inputs(data_dir, &lake)
        .with_context(|| format!("reading {}", data_dir.display()))?;
    let engine = tickflow_query::QueryEngine::new()?;
    engine.register_lake(&lake)?;
    let snapshot = Snapshot {
        files: inputs.files,
        live: inputs.live,
    };
    let result = rt.block_on(engine.run(snapshot, query))?;
    let text = tickflow_query::render(&result, Format::Json)?;
    Ok(serde_json::from_str(&text)?)
}
