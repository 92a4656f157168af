//! Brokers that users already run, as tickflow's neighbours: today NATS JetStream as a
//! source ([`nats::NatsSource`]), reading ticks that other programs publish.

pub mod nats;
