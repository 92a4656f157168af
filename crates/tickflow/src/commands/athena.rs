//! `tickflow athena-ddl`: the `CREATE EXTERNAL TABLE` statements for the JSON a config's
//! `s3_json` sinks write and, when the config puts the lake on S3 (`[lake] url`), for the
//! Parquet lake's tables.

use std::process::ExitCode;

use anyhow::Context;
use tickflow_lake::Table;
use tickflow_pipeline::config::{self, SinkConfig};

use crate::cli::AthenaDdlArgs;

pub(crate) fn ddl(args: &AthenaDdlArgs) -> anyhow::Result<ExitCode> {
    let plan =
        config::load(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let database = &args.database;
    if database.is_empty()
        || !database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        anyhow::bail!("--database {database:?}: use letters, digits and _");
    }
    let mut printed = 0;
    println!("CREATE DATABASE IF NOT EXISTS {database};\n");
    for sink in &plan.sinks {
        let SinkConfig::S3Json(json) = &sink.config else {
            continue;
        };
        println!("-- sink {}: {}", sink.id, json.store.url);
        for table in &json.tables {
            println!(
                "{}",
                tickflow_lake::json_sink::athena_ddl(database, &json.store.url, table)
            );
            printed += 1;
        }
    }
    if let Some(lake) = &plan.lake.object {
        // The lake's root as the lake itself names it, whatever slashes the config has.
        let (bucket, prefix) = lake
            .bucket_and_prefix()
            .map_err(|e| anyhow::anyhow!("{}: lake.url: {e}", args.config.display()))?;
        let url = format!("s3://{bucket}/{prefix}");
        println!("-- the Parquet lake: {url}");
        for table in Table::ALL {
            println!(
                "{}",
                tickflow_lake::parquet_athena_ddl(
                    database,
                    &url,
                    table,
                    plan.lake.symbol_buckets,
                    plan.log.partitions,
                )
            );
            printed += 1;
        }
    }
    if printed == 0 {
        eprintln!(
            "{}: no s3_json sink and no lake on S3 ([lake] url), so no tables to describe (docs/CONNECTORS.md, \"The S3 JSON sink\"; docs/storage.md, \"The lake on S3\")",
            args.config.display()
        );
        return Ok(ExitCode::from(super::EXIT_USAGE));
    }
    Ok(ExitCode::SUCCESS)
}
