//! One plan per run: `lits plan` against the data it surveys, one dataset survey per
//! training run and none after it, and runs that work from any directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

mod common;
use common::{lits, ok, python, text};

/// Lines of the dataset survey's trace in a command's stderr.
fn surveys(stderr: &[u8]) -> usize {
    text(stderr).lines().filter(|l| l.contains("dataset survey:")).count()
}

/// `lits` with the survey trace on.
fn traced(cache: &Path) -> Command {
    let mut c = lits(cache);
    c.env("LITS_LOG", "info,lits_data::cache=debug");
    c
}

#[test]
fn the_quick_start_plan_matches_its_phantoms_as_nibabel_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cfg = tmp.path().join("tiny.json");
    std::fs::write(&cfg, serde_json::to_vec(&common::tiny_config(0, 2, 3, 1)).unwrap()).unwrap();
    let o = ok(lits(&cache).args(["plan", "--json", "--config"]).arg(&cfg).output().unwrap());
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    let dataset = plan["dataset"].as_str().unwrap();
    assert!(Path::new(dataset).is_absolute(), "{dataset}");
    assert_eq!(plan["split"]["val"], json!([3]));
    assert_eq!(plan["split"]["train"], json!([0, 1, 2]));
    assert_eq!(plan["estimate"]["patches_per_epoch"], json!(3 * 2));
    // Shapes, spacings and the median working spacing (RAS order) as nibabel sees them.
    let check = r#"
import glob, json, os, sys
import nibabel as nib, numpy as np
plan = json.load(open(sys.argv[1]))
files = sorted(glob.glob(os.path.join(plan["dataset"], "volume-*.nii*")))
assert len(files) == len(plan["cases"]) == 4, (len(files), len(plan["cases"]))
ras = []
for case in plan["cases"]:
    img = nib.load(case["image"])
    assert list(img.shape) == case["source_shape"], (case["id"], img.shape, case["source_shape"])
    assert np.allclose(img.header.get_zooms(), case["source_spacing"], atol=1e-5), case["id"]
    assert os.path.isabs(case["label"]) and os.path.exists(case["label"]), case["label"]
    ras.append(nib.as_closest_canonical(img).header.get_zooms())
    # Resampled extent: the stored extent over the target spacing, within a voxel.
    want = np.array(nib.as_closest_canonical(img).shape) * np.array(ras[-1]) / np.array([8.0, 8.0, 10.0])
    assert np.all(np.abs(np.array(case["prepared_shape"]) - want) <= 1.0), (case["id"], want, case["prepared_shape"])
print("ok")
"#;
    let plan_file = tmp.path().join("plan.json");
    std::fs::write(&plan_file, &o.stdout).unwrap();
    assert_eq!(python(check, &[&plan_file]).trim(), "ok");

    // The quick start's own config: its median spacing is the median over the phantoms.
    let cfg = tmp.path().join("median.json");
    let mut v = common::tiny_config(0, 2, 3, 1);
    v["preprocess"]["target_spacing"] = Value::Null;
    std::fs::write(&cfg, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = ok(lits(&cache).args(["plan", "--json", "--config"]).arg(&cfg).output().unwrap());
    std::fs::write(&plan_file, &o.stdout).unwrap();
    let median = r#"
import json, sys
import nibabel as nib, numpy as np
plan = json.load(open(sys.argv[1]))
zooms = [nib.as_closest_canonical(nib.load(c["image"])).header.get_zooms() for c in plan["cases"]]
assert np.allclose(np.median(np.array(zooms), axis=0), plan["median_spacing"], atol=1e-6), (zooms, plan["median_spacing"])
print("ok")
"#;
    assert_eq!(python(median, &[&plan_file]).trim(), "ok");
    // The text form says the same.
    let o = ok(lits(&cache).args(["plan", "--no-timing", "--config"]).arg(&cfg).output().unwrap());
    let out = text(&o.stdout);
    assert!(out.contains("cases: 4 usable, 0 failed") && out.contains("split: 3 train, 1 val (3)"), "{out}");
    assert!(out.contains("patches per epoch: 6 (3 steps)"), "{out}");
}

#[test]
fn the_original_setup_plans_a_lits_layout_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("LiTS");
    // 131 small scans with LiTS names: the original split names ids up to 130.
    let write = r#"
import os, sys
import nibabel as nib, numpy as np
out = sys.argv[1]
os.makedirs(out)
rng = np.random.default_rng(0)
for i in range(131):
    shape = (24 + i % 5, 24, 8 + i % 3)
    aff = np.diag([0.7 + 0.01 * (i % 7), 0.7, 2.5, 1.0])
    img = rng.integers(-1000, 400, size=shape).astype(np.int16)
    seg = np.zeros(shape, np.uint8)
    seg[4:12, 4:12, 2:5] = 1
    nib.save(nib.Nifti1Image(img, aff), os.path.join(out, "volume-%d.nii" % i))
    nib.save(nib.Nifti1Image(seg, aff), os.path.join(out, "segmentation-%d.nii" % i))
