//! The lake: rows turned into Arrow and written as Parquet in a hive layout that DuckDB,
//! Spark, Trino and Athena read as they are:
//! `<root>/<table>/date=YYYY-MM-DD/symbol=SYM/part-<flush>-<n>.parquet`, or `bucket=NN`
//! instead of `symbol=SYM` when the lake is set to share folders among many symbols.
//!
//! Every file name carries the flush sequence that wrote it. The pipeline records the last
//! flush it completed in its checkpoint; files from a later flush are leftovers of a crash
//! before that checkpoint, and [`Lake::recover`] deletes them so the replay that follows
//! cannot double a row. Readers take only files up to the published flush. [`Lake::compact`]
//! merges small files into `part-<last>-c<first>.parquet`, which supersedes the files of
//! flushes `first..=last` in its folder.
//!
//! The same layout works on S3-compatible object storage ([`Lake::open_object`]), where a
//! file is named by its URL and written whole by one PUT. [`parquet_athena_ddl`] describes
//! the layout to Athena.
//!
//! This crate does not query; `tickflow-query` does, over [`Lake::files`] and [`Rows`] still
//! in memory. The main types are [`Lake`], [`Rows`] and [`Table`].

mod athena;
mod checksum;
mod compact;
mod convert;
mod error;
pub mod json_sink;
mod read;
mod store;
mod table;
mod writer;

pub use athena::parquet_athena_ddl;
pub use checksum::{Verdict, verify_file};
pub use compact::{CompactPolicy, CompactReport, seq_range_of};
pub use convert::{cast_to, to_batch};
pub use error::{Error, Result};
pub use read::{read_file, rows_from_batch};
pub use store::{OBJECT_REQUEST_TIMEOUT, ObjectLake};
pub use table::Table;
pub use tickflow_model::Rows;
pub use writer::{Lake, WriteReport, flush_seq_of, partition_folder, symbol_bucket};

pub use arrow::record_batch::RecordBatch;
