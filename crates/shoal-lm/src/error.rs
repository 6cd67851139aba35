//! The one error type of `shoal-lm`.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a language model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that is missing, unreadable or malformed.
    #[error("{path}: {detail}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// A config value that is missing or out of range.
    #[error("{path}: field `{field}`: {detail}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong.
        detail: String,
    },

    /// A request that does not fit the model.
    #[error("invalid {field} = {value}: {detail}")]
    Invalid {
        /// The parameter.
        field: &'static str,
        /// The value given.
        value: String,
        /// The allowed range.
        detail: String,
    },

    /// A tensor operation failed (a weight missing from the file included).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The result type of `shoal-lm`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(field: &'static str, value: impl ToString, detail: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            value: value.to_string(),
            detail: detail.into(),
        }
    }
}
