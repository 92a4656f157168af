//! tickflow's domain model: exact fixed-point prices and sizes, normalized symbols, UTC
//! nanosecond timestamps, and the rows every table holds (trades, quotes, bars, daily metrics,
//! alerts, DLQ records).
//!
//! This crate does no I/O and has no async; serialization to bytes, JSON, Arrow or Postgres
//! lives in the crates that own those formats. The types to start from are [`Price`],
//! [`Event`] and [`Bar`].

mod alert;
mod bar;
mod daily;
mod date;
mod digits;
mod dlq;
mod error;
mod fixed;
mod nanos;
mod rows;
mod symbol;
mod tick;
mod trade_id;

pub use alert::{Alert, AlertDelivery, AlertKind, DeliveryStatus, Severity};
pub use bar::{Bar, BarInterval};
pub use daily::DailyMetric;
pub use date::{Date, days_from_civil};
pub use digits::short_u64;
pub use dlq::{DlqRecord, RejectReason};
pub use error::{Error, Result};
pub use fixed::{FIXED_SCALE, MAX_PRECISION, Price, Qty, Volume};
pub use nanos::UnixNanos;
pub use rows::Rows;
pub use symbol::Symbol;
pub use tick::{Event, FedBar, Quote, Trade};
pub use trade_id::TradeId;
