//! End-to-end tests of `lits synth`: reproducible bytes, and files that nibabel reads back
//! with the intended geometry and sensible anatomy.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");

fn lits() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lits"));
    c.env_remove("LD_LIBRARY_PATH");
    c
}

fn synth(out: &Path, cases: usize, seed: u64) {
    let o = lits().args(["synth", "--out"]).arg(out).args(["--cases", &cases.to_string(), "--seed", &seed.to_string()]).output().unwrap();
    assert!(o.status.success(), "lits synth failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// sha256 of every file in `dir`, by name.
fn hashes(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let digest = Sha256::digest(std::fs::read(e.path()).unwrap());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            (e.file_name().to_string_lossy().into_owned(), hex)
        })
        .collect()
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
    // Three runs at once: the same seed twice, then another.
    std::thread::scope(|s| {
        for (dir, seed) in [(&a, 11), (&b, 11), (&c, 12)] {
            s.spawn(move || synth(dir, 2, seed));
        }
    });
    let (ha, hb, hc) = (hashes(&a), hashes(&b), hashes(&c));
    assert_eq!(ha.len(), 5, "{:?}", ha.keys());
    assert_eq!(ha, hb);
    for name in ["volume-0.nii.gz", "segmentation-1.nii.gz", "synth.json"] {
        assert_ne!(ha[name], hc[name], "{name} did not change with the seed");
    }
}

/// Reads every case with nibabel and reports what the Rust side checks.
const CHECK: &str = r#"
import json, sys
import numpy as np, nibabel as nib
from scipy import ndimage

d = sys.argv[1]
manifest = json.load(open(f"{d}/synth.json"))
out = []
for case in manifest["cases"]:
    i = case["id"]
    img = nib.load(f"{d}/volume-{i}.nii.gz")
    seg = nib.load(f"{d}/segmentation-{i}.nii.gz")
    hu = img.get_fdata()
    lab = np.asarray(seg.dataobj)
    aff = img.affine
    hdr = img.header
    # nibabel moves the scaling from the loaded header into the array proxy.
    slope, inter = img.dataobj.slope, img.dataobj.inter
    # World coordinates of chosen voxels: anatomy must sit where a patient's would.
    def world(mask):
        return np.argwhere(mask) @ aff[:3, :3].T + aff[:3, 3]
    middle = (aff[:3, :3] @ ((np.array(hu.shape) - 1) / 2) + aff[:3, 3]).tolist()
    bone = world(hu > 400)
    spine = bone[np.abs(bone[:, 0] - middle[0]) < 15]
    # Each tumor component must be wrapped in liver: count its outer shell's labels.
    tumor_cc, n_cc = ndimage.label(lab == 2)
    shell_liver = []
    for k in range(1, n_cc + 1):
        blob = tumor_cc == k
        shell = ndimage.binary_dilation(blob) & ~blob
        shell_liver.append([float((lab[shell] == 1).mean()), int(blob.sum())])
    out.append({
        "id": i,
        "affine_error": float(np.abs(aff - np.array(case["affine"])).max()),
        "seg_affine_error": float(np.abs(seg.affine - aff).max()),
        "axcodes": "".join(nib.aff2axcodes(aff)),
        "shape": list(hu.shape),
        "seg_shape": list(lab.shape),
        "zooms": [float(z) for z in hdr.get_zooms()],
        "dtype": str(hdr.get_data_dtype()),
        "seg_dtype": str(seg.header.get_data_dtype()),
        "slope": float(slope),
        "inter": float(inter),
        "labels": sorted(int(v) for v in np.unique(lab)),
        "liver_voxels": int((lab >= 1).sum()),
        "tumor_voxels": int((lab == 2).sum()),
        "tumor_shell_liver": shell_liver,
        "liver_mean_hu": float(hu[lab == 1].mean()),
        "hu_integer": bool(np.all(hu == np.round(hu))),
        "hu_range": [float(hu.min()), float(hu.max())],
        "liver_world": world(lab >= 1).mean(axis=0).tolist(),
        "spine_world": spine.mean(axis=0).tolist(),
        "middle_world": middle,
    })
print(json.dumps({"manifest": manifest, "cases": out}))
"#;

