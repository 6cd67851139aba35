//! The one error type of shoal-engine: every error keeps its kind to the edge.

use std::path::PathBuf;

/// What can go wrong running a job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user asked for something that cannot be done (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// Preparing or resuming the job folder (a changed job is a usage error).
    #[error(transparent)]
    Jobs(#[from] shoal_jobs::Error),
    /// The model.
    #[error(transparent)]
    Model(#[from] shoal_diffusion::Error),
    /// The process group or the store.
    #[error(transparent)]
    Dist(#[from] shoal_dist::Error),
    /// Writing or reading a file.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another rank stopped, or sent something rank 0 cannot accept.
    #[error("{0}")]
    Peer(String),
    /// A generated image would be made of NaN or infinity.
    #[error("{0}")]
    NonFinite(String),
    /// A tensor operation outside the model.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// Whether this is the user's mistake (exit code 2) rather than a failure (exit code 1).
    pub fn is_usage(&self) -> bool {
        match self {
            Error::Usage(_) => true,
            Error::Jobs(e) => !matches!(e, shoal_jobs::Error::Io { .. }),
            _ => false,
        }
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
