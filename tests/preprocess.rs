//! End-to-end tests of `lits preprocess` on synthetic phantoms: the cache it writes (read
//! back with NumPy), re-runs that redo nothing, bad cases and bad configs.

use std::path::Path;
use std::process::{Command, Output};

use lits_data::synth::SynthConfig;

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");

fn lits() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lits"));
    c.env_remove("LD_LIBRARY_PATH");
    c
}

/// A synthetic dataset (LiTS layout) of `cases` phantoms.
fn synth(out: &Path, cases: usize) {
    let cfg = SynthConfig { cases, seed: 5, ..SynthConfig::default() };
    lits_data::synth::write_dataset(out, &cfg).unwrap();
}

fn preprocess(data: &Path, config: &Path, out: &Path) -> Output {
    lits().args(["preprocess", "--data"]).arg(data).arg("--config").arg(config).arg("--out").arg(out).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_config(dir: &Path, json: &str) -> std::path::PathBuf {
    let p = dir.join("preprocess.json");
    std::fs::write(&p, json).unwrap();
    p
}

#[test]
fn spacing_mode_caches_npy_that_numpy_reads_and_reruns_do_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, 3);
    let cfg = write_config(tmp.path(), r#"{"mode": "spacing", "target_spacing": [3.0, 3.0, 3.0], "crop": {"kind": "body"}}"#);
    let out = tmp.path().join("cache");

    let o = preprocess(&data, &cfg, &out);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("3 processed, 0 unchanged, 0 removed, 0 failed"), "{}", text(&o.stdout));

    // NumPy loads every cached array with the shape dataset.json records.
    let check = r#"
import json, sys, numpy as np
root = sys.argv[1]
fp = json.load(open(root + "/dataset.json"))
assert fp["config"]["mode"] == "spacing" and len(fp["config_hash"]) == 64
assert fp["normaliser"]["scale"] > 0
for case in fp["cases"]:
    d = "%s/cases/case-%d/" % (root, case["id"])
    img, lab = np.load(d + "image.npy"), np.load(d + "label.npy")
    assert img.dtype == np.float32 and lab.dtype == np.uint8, (img.dtype, lab.dtype)
    assert list(img.shape) == case["shape"] == list(lab.shape), (img.shape, case["shape"])
    assert case["spacing"] == [3.0, 3.0, 3.0]
    assert set(np.unique(lab)) <= {0, 1, 2} and (lab == 1).any()
    assert len(case["image"]["sha256"]) == 64 and case["image"]["size"] > 0
print(len(fp["cases"]))
"#;
    let py = Command::new(PYTHON).args(["-c", check]).arg(&out).output().expect("run .venv/bin/python");
    assert!(py.status.success(), "{}", text(&py.stderr));
    assert_eq!(text(&py.stdout).trim(), "3");

    let o = preprocess(&data, &cfg, &out);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("0 processed, 3 unchanged"), "{}", text(&o.stdout));
}

#[test]
fn mlfcore_mode_writes_cubes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, 2);
    let cfg = write_config(tmp.path(), r#"{"mode": "mlfcore", "slices": 64, "cube": 32}"#);
    let out = tmp.path().join("cache");
    let o = preprocess(&data, &cfg, &out);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let fp: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("dataset.json")).unwrap()).unwrap();
    for case in fp["cases"].as_array().unwrap() {
        assert_eq!(case["shape"], serde_json::json!([32, 32, 32]));
    }
}

#[test]
fn bad_cases_are_reported_by_file_the_good_one_cached_and_the_exit_code_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, 3);
    let seg = |id: u32| ["nii.gz", "nii"].iter().map(|e| data.join(format!("segmentation-{id}.{e}"))).find(|p| p.exists()).unwrap();
    let (broken, removed) = (seg(1), seg(2));
    std::fs::write(&broken, b"garbage").unwrap();
    std::fs::remove_file(&removed).unwrap();
    // A label whose image is missing fails as a case of its own; it does not stop the rest.
    let orphan = data.join("segmentation-7.nii.gz");
    std::fs::copy(seg(0), &orphan).unwrap();
    let cfg = write_config(tmp.path(), r#"{"mode": "spacing", "target_spacing": [3.0, 3.0, 3.0]}"#);
    let out = tmp.path().join("cache");

    let o = preprocess(&data, &cfg, &out);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains(&broken.display().to_string()), "{err}");
    assert!(err.contains("volume-2") && err.contains("no segmentation"), "{err}");
    assert!(err.contains(&orphan.display().to_string()) && err.contains("no image volume-7"), "{err}");
    assert!(text(&o.stdout).contains("1 processed, 0 unchanged, 0 removed, 3 failed"), "{}", text(&o.stdout));
    let cases: Vec<String> =
        std::fs::read_dir(out.join("cases")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(cases, vec!["case-0".to_string()], "only the good case, no temporary folders");
}

#[test]
fn a_bad_config_names_the_file_and_the_field_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, 1);
    let cfg = write_config(tmp.path(), r#"{"mode": "spacing", "target_spacng": [1, 1, 1]}"#);
    let out = tmp.path().join("cache");
    let o = preprocess(&data, &cfg, &out);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("preprocess.json") && err.contains("target_spacng"), "{err}");
    assert!(!out.exists());

    let o = preprocess(&tmp.path().join("nowhere"), &write_config(tmp.path(), r#"{"mode": "mlfcore"}"#), &out);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("nowhere"), "{}", text(&o.stderr));
}
