//! A lake table over a known list of Parquet files that skips, before DataFusion opens any,
//! the files whose `symbol=` folder cannot match the query's `symbol = '…'` or
//! `symbol IN (…)` filter. DataFusion prunes files by their statistics only once it has
//! opened them, which costs about as much as reading a small file; with a folder per symbol
//! the path already says which files can match.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use arrow::datatypes::{DataType, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result;
use datafusion::execution::cache::TableScopedPath;
use datafusion::execution::cache::cache_manager::{
    CachedFileMetadata, DEFAULT_FILE_STATISTICS_MEMORY_LIMIT, FileStatisticsCache,
};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;

use crate::lake_format::LakeFormat;

/// The published files of one table.
#[derive(Debug)]
pub(crate) struct LakeTable {
    /// The types SQL sees.
    pub(crate) schema: SchemaRef,
    /// The types the files store.
    pub(crate) stored: SchemaRef,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) statistics: Option<Arc<FileStatisticsCache>>,
    /// Where [`Self::narrowed`] scans keep theirs.
    pub(crate) narrowed_statistics: Option<Arc<NarrowedStatistics>>,
}

/// Statistics of narrowed scans, a cache per set of narrowed columns. DataFusion keeps a
/// file's statistics under its path alone, valid for the one table schema they were
/// gathered in: scans of different types sharing a cache would evict each other's.
#[derive(Debug, Default)]
pub(crate) struct NarrowedStatistics(Mutex<HashMap<BTreeSet<String>, Arc<FileStatisticsCache>>>);

impl NarrowedStatistics {
    /// Sets of narrowed columns given a cache of their own; past that, scans gather their
    /// statistics anew each time (from the cached footers).
    const MAX_SETS: usize = 32;

    fn for_columns(&self, names: &HashSet<String>) -> Option<Arc<FileStatisticsCache>> {
        let mut caches = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let key: BTreeSet<String> = names.iter().cloned().collect();
        if let Some(cache) = caches.get(&key) {
            return Some(Arc::clone(cache));
        }
        if caches.len() >= Self::MAX_SETS {
            return None;
        }
        let cache: Arc<FileStatisticsCache> = Arc::new(
            DefaultCache::<TableScopedPath, CachedFileMetadata>::new(
                DEFAULT_FILE_STATISTICS_MEMORY_LIMIT,
            )
            .with_name("tickflow narrowed scans"),
        );
        caches.insert(key, Arc::clone(&cache));
        Some(cache)
    }

    /// Files with statistics cached, over every set.
    pub(crate) fn len(&self) -> usize {
        let caches = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        caches.values().map(|c| c.len()).sum()
    }
}

impl LakeTable {
    /// This table with the columns named `names` in the 64-bit decimal types the files
    /// store them in, which SQL sees as DECIMAL128 of the same digits; `None` if one is not
    /// such a column.
    pub(crate) fn narrowed(&self, names: &HashSet<String>) -> Option<Self> {
        let mut fields = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            if !names.contains(field.name()) {
                fields.push(Arc::clone(field));
                continue;
            }
            let stored = self.stored.field_with_name(field.name()).ok()?;
            match (field.data_type(), stored.data_type()) {
                (DataType::Decimal128(p, s), DataType::Decimal64(sp, ss)) if (p, s) == (sp, ss) => {
                    fields.push(Arc::new(
                        field
                            .as_ref()
                            .clone()
                            .with_data_type(stored.data_type().clone()),
                    ));
                }
                _ => return None,
            }
        }
        Some(Self {
            schema: Arc::new(Schema::new_with_metadata(
                fields,
                self.schema.metadata().clone(),
            )),
            stored: Arc::clone(&self.stored),
            files: self.files.clone(),
            statistics: self
                .narrowed_statistics
                .as_ref()
                .and_then(|n| n.for_columns(names)),
            narrowed_statistics: self.narrowed_statistics.clone(),
        })
    }
}

#[async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used to choose files and row groups; DataFusion still applies every filter.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wanted = symbols_wanted(filters);
        let urls = self
            .files
            .iter()
            .filter(|path| may_hold(path, wanted.as_ref()))
            .map(|path| ListingTableUrl::parse(path.to_string_lossy()))
            .collect::<Result<Vec<_>>>()?;
        if urls.is_empty() {
            let schema = match projection {
                Some(columns) => Arc::new(self.schema.project(columns)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let format = LakeFormat::new(Arc::clone(&self.stored));
        let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(Arc::clone(&self.schema));
        let listing = ListingTable::try_new(config)?.with_cache(self.statistics.clone());
        listing.scan(state, projection, filters, limit).await
    }
}

/// The symbols a row must have to pass `filters` (conjuncts), if they pin any down.
fn symbols_wanted(filters: &[Expr]) -> Option<BTreeSet<String>> {
    let mut wanted: Option<BTreeSet<String>> = None;
    for filter in filters {
        let Some(these) = symbols_of(filter) else {
            continue;
        };
        wanted = Some(match wanted {
            Some(before) => before.intersection(&these).cloned().collect(),
            None => these,
        });
    }
    wanted
}

/// `symbol = 'X'`, `'X' = symbol` or `symbol IN ('X', 'Y')`.
fn symbols_of(filter: &Expr) -> Option<BTreeSet<String>> {
    match filter {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (is_symbol(left), is_symbol(right)) {
            (true, false) => text(right).map(|s| BTreeSet::from([s])),
            (false, true) => text(left).map(|s| BTreeSet::from([s])),
            _ => None,
        },
        Expr::InList(list) if !list.negated && is_symbol(&list.expr) => {
            list.list.iter().map(text).collect()
        }
        _ => None,
    }
}

fn is_symbol(expr: &Expr) -> bool {
    matches!(expr, Expr::Column(c) if c.name == "symbol")
}

fn text(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s.clone()),
        _ => None,
    }
}

/// Whether a file may hold rows of `wanted`: always, unless its folder is `symbol=OTHER`.
fn may_hold(path: &std::path::Path, wanted: Option<&BTreeSet<String>>) -> bool {
    let Some(wanted) = wanted else {
        return true;
    };
    let folder = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str());
    match folder.and_then(|f| f.strip_prefix("symbol=")) {
        Some(symbol) => wanted.contains(symbol),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    #[test]
    fn symbol_filters_choose_folders() {
        let wanted = symbols_wanted(&[
            col("symbol").in_list(vec![lit("NVDA"), lit("AAPL")], false),
            lit("NVDA").eq(col("symbol")),
            col("price").gt(lit(5)),
        ])
        .unwrap();
        assert_eq!(wanted, BTreeSet::from(["NVDA".to_string()]));
        let path = |p: &str| PathBuf::from(p);
        assert!(may_hold(
            &path("t/date=2026-11-20/symbol=NVDA/part-1-0.parquet"),
            Some(&wanted)
        ));
        assert!(!may_hold(
            &path("t/date=2026-11-20/symbol=AAPL/part-1-0.parquet"),
            Some(&wanted)
        ));
        assert!(may_hold(
            &path("t/date=2026-11-20/bucket=03/part-1-0.parquet"),
            Some(&wanted)
        ));
        assert!(may_hold(
            &path("t/date=2026-11-20/symbol=AAPL/part-1-0.parquet"),
            None
        ));
        assert!(symbols_wanted(&[col("symbol").not_eq(lit("NVDA"))]).is_none());
        assert!(symbols_wanted(&[col("symbol").in_list(vec![lit("A")], true)]).is_none());
    }
}
