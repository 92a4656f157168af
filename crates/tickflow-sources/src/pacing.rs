//! Rate control: emit at most `rate` events per second on average, in batches.

use std::time::{Duration, Instant};

/// Spaces batches so the running average stays at the target rate; a rate of 0 never waits.
#[derive(Debug)]
pub struct Pacer {
    rate: u64,
    started: Instant,
    sent: u64,
}

impl Pacer {
    /// A pacer for `rate` events per second (0 = as fast as possible).
    pub fn new(rate: u64) -> Self {
        Self {
            rate,
            started: Instant::now(),
            sent: 0,
        }
    }

    /// How long to wait before sending `n` more events.
    pub fn delay_for(&mut self, n: u64) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
        self.sent += n;
        due.saturating_sub(self.started.elapsed())
    }

    /// The batch size that keeps latency low at this rate: about 10 ms of events.
    pub fn batch_size(&self, max: usize) -> usize {
        if self.rate == 0 {
            max
        } else {
            ((self.rate / 100) as usize).clamp(1, max)
        }
    }
}
