//! The one error type of `shoal-launch`.

use std::path::PathBuf;

/// How a worker ended when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Exit {
    /// Exited with a non-zero code.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s} ({})", signal_name(*s)),
        }
    }
}

impl Exit {
    /// The launcher's own exit code for this failure: the worker's code, or
    /// 128 + the signal, as a shell reports it.
    pub fn launcher_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// The conventional name of a signal.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Everything that can go wrong while launching.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or config value is invalid; exit code 2.
    #[error("invalid {field}: {detail}")]
    Usage {
        /// The flag or config key.
        field: String,
        /// What is wrong and what is allowed.
        detail: String,
    },

    /// A config file that cannot be read or parsed; exit code 2.
    #[error("config file {path}: {detail}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the key where there is one).
        detail: String,
    },

    /// The program to launch does not exist; exit code 2.
    #[error("program not found: {program}: {detail}")]
    ProgramNotFound {
        /// The program as given.
        program: String,
        /// Where it was looked for.
        detail: String,
    },

    /// A worker failed; the others were stopped.
    #[error(
        "rank {rank} (local rank {local_rank}, pid {pid}) failed first with {exit}; the other workers were stopped"
    )]
    WorkerFailed {
        /// The global rank that failed first (the root cause).
        rank: usize,
        /// Its local rank.
        local_rank: usize,
        /// Its process id.
        pid: u32,
        /// How it ended.
        exit: Exit,
    },

    /// A worker on another machine failed; this machine's workers were stopped.
    #[error(
        "another machine's launcher reported the root cause: {what}; this machine's workers were stopped"
    )]
    PeerFailed {
        /// What the other launcher published.
        what: String,
    },

    /// Workers still ran `--exit-wait` after another had exited 0; they were stopped.
    #[error(
        "ranks {ranks:?} were still running {waited:?} after another worker exited 0; they were treated as hung \
         and stopped (--exit-wait)"
    )]
    Hung {
        /// The ranks that were still running.
        ranks: Vec<usize>,
        /// How long they were given.
        waited: std::time::Duration,
    },

    /// The launcher was interrupted by a signal and stopped its workers.
    #[error("interrupted by {name}; the workers were stopped")]
    Interrupted {
        /// The signal number.
        signal: i32,
        /// Its name.
        name: &'static str,
    },

    /// The distributed runtime failed (store, environment).
    #[error(transparent)]
    Dist(#[from] shoal_dist::Error),

    /// An I/O error with the operation that caused it.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The result type of `shoal-launch`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn usage(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Usage {
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            op: op.into(),
            source,
        }
    }

    /// The process exit code for this error (documented in README.md):
    /// 2 for usage and config errors, the failing worker's code (or 128 +
    /// signal) for a worker failure, 128 + signal when interrupted, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } | Error::Config { .. } | Error::ProgramNotFound { .. } => 2,
            Error::WorkerFailed { exit, .. } => match exit.launcher_code() {
                0 => 1,
                c => c,
            },
            Error::Interrupted { signal, .. } => 128 + signal,
            Error::PeerFailed { .. } | Error::Hung { .. } | Error::Dist(_) | Error::Io { .. } => 1,
        }
    }
}
