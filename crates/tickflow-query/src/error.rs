/// Query failures. SQL mistakes are [`Error::Sql`] so the API can answer 400 for them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sql(String),
    #[error("query failed: {0}")]
    Execution(String),
    /// The query ran past its time or memory limit ([`crate::QueryOptions`]).
    #[error("{0}")]
    Limit(String),
    #[error("formatting results: {0}")]
    Format(#[from] arrow::error::ArrowError),
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match e.find_root() {
            E::SQL(..) | E::Plan(..) | E::SchemaError(..) | E::NotImplemented(..) => {
                Error::Sql(e.find_root().to_string())
            }
            _ => Error::Execution(e.to_string()),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
