//! The one error type of `shoal-dist`.
//!
//! Modelled on `candle-core/src/error.rs`: structured variants that carry the
//! rank, the world size, the variables or keys involved, and a message that says
//! how to fix the problem.

use std::time::Duration;

/// Everything that can go wrong in the distributed runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The launcher environment is partial or self-contradictory.
    #[error("inconsistent launcher environment ({launcher}): {detail}; variables: {vars}")]
    Env {
        /// The launcher whose variables were being read.
        launcher: &'static str,
        /// What is wrong.
        detail: String,
        /// The variables involved, as `NAME=value` pairs.
        vars: String,
    },

    /// A SLURM host list that cannot be expanded.
    #[error("cannot expand SLURM host list {list:?}: {detail}")]
    HostList {
        /// The compressed host list.
        list: String,
        /// What is wrong with it.
        detail: String,
    },

    /// An argument given to the runtime is out of range.
    #[error("invalid {field} = {value}: {detail}")]
    InvalidArgument {
        /// The argument's name.
        field: &'static str,
        /// The value given.
        value: String,
        /// The allowed range or the fix.
        detail: String,
    },

    /// A wait on the rendezvous store ran past its timeout.
    #[error(
        "rank {rank}/{world}: {op} timed out after {timeout:?} waiting on the rendezvous store; \
         never arrived: {missing}"
    )]
    Timeout {
        /// This process's rank.
        rank: usize,
        /// The world size.
        world: usize,
        /// The operation that waited (`barrier #3`, `store wait`, ...).
        op: String,
        /// The configured timeout.
        timeout: Duration,
        /// The ranks (or keys) that never arrived.
        missing: String,
    },

    /// The rendezvous store could not be reached, or the connection broke.
    #[error("rank {rank}/{world}: rendezvous store at {addr}: {detail}")]
    Store {
        /// This process's rank.
        rank: usize,
        /// The world size.
        world: usize,
        /// The store's address.
        addr: String,
        /// What happened.
        detail: String,
    },

    /// A collective was called with inputs that do not agree across ranks.
    #[error("rank {rank}/{world}: {op}: {detail}")]
    Collective {
        /// This process's rank.
        rank: usize,
        /// The world size.
        world: usize,
        /// The collective.
        op: String,
        /// What does not agree.
        detail: String,
    },

    /// A backend that this build does not include.
    #[error("backend {backend:?} is not available: {detail}")]
    Backend {
        /// The backend asked for.
        backend: String,
        /// Why, and how to get it.
        detail: String,
    },

    /// A wire message that cannot be decoded.
    #[error("malformed message from the rendezvous store: {0}")]
    Wire(String),

    /// An I/O error with the operation that caused it.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The result type of `shoal-dist`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the operation that failed.
    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            op: op.into(),
            source,
        }
    }
}
