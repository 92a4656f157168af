//! Brokers that users already run, as tickflow's neighbours: NATS JetStream and Kafka as
//! sources ([`nats::NatsSource`], [`kafka::KafkaSource`]), reading ticks that other programs
//! publish, and as sinks ([`nats_sink::NatsSink`], [`kafka_sink::KafkaSink`]), publishing
//! bars, alerts and other rows for them. JetStream or Kafka can also hold tickflow's own
//! log ([`nats_log::NatsLog`], [`kafka_log::KafkaLog`]). Kafka's client (librdkafka, built from source) is
//! behind the `kafka` feature; without it the settings still parse and check, and
//! [`KAFKA_BUILT`] says so.

/// Whether this build can talk to Kafka (the `kafka` feature).
pub const KAFKA_BUILT: bool = cfg!(feature = "kafka");

pub mod chunked;
pub mod kafka;
pub mod kafka_log;
pub mod kafka_sink;
pub mod nats;
pub mod nats_log;
pub mod nats_sink;
