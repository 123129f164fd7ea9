//! Bit-identical resume after SIGKILL, for every shipped configuration.
//!
//! Each shipped config is shrunk to run here in seconds (tiny phantoms, small patches and
//! model, three epochs of three steps, validation every second epoch), overriding only
//! sizes: its loss, optimiser, schedule, preprocessing mode, augmentation and best-epoch
//! rule stay as shipped. A run is killed with SIGKILL at each kind of point (a failpoint,
//! see `lits_train::failpoint`), resumed, and must end with the same bytes as an
//! uninterrupted run.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

mod common;
use common::{lits, ok, text};

const EPOCHS: u64 = 3;

/// `configs/NAME.json` with only its sizes changed (module docs).
fn shrunk(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs").join(format!("{name}.json"));
    let mut c: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    c["device"] = json!("cpu");
    c["threads"] = json!(2);
    c["loader_workers"] = json!(1);
    c["data"] = json!({
        "dir": null,
        "synth": { "cases": 4, "seed": 7, "in_plane_voxels": [40, 44], "slices": [20, 24],
                   "in_plane_spacing_mm": [7.0, 8.0], "slice_spacing_mm": [9.0, 11.0] },
        "split": { "kind": "ids", "val": [3] }
    });
    match c["preprocess"]["mode"].as_str().unwrap() {
        "mlfcore" => {
            c["preprocess"]["slices"] = json!(24);
            c["preprocess"]["cube"] = json!(16);
        }
        _ => {
            if !c["preprocess"]["target_spacing"].is_null() {
                c["preprocess"]["target_spacing"] = json!([8.0, 8.0, 10.0]);
            }
        }
    }
    c["patches"]["patch"] = json!([16, 16, 16]);
    c["patches"]["batch_size"] = json!(2);
    c["model"]["base_channels"] = json!(4);
    c["epochs"] = json!(EPOCHS);
    c["steps_per_epoch"] = json!(3);
    c["validation"]["every"] = json!(2);
    c["validation"]["sliding_window"]["patch"] = json!([16, 16, 16]);
    c
}

const SAME: [&str; 9] = [
    "last.safetensors",
    "best.safetensors",
    "metrics.jsonl",
    "checkpoints/last.ckpt",
    "split.json",
    "config.json",
    "plans.json",
    "plots/loss.png",
    "plots/dice.png",
];

/// Every file under `run`, relative, but those that differ between identical runs.
fn files(run: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![run.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p.strip_prefix(run).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.retain(|f| f != "timing.jsonl" && f != "env.json");
    out.sort();
    out
}

fn resumes_bit_identically_from_every_kill_point(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cfg = tmp.path().join(format!("{name}.json"));
    std::fs::write(&cfg, serde_json::to_vec_pretty(&shrunk(name)).unwrap()).unwrap();
    let train = |out: &Path| {
        let mut c = lits(&cache);
        c.args(["train", "--config"]).arg(&cfg).arg("--out").arg(out);
        c
    };
    let whole = tmp.path().join("whole");
    ok(train(&whole).output().unwrap());
    let metrics_lines = |run: &Path| std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count() as u64);
    assert_eq!(metrics_lines(&whole), EPOCHS);

    // `prepared`: killed before its config was resolved and recorded (a resume found no
    // config.json in such a run and refused it). `epoch-end:3`: after the last checkpoint,
    // before the plots of the last epoch (a resume found the run finished and left them
    // one epoch short). After `checkpoint-write:2` the torn temporary file stayed.
    let last_end = format!("epoch-end:{EPOCHS}");
    for point in ["prepared", "step:1:2", "epoch-end:1", "after-validation:2", "checkpoint-write:2", &last_end] {
        let cut: PathBuf = tmp.path().join(point.replace(':', "-"));
        let o = train(&cut).env("LITS_FAILPOINT", point).output().unwrap();
        assert_eq!(o.status.signal(), Some(9), "{point}: the run was not killed ({}):\n{}", o.status, text(&o.stderr));
        // Really cut short: the metrics log lacks epochs, the checkpoint is not the last one.
        let logged = metrics_lines(&cut);
        if point != last_end {
            assert!(logged < EPOCHS, "{point}: {logged} epochs logged before the resume");
            let ckpt = "checkpoints/last.ckpt";
            assert_ne!(std::fs::read(cut.join(ckpt)).ok(), std::fs::read(whole.join(ckpt)).ok(), "{point}");
        } else {
            assert_ne!(std::fs::read(cut.join("plots/loss.png")).ok(), std::fs::read(whole.join("plots/loss.png")).ok(), "{point}");
        }
        // From another working directory, by a relative path.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let resumed = ok(lits(&cache)
            .current_dir(&elsewhere)
            .args(["train", "--resume"])
            .arg(Path::new("..").join(cut.file_name().unwrap()))
            .output()
            .unwrap());
        for f in SAME {
            assert_eq!(
                std::fs::read(whole.join(f)).unwrap(),
                std::fs::read(cut.join(f)).unwrap_or_else(|e| panic!("{point}: {f}: {e}")),
                "{point}: {f} differs from the uninterrupted run's\n{}",
                text(&resumed.stderr)
            );
        }
        assert_eq!(files(&cut), files(&whole), "{point}: the resumed run holds other files than the uninterrupted one");
    }
}

#[test]
fn quickstart_resumes_bit_identically_from_every_kill_point() {
    resumes_bit_identically_from_every_kill_point("quickstart");
}

#[test]
fn mlf_core_lits_resumes_bit_identically_from_every_kill_point() {
    resumes_bit_identically_from_every_kill_point("mlf-core-lits");
}

#[test]
fn lits_patch_resumes_bit_identically_from_every_kill_point() {
    resumes_bit_identically_from_every_kill_point("lits-patch");
}

/// Every file in `configs/` is covered above.
#[test]
fn every_shipped_config_is_covered() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["lits-patch", "mlf-core-lits", "quickstart"], "a new shipped config needs its resume test");
}
