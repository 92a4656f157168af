//! Athena's `CREATE EXTERNAL TABLE` for the Parquet lake on S3: columns from each table's
//! Arrow schema, partition keys from the folders the writer makes.

use arrow::datatypes::DataType;

use crate::Table;

/// How Athena learns a partition key's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Values {
    /// Projected days, `yyyy-MM-dd`.
    Days,
    /// Projected integers `0..=last`, two digits at least (`{:02}`, as the writer names them).
    Numbers { last: u32 },
    /// Not projectable: found by `MSCK REPAIR TABLE`.
    Listed,
}

/// One folder level under the table, outermost first.
#[derive(Clone, Copy, Debug)]
struct Key {
    name: &'static str,
    values: Values,
}

/// The folder levels of `table` as the writer lays them out (`Lake::table_dir` and
/// `partition_dir` in writer.rs): `[partition=NN/]date=YYYY-MM-DD/[symbol=SYM/ | bucket=NN/]`.
fn folder_keys(table: Table, symbol_buckets: u32, partitions: u32) -> Vec<Key> {
    let mut keys = Vec::with_capacity(3);
    if partitions > 1 {
        keys.push(Key {
            name: "partition",
            values: Values::Numbers {
                last: partitions - 1,
            },
        });
    }
    keys.push(Key {
        name: "date",
        values: Values::Days,
    });
    if table.by_symbol() {
        keys.push(match symbol_buckets {
            0 => Key {
                name: "symbol",
                values: Values::Listed,
            },
            n => Key {
                name: "bucket",
                values: Values::Numbers { last: n - 1 },
            },
        });
    }
    keys
}

/// The Athena (Hive DDL) type Athena reads a Parquet column of this Arrow type as, or `None`
/// when it has none. Unsigned integers take the next wider signed type.
fn athena_type(data_type: &DataType) -> Option<String> {
    use DataType as T;
    Some(match data_type {
        T::Boolean => "boolean".into(),
        T::Int8 => "tinyint".into(),
        T::Int16 | T::UInt8 => "smallint".into(),
        T::Int32 | T::UInt16 => "int".into(),
        T::Int64 | T::UInt32 | T::UInt64 => "bigint".into(),
        T::Float32 => "float".into(),
        T::Float64 => "double".into(),
        T::Utf8 | T::LargeUtf8 | T::Utf8View => "string".into(),
        T::Decimal32(p, s) | T::Decimal64(p, s) | T::Decimal128(p, s)
            if *s >= 0 && s.unsigned_abs() <= *p =>
        {
            format!("decimal({p},{s})")
        }
        T::Timestamp(_, _) => "timestamp".into(),
        T::Date32 => "date".into(),
        _ => return None,
    })
}

