//! Errors of lits-model. Every variant names the file, the field or the shape it is about.

use std::path::PathBuf;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file error of the data layer (`lits_data::Error::Io` carries the path).
    #[error(transparent)]
    Data(#[from] lits_data::Error),
    /// A weights file that does not fit the model: unreadable, or with missing,
    /// unexpected or mis-shaped tensors (all of them listed in `msg`).
    #[error("{}: {msg}", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A tensor whose shape the operation cannot take.
    #[error("input of shape {shape:?}: {msg}")]
    Shape {
        /// The offending shape.
        shape: Vec<i64>,
        /// Why it does not fit.
        msg: String,
    },
    /// A configuration value that cannot work.
    #[error("config field `{field}`: {msg}")]
    Config {
        /// The field.
        field: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A collective of data-parallel training that failed: a rank died, hung past the
    /// timeout, or could not be reached.
    #[error("{0}")]
    Collective(String),
    /// An error raised inside libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    /// An [`Error::Shape`] for `shape`.
    pub fn shape(shape: &[i64], msg: impl Into<String>) -> Self {
        Error::Shape { shape: shape.to_vec(), msg: msg.into() }
    }

    /// An [`Error::Config`] for `field`.
    pub fn config(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config { field: field.into(), msg: msg.into() }
    }

    /// An operating-system error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Data(lits_data::Error::io(path, source))
    }

    /// An [`Error::Weights`] for `path`.
    pub fn weights(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Weights { path: path.into(), msg: msg.into() }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
