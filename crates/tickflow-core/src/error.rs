/// Errors from decoding events.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("corrupt event encoding: {0}")]
    Codec(&'static str),
    #[error("invalid field in stored event: {0}")]
    Model(#[from] tickflow_model::Error),
    #[error("line {line}: {message}")]
    Ingest { line: usize, message: String },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