#[test]
fn nibabel_reads_the_intended_geometry_and_anatomy() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    synth(&dir, 5, 3);
    let o = Command::new(PYTHON).args(["-c", CHECK]).arg(&dir).output().unwrap();
    assert!(o.status.success(), "python check failed: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cases = v["cases"].as_array().unwrap();
    let manifest = v["manifest"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    assert_eq!(v["manifest"]["config"]["seed"], 3);

    let f = |x: &serde_json::Value| x.as_f64().unwrap();
    let mut with_tumor = 0;
    let mut non_ras = 0;
    let mut permuted = 0;
    let mut int16 = 0;
    for (c, m) in cases.iter().zip(manifest) {
        let id = &c["id"];
        // Geometry: the affine intended (to float32 precision), in both files.
        assert!(f(&c["affine_error"]) < 1e-3, "case {id}: affine off by {}", c["affine_error"]);
        assert!(f(&c["seg_affine_error"]) < 1e-6, "case {id}: label affine differs");
        assert_eq!(c["axcodes"], m["orientation"], "case {id}");
        assert_eq!(c["shape"], m["shape"], "case {id}");
        assert_eq!(c["seg_shape"], m["shape"], "case {id}");
        for a in 0..3 {
            assert!((f(&c["zooms"][a]) - f(&m["spacing"][a])).abs() < 1e-4, "case {id}: zooms");
        }
        let code = c["axcodes"].as_str().unwrap();
        if code != "RAS" {
            non_ras += 1;
        }
        // A permuted case stores a non-x world axis first.
        if !matches!(code.as_bytes()[0], b'R' | b'L') {
            permuted += 1;
        }
        // Storage: float32, or int16 with the recorded scaling.
        assert_eq!(c["seg_dtype"], "uint8", "case {id}");
        match m["storage"]["dtype"].as_str().unwrap() {
            "f32" => {
                assert_eq!(c["dtype"], "float32", "case {id}");
                assert_eq!((f(&c["slope"]), f(&c["inter"])), (1.0, 0.0), "case {id}");
            }
            "i16" => {
                int16 += 1;
                assert_eq!(c["dtype"], "int16", "case {id}");
                assert_eq!(c["slope"], m["storage"]["slope"], "case {id}");
                assert_eq!(c["inter"], m["storage"]["inter"], "case {id}");
            }
            other => panic!("case {id}: storage {other}"),
        }
        // Labels and intensities.
        let labels: Vec<u64> = c["labels"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert!(labels.iter().all(|&l| l <= 2) && labels.contains(&1), "case {id}: labels {labels:?}");
        assert!(c["liver_voxels"].as_u64().unwrap() > 5000, "case {id}: liver too small");
        assert_eq!(c["liver_voxels"], m["liver_voxels"], "case {id}");
        assert_eq!(c["tumor_voxels"], m["tumor_voxels"], "case {id}");
        let liver_hu = f(&c["liver_mean_hu"]);
        // The parenchyma's drawn mean; its bright vessels (portal phase) and texture move the
        // labelled mean by a few HU.
        let drawn = f(&m["liver_hu"]);
        assert!((40.0..140.0).contains(&liver_hu) && (liver_hu - drawn).abs() < 15.0, "case {id}: liver mean {liver_hu} HU, drawn {drawn}");
        assert_eq!(c["hu_integer"], true, "case {id}");
        assert!(f(&c["hu_range"][0]) >= -1024.0 && f(&c["hu_range"][1]) <= 3071.0, "case {id}");
        let tumor_voxels = c["tumor_voxels"].as_u64().unwrap();
        if tumor_voxels > 0 {
            with_tumor += 1;
            // A lesion of a few voxels may sit where the liver is a voxel thin (its edge, a
            // slice at the end of the scan); a larger one lies in liver.
            for share in c["tumor_shell_liver"].as_array().unwrap() {
                if share[1].as_u64().unwrap() >= 20 {
                    assert!(f(&share[0]) > 0.5, "case {id}: a tumor is not wrapped in liver ({share})");
                }
            }
        } else {
            assert!(m["tumors"].as_array().unwrap().is_empty(), "case {id}: drawn tumors left no voxel");
        }
        // Anatomy in world space (RAS+): liver on the patient's right (+x) of the middle,
        // spine (bone near the midline) behind (-y) the liver, whatever the stored axes.
        let (liver, spine, middle) = (&c["liver_world"], &c["spine_world"], &c["middle_world"]);
        assert!(f(&liver[0]) > f(&middle[0]) + 20.0, "case {id} ({code}): liver not on the right");
        assert!(f(&spine[1]) < f(&liver[1]) - 20.0, "case {id} ({code}): spine not behind the liver");
    }
    assert!((1..5).contains(&with_tumor), "{with_tumor} of 5 cases have tumors");
    assert!(non_ras >= 3 && permuted >= 1, "{non_ras} non-RAS, {permuted} permuted");
    assert!((1..5).contains(&int16), "{int16} of 5 cases are int16");
}

#[test]
fn a_folder_with_foreign_files_is_refused() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("notes.txt"), b"mine").unwrap();
    let o = lits().args(["synth", "--cases", "1", "--out"]).arg(t.path()).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: ") && err.contains("notes.txt"), "{err}");
    assert!(!t.path().join("volume-0.nii.gz").exists());
}
