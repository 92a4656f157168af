//! The one retry schedule every connector uses, so a sink, a notifier and a source back off
//! alike: 100 ms doubling to a cap, with jitter (no retry storms after an outage), for ever.

use std::time::Duration;

use backon::BackoffBuilder;

/// Capped exponential backoff with jitter: 100 ms (or `max`, if lower) doubling to `max`.
pub fn backoff(max: Duration) -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100).min(max))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}
