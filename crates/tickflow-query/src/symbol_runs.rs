//! Aggregation grouped by `symbol`, one group lookup per run of equal symbols.
//!
//! The lake keeps each symbol's rows together: a folder per symbol, and files sorted by
//! symbol where symbols share a bucket folder or a merged file. So a batch read from it is
//! one symbol, or a few long runs. DataFusion's hash aggregation still hashes and probes
//! every row's string, which was a quarter of `SELECT symbol, sum(…) … GROUP BY symbol`.
//! The physical rule [`GroupBySymbolRuns`] swaps the stage that reads rows of such a query
//! for [`SymbolRunsExec`], which finds where the symbol changes, looks each run's symbol up
//! once, and hands the accumulators the same group indices DataFusion would. Rows that
//! are not in runs (unflushed rows arrive interleaved) cost one lookup each.
//!
//! Only that stage changes and it emits the same columns: as a partial stage the symbol and
//! each aggregate's state, which DataFusion's final stage merges as before; as the only
//! stage (one input partition, or inputs already partitioned by symbol) the results.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringViewArray};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::HashMap;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::ReplaceChildrenOptions;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::exact_sum::run_len;

/// Replaces `AggregateExec(gby=[symbol])` over rows (a partial or single stage) with
/// [`SymbolRunsExec`] where every
/// aggregate can take group indices (sums, counts, min, max; not ordered or distinct ones).
#[derive(Debug, Default)]
pub(crate) struct GroupBySymbolRuns;

