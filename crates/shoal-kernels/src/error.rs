//! The one error type of shoal-kernels.

/// What can go wrong in a fast kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel does not cover this shape, layout or dtype; the caller runs its plain path.
    #[error("{op}: not covered by the fast kernel: {why}")]
    Unsupported {
        /// The operation (`conv2d`, `sdpa`).
        op: &'static str,
        /// Why (shape, layout, dtype, or cuDNN's own message when no plan exists).
        why: String,
    },
    /// cuDNN or CUDA failed while running a plan that was built.
    #[error("{op}: {message}")]
    Backend {
        /// The operation.
        op: &'static str,
        /// The library's message.
        message: String,
    },
    /// An error from candle (allocation, a tensor on the wrong device).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
