//! Errors of lits-data. Every variant names the file (or field) it is about.

use std::path::PathBuf;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file whose content is not what it should be.
    #[error("{}: {msg}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// Voxels that are NaN or infinite, refused unless the reader is asked to replace them.
    #[error(
        "{}: {count} voxel(s) are NaN or infinite (first at [{}, {}, {}]); refusing to read them unless asked to replace them",
        path.display(), first[0], first[1], first[2]
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// How many voxels.
        count: usize,
        /// Index `[i, j, k]` of the first one.
        first: [usize; 3],
    },
    /// A configuration value that cannot work.
    #[error("config field `{field}`: {msg}")]
    Config {
        /// The field.
        field: String,
        /// What is wrong with it.
        msg: String,
    },
}

impl Error {
    /// An [`Error::Invalid`] for `path`.
    pub fn invalid(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Invalid { path: path.into(), msg: msg.into() }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
