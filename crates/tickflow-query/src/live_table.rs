//! Tables for a long-lived SQL session (the Postgres-wire endpoint): each scan takes the
//! table's files and unflushed rows at that moment, so one session sees new ticks on every
//! query without being rebuilt.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::cache::cache_manager::FileStatisticsCache;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use tickflow_lake::{RecordBatch, Table};

use crate::lake_table::{LakeTable, NarrowedStatistics};
use crate::mapped::{MappedFiles, PART_GONE};

/// Snapshots a scan takes before a part that vanished meanwhile fails the query.
const PLAN_ATTEMPTS: u32 = 3;

/// Where a long-lived session finds each table's rows when a query scans it.
pub trait Tables: Send + Sync + std::fmt::Debug {
    /// The published files of `table` and its rows not yet in them, taken together so
    /// that each row is in exactly one.
    ///
    /// # Errors
    /// The lake cannot be listed or a row converted; the query fails with the message.
    fn snapshot(
        &self,
        table: Table,
    ) -> std::result::Result<(Vec<PathBuf>, Vec<RecordBatch>), String>;
}

/// What every [`LiveTable`] of one session shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) tables: Arc<dyn Tables>,
    pub(crate) statistics: Option<Arc<FileStatisticsCache>>,
    pub(crate) narrowed_statistics: Arc<NarrowedStatistics>,
    pub(crate) mapped: Arc<MappedFiles>,
    /// Each table's files at its last scan: files no table lists any more (compacted away)
    /// are unmapped.
    pub(crate) listed: Mutex<HashMap<Table, HashSet<datafusion::object_store::path::Path>>>,
}

/// One table, read anew at each scan.
#[derive(Debug)]
pub(crate) struct LiveTable {
    pub(crate) table: Table,
    /// The types SQL sees.
    pub(crate) schema: SchemaRef,
    pub(crate) shared: Arc<Shared>,
}

#[async_trait]
impl TableProvider for LiveTable {
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
        // As the lake table: used to choose files; DataFusion still applies every filter.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // A part compaction deleted between the snapshot and the scan's planning fails the
        // plan (`crate::mapped::PART_GONE`): take the table again, as it is now.
        let mut attempts = 0;
        let (live, lake_plan) = loop {
            attempts += 1;
            let (files, live) = self
                .shared
                .tables
                .snapshot(self.table)
                .map_err(DataFusionError::Execution)?;
            self.unmap_unlisted(&files)?;
            if files.is_empty() {
                break (live, None);
            }
            let lake = LakeTable {
                schema: Arc::clone(&self.schema),
                stored: self.table.schema(),
                files,
                statistics: self.shared.statistics.clone(),
                narrowed_statistics: Some(Arc::clone(&self.shared.narrowed_statistics)),
            };
            match lake.scan(state, projection, filters, limit).await {
                Err(e) if attempts < PLAN_ATTEMPTS && e.to_string().contains(PART_GONE) => {}
                planned => break (live, Some(planned?)),
            }
        };
        let live: Vec<RecordBatch> = live
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| tickflow_lake::cast_to(b, &self.schema))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut plans = Vec::with_capacity(2);
        plans.extend(lake_plan);
        if !live.is_empty() || plans.is_empty() {
            let memory = MemTable::try_new(Arc::clone(&self.schema), vec![live])?;
            plans.push(memory.scan(state, projection, filters, limit).await?);
        }
        match plans.len() {
            1 => Ok(plans.remove(0)),
            _ => UnionExec::try_new(plans),
        }
    }
}

impl LiveTable {
    /// Records this table's files and releases the memory maps of files no table lists.
    fn unmap_unlisted(&self, files: &[PathBuf]) -> Result<()> {
        let these = files
            .iter()
            .map(|p| {
                Ok(ListingTableUrl::parse(p.to_string_lossy())?
                    .prefix()
                    .clone())
            })
            .collect::<Result<HashSet<_>>>()?;
        let mut listed = self
            .shared
            .listed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listed.insert(self.table, these);
        let all: HashSet<_> = listed.values().flatten().cloned().collect();
        self.shared.mapped.keep_only(&all);
        Ok(())
    }
}
