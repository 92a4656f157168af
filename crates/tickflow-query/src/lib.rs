//! SQL over the lake: each table is the union of its published Parquet files and the rows
//! still in memory, so a query sees a tick the moment processing has it.
//!
//! This is the only crate that links DataFusion; everything else hands it a [`Snapshot`]
//! (file lists and in-memory batches) and gets record batches back. [`render`] turns them
//! into the CLI's table, CSV or JSON output.

mod deadline;
mod error;
mod exact_sum;
mod format;
mod lake_format;
mod lake_table;
mod live_table;
mod mapped;
mod market;
mod narrow;
pub mod pgwire;
mod snapshot;
mod symbol_runs;

pub use error::{Error, Result};
pub use format::{Format, render, render_arrow};
pub use live_table::Tables;
pub use snapshot::{CachedFiles, QueryEngine, QueryOptions, QueryResult, Rule, Snapshot, run_sql};
pub use tickflow_lake::{RecordBatch, Table};
