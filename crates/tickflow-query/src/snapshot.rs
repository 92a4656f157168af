use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::object_store;
use datafusion::prelude::{SessionConfig, SessionContext};
use tickflow_lake::{RecordBatch, Table};

use crate::exact_sum::ExactDecimalSums;
use crate::lake_table::{LakeTable, NarrowedStatistics};
use crate::live_table::{LiveTable, Shared, Tables};
use crate::mapped::MappedFiles;
use crate::narrow::NarrowSummedDecimals;
use crate::symbol_runs::GroupBySymbolRuns;
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

/// Parquet footers and page indexes kept between queries. A lake of thousands of files
/// needs tens of megabytes; past the limit the least recently used are read again.
const METADATA_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// Runs SQL over snapshots of the lake. Published lake files never change (compaction
/// writes new ones), so each file's footer and statistics are read once and kept for every
/// later query: a long-running process keeps one engine.
#[derive(Clone, Debug)]
pub struct QueryEngine {
    runtime: Arc<RuntimeEnv>,
    config: SessionConfig,
    mapped: Arc<MappedFiles>,
    narrowed_statistics: Arc<NarrowedStatistics>,
    options: QueryOptions,
}

/// tickflow's own planning rules; each can be switched off (`[query] disable`) to compare
/// or to work around a fault. Answers are the same with or without any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// Decimal sums exact and fused with their products (`exact_sum.rs`).
    ExactSums,
    /// Sums read prices and sizes as stored, 64-bit (`narrow.rs`).
    NarrowSums,
    /// Grouping by symbol looks up runs of a symbol, not rows (`symbol_runs.rs`).
    SymbolRuns,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Self::ExactSums, Self::NarrowSums, Self::SymbolRuns];

    /// Its name in the config.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ExactSums => "exact_sums",
            Self::NarrowSums => "narrow_sums",
            Self::SymbolRuns => "symbol_runs",
        }
    }
}

/// Limits and switches for every query an engine runs.
#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    /// A query running longer is stopped with [`Error::Limit`].
    pub timeout: Option<std::time::Duration>,
    /// A query needing more memory for its joins, sorts and groups is stopped with
    /// [`Error::Limit`] (sorts spill to disk first where DataFusion can).
    pub memory_bytes: Option<usize>,
    /// Rules left out of planning.
    pub disabled: std::collections::BTreeSet<Rule>,
}

impl QueryEngine {
    /// An engine with empty caches. DataFusion's own settings may be tuned from the
    /// environment (`DATAFUSION_EXECUTION_BATCH_SIZE=65536` for
    /// `datafusion.execution.batch_size`, and so on).
    ///
    /// # Errors
    /// DataFusion's runtime cannot be set up, or a `DATAFUSION_*` variable has a bad value.
    pub fn new() -> Result<Self> {
        let config = SessionConfig::from_env()?;
        let caches = CacheManagerConfig::default().with_metadata_cache_limit(METADATA_CACHE_BYTES);
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .build_arc()?;
        let mapped = Arc::new(MappedFiles::default());
        runtime.register_object_store(
            ObjectStoreUrl::local_filesystem().as_ref(),
            Arc::clone(&mapped) as _,
        );
        let narrowed_statistics = Arc::new(NarrowedStatistics::default());
        Ok(Self {
            runtime,
            config,
            mapped,
            narrowed_statistics,
            options: QueryOptions::default(),
        })
    }

    /// Lets queries read `lake`'s files where they are: a lake on object storage has its
    /// store registered under its URL (a local lake needs nothing).
    ///
    /// # Errors
    /// The lake's URL is not one DataFusion takes.
    pub fn register_lake(&self, lake: &tickflow_lake::Lake) -> Result<()> {
        if let Some((url, store)) = lake.object_store() {
            let url = ObjectStoreUrl::parse(url)?;
            self.runtime
                .register_object_store(url.as_ref(), Arc::new(crate::mapped::ListedParts(store)));
        }
        Ok(())
    }

