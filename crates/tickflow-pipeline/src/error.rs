use std::fmt;
use std::path::PathBuf;

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    /// Dotted key path, e.g. `alerts.threshold[0].condition`; empty for file-level problems.
    pub key: String,
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if !p.key.is_empty() {
                write!(f, ": {}", p.key)?;
            }
            write!(f, ": {}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Pipeline failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("durable log: {0}")]
    Log(#[from] tickflow_log::Error),
    #[error("{0}")]
    BrokerLog(String),
    /// The broker holding the log did not store an append (down, unreachable, too slow to
    /// confirm): nothing is acknowledged, and the sender sends it again.
    #[error("the log did not store the batch: {0}")]
    LogUnavailable(String),
    #[error("lake: {0}")]
    Lake(#[from] tickflow_lake::Error),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    LakeLocation { path: PathBuf, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("pipeline is shutting down")]
    ShuttingDown,
    #[error("{0} thread failed: {1}")]
    Thread(&'static str, String),
}

impl Error {
    /// For a source: a refusal that clears by itself (the log's disk reserve, its broker
    /// away) becomes
    /// [`tickflow_core::source::Refused`], so the source retries; anything else stops it.
    pub fn into_source_error(self) -> tickflow_core::source::SourceError {
        match self {
            Error::Log(tickflow_log::Error::DiskFull { .. }) | Error::LogUnavailable(_) => {
                Box::new(tickflow_core::source::Refused(self.to_string()))
            }
            other => other.into(),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
