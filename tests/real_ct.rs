//! The real-CT smoke check: the quick-start model, trained on synthetic phantoms only, on a
//! real chest and upper-abdomen CT (pyradiomics 3.0.1's `data/lung2_image.nrrd`, 512×512×61
//! at 0.63×0.63×5 mm, which `scripts/setup.sh` fetches from PyPI into
//! `.venv/share/lits/real-ct/`). It must label no voxel above the diaphragm dome liver or
//! tumor, find 1.0–2.5 l of liver in the scan's field of view, and call at most 5% of that
//! liver tumor (the scan is unenhanced and shows no large liver tumor; a model that reads
//! "darker than a portal-venous liver" as tumor calls the whole right lobe tumor). The run's
//! `best.safetensors` and `config.json`, copied alone into an empty folder, must give the
//! same mask byte for byte through `predict --weights --config`. `scripts/real_ct.py
//! analyse` finds the dome from the lung air; the second test shows it reporting masks that
//! break either rule.
//!
//! Training the quick start takes about 5 minutes on two cores; `LITS_QUICKSTART_RUN=DIR`
//! reuses a run directory of it trained before (`lits train --out DIR`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{lits, ok, python, text, PYTHON};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/real_ct.py");
const CT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/share/lits/real-ct/lung2_image.nii.gz");

/// The liver (labels ≥ 1) an adult has within this scan's field of view, litres.
const LIVER_LITRES: std::ops::RangeInclusive<f64> = 1.0..=2.5;

/// The most of that liver that may be called tumor.
const MAX_TUMOR_SHARE: f64 = 0.05;

/// The scan, or a failed test that says where it comes from: a missing scan is a set-up
/// that is not complete, not a reason to skip the check.
fn ct() -> &'static Path {
    let p = Path::new(CT);
    assert!(p.is_file(), "{CT} is missing: run scripts/setup.sh, which fetches it from PyPI (pyradiomics 3.0.1)");
    p
}

/// `real_ct.py analyse` of `mask` against the scan: its JSON report.
fn analyse(mask: &Path) -> serde_json::Value {
    let o = Command::new(PYTHON).arg(SCRIPT).arg("analyse").arg(ct()).arg(mask).output().expect("run .venv/bin/python");
    assert!(o.status.success(), "real_ct.py analyse {} failed:\n{}", mask.display(), text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("real_ct.py analyse: {e}:\n{}", text(&o.stdout)))
}

fn num(report: &serde_json::Value, key: &str) -> f64 {
    report[key].as_f64().unwrap_or_else(|| panic!("no number {key:?} in {report}"))
}

/// The numbers a reader needs to judge a report, on one line.
fn summary(r: &serde_json::Value) -> String {
    format!(
        "liver {} l (slices {}), above the dome {} voxels ({} by column, {} by slice, {} tumor; per slice {}), dome slice {} \
         ({} mm), right lung area per slice {}",
        r["liver_litres"],
        r["liver_slices"],
        r["above_dome_voxels"],
        r["above_dome_column_voxels"],
        r["above_dome_slice_voxels"],
        r["above_dome_tumor_voxels"],
        r["above_dome_per_slice"],
        r["dome_slice"],
        r["dome_z_mm"],
        r["right_lung_area_cm2"]
    )
}

#[test]
fn quickstart_labels_no_liver_above_the_diaphragm_of_a_real_ct() {
    let ct = ct();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let run = match std::env::var_os("LITS_QUICKSTART_RUN") {
        Some(dir) => {
            let run = PathBuf::from(dir);
            let config = std::fs::read(run.join("config.json"))
                .unwrap_or_else(|e| panic!("LITS_QUICKSTART_RUN={}: no config.json: {e}", run.display()));
            let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
            assert_eq!(config["name"], "quickstart", "LITS_QUICKSTART_RUN={} is not a quick-start run", run.display());
            run
        }
        None => {
            // No config: the built-in quick start (configs/quickstart.json).
            let run = tmp.path().join("run");
            ok(lits(&cache).arg("train").arg("--out").arg(&run).output().unwrap());
            run
        }
    };
    let pred = tmp.path().join("pred");
    ok(lits(&cache).args(["predict", "--run"]).arg(&run).arg(ct).arg("--out").arg(&pred).arg("--preview").output().unwrap());
    let preview = pred.join("lung2_image_seg_preview.png");
    assert!(preview.is_file(), "no {}", preview.display());

    let r = analyse(&pred.join("lung2_image_seg.nii.gz"));
    let above = num(&r, "above_dome_voxels");
    let litres = num(&r, "liver_litres");
    let tumor_share = num(&r, "tumor_voxels") / num(&r, "liver_voxels").max(1.0);
    println!("{}; tumor {:.1}% of the liver", summary(&r), 100.0 * tumor_share);

    // The model handed on as the README says: the weights and the config, nothing else.
    let carried = tmp.path().join("carried");
    std::fs::create_dir(&carried).unwrap();
    for f in ["best.safetensors", "config.json"] {
        std::fs::copy(run.join(f), carried.join(f)).unwrap();
    }
    let pred_carried = tmp.path().join("pred-carried");
    ok(lits(&cache)
        .current_dir(&carried)
        .args(["predict", "--weights", "best.safetensors", "--config", "config.json"])
        .arg(ct)
        .arg("--out")
        .arg(&pred_carried)
        .output()
        .unwrap());
    let mask = |d: &Path| std::fs::read(d.join("lung2_image_seg.nii.gz")).unwrap();
    let same = mask(&pred) == mask(&pred_carried);

    if above != 0.0 || !LIVER_LITRES.contains(&litres) || tumor_share > MAX_TUMOR_SHARE || !same {
        // Keep the masks and the preview to look at.
        let kept = tmp.keep();
        panic!(
            "want no liver or tumor above the diaphragm dome, {LIVER_LITRES:?} l of liver, at most {:.0}% of it tumor, and the \
             same mask from the weights and config carried alone; got {}, tumor {:.1}% of the liver, {}\nmasks and preview in {}",
            100.0 * MAX_TUMOR_SHARE,
            summary(&r),
            100.0 * tumor_share,
            if same { "the same mask" } else { "ANOTHER mask from the carried files" },
            kept.display()
        );
    }
}

