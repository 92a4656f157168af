//! Brokers that users already run, as tickflow's neighbours: NATS JetStream as a source
//! ([`nats::NatsSource`]), reading ticks that other programs publish, and as a sink
//! ([`nats_sink::NatsSink`]), publishing bars, alerts and other rows for them.

pub mod nats;
pub mod nats_sink;
