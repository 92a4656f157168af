//! The pipeline: configuration ([`config`]: raw TOML → validated [`Plan`]), and the running
//! topology ([`Pipeline`]): sources append to the durable log, one processor thread reads it
//! in order, and a flusher thread writes the lake, then the checkpoint, then the consumer
//! offset, in that order, which is what makes a restart lose nothing and double nothing.
//! Sinks other than the lake follow it on positions of their own ([`sinks`](SinkStatus)).
//!
//! It is not the HTTP layer (`tickflow-api`) or the SQL engine (`tickflow-query`); it hands
//! them ingest, status and [`QueryInputs`].

pub mod checkpoint;
pub mod config;
mod error;
pub mod feed_watch;
pub mod health;
pub mod jobs;
mod lake_location;
mod live;
mod log_store;
pub mod members;
mod notifiers;
mod pipeline;
mod runtime;
pub mod schedule;
mod sinks;
mod sources;

pub use config::{HealthPlan, PgwireAuth, Plan};
pub use error::{ConfigError, Error, Problem, Result};
pub use lake_location::open_recorded as open_lake;
pub use live::{LiveView, QueryInputs, offline_inputs};
pub use pipeline::Pipeline;
pub use runtime::{DamagedPart, LakeRetrying, LogRetrying, PartitionsStatus, Status};
pub use sinks::SinkStatus;
pub use sources::SourceStatus;
pub use tickflow_sources::gaps::Gap;
