//! End-to-end tests of `lits inspect`: its JSON agrees with what nibabel reports for the same
//! file, and bad files give `error: FILE: PROBLEM` and a non-zero exit.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn lits() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lits"));
    c.env_remove("LD_LIBRARY_PATH");
    c
}

/// nibabel writes an int16 LPS scan with scaling and reports what it reads from it.
fn nibabel_scan(dir: &Path) -> Value {
    const SCRIPT: &str = r#"
import json, sys, numpy as np, nibabel as nib
rng = np.random.default_rng(3)
raw = rng.integers(-1000, 2000, size=(9, 7, 5)).astype(np.int16)
aff = np.diag([-0.75, -0.75, 2.5, 1.0]); aff[:3, 3] = [100.0, 80.0, -40.0]
img = nib.Nifti1Image(raw, aff)
img.header.set_slope_inter(0.5, -1024.0)
img.header.set_xyzt_units("mm", "sec")
path = sys.argv[1] + "/scan.nii.gz"
nib.save(img, path)
back = nib.load(path)
v = back.get_fdata(dtype=np.float32).astype(np.float64)
print(json.dumps({"path": path, "shape": list(back.shape), "affine": back.affine.tolist(),
    "orientation": "".join(nib.aff2axcodes(back.affine)), "zooms": [float(z) for z in back.header.get_zooms()],
    "min": v.min(), "max": v.max(), "mean": v.mean(), "sum": v.sum(),
    "slope": float(back.dataobj.slope), "inter": float(back.dataobj.inter)}))
"#;
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python")).args(["-c", SCRIPT]).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn close(a: &Value, b: &Value, tol: f64) -> bool {
    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn json_matches_nibabel() {
    let dir = tempfile::tempdir().unwrap();
    let want = nibabel_scan(dir.path());
    let out = lits().args(["inspect", "--json"]).arg(want["path"].as_str().unwrap()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    let got = &all[0];
    assert_eq!(got["file"], want["path"]);
    assert_eq!(got["shape"], want["shape"]);
    assert_eq!(got["datatype"], "int16");
    assert_eq!(got["byte_order"], "little");
    assert_eq!(got["gzip"], true);
    assert_eq!(got["orientation"], want["orientation"]);
    assert_eq!(got["orientation"], "LPS");
    assert_eq!(got["affine_source"], "sform");
    assert_eq!(got["spatial_unit"], "mm");
    assert_eq!(got["non_finite"], 0);
    for r in 0..4 {
        for c in 0..4 {
            assert!(close(&got["affine"][r][c], &want["affine"][r][c], 1e-6), "affine {got} vs {want}");
        }
    }
    for a in 0..3 {
        assert!(close(&got["spacing"][a], &want["zooms"][a], 1e-6));
    }
    assert!(close(&got["scl_slope"], &want["slope"], 0.0) && close(&got["scl_inter"], &want["inter"], 0.0));
    for k in ["min", "max", "mean", "sum"] {
        assert!(close(&got[k], &want[k], 1e-9), "{k}: {} vs {}", got[k], want[k]);
    }
}

#[test]
fn text_output_names_the_facts() {
    let dir = tempfile::tempdir().unwrap();
    let want = nibabel_scan(dir.path());
    let out = lits().arg("inspect").arg(want["path"].as_str().unwrap()).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in ["shape        9 x 7 x 5", "int16 (little-endian, gzip)", "LPS (affine from sform", "value = stored * 0.5 + -1024"] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn bad_files_are_named_and_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let want = nibabel_scan(dir.path());
    let good = want["path"].as_str().unwrap();
    let junk = dir.path().join("junk.nii");
    std::fs::write(&junk, b"not a nifti file at all").unwrap();
    let folder = dir.path().join("folder.nii.gz");
    std::fs::create_dir(&folder).unwrap();
    let out = lits().args(["inspect", "--json", good]).arg(&junk).arg(&folder).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("error: {}: not a NIfTI-1 file", junk.display())), "{stderr}");
    assert!(stderr.contains(&format!("error: {}: is a directory", folder.display())), "{stderr}");
    // The good file is still reported.
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["file"], good);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
