//! Summed prices and sizes read as the lake stores them: 64-bit decimals.
//!
//! SQL shows `DECIMAL(18, 9)` columns as DECIMAL128, the type DataFusion's functions take,
//! so a scan widens every stored 64-bit value as it decodes it: for `sum(price * size)`
//! over millions of rows, a pass that writes twice the bytes it read, and then a sum that
//! reads them again. A column that a query only sums needs none of that: [`ExactSum`]
//! takes 64-bit decimals and multiplies them in registers. The rule here finds such
//! columns under an aggregate and asks the lake's scan for them as stored. Anything else
//! that reads the column (a filter, a grouping, `max`, a `FILTER` clause) leaves the plan
//! as it was.
//!
//! [`ExactSum`]: crate::exact_sum::ExactSum

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::{DECIMAL64_MAX_PRECISION, DataType};
use datafusion::catalog::default_table_source::{provider_as_source, source_as_provider};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, DFSchema};
use datafusion::error::Result;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, Expr, Filter, LogicalPlan, Projection, SubqueryAlias, TableScanBuilder, Union, cast,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use crate::exact_sum::ExactSum;
use crate::lake_table::LakeTable;

/// Narrows the columns an aggregate only passes to `exact_sum` (runs after
/// [`ExactDecimalSums`](crate::exact_sum::ExactDecimalSums) has made them so).
#[derive(Debug, Default)]
pub(crate) struct NarrowSummedDecimals;

impl OptimizerRule for NarrowSummedDecimals {
    fn name(&self) -> &str {
        "tickflow_narrow_summed_decimals"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = plan else {
            return Ok(Transformed::no(plan));
        };
        let columns = summed_only(&aggregate);
        if columns.is_empty() {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        let Some(input) = narrow(&aggregate.input, &columns) else {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        };
        let narrowed = Aggregate::try_new(
            Arc::new(input),
            aggregate.group_expr.clone(),
            aggregate.aggr_expr.clone(),
        );
        Ok(match narrowed {
            Ok(narrowed) => Transformed::yes(LogicalPlan::Aggregate(narrowed)),
            Err(_) => Transformed::no(LogicalPlan::Aggregate(aggregate)),
        })
    }
}

/// Names of the input's DECIMAL128 columns of at most 18 digits that `aggregate` reads only
/// as whole arguments of `exact_sum`s whose every argument is such a column. Columns are
/// compared by name, and a name the input has twice is never narrowed.
fn summed_only(aggregate: &Aggregate) -> HashSet<String> {
    let schema = aggregate.input.schema();
    let mut candidates: HashSet<&str> = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|name| narrowable(schema, name))
        .collect();
    let mut sums: Vec<Vec<&str>> = Vec::new();
    let mut other_uses: HashSet<&str> = HashSet::new();
    let names = |expr| Expr::column_refs(expr).into_iter().map(|c| c.name.as_str());
    for expr in &aggregate.group_expr {
        other_uses.extend(names(expr));
    }
    for expr in &aggregate.aggr_expr {
        match exact_sum_columns(expr) {
            Some(columns) => sums.push(columns),
            None => other_uses.extend(names(expr)),
        }
    }
    candidates.retain(|c| !other_uses.contains(c));
    // A sum keeps its arguments' types together: drop every argument of a sum that has
    // one argument staying wide, until no more drop.
    loop {
        let before = candidates.len();
        for columns in &sums {
            if !columns.iter().all(|c| candidates.contains(c)) {
                columns.iter().for_each(|c| {
                    candidates.remove(c);
                });
            }
        }
        if candidates.len() == before {
            break;
        }
    }
    candidates.into_iter().map(str::to_string).collect()
}

/// Whether `name` is a DECIMAL128 that 64 bits hold, named once in `schema`.
fn narrowable(schema: &DFSchema, name: &str) -> bool {
    let mut named = schema.fields().iter().filter(|f| f.name() == name);
    match (named.next(), named.next()) {
        (Some(field), None) => matches!(
            field.data_type(),
            DataType::Decimal128(p, _) if *p <= DECIMAL64_MAX_PRECISION
        ),
        _ => false,
    }
}

