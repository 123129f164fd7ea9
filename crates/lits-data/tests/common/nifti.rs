//! NIfTI test helpers: the project's Python (nibabel) as the reference, its fixture
//! writer, and small volumes written by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The project's Python, with nibabel.
pub fn python() -> Command {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python"))
}

/// The conformance fixture writer and checker.
pub fn fixtures_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/reference/nifti_fixtures.py")
}

/// Have nibabel write every fixture into a fresh temp dir; returns the dir and the cases.
pub fn write_fixtures() -> (tempfile::TempDir, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let out = python().arg(fixtures_script()).arg("write").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "fixture writer failed: {}", String::from_utf8_lossy(&out.stderr));
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    let cases = manifest["cases"].as_array().unwrap().clone();
    assert!(cases.len() > 100, "expected every combination, got {} cases", cases.len());
    (dir, cases)
}

/// Have nibabel compare a file lits wrote with the original; returns what differs.
pub fn nibabel_compare(original: &Path, written: &Path, labels: bool) -> Result<(), String> {
    let mut cmd = python();
    cmd.arg(fixtures_script()).arg("compare").arg(original).arg(written);
    if labels {
        cmd.arg("--labels");
    }
    let out = cmd.output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Little-endian f32 values of a raw file.
pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// A 4×4 affine from JSON rows.
pub fn affine(v: &Value) -> [[f64; 4]; 4] {
    let mut a = [[0.0; 4]; 4];
    for (r, row) in v.as_array().unwrap().iter().enumerate() {
        for (c, x) in row.as_array().unwrap().iter().enumerate() {
            a[r][c] = x.as_f64().unwrap();
        }
    }
    a
}

/// gzip-compress `bytes` (for hand-made broken files).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}
