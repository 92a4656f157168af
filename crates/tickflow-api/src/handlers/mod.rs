pub(crate) mod alerts;
pub(crate) mod bars;
pub(crate) mod dashboard;
pub(crate) mod dlq;
pub(crate) mod health;
pub(crate) mod ingest;
pub(crate) mod sql;
pub(crate) mod status;
