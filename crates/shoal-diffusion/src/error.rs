//! The one error type of `shoal-diffusion`.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required file is missing from the model folder.
    #[error("{path}: missing; {hint}")]
    MissingFile {
        /// The file.
        path: PathBuf,
        /// What it is and where it comes from.
        hint: String,
    },

    /// A file that exists but cannot be read or parsed.
    #[error("{path}: {detail}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// A config value that shoal does not support or that is invalid.
    #[error("{path}: field `{field}`: {detail}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong and what is supported.
        detail: String,
    },

    /// A weight is missing or has the wrong shape or dtype.
    #[error("{path}: tensor `{tensor}`: {detail}")]
    Weight {
        /// The weight file (or folder, for sharded weights).
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// Expected vs found.
        detail: String,
    },

    /// A generation parameter is out of range.
    #[error("invalid {field} = {value}: {detail}")]
    InvalidArgument {
        /// The parameter.
        field: &'static str,
        /// The value given.
        value: String,
        /// The allowed range.
        detail: String,
    },

    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The partner process of a split computation (CFG parallelism) failed or
    /// sent something unexpected.
    #[error("partner process: {0}")]
    Partner(String),

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An I/O error with the operation that caused it.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The result type of `shoal-diffusion`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: &'static str, value: impl ToString, detail: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            value: value.to_string(),
            detail: detail.into(),
        }
    }
}
