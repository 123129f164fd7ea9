//! Helpers shared by the end-to-end tests: running `lits` and the project's Python, and a
//! tiny trained run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The project's Python, with torch, nibabel and medpy (`scripts/setup.sh`).
pub const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");

/// The repository's `scripts/reference/` folder (PyTorch and medpy reference code).
pub const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/reference");

/// The `lits` binary with a private cache folder and no inherited tracking or failpoints.
pub fn lits(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lits"));
    c.env_remove("LD_LIBRARY_PATH").env("LITS_CACHE_DIR", cache).env_remove("LITS_FAILPOINT");
    c.env_remove("MLFLOW_TRACKING_URI");
    c
}

/// Bytes as text, for messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `o`, after failing the test with both streams if the command failed.
pub fn ok(o: Output) -> Output {
    assert!(o.status.success(), "lits failed ({}):\n{}\n{}", o.status, text(&o.stdout), text(&o.stderr));
    o
}

/// Runs a Python snippet with `args` (paths) in `sys.argv[1..]`; fails the test with its
/// stderr if it fails, else returns its stdout.
pub fn python(script: &str, args: &[&Path]) -> String {
    let o = Command::new(PYTHON).arg("-c").arg(script).args(args).output().expect("run .venv/bin/python");
    assert!(o.status.success(), "python check failed:\n{}", text(&o.stderr));
    text(&o.stdout)
}

/// The tiny training configuration of the end-to-end tests: four small phantoms (case 3
/// held out), a 4-channel U-Net, 16³ patches; runs in seconds on two cores.
pub fn tiny_config(seed: u64, epochs: u32, steps: u32, every: u32) -> serde_json::Value {
    serde_json::json!({
        "name": "tiny",
        "seed": seed,
        "threads": 2,
        "loader_workers": 2,
        "data": {
            "synth": { "cases": 4, "seed": 7, "in_plane_voxels": [40, 44], "slices": [20, 24],
                       "in_plane_spacing_mm": [7.0, 8.0], "slice_spacing_mm": [9.0, 11.0] },
            "split": { "kind": "ids", "val": [3] }
        },
        "preprocess": { "mode": "spacing", "target_spacing": [8.0, 8.0, 10.0],
                        "intensity": { "kind": "window", "lower": -200.0, "upper": 300.0 } },
        "patches": { "patch": [16, 16, 16], "batch_size": 2, "foreground_fraction": 0.5 },
        "model": { "base_channels": 4, "dropout": 0.1, "updown_dropout": 0.001 },
        "optimizer": { "kind": "adam", "lr": 0.001 },
        "epochs": epochs,
        "steps_per_epoch": steps,
        "validation": { "every": every, "sliding_window": { "patch": [16, 16, 16], "overlap": 0.25 } }
    })
}

/// One epoch of [`tiny_config`] (validated, so `best.safetensors`); returns the run
/// directory `tmp/run`.
pub fn train_tiny(tmp: &Path, cache: &Path) -> PathBuf {
    let p = tmp.join("tiny.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&tiny_config(0, 1, 2, 1)).unwrap()).unwrap();
    let run = tmp.join("run");
    ok(lits(cache).args(["train", "--config"]).arg(&p).arg("--out").arg(&run).output().unwrap());
    run
}