impl PhysicalOptimizerRule for GroupBySymbolRuns {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            if !by_symbol_runs(aggregate)? {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(
                Arc::new(SymbolRunsExec::new(aggregate.clone())) as Arc<dyn ExecutionPlan>,
            ))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "group_by_symbol_runs"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `aggregate` is a partial stage this module can run.
fn by_symbol_runs(aggregate: &AggregateExec) -> Result<bool> {
    let group_by = aggregate.group_expr();
    let [(key, _)] = group_by.expr() else {
        return Ok(false);
    };
    let is_symbol = key
        .downcast_ref::<Column>()
        .is_some_and(|c| c.name() == "symbol");
    let key_type = key.data_type(&aggregate.input_schema())?;
    let over_rows = matches!(
        aggregate.mode(),
        AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
    );
    Ok(over_rows
        && !group_by.has_grouping_set()
        && is_symbol
        && key_type == DataType::Utf8View
        && aggregate.limit_options().is_none()
        && aggregate.dynamic_expressions_produced().is_empty()
        && aggregate.aggr_expr().iter().all(|a| {
            a.groups_accumulator_supported() && a.order_bys().is_empty() && !a.is_distinct()
        }))
}

/// The stage of an aggregate grouped by `symbol` that reads rows, looking up each run of
/// equal symbols once. Output: the same schema and partitioning as the `AggregateExec` it
/// replaces.
#[derive(Debug)]
pub(crate) struct SymbolRunsExec {
    aggregate: AggregateExec,
    metrics: ExecutionPlanMetricsSet,
}

impl SymbolRunsExec {
    fn new(aggregate: AggregateExec) -> Self {
        Self {
            aggregate,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for SymbolRunsExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SymbolRunsExec: mode={:?}, gby=[symbol], aggr=[",
            self.aggregate.mode()
        )?;
        if t != DisplayFormatType::TreeRender {
            let names: Vec<&str> = self
                .aggregate
                .aggr_expr()
                .iter()
                .map(|a| a.name())
                .collect();
            write!(f, "{}", names.join(", "))?;
        }
        write!(f, "]")
    }
}

impl ExecutionPlan for SymbolRunsExec {
    fn name(&self) -> &'static str {
        "SymbolRunsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let replaced = Arc::new(self.aggregate.clone()).replace_children(children, options)?;
        match replaced.downcast_ref::<AggregateExec>() {
            Some(aggregate) if by_symbol_runs(aggregate)? => {
                Ok(Arc::new(Self::new(aggregate.clone())))
            }
            _ => Ok(replaced),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::execution_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut input = self.aggregate.input().execute(partition, context)?;
        let schema = self.aggregate.schema();
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let mut groups = Groups::new(&self.aggregate)?;
        let output = Arc::clone(&schema);
        let stream = futures::stream::once(async move {
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let _timer = metrics.elapsed_compute().timer();
                groups.update(&batch)?;
            }
            let _timer = metrics.elapsed_compute().timer();
            let batch = groups.emit(&output)?;
            metrics.record_output(batch.num_rows());
            Ok(batch)
        })
        .filter(|b: &Result<RecordBatch>| {
            futures::future::ready(!matches!(b, Ok(b) if b.num_rows() == 0))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The groups of one partition: their symbols, and each aggregate's accumulator.
struct Groups {
    key: Arc<dyn PhysicalExpr>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Symbol of each group, by group index (`None` for a null symbol).
    symbols: Vec<Option<Box<str>>>,
    index: HashMap<Box<str>, usize>,
    null_group: Option<usize>,
    /// Reused for each batch's group indices.
    indices: Vec<usize>,
    /// Emit each aggregate's state for a final stage, or its result.
    partial: bool,
}

impl Groups {
    fn new(aggregate: &AggregateExec) -> Result<Self> {
        let aggregates = aggregate.aggr_expr();
        Ok(Self {
            key: Arc::clone(&aggregate.group_expr().expr()[0].0),
            arguments: aggregates.iter().map(|a| a.expressions()).collect(),
            filters: aggregate.filter_expr().to_vec(),
            accumulators: aggregates
                .iter()
                .map(|a| a.create_groups_accumulator())
                .collect::<Result<_>>()?,
            symbols: Vec::new(),
            index: HashMap::default(),
            null_group: None,
            indices: Vec::new(),
            partial: *aggregate.mode() == AggregateMode::Partial,
        })
    }

    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        let keys = self.key.evaluate(batch)?.into_array(rows)?;
        let Some(keys) = keys.as_string_view_opt() else {
            return Err(DataFusionError::Internal(format!(
                "SymbolRunsExec: symbol is {}, not Utf8View",
                keys.data_type()
            )));
        };
        let mut indices = std::mem::take(&mut self.indices);
        indices.clear();
        let mut start = 0;
        while start < rows {
            let end = run_end(keys, start);
            let group = self.group_of(keys, start);
            indices.resize(end, group);
            start = end;
        }
        let groups = self.symbols.len();
        for ((accumulator, arguments), filter) in self
            .accumulators
            .iter_mut()
            .zip(&self.arguments)
            .zip(&self.filters)
        {
            let values = arguments
                .iter()
                .map(|e| e.evaluate(batch)?.into_array(rows))
                .collect::<Result<Vec<ArrayRef>>>()?;
            let filter = filter
                .as_ref()
                .map(|e| e.evaluate(batch)?.into_array(rows))
                .transpose()?;
            let filter: Option<&BooleanArray> = filter.as_ref().map(|f| f.as_boolean());
            accumulator.update_batch(&values, &indices, filter, groups)?;
        }
        self.indices = indices;
        Ok(())
    }

    /// The group of row `row`'s symbol, made if new.
    fn group_of(&mut self, keys: &StringViewArray, row: usize) -> usize {
        let next = self.symbols.len();
        if keys.is_null(row) {
            return *self.null_group.get_or_insert_with(|| {
                self.symbols.push(None);
                next
            });
        }
        let symbol = keys.value(row);
        if let Some(&group) = self.index.get(symbol) {
            return group;
        }
        self.index.insert(symbol.into(), next);
        self.symbols.push(Some(symbol.into()));
        next
    }

    /// Every group's symbol and states (or results), in the replaced stage's schema.
    fn emit(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let symbols: StringViewArray = self.symbols.iter().map(Option::as_deref).collect();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(symbols)];
        for accumulator in &mut self.accumulators {
            if self.partial {
                columns.extend(accumulator.state(EmitTo::All)?);
            } else {
                columns.push(accumulator.evaluate(EmitTo::All)?);
            }
        }
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }
}

/// The end (exclusive) of the run of rows equal to row `start`.
fn run_end(keys: &StringViewArray, start: usize) -> usize {
    let views = keys.views();
    let first = views[start];
    let mut end = start + 1;
    if keys.null_count() == 0 {
        // Equal views are equal strings (same bytes inline, or the same place in a
        // buffer); unequal views of equal length may still hold equal strings.
        end = start + run_len(&views[start..], first);
        while end < views.len()
            && (views[end] == first
                || (views[end] as u32 == first as u32 && keys.value(end) == keys.value(start)))
        {
            end += 1;
        }
    } else {
        let null = keys.is_null(start);
        while end < views.len()
            && keys.is_null(end) == null
            && (null || keys.value(end) == keys.value(start))
        {
            end += 1;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use arrow::array::{Decimal128Array, Int64Array};
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::exact_sum::ExactDecimalSums;

    /// `t(symbol, price, n)` over three partitions of several batches each: long runs of one
    /// symbol, then interleaved rows, null symbols, and symbols too long to sit inline in
    /// a string view.
    fn table(partitions: usize) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8View, true),
            Field::new("price", DataType::Decimal128(18, 9), true),
            Field::new("n", DataType::Int64, true),
        ]));
        let names = ["AAPL", "A-SYMBOL-LONGER-THAN-TWELVE", "NVDA", "BTC-USD"];
        let batch = |rows: Vec<(Option<&str>, Option<i128>, Option<i64>)>| {
            let symbols: StringViewArray = rows.iter().map(|r| r.0).collect();
            let prices: Decimal128Array = rows.iter().map(|r| r.1).collect();
            let counts: Int64Array = rows.iter().map(|r| r.2).collect();
            let prices = prices.with_precision_and_scale(18, 9).unwrap();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(symbols), Arc::new(prices), Arc::new(counts)],
            )
            .unwrap()
        };
        let mut parts = Vec::new();
        for p in 0..3usize {
            let mut batches = Vec::new();
            for b in 0..4usize {
                let rows = (0..500usize)
                    .map(|i| {
                        let k = p * 7 + b * 3 + i;
                        let symbol = match b {
                            // Runs, crossing batch ends.
                            0 | 1 => Some(names[(p + b + i / 300) % names.len()]),
                            // Interleaved, with nulls.
                            2 => (k % 9 != 0).then(|| names[k % names.len()]),
                            _ => Some(names[(k / 7) % names.len()]),
                        };
                        let price =
                            (k % 11 != 0).then_some((k as i128 * 7_919) % 1_000_000_000_000);
                        (symbol, price, (k % 13 != 0).then_some(k as i64 % 97))
                    })
                    .collect();
                batches.push(batch(rows));
            }
            parts.push(batches);
        }
        if partitions == 1 {
            parts = vec![parts.concat()];
        }
        Arc::new(MemTable::try_new(schema, parts).unwrap())
    }

    async fn run(sql: &str, by_runs: bool) -> (String, String) {
        run_on(sql, by_runs, 3).await
    }

    async fn run_on(sql: &str, by_runs: bool, partitions: usize) -> (String, String) {
        let config = datafusion::prelude::SessionConfig::new().with_target_partitions(partitions);
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if by_runs {
            state = state.with_physical_optimizer_rule(Arc::new(GroupBySymbolRuns));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.add_optimizer_rule(Arc::new(ExactDecimalSums));
        ctx.register_table("t", table(partitions)).unwrap();
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let plan = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        let batches = df.collect().await.unwrap();
        let rows = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        (rows, plan)
    }

    #[tokio::test]
    async fn grouping_by_symbol_runs_gives_what_hash_grouping_gives() {
        let queries = [
            "SELECT symbol, sum(price), count(*), count(price), min(price), max(n), avg(n) FROM t GROUP BY symbol ORDER BY symbol NULLS FIRST",
            "SELECT symbol, sum(price * n) FILTER (WHERE n > 40), count(*) FILTER (WHERE price IS NULL) FROM t GROUP BY symbol ORDER BY symbol NULLS FIRST",
            "SELECT symbol, sum(price) FROM t WHERE n < 0 GROUP BY symbol ORDER BY symbol",
            "SELECT count(*) FROM (SELECT symbol FROM t GROUP BY symbol)",
            // DataFusion groups by (symbol, n) first, then by symbol over those groups.
            "SELECT symbol, count(DISTINCT n) FROM t GROUP BY symbol ORDER BY 1, 2",
        ];
        for partitions in [3, 1] {
            for sql in queries {
                let (expected, plain) = run_on(sql, false, partitions).await;
                let (got, plan) = run_on(sql, true, partitions).await;
                assert!(!plain.contains("SymbolRunsExec"), "{plain}");
                assert!(plan.contains("SymbolRunsExec"), "{sql}: {plan}");
                let stage = if partitions == 1 { "Single" } else { "Partial" };
                assert!(plan.contains(&format!("mode={stage}")), "{plan}");
                assert_eq!(got, expected, "{sql}");
            }
        }
    }

    #[tokio::test]
    async fn other_aggregates_keep_hash_grouping() {
        for sql in [
            // Order-sensitive, or not grouped by symbol alone.
            "SELECT symbol, first_value(price ORDER BY n) FROM t GROUP BY symbol ORDER BY 1, 2",
            "SELECT symbol, n, count(*) FROM t GROUP BY symbol, n ORDER BY 1, 2, 3",
            "SELECT n, count(*) FROM t GROUP BY n ORDER BY 1, 2",
        ] {
            let (expected, _) = run(sql, false).await;
            let (got, plan) = run(sql, true).await;
            assert!(!plan.contains("SymbolRunsExec"), "{sql}: {plan}");
            assert_eq!(got, expected, "{sql}");
        }
    }

    #[test]
    fn runs_end_where_the_symbol_changes() {
        let long = "A-SYMBOL-LONGER-THAN-TWELVE";
        let keys: StringViewArray = [
            Some("NVDA"),
            Some("NVDA"),
            Some(long),
            Some(long),
            None,
            None,
            Some("AAPL"),
        ]
        .into_iter()
        .collect();
        let mut ends = Vec::new();
        let mut start = 0;
        while start < keys.len() {
            start = run_end(&keys, start);
            ends.push(start);
        }
        assert_eq!(ends, [2, 4, 6, 7]);

        // The same long string at two places in the buffer: different views, one run.
        let keys: StringViewArray = [long, long, "B"].into_iter().map(Some).collect();
        assert_ne!(keys.views()[0], keys.views()[1]);
        assert_eq!(run_end(&keys, 0), 2);
    }
}
