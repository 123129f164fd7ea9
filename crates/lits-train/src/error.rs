//! Errors of lits-train, each naming the file or field it is about.

use std::path::PathBuf;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that cannot work.
    #[error("config field `{field}`: {msg}")]
    Config {
        /// The field, dotted (`optimizer.lr`).
        field: String,
        /// What is wrong.
        msg: String,
    },
    /// A file that could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file whose content is wrong.
    #[error("{}: {msg}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A checkpoint that does not fit the run, or cannot be stored.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The training loss stopped being a number.
    #[error("training diverged: loss is {loss} at epoch {epoch} step {step}; lower the learning rate")]
    Diverged {
        /// Epoch, from 1.
        epoch: u32,
        /// Step of the epoch, from 0.
        step: u64,
        /// The loss.
        loss: f64,
    },
    /// The patch loader ended before the epoch's last step.
    #[error("the patch loader stopped after {0} of the epoch's steps")]
    Loader(u64),
    /// Ranks of a data-parallel run that failed (named, with how they ended).
    #[error("{0}")]
    RankFailed(String),
    /// From the data layer.
    #[error(transparent)]
    Data(#[from] lits_data::Error),
    /// From the model layer.
    #[error(transparent)]
    Model(#[from] lits_model::error::Error),
    /// From libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    /// An [`Error::Config`].
    pub fn config(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config { field: field.into(), msg: msg.into() }
    }

    /// An [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// An [`Error::Invalid`].
    pub fn invalid(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Invalid { path: path.into(), msg: msg.into() }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
