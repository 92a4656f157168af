//! AWS where a team already lives: SQS as a source of ticks ([`sqs`]), SNS as a channel for
//! alerts ([`sns`]) and DynamoDB as a sink ([`dynamodb`]), through a small SigV4-signed
//! client ([`client`]) whose endpoint can point at `moto_server` or LocalStack for tests; and
//! the Lambda Runtime API ([`lambda`]) for `tickflow lambda`.

pub mod client;
pub mod dynamodb;
pub mod lambda;
pub mod sns;
pub mod sqs;

pub use client::{AwsConfig, Client, Error, Service};
