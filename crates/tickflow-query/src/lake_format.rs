//! Parquet as the lake stores it, with planning statistics in the types a scan asks for.
//!
//! DataFusion gathers a file's min/max for planning in the scan's column types and drops a
//! column's when the file holds another type: a scan asking for prices as DECIMAL128 (what
//! SQL shows) over files that store 64-bit decimals would get none, and could not skip a
//! whole file by price before opening it. [`LakeFormat`] gathers them in the stored types
//! and casts them to the asked ones. Everything else is [`ParquetFormat`]'s.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, ScalarValue, Statistics};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::{FileFormat, FileMeta};
use datafusion::datasource::physical_plan::{FileScanConfig, FileSource};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::object_store::{ObjectMeta, ObjectStore};
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::ExecutionPlan;

/// [`ParquetFormat`] over files whose decimal columns are stored as `stored` says.
#[derive(Debug)]
pub(crate) struct LakeFormat {
    parquet: ParquetFormat,
    stored: SchemaRef,
}

impl LakeFormat {
    pub(crate) fn new(stored: SchemaRef) -> Self {
        Self {
            parquet: ParquetFormat::default(),
            stored,
        }
    }

    /// `schema` with every column the files store as a 64-bit decimal in that type, and
    /// which columns that changed; `None` if none did.
    fn as_stored(&self, schema: &Schema) -> Option<(SchemaRef, Vec<usize>)> {
        let mut changed = Vec::new();
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let stored = self.stored.field_with_name(field.name()).ok();
                match (field.data_type(), stored.map(|f| f.data_type())) {
                    (DataType::Decimal128(p, s), Some(t @ DataType::Decimal64(sp, ss)))
                        if (p, s) == (sp, ss) =>
                    {
                        changed.push(i);
                        field.as_ref().clone().with_data_type(t.clone())
                    }
                    _ => field.as_ref().clone(),
                }
            })
            .collect();
        (!changed.is_empty()).then(|| {
            let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
            (Arc::new(schema), changed)
        })
    }
}

/// Whether `column` has a known min and max.
fn has_bounds(column: &ColumnStatistics) -> bool {
    let known = |p: &Precision<ScalarValue>| p.get_value().is_some_and(|v| !v.is_null());
    known(&column.min_value) && known(&column.max_value)
}

/// `value` in `to`, or unknown if it does not cast.
fn cast(value: Precision<ScalarValue>, to: &DataType) -> Precision<ScalarValue> {
    match value {
        Precision::Exact(v) => v.cast_to(to).map_or(Precision::Absent, Precision::Exact),
        Precision::Inexact(v) => v.cast_to(to).map_or(Precision::Absent, Precision::Inexact),
        Precision::Absent => Precision::Absent,
    }
}

#[async_trait]
impl FileFormat for LakeFormat {
    fn get_ext(&self) -> String {
        self.parquet.get_ext()
    }

    fn get_ext_with_compression(&self, compression: &FileCompressionType) -> Result<String> {
        self.parquet.get_ext_with_compression(compression)
    }

    fn compression_type(&self) -> Option<FileCompressionType> {
        self.parquet.compression_type()
    }

    async fn infer_schema(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
    ) -> Result<SchemaRef> {
        self.parquet.infer_schema(state, store, objects).await
    }

    async fn infer_stats(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> Result<Statistics> {
        let meta = self
            .infer_stats_and_ordering(state, store, table_schema, object)
            .await?;
        Ok(meta.statistics)
    }

    async fn infer_ordering(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> Result<Option<LexOrdering>> {
        self.parquet
            .infer_ordering(state, store, table_schema, object)
            .await
    }

    async fn infer_stats_and_ordering(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> Result<FileMeta> {
        let Some((stored, changed)) = self.as_stored(&table_schema) else {
            return self
                .parquet
                .infer_stats_and_ordering(state, store, table_schema, object)
                .await;
        };
        let mut meta = self
            .parquet
            .infer_stats_and_ordering(state, store, stored, object)
            .await?;
        let columns = &mut meta.statistics.column_statistics;
        let rows = meta.statistics.num_rows.get_value().copied().unwrap_or(0);
        let all_null = |c: &ColumnStatistics| c.null_count.get_value() == Some(&rows);
        if rows > 0
            && changed.iter().any(|&i| {
                columns
                    .get(i)
                    .is_some_and(|c| !has_bounds(c) && !all_null(c))
            })
        {
            // A file written before prices were stored as 64-bit decimals: its statistics
            // read in the asked types as they are.
            return self
                .parquet
                .infer_stats_and_ordering(state, store, table_schema, object)
                .await;
        }
        for &i in &changed {
            let (Some(column), Some(field)) = (columns.get_mut(i), table_schema.fields().get(i))
            else {
                continue;
            };
            let to = field.data_type();
            column.min_value = cast(
                std::mem::replace(&mut column.min_value, Precision::Absent),
                to,
            );
            column.max_value = cast(
                std::mem::replace(&mut column.max_value, Precision::Absent),
                to,
            );
            column.sum_value = cast(
                std::mem::replace(&mut column.sum_value, Precision::Absent),
                to,
            );
        }
        Ok(meta)
    }

    async fn create_physical_plan(
        &self,
        state: &dyn Session,
        conf: FileScanConfig,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.parquet.create_physical_plan(state, conf).await
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        self.parquet.file_source(table_schema)
    }
}
