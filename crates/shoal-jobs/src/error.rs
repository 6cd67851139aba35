//! The one error type of `shoal-jobs`.

use std::path::PathBuf;

/// Everything that can go wrong preparing or resuming a job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A prompts file line that cannot be read (1-based line number).
    #[error("{path}:{line}: {detail}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line, counting from 1.
        line: usize,
        /// What is wrong.
        detail: String,
    },

    /// An input value out of range.
    #[error("invalid {field} = {value}: {detail}")]
    Invalid {
        /// The field.
        field: String,
        /// The value.
        value: String,
        /// The allowed range.
        detail: String,
    },

    /// `--resume` of a job whose parameters changed, or a job folder reused without `--resume`.
    #[error("{path}: {detail}")]
    Job {
        /// The job file or folder.
        path: PathBuf,
        /// What differs and what to do.
        detail: String,
    },

    /// An I/O error with the operation that caused it.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The result type of `shoal-jobs`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, value: impl ToString, detail: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            value: value.to_string(),
            detail: detail.into(),
        }
    }
}