/// Masks on the scan's own (LPS) grid, drawn in its RAS view (axis 0 to the patient's right,
/// 1 anterior, 2 superior; slice 0 is the lowest) where `real_ct.py` finds the dome slice
/// at 17 and the right lung's base near slices 5-12 (posteriorly lowest), written to
/// `argv[2]`:
/// - `below`: a block of liver low in the right anterior abdomen, under no lung;
/// - `heart`: `below` and a block where the heart is (slices 22-27), its upper half tumor;
/// - `recess`: `below` and the right lung's air in slice 12, lung over lung;
/// - `tiny`: 20×20×2 voxels of liver, 1.6 ml.
const MAKE_MASKS: &str = r#"
import sys, numpy as np, nibabel as nib
ct, out = nib.load(sys.argv[1]), sys.argv[2]
from scipy import ndimage as ndi
ras = nib.as_closest_canonical(ct)
hu = np.asarray(ras.dataobj)
to_stored = nib.orientations.ornt_transform(
    nib.orientations.io_orientation(ras.affine), nib.orientations.io_orientation(ct.affine))
def save(name, m):
    m = nib.orientations.apply_orientation(m, to_stored).astype(np.uint8)
    nib.save(nib.Nifti1Image(m, ct.affine), f"{out}/{name}.nii.gz")
below = np.zeros(hu.shape, np.uint8)
below[300:420, 280:380, 0:9] = 1
save("below", below)
heart = below.copy()
heart[230:290, 260:330, 22:25] = 1
heart[230:290, 260:330, 25:28] = 2
save("heart", heart)
air, n = ndi.label(hu[:, :, 12] < -400)
inside = np.setdiff1d(np.arange(1, n + 1), np.concatenate([air[0], air[-1], air[:, 0], air[:, -1]]))
right_air = np.isin(air, inside) & (np.arange(hu.shape[0])[:, None] > hu.shape[0] // 2)
recess = below.copy()
recess[:, :, 12][right_air] = 1
save("recess", recess)
tiny = np.zeros(hu.shape, np.uint8)
tiny[350:370, 300:320, 2:4] = 1
save("tiny", tiny)
"#;

#[test]
fn analysis_reports_liver_above_the_dome_and_implausible_volumes() {
    let tmp = tempfile::tempdir().unwrap();
    python(MAKE_MASKS, &[ct(), tmp.path()]);
    let report = |name: &str| analyse(&tmp.path().join(format!("{name}.nii.gz")));

    let below = report("below");
    assert_eq!(below["dome_slice"], 17, "{}", summary(&below));
    assert_eq!(num(&below, "above_dome_voxels"), 0.0, "a liver under the lungs: {}", summary(&below));
    // 120 × 100 × 9 voxels of 0.6269531² × 5 mm³.
    let voxel_litres = 0.6269531f64.powi(2) * 5.0 / 1e6;
    assert!((num(&below, "liver_litres") - 108_000.0 * voxel_litres).abs() < 1e-4, "{}", summary(&below));

    // The heart taken for liver (and tumor): above the dome slice, whatever is under it.
    let heart = report("heart");
    assert_eq!(num(&heart, "above_dome_slice_voxels"), 60.0 * 70.0 * 6.0, "{}", summary(&heart));
    assert_eq!(num(&heart, "above_dome_tumor_voxels"), 60.0 * 70.0 * 3.0, "{}", summary(&heart));
    assert_eq!(heart["above_dome_voxels"], heart["above_dome_slice_voxels"], "{}", summary(&heart));

    // Lung labelled liver below the dome slice: the columns see the lung under it.
    let recess = report("recess");
    assert!(num(&recess, "above_dome_column_voxels") > 0.0, "{}", summary(&recess));
    assert_eq!(num(&recess, "above_dome_slice_voxels"), 0.0, "{}", summary(&recess));

    let tiny = report("tiny");
    assert_eq!(num(&tiny, "above_dome_voxels"), 0.0, "{}", summary(&tiny));
    assert!(!LIVER_LITRES.contains(&num(&tiny, "liver_litres")), "{}", summary(&tiny));
    assert!((num(&tiny, "liver_litres") - 800.0 * voxel_litres).abs() < 1e-4, "{}", summary(&tiny));
}
