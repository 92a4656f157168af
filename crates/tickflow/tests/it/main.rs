//! End-to-end tests: the real binary, real files, loopback HTTP.

mod alpaca;
mod aws;
mod backfill;
mod bars;
mod check;
mod cli;
mod coinbase;
mod compact;
mod crash;
mod crash_loop;
mod dashboard;
mod demo;
mod deploy;
mod duckdb;
mod http;
#[cfg(feature = "kafka")]
mod kafka;
mod lambda;
mod members;
mod metrics;
mod nats;
mod notify;
mod overload;
mod pgwire;
mod postgres;
mod produce;
mod query_api;
mod reload;
mod replay;
mod report;
mod rules;
mod s3;
mod security;
mod sinks;
mod status;
mod support;