    /// This engine with `options` for every later query.
    pub fn with_options(mut self, options: QueryOptions) -> Self {
        self.options = options;
        self
    }

    /// The runtime of one query: the engine's caches and stores, and a memory pool of its
    /// own when there is a limit.
    fn query_runtime(&self) -> Result<Arc<RuntimeEnv>> {
        match self.options.memory_bytes {
            None => Ok(Arc::clone(&self.runtime)),
            Some(bytes) => Ok(RuntimeEnvBuilder::from_runtime_env(&self.runtime)
                .with_memory_limit(bytes, 1.0)
                .build_arc()?),
        }
    }

    /// Runs `work` within the time limit, and words a memory refusal.
    async fn limited<T>(&self, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let outcome = match self.options.timeout {
            None => work.await,
            Some(limit) => {
                let started = std::time::Instant::now();
                match tokio::time::timeout(limit, work).await {
                    // A query that finished in the poll where its time ran out is still
                    // over it: the limit means the same whether or not the work yielded.
                    Ok(outcome) if started.elapsed() <= limit => outcome,
                    _ => return Err(Error::Limit(crate::deadline::over_time(limit))),
                }
            }
        };
        outcome.map_err(|e| match e {
            Error::Execution(m) if m.contains("Resources exhausted") => Error::Limit(format!(
                "the query needed more memory than query.memory_mb = {} allows: narrow it, or raise the limit ({m})",
                self.options.memory_bytes.unwrap_or(0) / (1024 * 1024)
            )),
            other => other,
        })
    }

    /// How many files have their statistics (as SQL sees the columns, and as scans for sums
    /// read them) and their footer cached.
    pub fn cached_files(&self) -> CachedFiles {
        let caches = &self.runtime.cache_manager;
        CachedFiles {
            statistics: caches.get_file_statistic_cache().map_or(0, |c| c.len()),
            narrowed_statistics: self.narrowed_statistics.len(),
            footers: caches.get_file_metadata_cache().len(),
        }
    }

    /// What serves `file://` paths to queries (for diagnostics and tests).
    pub fn local_store(&self) -> String {
        self.runtime
            .object_store(ObjectStoreUrl::local_filesystem())
            .map_or_else(|e| format!("none: {e}"), |store| store.to_string())
    }

    /// Registers every table of `snapshot` and runs one SQL statement (read-only).
    ///
    /// # Errors
    /// [`Error::Sql`] for a statement that does not parse or plan; [`Error::Execution`]
    /// otherwise.
    pub async fn run(&self, snapshot: Snapshot, sql: &str) -> Result<QueryResult> {
        self.mapped.keep_only(&lake_locations(&snapshot)?);
        let ctx = self.context(self.config.clone(), self.query_runtime()?);
        for table in Table::ALL {
            self.register(&ctx, &snapshot, table)?;
        }
        // Planned only for statements that may read it: the join costs the others nothing.
        if sql.to_ascii_lowercase().contains("alerts") {
            register_alerts_view(&ctx).await?;
        }
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        self.limited(async {
            let df = ctx.sql_with_options(sql, read_only).await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await.map_err(Error::from)?;
            Ok(QueryResult { schema, batches })
        })
        .await
        .map_err(|e| name_damaged_file(&snapshot.files, e))
    }

    /// A session with tickflow's rules, on this engine's caches.
    fn context(&self, config: SessionConfig, runtime: Arc<RuntimeEnv>) -> SessionContext {
        self.context_with(config, runtime, None)
    }

    /// A session with tickflow's rules whose every plan stops after `deadline`.
    fn context_with(
        &self,
        config: SessionConfig,
        runtime: Arc<RuntimeEnv>,
        deadline: Option<std::time::Duration>,
    ) -> SessionContext {
        let on = |rule| !self.options.disabled.contains(&rule);
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features();
        if on(Rule::SymbolRuns) {
            state = state.with_physical_optimizer_rule(Arc::new(GroupBySymbolRuns));
        }
        if let Some(limit) = deadline {
            state =
                state.with_physical_optimizer_rule(Arc::new(crate::deadline::Deadline { limit }));
        }
        let ctx = SessionContext::new_with_state(state.build());
        if on(Rule::ExactSums) {
            ctx.add_optimizer_rule(Arc::new(ExactDecimalSums));
        }
        if on(Rule::NarrowSums) {
            ctx.add_optimizer_rule(Arc::new(NarrowSummedDecimals));
        }
        crate::market::register(&ctx);
        ctx
    }

