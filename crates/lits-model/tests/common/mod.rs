//! Shared helpers of lits-model's integration tests: running the PyTorch reference from
//! `.venv`, reading what it wrote, and comparing tensors.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tch::Tensor;

/// The project's Python, with torch, MONAI and safetensors.
pub const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");

/// A script under the repository's `scripts/`.
pub fn script(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts").join(rel)
}

/// Runs `python script args...`, failing the test with its stderr if it fails.
pub fn python(script_rel: &str, args: &[&str]) -> String {
    let out = Command::new(PYTHON)
        .arg(script(script_rel))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e} (run scripts/setup.sh)"));
    assert!(out.status.success(), "{script_rel} {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the parity reference `scripts/reference/parity.py COMMAND --out DIR args...`.
pub fn reference(command: &str, out: &Path, args: &[&str]) {
    let mut all = vec![command, "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    python("reference/parity.py", &all);
}

/// The tensors of a safetensors file by name.
pub fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

/// Largest absolute difference of two tensors of the same shape.
pub fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double)).abs().max().double_value(&[])
}