/// `CREATE EXTERNAL TABLE` for `table` of the lake at `lake_url` (`s3://bucket/prefix`), in
/// `database` under the table's own name, over the folders the writer makes with
/// `symbol_buckets` (`[lake] symbol_buckets`) on a log of `partitions` (`[log] partitions`).
///
/// - Partition keys: on a partitioned log (`partitions` > 1) each process writes under
///   `<table>/partition=NN/`, so `partition` comes first; then `date`; then, for the tables
///   split by symbol, `symbol` or, with buckets, `bucket`. All are strings, as the folders
///   spell them.
/// - Athena refuses a partition key that is also a column, and the folder names are fixed, so
///   a column a folder also names is left out and read from the folder instead. That loses
///   nothing: the writer groups rows by their own `symbol` and by the day it files them under,
///   which for `daily_metrics` is its `date` column, so file and folder always agree
///   (`daily_metrics.date` then reads as `'YYYY-MM-DD'` text). With buckets, `symbol` stays a
///   column, since a bucket holds many symbols.
/// - Days, buckets and log partitions are projected, so a new day is queryable at once.
///   Symbols could be projected only as `injected`, which makes every query name its symbols,
///   so a table with `symbol=` folders has no projection at all (Athena projects every key or
///   none) and is followed by `MSCK REPAIR TABLE`, to run again once new days or symbols
///   appear.
/// - Every name is quoted: `date`, `end`, `interval`, `partition` and others are reserved in
///   Athena's DDL.
///
/// Athena reads every file under a folder, while tickflow's readers skip files not yet
/// published and the inputs of a merged file: from a compaction's merged file to the deletion
/// of its inputs (after a crash, until recovery), Athena counts those rows twice.
pub fn parquet_athena_ddl(
    database: &str,
    lake_url: &str,
    table: Table,
    symbol_buckets: u32,
    partitions: u32,
) -> String {
    let name = table.name();
    let location = format!("{}/{name}/", lake_url.trim_end_matches('/'));
    let keys = folder_keys(table, symbol_buckets, partitions);
    let columns: Vec<String> = table
        .schema()
        .fields()
        .iter()
        .filter(|f| keys.iter().all(|k| k.name != f.name().as_str()))
        .map(|f| match athena_type(f.data_type()) {
            Some(t) => format!("`{}` {t}", f.name()),
            None => format!(
                "`{}` string COMMENT 'Arrow type {} has no Athena type'",
                f.name(),
                f.data_type().to_string().replace('\'', "")
            ),
        })
        .collect();
    let partitioned_by: Vec<String> = keys
        .iter()
        .map(|k| format!("`{}` string", k.name))
        .collect();
    let mut ddl = format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS {database}.{name} (\n  {}\n)\nPARTITIONED BY ({})\nSTORED AS PARQUET\nLOCATION '{location}'",
        columns.join(",\n  "),
        partitioned_by.join(", ")
    );
    if keys.iter().any(|k| k.values == Values::Listed) {
        ddl.push_str(&format!(
            ";\n-- Athena sees only the partitions it has been told of: run this again once new days or symbols appear.\nMSCK REPAIR TABLE {database}.{name};\n"
        ));
        return ddl;
    }
    ddl.push_str("\nTBLPROPERTIES (\n  'projection.enabled' = 'true',\n");
    let mut template = location;
    for key in &keys {
        let k = key.name;
        match key.values {
            Values::Days => ddl.push_str(&format!(
                "  'projection.{k}.type' = 'date',\n  'projection.{k}.format' = 'yyyy-MM-dd',\n  'projection.{k}.range' = '2000-01-01,NOW',\n  'projection.{k}.interval' = '1',\n  'projection.{k}.interval.unit' = 'DAYS',\n"
            )),
            Values::Numbers { last } => ddl.push_str(&format!(
                "  'projection.{k}.type' = 'integer',\n  'projection.{k}.range' = '0,{last}',\n  'projection.{k}.digits' = '2',\n"
            )),
            Values::Listed => {}
        }
        template.push_str(&format!("{k}=${{{k}}}/"));
    }
    ddl.push_str(&format!(
        "  'storage.location.template' = '{template}'\n);\n"
    ));
    ddl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_folders_are_partitions_found_by_msck_and_not_columns() {
        let ddl = parquet_athena_ddl("tickflow", "s3://bucket/lake/", Table::Trades, 0, 1);
        assert_eq!(
            ddl,
            "CREATE EXTERNAL TABLE IF NOT EXISTS tickflow.trades (
  `ts_event` timestamp,
  `ts_recv` timestamp,
  `price` decimal(18,9),
  `size` decimal(18,9),
  `trade_id` string,
  `exchange` string,
  `source` string,
  `feed` string,
  `seq` bigint
)
PARTITIONED BY (`date` string, `symbol` string)
STORED AS PARQUET
LOCATION 's3://bucket/lake/trades/';
-- Athena sees only the partitions it has been told of: run this again once new days or symbols appear.
MSCK REPAIR TABLE tickflow.trades;
"
        );
    }

    #[test]
    fn date_only_tables_project_the_day() {
        let ddl = parquet_athena_ddl("tickflow", "s3://bucket/lake", Table::Dlq, 0, 1);
        assert_eq!(
            ddl,
            "CREATE EXTERNAL TABLE IF NOT EXISTS tickflow.dlq (
  `ts` timestamp,
  `source` string,
  `offset` bigint,
  `reason` string,
  `error` string,
  `payload` string
)
PARTITIONED BY (`date` string)
STORED AS PARQUET
LOCATION 's3://bucket/lake/dlq/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.date.type' = 'date',
  'projection.date.format' = 'yyyy-MM-dd',
  'projection.date.range' = '2000-01-01,NOW',
  'projection.date.interval' = '1',
  'projection.date.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://bucket/lake/dlq/date=${date}/'
);
"
        );
        // Buckets do not apply to a table without symbols.
        assert_eq!(
            parquet_athena_ddl("tickflow", "s3://bucket/lake", Table::Dlq, 16, 1),
            ddl
        );
    }

    #[test]
    fn buckets_and_log_partitions_are_projected_and_symbol_stays_a_column() {
        let ddl = parquet_athena_ddl("db", "s3://bucket/lake", Table::Trades, 16, 4);
        assert_eq!(
            ddl,
            "CREATE EXTERNAL TABLE IF NOT EXISTS db.trades (
  `symbol` string,
  `ts_event` timestamp,
  `ts_recv` timestamp,
  `price` decimal(18,9),
  `size` decimal(18,9),
  `trade_id` string,
  `exchange` string,
  `source` string,
  `feed` string,
  `seq` bigint
)
PARTITIONED BY (`partition` string, `date` string, `bucket` string)
STORED AS PARQUET
LOCATION 's3://bucket/lake/trades/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.partition.type' = 'integer',
  'projection.partition.range' = '0,3',
  'projection.partition.digits' = '2',
  'projection.date.type' = 'date',
  'projection.date.format' = 'yyyy-MM-dd',
  'projection.date.range' = '2000-01-01,NOW',
  'projection.date.interval' = '1',
  'projection.date.interval.unit' = 'DAYS',
  'projection.bucket.type' = 'integer',
  'projection.bucket.range' = '0,15',
  'projection.bucket.digits' = '2',
  'storage.location.template' = 's3://bucket/lake/trades/partition=${partition}/date=${date}/bucket=${bucket}/'
);
"
        );
    }

    #[test]
    fn log_partitions_under_symbol_folders_are_found_by_msck_too() {
        let ddl = parquet_athena_ddl("tickflow", "s3://bucket/lake", Table::Alerts, 0, 2);
        assert!(
            ddl.contains("(`partition` string, `date` string, `symbol` string)\nSTORED"),
            "{ddl}"
        );
        assert!(
            ddl.ends_with("MSCK REPAIR TABLE tickflow.alerts;\n") && !ddl.contains("projection"),
            "{ddl}"
        );
    }

    #[test]
    fn a_column_a_folder_names_is_left_to_the_folder() {
        let ddl = parquet_athena_ddl("tickflow", "s3://bucket/lake", Table::DailyMetrics, 0, 1);
        assert!(
            !ddl.contains("  `date`") && !ddl.contains("  `symbol`"),
            "{ddl}"
        );
        assert!(
            ddl.contains("PARTITIONED BY (`date` string, `symbol` string)"),
            "{ddl}"
        );
        assert!(ddl.contains("  `volume` decimal(38,9),\n"), "{ddl}");
        assert!(ddl.contains("  `volatility` double,\n"), "{ddl}");
        // Bars: reserved words quoted, a boolean.
        let ddl = parquet_athena_ddl("tickflow", "s3://bucket/lake", Table::Bars, 8, 1);
        for column in [
            "`symbol` string",
            "`interval` string",
            "`end` timestamp",
            "`final` boolean",
            "`trade_count` bigint",
        ] {
            assert!(ddl.contains(column), "{column}: {ddl}");
        }
    }

    #[test]
    fn arrow_types_map_to_athenas() {
        use arrow::datatypes::TimeUnit;
        let cases = [
            (DataType::Decimal64(18, 9), Some("decimal(18,9)")),
            (DataType::Decimal128(38, 9), Some("decimal(38,9)")),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                Some("timestamp"),
            ),
            (DataType::Utf8, Some("string")),
            (DataType::LargeUtf8, Some("string")),
            (DataType::Date32, Some("date")),
            (DataType::Int32, Some("int")),
            (DataType::UInt64, Some("bigint")),
            (DataType::Float32, Some("float")),
            (DataType::Decimal128(10, -2), None),
            (DataType::Binary, None),
        ];
        for (from, to) in cases {
            assert_eq!(athena_type(&from).as_deref(), to, "{from}");
        }
    }
}
