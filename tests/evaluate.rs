//! End-to-end tests of `lits evaluate`: label files written by nibabel
//! (scripts/reference/evaluate_cases.py), metrics compared with medpy 0.5.2 computed on the
//! same masks, bad cases reported while the others are scored; and a tiny run's held-out
//! case segmented and scored with `--run`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::PYTHON;
use serde_json::Value;

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/reference/evaluate_cases.py");

fn lits(args: &[&std::ffi::OsStr]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lits"));
    c.env_remove("LD_LIBRARY_PATH").arg("evaluate").args(args);
    c.output().unwrap()
}

/// `lits evaluate` on `dir/pred` and `dir/ref`, with `(flag, file)` outputs.
fn evaluate_dir(dir: &Path, outputs: &[(&str, &Path)]) -> Output {
    let (pred, reference) = (dir.join("pred"), dir.join("ref"));
    let mut args: Vec<&std::ffi::OsStr> = vec!["--pred".as_ref(), pred.as_os_str(), "--ref".as_ref(), reference.as_os_str()];
    for (flag, file) in outputs {
        args.push(flag.as_ref());
        args.push(file.as_os_str());
    }
    lits(&args)
}

/// Writes the cases of `layout` under `dir` and returns medpy's answers.
fn write_cases(dir: &Path, layout: &str) -> Value {
    let out = Command::new(PYTHON).arg(CASES).arg(dir).arg(layout).output().expect("run evaluate_cases.py");
    assert!(out.status.success(), "evaluate_cases.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn close(got: &Value, want: f64, tol: f64, what: &str) {
    let g = got.as_f64().unwrap_or_else(|| panic!("{what}: lits gave {got}, medpy {want}"));
    assert!((g - want).abs() <= tol, "{what}: lits {g}, medpy {want}");
}

/// Every good case's metrics against medpy's: overlap within 1e-6, distances within
/// 1e-4 mm; where medpy refuses (an empty mask) lits must give null, except the
/// documented conventions for empty masks.
fn compare_with_medpy(report: &Value, want: &Value) {
    let cases = report["cases"].as_array().unwrap();
    for (id, expected) in want["cases"].as_object().unwrap() {
        let case = cases.iter().find(|c| c["id"].as_u64() == id.parse().ok()).unwrap_or_else(|| panic!("no case {id}"));
        assert!(case.get("error").is_none(), "case {id}: {}", case["error"]);
        for structure in ["liver", "tumor"] {
            let (got, exp) = (&case[structure], &expected[structure]);
            let what = |m: &str| format!("case {id} {structure} {m}");
            assert_eq!(got["pred_voxels"], exp["pred_voxels"], "{}", what("pred_voxels"));
            assert_eq!(got["ref_voxels"], exp["ref_voxels"], "{}", what("ref_voxels"));
            let both_empty = exp["pred_voxels"] == 0 && exp["ref_voxels"] == 0;
            match exp["dc"].as_f64() {
                Some(dc) => close(&got["dice"], dc, 1e-6, &what("dice")),
                // medpy 0.5.2 gives NaN; lits documents 1.
                None => assert!(both_empty && got["dice"] == 1.0, "{}: {}", what("dice"), got["dice"]),
            }
            close(&got["jaccard"], exp["jc"].as_f64().unwrap(), 1e-6, &what("jaccard"));
            close(&got["voe"], 1.0 - exp["jc"].as_f64().unwrap(), 1e-6, &what("voe"));
            match exp["ravd"].as_f64() {
                Some(v) => close(&got["rvd"], v, 1e-6, &what("rvd")),
                None if both_empty => assert_eq!(got["rvd"], 0.0, "{}", what("rvd")),
                None => assert!(got["rvd"].is_null(), "{}: {}", what("rvd"), got["rvd"]),
            }
            for (ours, theirs) in [("assd", "assd"), ("msd", "hd"), ("hd95", "hd95"), ("rmsd", "rmsd")] {
                match exp[theirs].as_f64() {
                    Some(v) => close(&got[ours], v, 1e-4, &what(ours)),
                    None if both_empty => assert_eq!(got[ours], 0.0, "{}", what(ours)),
                    None => assert!(got[ours].is_null(), "{}: {}", what(ours), got[ours]),
                }
            }
        }
    }
    for structure in ["liver", "tumor"] {
        let (got, exp) = (&report["summary"][structure], &want["summary"][structure]);
        close(&got["dice_per_case"]["mean"], exp["dice_per_case"].as_f64().unwrap(), 1e-6, "dice per case");
        close(&got["dice_global"], exp["dice_global"].as_f64().unwrap(), 1e-6, "dice global");
    }
}

#[test]
fn scores_lits_names_like_medpy_and_reports_bad_cases() {
    let dir = tempfile::tempdir().unwrap();
    let want = write_cases(dir.path(), "lits");
    let (json, csv, png) = (dir.path().join("r.json"), dir.path().join("r.csv"), dir.path().join("dice.png"));
    let out = evaluate_dir(dir.path(), &[("--json", &json), ("--csv", &csv), ("--plot", &png)]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "four cases cannot be scored: {stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    compare_with_medpy(&report, &want);

    // Bad cases: each reported with the file and the problem; the good ones scored.
    assert_eq!(report["summary"]["cases_scored"], 6);
    assert_eq!(report["summary"]["cases_failed"], 4);
    let error = |id: u64| {
        let c = report["cases"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap();
        c["error"].as_str().unwrap_or_else(|| panic!("case {id} has no error")).to_string()
    };
    let e = error(20);
    assert!(e.contains("segmentation-20.nii.gz: shape [40, 36, 16] differs from the reference's [40, 36, 18]"), "{e}");
    let e = error(21);
    assert!(e.contains("pred/segmentation-21.nii.gz: affine") && e.contains("not on the same grid"), "{e}");
    let e = error(22);
    assert!(e.contains("ref/segmentation-22.nii.gz: no prediction for case 22"), "{e}");
    let e = error(23);
    assert!(e.contains("segmentation-23.nii.gz: holds label values outside 0..2") && e.contains(": 3 (1 voxel)"), "{e}");
    let unmatched = report["unmatched_predictions"].as_array().unwrap();
    assert_eq!(unmatched.len(), 1);
    assert!(unmatched[0].as_str().unwrap().ends_with("segmentation-99.nii.gz"));
    assert!(stderr.contains("4 of 10 cases could not be scored"), "{stderr}");
    assert!(stdout.contains("error: case 22:") && stdout.contains("warning:") && stdout.contains("IoU per class"), "{stdout}");

    // CSV: a header, two rows per scored case, one per failed case.
    let csv = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id,structure,dice,jaccard,voe,rvd,assd,rmsd,msd,hd95,iou_original"));
    assert_eq!(lines.len(), 1 + 2 * 6 + 4);
    let liver0: Vec<&str> = lines.iter().find(|l| l.starts_with("0,liver,")).unwrap().split(',').collect();
    let dc = want["cases"]["0"]["liver"]["dc"].as_f64().unwrap();
    assert!((liver0[2].parse::<f64>().unwrap() - dc).abs() < 1e-6);
    let missed = lines.iter().find(|l| l.starts_with("2,tumor,")).unwrap();
    assert!(missed.contains(",prediction,"), "empty flag in {missed}");

    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn scores_msd_layout_and_exits_zero_when_every_case_is_scored() {
    let dir = tempfile::tempdir().unwrap();
    let want = write_cases(dir.path(), "msd");
    let json = dir.path().join("r.json");
    let out = evaluate_dir(dir.path(), &[("--json", &json)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["summary"]["cases_failed"], 0);
    assert_eq!(report["lits_version"], env!("CARGO_PKG_VERSION"));
    compare_with_medpy(&report, &want);
}

#[test]
fn unusable_folders_and_outputs_fail_before_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = lits(&["--pred".as_ref(), empty.as_os_str(), "--ref".as_ref(), empty.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("empty: no reference label files"), "{err}");

    let missing = dir.path().join("missing");
    let out = lits(&["--pred".as_ref(), empty.as_os_str(), "--ref".as_ref(), missing.as_os_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));

    let json = dir.path().join("no").join("r.json");
    let out = lits(&["--pred".as_ref(), empty.as_os_str(), "--ref".as_ref(), empty.as_os_str(), "--json".as_ref(), json.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("r.json: the folder") && err.contains("does not exist"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing written");
}

#[test]
fn run_mode_segments_the_held_out_cases_and_scores_them_as_pred_ref_would() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let run = common::train_tiny(tmp.path(), &cache);
    let (json, csv, png) = (tmp.path().join("r.json"), tmp.path().join("r.csv"), tmp.path().join("dice.png"));
    let o = common::ok(
        common::lits(&cache)
            .args(["evaluate", "--run"])
            .arg(&run)
            .arg("--json")
            .arg(&json)
            .arg("--csv")
            .arg(&csv)
            .arg("--plot")
            .arg(&png)
            .output()
            .unwrap(),
    );
    let err = common::text(&o.stderr);
    let mask = run.join("evaluation").join("segmentation-3.nii.gz");
    assert!(err.contains(&format!("case 3: segmented -> {}", mask.display())), "{err}");
    assert!(mask.is_file());
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // Only the held-out case 3 (split "val": [3]), scored.
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1, "{report}");
    assert_eq!(cases[0]["id"], 3);
    assert_eq!(cases[0]["prediction"], mask.to_str().unwrap());
    assert!(cases[0].get("error").is_none() && cases[0]["liver"]["dice"].is_f64(), "{}", cases[0]);
    assert_eq!(report["summary"]["cases_scored"], 1);
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 1 + 2);
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");

    // The same case scored from the folders gives the same numbers (the other cases of the
    // dataset have no prediction there, so that call fails for them).
    let plans: Value = serde_json::from_slice(&std::fs::read(run.join("plans.json")).unwrap()).unwrap();
    let dataset = Path::new(plans["dataset"].as_str().unwrap());
    let by_folder = tmp.path().join("by_folder.json");
    let pred = run.join("evaluation");
    lits(&["--pred".as_ref(), pred.as_os_str(), "--ref".as_ref(), dataset.as_os_str(), "--json".as_ref(), by_folder.as_os_str()]);
    let folder: Value = serde_json::from_slice(&std::fs::read(&by_folder).unwrap()).unwrap();
    let case3 = folder["cases"].as_array().unwrap().iter().find(|c| c["id"] == 3).unwrap();
    for structure in ["liver", "tumor"] {
        assert_eq!(case3[structure], cases[0][structure], "{structure}");
    }

    // --out puts the masks elsewhere; --out without --run, and --run with --pred, are refused.
    let elsewhere = tmp.path().join("elsewhere");
    common::ok(common::lits(&cache).args(["evaluate", "--run"]).arg(&run).arg("--out").arg(&elsewhere).output().unwrap());
    assert!(elsewhere.join("segmentation-3.nii.gz").is_file());
    for bad in [vec!["--out", "x"], vec!["--run", "r", "--pred", "p", "--ref", "q"]] {
        let o = common::lits(&cache).arg("evaluate").args(&bad).output().unwrap();
        assert!(!o.status.success(), "{bad:?} accepted");
    }
    let o = common::lits(&cache).args(["evaluate", "--run"]).arg(tmp.path().join("nowhere")).output().unwrap();
    let err = common::text(&o.stderr);
    assert!(!o.status.success() && err.contains("nowhere"), "{err}");
}
