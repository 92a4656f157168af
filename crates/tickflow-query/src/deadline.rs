//! A time limit that travels with the plan, for sessions whose queries are run by someone
//! else: the Postgres-wire endpoint hands each statement to `datafusion-postgres`, which
//! streams its rows to the client, so no caller can wrap the query in a timeout.
//!
//! [`Deadline`] puts [`DeadlineExec`] on top of every physical plan. Each of its output
//! streams fails with the limit's message once the limit has passed since the stream
//! started, even while its input is busy: a timer races the input, and DataFusion's
//! operators yield often enough for the race to be noticed. Dropping the failed stream
//! stops the query's work.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

/// Wraps the plan of every query in [`DeadlineExec`] with `limit`.
#[derive(Debug)]
pub(crate) struct Deadline {
    pub(crate) limit: Duration,
}

impl PhysicalOptimizerRule for Deadline {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if plan.downcast_ref::<DeadlineExec>().is_some() {
            return Ok(plan);
        }
        Ok(Arc::new(DeadlineExec {
            input: plan,
            limit: self.limit,
        }))
    }

    fn name(&self) -> &str {
        "tickflow_deadline"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Its input's rows, until `limit` has passed.
#[derive(Debug)]
pub(crate) struct DeadlineExec {
    input: Arc<dyn ExecutionPlan>,
    limit: Duration,
}

/// What a query past its limit fails with; the HTTP API words its own limit the same way.
pub(crate) fn over_time(limit: Duration) -> String {
    format!(
        "the query ran longer than {} s (query.timeout_secs): narrow it with WHERE symbol = … or a time range, or raise the limit",
        limit.as_secs_f64()
    )
}

impl DisplayAs for DeadlineExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DeadlineExec: limit={:?}", self.limit)
    }
}

impl ExecutionPlan for DeadlineExec {
    fn name(&self) -> &'static str {
        "DeadlineExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(Self {
                input,
                limit: self.limit,
            })),
            _ => Err(DataFusionError::Internal(
                "DeadlineExec takes one input".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let limit = self.limit;
        let expired = futures::stream::once(async move {
            tokio::time::sleep(limit).await;
            Err(DataFusionError::Execution(over_time(limit)))
        });
        // The input's end ends the race; the wait's end fails it and then ends it too.
        let rows = input.map(Some).chain(futures::stream::once(async { None }));
        let started = std::time::Instant::now();
        let raced = futures::stream::select(rows, expired.map(Some))
            .take_while(|item| futures::future::ready(item.is_some()))
            .filter_map(futures::future::ready)
            // Rows that come after the limit, before the wait has noticed, fail too.
            .map(move |item| match item {
                Ok(_) if started.elapsed() > limit => {
                    Err(DataFusionError::Execution(over_time(limit)))
                }
                other => other,
            })
            .scan(false, |failed, item| {
                let done = *failed;
                *failed = item.is_err();
                futures::future::ready((!done).then_some(item))
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, raced)))
    }
}
