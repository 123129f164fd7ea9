//! Atomic file writes: a reader sees the old file or the whole new one, never a part.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` through a synced temporary file in the same directory, renamed
/// over `path`, then syncs the directory so the rename itself survives a power cut.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_checked(path, bytes, |_| Ok(()))
}

/// [`write_atomic`], calling `check` with the synced temporary file before the rename: when
/// it fails, the temporary file is removed and `path` keeps its previous content.
pub fn write_atomic_checked(path: &Path, bytes: &[u8], check: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path)?;
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    if let Err(e) = check(&tmp) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Not every file system lets a directory be opened for syncing; the data is safe anyway.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The temporary file the next [`write_atomic`] of `path` by this process goes through:
/// `.<name>.<pid>-<n>.tmp` beside it.
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| Error::invalid(path, "has no file name"))?;
    Ok(path.with_file_name(format!(".{}.{}-{}.tmp", name.to_string_lossy(), std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))))
}

/// Removes from `dir` the temporary files of [`write_atomic`] that a process killed in the
/// middle of a write left behind: those whose process is gone. Where that cannot be told
/// (no `/proc`), nothing is removed. Returns how many were removed.
pub fn remove_abandoned_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(|n| n.rsplit_once('.'))
            .and_then(|(_, tail)| tail.split_once('-'))
            .filter(|(_, n)| n.parse::<u64>().is_ok())
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if process_gone(pid) && entry.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether process `pid` is known to be gone: another process than this one, absent from
/// `/proc`. Where that cannot be told (no `/proc`), `false`.
pub fn process_gone(pid: u32) -> bool {
    let proc = Path::new("/proc");
    pid != std::process::id() && proc.join("self").exists() && !proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_temporaries_of_gone_processes_are_removed() {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Beyond Linux's largest pid: no such process.
        let gone = dir.path().join(".last.ckpt.4294967295-3.tmp");
        let mine = temp_path(&dir.path().join("last.ckpt")).unwrap();
        let others = ["last.ckpt", ".notes.tmp", ".a.4294967295.tmp", ".a.4294967295-x.tmp"].map(|n| dir.path().join(n));
        for p in others.iter().chain([&gone, &mine]) {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(remove_abandoned_temps(dir.path()), 1);
        assert!(!gone.exists());
        for p in others.iter().chain([&mine]) {
            assert!(p.exists(), "{} was removed", p.display());
        }
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_check_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one").unwrap();
        let e = write_atomic_checked(&p, b"two", |tmp| {
            assert_eq!(fs::read(tmp).unwrap(), b"two");
            Err(Error::invalid(tmp, "refused"))
        });
        assert!(e.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "the temporary file was left");
    }

    #[test]
    fn missing_directory_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope").join("a.bin");
        let e = write_atomic(&p, b"x").unwrap_err().to_string();
        assert!(e.contains("a.bin"), "{e}");
    }
}
