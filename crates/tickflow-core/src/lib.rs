//! Contracts shared by every tickflow component: who may connect ([`auth`]), the binary codec that events take in the
//! durable log ([`codec`]), the ingest JSON format that HTTP, files and brokers speak
//! ([`ingest`]), metric names and counters ([`metrics`]), a stable fast [`hash`],
//! cooperative [`Shutdown`], stored files found [`damage`]d, the connector contracts ([`source`], [`sink`], [`notify`]) and the contract tests every
//! connector runs ([`contract`]).
//!
//! It holds no I/O and no runtime: sources, sinks and the pipeline build on these pieces.

pub mod auth;
pub mod codec;
pub mod contract;
pub mod damage;
mod error;
pub mod hash;
pub mod ingest;
pub mod mapping;
pub mod metrics;
pub mod notify;
pub mod retry;
pub mod rows_json;
mod shutdown;
pub mod sink;
pub mod source;

pub use error::{Error, Result};
pub use shutdown::Shutdown;
