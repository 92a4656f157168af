use std::path::PathBuf;

/// Sink failures, with the file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is damaged ({message}); it records the sink's position, so fix or remove it by hand"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("formatting rows: {0}")]
    Format(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
