//! HTTP API: ingest, SQL, status, health and Prometheus metrics.
