//! The simulator as a [`Source`]: history first (into an empty log only), then live ticks
//! paced to a rate.

use std::time::{Duration, Instant};

use tickflow_core::codec::Batch;
use tickflow_core::source::{Source, SourceContext, SourceError};
use tickflow_model::{Event, UnixNanos};

use super::{Simulator, SimulatorConfig};
use crate::pacing::Pacer;

/// The simulator's settings as a source.
#[derive(Clone, Debug)]
pub struct SimulatorSource {
    pub config: SimulatorConfig,
    /// Live events per second; 0 = as fast as possible.
    pub rate: u64,
    pub history_days: u32,
    pub history_step_nanos: i64,
    /// Whether to push history first: only into an empty log, since on a restart it is
    /// already there, and pushing it again would only fill the DLQ with late ticks.
    pub push_history: bool,
}

/// Appends `events`; false once the pipeline is stopping (an append refused then is no error).
fn append(ctx: &SourceContext, events: &[Event], batch: &mut Batch) -> Result<bool, SourceError> {
    batch.clear();
    for event in events {
        batch.push(event);
    }
    match ctx.append(batch) {
        Ok(_) => Ok(true),
        Err(_) if ctx.is_stopping() => Ok(false),
        Err(e) => Err(e),
    }
}

impl SimulatorSource {
    fn run_blocking(&self, ctx: &SourceContext) -> Result<(), SourceError> {
        let mut sim = Simulator::new(self.config.clone());
        let mut events = Vec::with_capacity(16_384);
        let mut batch = Batch::with_capacity(16_384);
        if self.push_history && self.history_days > 0 {
            let now = UnixNanos::now();
            let day = 86_400 * 1_000_000_000i64;
            let step = self.history_step_nanos;
            let mut from = (now.0 - i64::from(self.history_days) * day) / step * step;
            let started = Instant::now();
            let mut pushed = 0usize;
            while from < now.0 && !ctx.is_stopping() {
                let to = (from + day).min(now.0 - step);
                // Received now, as each day is generated: latency figures then show how long
                // history waited in the pipeline, not how long ago the push began.
                sim.history(
                    UnixNanos(from),
                    UnixNanos(to),
                    step,
                    UnixNanos::now(),
                    &mut events,
                );
                for chunk in events.chunks(16_384) {
                    if !append(ctx, chunk, &mut batch)? {
                        return Ok(());
                    }
                }
                pushed += events.len();
                events.clear();
                from = to.max(from + step);
            }
            tracing::info!(
                events = pushed,
                days = self.history_days,
                secs = started.elapsed().as_secs_f64(),
                "history pushed"
            );
        }
        let mut pacer = Pacer::new(self.rate);
        let batch_size = pacer.batch_size(8192);
        while !ctx.is_stopping() {
            let due = Instant::now() + pacer.delay_for(batch_size as u64);
            // Sleep in short steps so a stop request is honoured quickly even at low rates.
            while Instant::now() < due {
                if ctx.is_stopping() {
                    return Ok(());
                }
                std::thread::sleep(
                    due.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(50)),
                );
            }
            sim.next_batch(batch_size, UnixNanos::now(), &mut events);
            if !append(ctx, &events, &mut batch)? {
                return Ok(());
            }
            events.clear();
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Source for SimulatorSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        // CPU-bound and paced by sleeping: the pipeline runs each source on a thread of its own.
        self.run_blocking(&ctx)
    }
}
