/// Source failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A replayed file or folder cannot be read.
    #[error("replay: {0}")]
    Replay(String),
}