print("ok")
"#;
    assert_eq!(python(write, &[&data]).trim(), "ok");
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/mlf-core-lits.json");
    let cache = tmp.path().join("cache");
    let o = ok(traced(&cache).args(["plan", "--json", "--config"]).arg(&cfg).arg("--data").arg(&data).output().unwrap());
    assert_eq!(surveys(&o.stderr), 1);
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["cases"].as_array().unwrap().len(), 131);
    let val = plan["split"]["val"].as_array().unwrap();
    assert_eq!(val.len(), 13);
    assert_eq!(plan["split"]["train"].as_array().unwrap().len(), 118);
    assert!(val.contains(&json!(17)) && val.contains(&json!(117)));
    assert!(plan["cases"].as_array().unwrap().iter().all(|c| c["prepared_shape"] == json!([128, 128, 128])));
    assert_eq!(plan["median_spacing"], Value::Null);
    assert_eq!(plan["estimate"]["patches_per_epoch"], json!(30 * 4));
    // The disk store holds one cube of 128³ (the case validated), float32 image and uint8
    // labels; the memory store all 131.
    assert_eq!(plan["estimate"]["prepared_bytes"], json!(128u64 * 128 * 128 * 5));
    let mut all: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    all["data"]["store"] = json!("memory");
    let memory_cfg = tmp.path().join("memory.json");
    std::fs::write(&memory_cfg, serde_json::to_vec(&all).unwrap()).unwrap();
    let o = ok(traced(&cache).args(["plan", "--json", "--config"]).arg(&memory_cfg).arg("--data").arg(&data).output().unwrap());
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["estimate"]["prepared_bytes"], json!(131u64 * 128 * 128 * 128 * 5));
    assert!(!cache.join("prepared").exists(), "planning prepared cases");
}

/// A config whose `data.dir` is relative to it, trained from one directory, resumed and
/// evaluated from another: the run records absolute paths.
#[test]
fn a_run_with_a_relative_dataset_resumes_and_evaluates_from_elsewhere_surveying_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let work = tmp.path().join("work");
    let elsewhere = tmp.path().join("elsewhere");
    for d in [&work, &elsewhere] {
        std::fs::create_dir_all(d).unwrap();
    }
    ok(lits(&cache).args(["synth", "--cases", "4", "--seed", "7", "--out"]).arg(work.join("data")).output().unwrap());
    let mut v = common::tiny_config(4, 3, 3, 1);
    v["data"] = json!({ "dir": "../data", "split": { "kind": "ids", "val": [3] } });
    std::fs::create_dir_all(work.join("configs")).unwrap();
    std::fs::write(work.join("configs/rel.json"), serde_json::to_vec_pretty(&v).unwrap()).unwrap();

    let whole: PathBuf = tmp.path().join("whole");
    let o = ok(traced(&cache).current_dir(&work).args(["train", "--config", "configs/rel.json", "--out"]).arg(&whole).output().unwrap());
    assert_eq!(surveys(&o.stderr), 1, "{}", text(&o.stderr));
    // Logged to a pipe: no terminal colour codes.
    assert!(!text(&o.stderr).contains('\u{1b}'), "colour codes in a log: {}", text(&o.stderr));

    // Relative --config and --out, stopped after one epoch.
    let o = ok(traced(&cache)
        .current_dir(&work)
        .args(["train", "--stop-after", "1", "--config", "configs/rel.json", "--out", "runs/cut"])
        .output()
        .unwrap());
    assert_eq!(surveys(&o.stderr), 1, "{}", text(&o.stderr));
    let cut = work.join("runs/cut");
    let recorded: Value = serde_json::from_slice(&std::fs::read(cut.join("config.json")).unwrap()).unwrap();
    assert_eq!(Path::new(recorded["data"]["dir"].as_str().unwrap()), std::path::absolute(work.join("configs/../data")).unwrap());
    let plans: Value = serde_json::from_slice(&std::fs::read(cut.join("plans.json")).unwrap()).unwrap();
    assert!(Path::new(plans["dataset"].as_str().unwrap()).is_absolute());
    assert!(plans["cases"].as_array().unwrap().iter().all(|c| Path::new(c["image"].as_str().unwrap()).is_absolute()));

    // From another directory: resume, then evaluate and predict, none surveying the dataset.
    let o = ok(traced(&cache).current_dir(&elsewhere).args(["train", "--resume"]).arg(&cut).output().unwrap());
    assert_eq!(surveys(&o.stderr), 0, "{}", text(&o.stderr));
    for f in ["last.safetensors", "metrics.jsonl", "checkpoints/last.ckpt", "plans.json", "split.json"] {
        assert_eq!(std::fs::read(whole.join(f)).unwrap(), std::fs::read(cut.join(f)).unwrap(), "{f} differs after the resume");
    }
    let o = ok(traced(&cache).current_dir(&elsewhere).args(["evaluate", "--run"]).arg(&cut).args(["--out", "eval"]).output().unwrap());
    assert_eq!(surveys(&o.stderr), 0, "{}", text(&o.stderr));
    assert!(elsewhere.join("eval").is_dir());
    let scan = plans["cases"][3]["image"].as_str().unwrap();
    let o =
        ok(traced(&cache).current_dir(&elsewhere).args(["predict", "--run"]).arg(&cut).arg(scan).args(["--out", "pred"]).output().unwrap());
    assert_eq!(surveys(&o.stderr), 0, "{}", text(&o.stderr));

    // A run directory moved elsewhere still predicts.
    let moved = elsewhere.join("moved-run");
    std::fs::rename(&cut, &moved).unwrap();
    ok(lits(&cache).current_dir(&elsewhere).args(["predict", "--run"]).arg(&moved).arg(scan).args(["--out", "pred2"]).output().unwrap());
    assert_eq!(std::fs::read_dir(elsewhere.join("pred2")).unwrap().count(), std::fs::read_dir(elsewhere.join("pred")).unwrap().count());
}
