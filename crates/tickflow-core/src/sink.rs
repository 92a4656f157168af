//! The sink contract: how processing output leaves tickflow for another store.
//!
//! The lake is the system of record and is written first, one *flush* at a time, each with a
//! sequence number. Every other sink follows the lake on its own position: the last flush it
//! has written in full, kept durably in the sink's own store (a file beside its data, a
//! table in its database). The pipeline hands a sink the flushes past its position in order,
//! from memory while they are recent and from the lake's files once they are not, so a sink
//! that is slow or down never stalls ingest, processing, the lake or the other sinks.
//!
//! A crash can come between any two steps, so a sink must make a flush's rows and its new
//! position durable together (one transaction, or an undo record as the CSV sink keeps), and
//! a flush handed to it again after a failure must not double a row.

use std::sync::Arc;

use tickflow_model::Rows;

/// An error from a sink's store. Sinks wrap their client's errors; the pipeline logs the
/// message with the sink's id, counts it, shows it in the status and retries.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// One flush of processing output, exactly as the lake wrote it.
#[derive(Clone, Debug)]
pub struct Flush {
    /// The flush's sequence number: 1, 2, 3… with no gaps.
    pub seq: u64,
    pub rows: Arc<Rows>,
}

impl Flush {
    /// A flush without rows: it only moves a sink's position.
    pub fn empty(seq: u64) -> Self {
        Self {
            seq,
            rows: Arc::new(Rows::default()),
        }
    }
}

/// A store that keeps what processing produced. See the module docs for the guarantees.
#[async_trait::async_trait]
pub trait Sink: Send + std::fmt::Debug {
    /// Connects, makes the store ready (creates files, tables), undoes any flush that a crash
    /// left half-written, and returns the last flush written in full: `None` when the store
    /// has never recorded a position (a new sink), which then starts at the lake's current
    /// flush.
    async fn open(&mut self) -> Result<Option<u64>, SinkError>;

    /// Writes the rows of `flush` that this sink keeps and records `flush.seq` as its
    /// position, durably and together. Flushes come in increasing order. After an error the
    /// same flush is handed again: writing it must not double a row.
    async fn write(&mut self, flush: &Flush) -> Result<(), SinkError>;
}
