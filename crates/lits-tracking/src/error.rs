//! Errors of experiment tracking. They name the server or the file, never a credential.

use std::path::PathBuf;

/// What went wrong talking to the tracking server or reading the run's tracking journal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither `--tracking-uri`, `MLFLOW_TRACKING_URI` nor the run's own record names a server.
    #[error("no tracking server given: pass --tracking-uri URI or set MLFLOW_TRACKING_URI")]
    NoUri,
    /// The tracking URI cannot be used.
    #[error("invalid tracking URI {uri:?}: {reason}")]
    Uri {
        /// The URI as given (credentials removed).
        uri: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The server could not be reached or did not answer in time, or answered with a
    /// temporary failure (HTTP 5xx, 429); trying again later may succeed.
    #[error("tracking server {uri} unavailable ({what}): {message}")]
    Unavailable {
        /// Server URI.
        uri: String,
        /// The API call, e.g. `runs/log-batch`.
        what: String,
        /// What the transport or the server said.
        message: String,
    },
    /// The server refused the credentials (HTTP 401 or 403).
    #[error(
        "tracking server {uri} refused the request ({what}: HTTP {status}); check \
         MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD"
    )]
    Auth {
        /// Server URI.
        uri: String,
        /// The API call.
        what: String,
        /// HTTP status.
        status: u16,
    },
    /// The server rejected the request for good (another 4xx, or an answer that is not
    /// MLflow's).
    #[error("tracking server {uri} rejected {what}: {message}")]
    Rejected {
        /// Server URI.
        uri: String,
        /// The API call.
        what: String,
        /// MLflow's error code and message, or what was wrong with the answer.
        message: String,
    },
    /// Reading or writing a tracking file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The run directory has no tracking journal.
    #[error("{}: no tracking journal (is this a run directory written by lits train?)", path.display())]
    NoJournal {
        /// The journal that is missing.
        path: PathBuf,
    },
    /// A tracking file holds something that is not a record lits writes.
    #[error("{}: line {line}: {message}", path.display())]
    Journal {
        /// The file.
        path: PathBuf,
        /// 1-based line number (0 for a whole-file problem).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// Whether trying the same call again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}

/// Result of tracking operations.
pub type Result<T> = std::result::Result<T, Error>;
