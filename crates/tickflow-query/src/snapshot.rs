use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use tickflow_lake::{RecordBatch, Table};

use crate::{Error, Result};

/// What a query reads: per table, the Parquet files and the in-memory batches.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub files: Vec<(Table, Vec<PathBuf>)>,
    pub live: Vec<(Table, RecordBatch)>,
}

/// Rows a query returned.
#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Total rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Registers every table of `snapshot` and runs one SQL statement (read-only).
///
/// # Errors
/// [`Error::Sql`] for a statement that does not parse or plan; [`Error::Execution`] otherwise.
pub async fn run_sql(snapshot: Snapshot, sql: &str) -> Result<QueryResult> {
    let ctx = SessionContext::new();
    for table in Table::ALL {
        let schema = table.schema();
        let files: Vec<&PathBuf> = snapshot
            .files
            .iter()
            .filter(|(t, _)| *t == table)
            .flat_map(|(_, f)| f)
            .collect();
        let live: Vec<RecordBatch> = snapshot
            .live
            .iter()
            .filter(|(t, b)| *t == table && b.num_rows() > 0)
            .map(|(_, b)| b.clone())
            .collect();
        let mem = Arc::new(MemTable::try_new(Arc::clone(&schema), vec![live])?);
        if files.is_empty() {
            ctx.register_table(table.name(), mem)?;
            continue;
        }
        let urls = files
            .iter()
            .map(|p| ListingTableUrl::parse(p.to_string_lossy()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(Arc::clone(&schema));
        let parquet = ctx.read_table(Arc::new(ListingTable::try_new(config)?))?;
        let union = parquet.union(ctx.read_table(mem)?)?;
        ctx.register_table(table.name(), union.into_view())?;
    }
    let df = ctx
        .sql_with_options(
            sql,
            datafusion::execution::context::SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false),
        )
        .await?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(Error::from)?;
    Ok(QueryResult { schema, batches })
}