    /// A session that lives as long as its caller keeps it (the Postgres-wire endpoint):
    /// every table is read from `tables` anew each time a query scans it, so new rows show
    /// without a new session. It also has `information_schema` and the `pg_catalog` tables
    /// and functions that psql and Grafana read.
    ///
    /// Each table is consistent on its own (each row once); two tables in one query are
    /// taken a moment apart.
    ///
    /// # Errors
    /// DataFusion cannot register a table or plan the `alerts` view.
    pub async fn live_session(&self, tables: Arc<dyn Tables>) -> Result<SessionContext> {
        // One session for every connection: the memory limit holds for all its queries at
        // once. The time limit goes into each plan: the endpoint streams the rows itself.
        let ctx = self.context_with(
            self.config.clone().with_information_schema(true),
            self.query_runtime()?,
            self.options.timeout,
        );
        let shared = Arc::new(Shared {
            tables,
            statistics: self.runtime.cache_manager.get_file_statistic_cache(),
            narrowed_statistics: Arc::clone(&self.narrowed_statistics),
            mapped: Arc::clone(&self.mapped),
            listed: std::sync::Mutex::default(),
        });
        for table in Table::ALL {
            let provider = Arc::new(LiveTable {
                table,
                schema: view_schema(&table.schema()),
                shared: Arc::clone(&shared),
            });
            ctx.register_table(table.name(), provider)?;
        }
        register_alerts_view(&ctx).await?;
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
            &ctx,
            "datafusion",
            datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
        )
        .map_err(|e| Error::from(*e))?;
        ctx.register_udf(crate::pgwire::current_setting());
        Ok(ctx)
    }

    /// Registers `table` as the union of its files and its in-memory rows.
    fn register(&self, ctx: &SessionContext, snapshot: &Snapshot, table: Table) -> Result<()> {
        let schema = view_schema(&table.schema());
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
            .map(|(_, b)| Ok(tickflow_lake::cast_to(b, &schema)?))
            .collect::<Result<_>>()?;
        let no_live_rows = live.is_empty();
        let mem = Arc::new(MemTable::try_new(Arc::clone(&schema), vec![live])?);
        if files.is_empty() {
            ctx.register_table(table.name(), mem)?;
            return Ok(());
        }
        let lake = Arc::new(LakeTable {
            schema: Arc::clone(&schema),
            stored: table.schema(),
            files: files.into_iter().cloned().collect(),
            statistics: self.runtime.cache_manager.get_file_statistic_cache(),
            narrowed_statistics: Some(Arc::clone(&self.narrowed_statistics)),
        });
        if no_live_rows {
            ctx.register_table(table.name(), lake)?;
            return Ok(());
        }
        let parquet = ctx.read_table(lake)?;
        let union = parquet.union(ctx.read_table(mem)?)?;
        ctx.register_table(table.name(), union.into_view())?;
        Ok(())
    }
}

/// The stored `alerts` table under a name of its own while the view over it is planned.
const STORED_ALERTS: &str = "tickflow_alerts_as_stored";

