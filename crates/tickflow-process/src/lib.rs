//! Pure, synchronous processing of market events: [`validate`] rejects bad ticks with a
//! reason, [`dedupe`] drops redeliveries by natural key, [`bars`] builds OHLCV bars from event
//! time with a lateness budget ([`days`] says where a symbol's day starts), [`origin`] decides between those and a feed's own bars,
//! [`daily`] turns final daily bars into metrics, and [`alerts`] evaluates threshold rules
//! (on their edges, with hysteresis, reminders, resolves and coalesced bursts), the spike
//! detector and [`rules`] written as SQL conditions with indicators.
//!
//! No I/O, no async, no clock: time comes in with the events and with the `now` the caller
//! passes, so the same input always gives the same output, which is what makes a replay
//! after a crash produce the same rows. The entry point is [`Processor`]; its whole state is
//! [`State`], serializable so the pipeline can checkpoint it with the log offset.

pub mod alerts;
pub mod bars;
pub mod daily;
pub mod days;
pub mod dedupe;
mod legacy;
pub mod origin;

mod processor;
pub mod rules;
pub mod validate;

pub use alerts::{Condition, ExprRule, Firing, Hysteresis, Rules, SpikeRule, ThresholdRule};
pub use days::Days;
pub use processor::{Output, Processor, ProcessorConfig, State};
pub use rules::{Expr, Watch};
