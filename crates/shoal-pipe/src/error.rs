//! The one error type of `shoal-pipe`.

/// What can go wrong planning or running a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request the model or the job cannot satisfy (bad split points, stage
    /// counts, micro-batch counts): a usage error.
    #[error("{0}")]
    Plan(String),

    /// Another stage failed, stalled or sent something unexpected.
    #[error("{0}")]
    Peer(String),

    /// The process group failed.
    #[error(transparent)]
    Dist(#[from] shoal_dist::Error),

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The result type of `shoal-pipe`.
pub type Result<T> = std::result::Result<T, Error>;
