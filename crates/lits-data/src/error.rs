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
    /// Several configuration values that cannot work, all of them (see [`Problems`]).
    #[error("{} config fields cannot work:{}", .0.len(), list_fields(.0))]
    Problems(Vec<(String, String)>),
}

fn list_fields(list: &[(String, String)]) -> String {
    list.iter().map(|(f, m)| format!("\n  `{f}`: {m}")).collect()
}

/// The problems of a configuration, collected so that one pass of the checks reports every
/// one of them, each under its dotted field name (`patches.augment.scale`), instead of
/// stopping at the first.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Problems {
    prefix: String,
    list: Vec<(String, String)>,
}

impl Problems {
    /// No problem yet.
    pub fn new() -> Self {
        Problems::default()
    }

    /// Records that `field` (under the current prefix) cannot work, and why.
    pub fn add(&mut self, field: impl AsRef<str>, msg: impl Into<String>) {
        self.list.push((format!("{}{}", self.prefix, field.as_ref()), msg.into()));
    }

    /// Records `msg` for `field` unless `ok`.
    pub fn require(&mut self, ok: bool, field: impl AsRef<str>, msg: impl FnOnce() -> String) {
        if !ok {
            self.add(field, msg());
        }
    }

    /// Runs `check` with every field it names placed under `section` (`section.field`).
    pub fn under(&mut self, section: &str, check: impl FnOnce(&mut Problems)) {
        let saved = std::mem::take(&mut self.prefix);
        self.prefix = format!("{saved}{section}.");
        check(self);
        self.prefix = saved;
    }

    /// Records the error of a check that stops at its first problem: a config error keeps
    /// its own field name (under the current prefix), any other error is recorded for `field`.
    pub fn take<E: Into<Error>>(&mut self, field: &str, result: std::result::Result<(), E>) {
        match result.map_err(Into::into) {
            Ok(()) => {}
            Err(Error::Config { field: f, msg }) => self.add(f, msg),
            Err(Error::Problems(list)) => {
                for (f, m) in list {
                    self.add(f, m);
                }
            }
            Err(e) => self.add(field, e.to_string()),
        }
    }

    /// Whether every check passed.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The fields named so far.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|(f, _)| f.as_str())
    }

    /// `Ok` when every check passed; else [`Error::Config`] for one problem and
    /// [`Error::Problems`] for several.
    pub fn into_result(mut self) -> Result<()> {
        match self.list.len() {
            0 => Ok(()),
            1 => {
                let (field, msg) = self.list.remove(0);
                Err(Error::Config { field, msg })
            }
            _ => Err(Error::Problems(self.list)),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_all_listed_under_their_section() {
        let mut p = Problems::new();
        p.require(true, "fine", || unreachable!());
        p.under("patches", |p| {
            p.add("foreground_fraction", "1.5 is not in 0..1");
            p.under("augment", |p| p.require(false, "scale", || "too large".into()));
        });
        p.under("model", |p| p.take("model", Err(Error::Config { field: "base_channels".into(), msg: "must be at least 1".into() })));
        p.add("epochs", "must be at least 1");
        let fields: Vec<&str> = p.fields().collect();
        assert_eq!(fields, ["patches.foreground_fraction", "patches.augment.scale", "model.base_channels", "epochs"]);
        let e = p.into_result().unwrap_err().to_string();
        assert!(e.starts_with("4 config fields cannot work:"), "{e}");
        assert!(e.contains("\n  `patches.augment.scale`: too large"), "{e}");
    }

    #[test]
    fn one_problem_is_a_plain_config_error() {
        let mut p = Problems::new();
        assert!(p.clone().into_result().is_ok());
        p.add("epochs", "must be at least 1");
        assert!(matches!(p.into_result(), Err(Error::Config { field, .. }) if field == "epochs"));
    }
}
