//! Event sources, each a `tickflow_core::source::Source`: the deterministic market
//! [`simulator`] and file [`replay`]. Venue adapters (Alpaca, Polygon, generic REST) join here
//! as folders with `messages.rs` and `parse.rs`.
//!
//! A source appends batches through its `SourceContext`, which acknowledges them once they
//! are durable; it knows nothing of processing or the lake.

pub mod alpaca;
pub mod backfill;
pub mod binance;
pub mod calendar;
pub mod coinbase;
pub mod databento;
mod error;
pub mod gaps;
pub mod history;
pub mod pacing;
pub mod polygon;
pub mod replay;
pub mod rest;
pub mod rest_poll;
pub mod rng;
pub mod simulator;
mod wire;
pub mod ws;

pub use error::Error;
pub use replay::ReplaySource;
pub use simulator::{Anomaly, SimSymbol, Simulator, SimulatorConfig, SimulatorSource};
