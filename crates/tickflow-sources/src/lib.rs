//! Event sources. For now the deterministic market [`simulator`]; venue adapters (Alpaca,
//! Polygon, generic REST) join here as folders with `messages.rs` and `parse.rs`.
//!
//! Sources produce [`tickflow_model::Event`]s and know nothing about the log or the lake; the
//! pipeline drives them and appends what they emit.

pub mod pacing;
pub mod rng;
pub mod simulator;

pub use simulator::{Anomaly, SimSymbol, Simulator, SimulatorConfig};
