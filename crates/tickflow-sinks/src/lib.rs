//! Sinks that need no heavy client: today CSV files ([`csv::CsvSink`]), one per table and
//! UTC day, appended exactly once across crashes.
//!
//! Each sink implements `tickflow_core::sink::Sink`; the pipeline runs it on its own
//! position behind the lake. Sinks with a heavy client (PostgreSQL, Kafka, AWS) live in the
//! crate of that client. docs/CONNECTORS.md has the recipe for a new one.

pub mod csv;
mod error;

pub use error::{Error, Result};
