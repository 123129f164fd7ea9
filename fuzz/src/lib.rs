//! Shared by the fuzz targets: every reader of lits takes a path, so each input is written
//! to a scratch file first, and every refusal must name that file.

use std::path::{Path, PathBuf};

/// Writes `bytes` to `name` in this process's scratch folder (under `TMPDIR`) and returns
/// its path; the folder is made on first use and reused.
pub fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lits-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("scratch file");
    path
}

/// Fails unless the error, as lits prints it, names `path`.
pub fn names_file(path: &Path, err: &dyn std::fmt::Display) {
    let msg = format!("{err:#}");
    assert!(msg.contains(&path.display().to_string()), "error does not name the file: {msg}");
}