/// `alerts` as SQL shows it: `delivered_to` is what the alert was handed to when it fired
/// (`log`, the processor's line), then every notifier that delivered it, from
/// `alert_deliveries`, in name order. A row's stored value cannot say this: the lake writes an
/// alert before any channel has answered.
const ALERTS_VIEW: &str = "SELECT a.alert_id, a.rule, a.symbol, a.ts, a.value, a.threshold, a.message, a.severity, \
    CASE WHEN d.channels IS NULL THEN a.delivered_to ELSE concat(a.delivered_to, ',', d.channels) END AS delivered_to, \
    coalesce(a.kind, 'fired') AS kind \
    FROM tickflow_alerts_as_stored a LEFT JOIN ( \
        SELECT alert_id, string_agg(notifier, ',' ORDER BY notifier) AS channels \
        FROM (SELECT DISTINCT alert_id, notifier FROM alert_deliveries WHERE status = 'delivered') \
        GROUP BY alert_id \
    ) d ON a.alert_id = d.alert_id";

async fn register_alerts_view(ctx: &SessionContext) -> Result<()> {
    let stored = ctx.table(Table::Alerts.name()).await?;
    ctx.deregister_table(Table::Alerts.name())?;
    ctx.register_table(STORED_ALERTS, stored.into_view())?;
    let view = ctx.sql(ALERTS_VIEW).await?;
    ctx.register_table(Table::Alerts.name(), view.into_view())?;
    ctx.deregister_table(STORED_ALERTS)?;
    Ok(())
}

/// Words the error of a query that met a damaged part: the part whose sum did not match
/// (`mapped.rs`), or else, on a Parquet error, the first local file of the query whose
/// footer cannot be read. DataFusion's message says what is wrong but not with which file,
/// and the operator needs the file to move it aside or restore it.
fn name_damaged_file(files: &[(Table, Vec<PathBuf>)], e: Error) -> Error {
    let Error::Execution(text) = &e else {
        return e;
    };
    let found = tickflow_core::damage::found();
    if let Some((path, reason)) = found
        .iter()
        .find(|(path, _)| text.contains(&path.display().to_string()))
    {
        return Error::Execution(format!(
            "{} is damaged ({reason}); move it aside or restore it from a copy (`tickflow verify` checks every part)",
            path.display()
        ));
    }
    if !text.contains("Parquet error") {
        return e;
    }
    for path in files.iter().flat_map(|(_, paths)| paths) {
        let Ok(file) = std::fs::File::open(path) else {
            continue;
        };
        if let Err(damage) = datafusion::parquet::file::reader::SerializedFileReader::new(file) {
            return Error::Execution(format!(
                "{} is damaged ({damage}); move it aside or restore it from a copy",
                path.display()
            ));
        }
    }
    e
}

/// Every lake file of `snapshot`, named as the scans will name it.
fn lake_locations(snapshot: &Snapshot) -> Result<HashSet<object_store::path::Path>> {
    snapshot
        .files
        .iter()
        .flat_map(|(_, files)| files)
        .map(|path| {
            Ok(ListingTableUrl::parse(path.to_string_lossy())?
                .prefix()
                .clone())
        })
        .collect()
}

/// Counts of files in a [`QueryEngine`]'s caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedFiles {
    pub statistics: usize,
    pub narrowed_statistics: usize,
    pub footers: usize,
}

/// Runs one statement on a fresh [`QueryEngine`], for a process that queries once.
///
/// # Errors
/// As [`QueryEngine::run`].
pub async fn run_sql(snapshot: Snapshot, sql: &str) -> Result<QueryResult> {
    QueryEngine::new()?.run(snapshot, sql).await
}

/// `schema` as SQL sees it. Every text column is Utf8View, DataFusion's fastest string
/// layout: a value of up to 12 bytes (every symbol, source and feed here) sits inline in
/// its view, so grouping and comparing by it touches no string buffer. Parquet still stores
/// plain strings; the reader converts as it decodes. About 7–12% off queries grouped by
/// symbol. Prices and sizes, stored as 64-bit decimals, are DECIMAL128, the decimal type
/// every DataFusion function takes (sums read them as stored: [`NarrowSummedDecimals`]).
fn view_schema(schema: &arrow::datatypes::Schema) -> SchemaRef {
    use arrow::datatypes::{DataType, Field};
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            DataType::Decimal64(p, s) => f
                .as_ref()
                .clone()
                .with_data_type(DataType::Decimal128(*p, *s)),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new(fields))
}