/// The columns `exact_sum(c1[, c2])` is given, if `expr` is one with only columns as
/// arguments and no `FILTER`.
fn exact_sum_columns(expr: &Expr) -> Option<Vec<&str>> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = unalias(expr) else {
        return None;
    };
    if !func.inner().is::<ExactSum>() || params.filter.is_some() {
        return None;
    }
    params
        .args
        .iter()
        .map(|arg| match arg {
            Expr::Column(c) => Some(c.name.as_str()),
            _ => None,
        })
        .collect()
}

fn unalias(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(alias) => unalias(&alias.expr),
        other => other,
    }
}

/// `plan` with the columns named `names` in their 64-bit decimal types, or `None` where
/// something on the way reads them or does not have them all (a plan that cannot be
/// rebuilt so is left as it was).
fn narrow(plan: &LogicalPlan, names: &HashSet<String>) -> Option<LogicalPlan> {
    let reads_them = |expr: &Expr| expr.column_refs().iter().any(|c| names.contains(&c.name));
    let has_them = names
        .iter()
        .all(|n| plan.schema().fields().iter().any(|f| f.name() == n));
    if !has_them {
        return None;
    }
    let narrowed = match plan {
        LogicalPlan::TableScan(scan) => {
            if scan.filters.iter().any(reads_them) {
                return None;
            }
            let provider = source_as_provider(&scan.source).ok()?;
            let Some(lake) = provider.downcast_ref::<LakeTable>() else {
                // Rows kept in memory (not yet flushed) are few: cast them.
                return narrow_by_cast(plan, names);
            };
            let scan = TableScanBuilder::new(
                scan.table_name.clone(),
                provider_as_source(Arc::new(lake.narrowed(names)?)),
            )
            .with_projection(scan.projection.clone())
            .with_filters(scan.filters.clone())
            .with_fetch(scan.fetch)
            .with_statistics_requests(scan.statistics_requests.clone())
            .build()
            .ok()?;
            LogicalPlan::TableScan(scan)
        }
        LogicalPlan::SubqueryAlias(alias) => {
            let input = narrow(&alias.input, names)?;
            LogicalPlan::SubqueryAlias(
                SubqueryAlias::try_new(Arc::new(input), alias.alias.clone()).ok()?,
            )
        }
        LogicalPlan::Union(union) => {
            let inputs = union
                .inputs
                .iter()
                .map(|input| narrow(input, names).map(Arc::new))
                .collect::<Option<Vec<_>>>()?;
            LogicalPlan::Union(Union::try_new(inputs).ok()?)
        }
        LogicalPlan::Filter(filter) => {
            if reads_them(&filter.predicate) {
                return None;
            }
            let input = narrow(&filter.input, names)?;
            LogicalPlan::Filter(Filter::try_new(filter.predicate.clone(), Arc::new(input)).ok()?)
        }
        LogicalPlan::Projection(projection) => {
            // Only where the columns pass through under their own names.
            let passes_through = projection.expr.iter().all(|e| match e {
                Expr::Column(_) => true,
                other => !reads_them(other) && !names.contains(&other.schema_name().to_string()),
            });
            if !passes_through {
                return None;
            }
            let input = narrow(&projection.input, names)?;
            LogicalPlan::Projection(
                Projection::try_new(projection.expr.clone(), Arc::new(input)).ok()?,
            )
        }
        _ => return None,
    };
    Some(narrowed)
}

/// `plan` under a projection that casts the columns named `names` to 64-bit decimals of the
/// same digits (a DECIMAL128 of at most 18 digits always fits).
fn narrow_by_cast(plan: &LogicalPlan, names: &HashSet<String>) -> Option<LogicalPlan> {
    let exprs = plan
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(Column::from((qualifier, field)));
            match field.data_type() {
                DataType::Decimal128(p, s) if names.contains(field.name()) => {
                    cast(column, DataType::Decimal64(*p, *s))
                        .alias_qualified(qualifier.cloned(), field.name())
                }
                _ => column,
            }
        })
        .collect();
    Projection::try_new(exprs, Arc::new(plan.clone()))
        .ok()
        .map(LogicalPlan::Projection)
}
