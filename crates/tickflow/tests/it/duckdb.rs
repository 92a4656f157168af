//! The lake is plain hive-partitioned Parquet: DuckDB reads a running pipeline's files as
//! they are and counts what `tickflow sql` counts.

use std::process::Command;

use crate::pgwire::running;
use crate::support::sql_count;

const DUCKDB: &str = r#"
import json, sys, duckdb
lake = sys.argv[1]
out = {}
for table in ["trades"]:
    out[table] = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{lake}/{table}/**/*.parquet', hive_partitioning = true)"
    ).fetchall()[0][0]
out["nvda_volume"] = str(duckdb.sql(
    f"SELECT sum(size) FROM read_parquet('{lake}/trades/**/*.parquet', hive_partitioning = true) WHERE symbol = 'NVDA'"
).fetchall()[0][0].normalize())
print(json.dumps(out))
"#;

#[test]
fn duckdb_reads_the_lake_files_as_they_are() {
    let available = Command::new("python3")
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "duckdb (PyPI) is required under CI: ./scripts/test installs it"
        );
        eprintln!("skipped: duckdb is not installed (./scripts/test installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, data) = running(dir.path());
    // Stopped: every row is in Parquet, none only in memory.
    server.stop();
    let out = Command::new("python3")
        .args(["-c", DUCKDB, data.join("lake").to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        counts["trades"].as_i64().unwrap(),
        sql_count(&data, "SELECT count(*) FROM trades")
    );
    assert_eq!(counts["trades"], 5000);
    let ours = crate::support::sql(
        &data,
        "SELECT CAST(sum(size) AS VARCHAR) AS v FROM trades WHERE symbol = 'NVDA'",
    );
    let ours = crate::pgwire::exact(ours[0]["v"].as_str().unwrap());
    assert_eq!(
        counts["nvda_volume"].as_str().unwrap(),
        ours,
        "the same exact sum"
    );
}
