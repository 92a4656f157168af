use std::path::PathBuf;

/// Lake failures, with the path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("reading {path}: {message}")]
    Read { path: PathBuf, message: String },
    /// A part whose bytes no longer match the checksum its footer records.
    #[error("{path} is damaged ({reason}); move it aside or restore it from a copy")]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "{path} merges flushes on both sides of flush {position}, so the rows after it cannot be read apart"
    )]
    Compacted { path: PathBuf, position: u64 },
    #[error("{path}: {source}")]
    Store {
        path: PathBuf,
        source: Box<object_store::Error>,
    },
    #[error("lake {url}: {message}")]
    Config { url: String, message: String },
    #[error("building {table} batch: {source}")]
    Arrow {
        table: &'static str,
        source: arrow::error::ArrowError,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the file is not there (deleted meanwhile, as compaction does), on disk or on
    /// object storage.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            Error::Store { source, .. } => matches!(**source, object_store::Error::NotFound { .. }),
            _ => false,
        }
    }
}
