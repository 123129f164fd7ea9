//! End-to-end tests of `lits explain`: on one window the bare method equals Captum's Guided
//! Grad-CAM and Grad-CAM of the PyTorch reference model; on a phantom the tumor map lies on
//! and around the predicted tumor; bad input is refused as `lits predict` refuses it.

mod common;

use std::path::Path;

use common::{lits, ok, python, text};

/// Seeded PyTorch weights of the reference U-Net (random BatchNorm statistics included,
/// `scripts/reference/parity.py`'s `model`) and a float32 volume of exactly one window. The
/// output biases are shifted by each class's median logit on the window, so that every
/// class is the argmax somewhere (about 2200, 2300 and 3100 voxels) and each map has
/// something to explain.
const MAKE_WINDOW: &str = r#"
import sys, json, argparse, numpy as np, nibabel as nib, torch
sys.path.insert(0, sys.argv[1])
from parity import model, state
from safetensors.torch import save_file
d = sys.argv[2]
m = model(argparse.Namespace(seed=7, base=4, classes=3))
m.eval()
x = np.random.default_rng(1).normal(0, 1, (16, 24, 20)).astype(np.float32)
with torch.no_grad():
    m.outc.conv_1.bias -= m(torch.from_numpy(x)[None, None]).flatten(2).median(2).values[0]
save_file(state(m), d + "/weights.safetensors")
nib.save(nib.Nifti1Image(x, np.diag([0.8, 0.9, 2.5, 1.0])), d + "/window.nii.gz")
json.dump({"model": {"base_channels": 4}, "validation": {"sliding_window": {"patch": [16, 24, 20]}}},
          open(d + "/config.json", "w"))
"#;

#[test]
fn bare_method_on_one_window_equals_captum() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = Path::new(common::REFERENCE);
    python(MAKE_WINDOW, &[reference, tmp.path()]);
    let config = tmp.path().join("config.json");
    // The original's layer (outc) for both methods, and layers where Grad-CAM's gradient
    // passes ReLUs and its map is upsampled (up1: ½, mid: ¼ resolution).
    for (method, layer) in [("guided-gradcam", "outc"), ("gradcam", "outc"), ("guided-gradcam", "up1"), ("gradcam", "mid")] {
        let out = tmp.path().join(format!("{method}-{layer}"));
        for class in ["background", "liver", "tumor"] {
            ok(lits(&tmp.path().join("cache"))
                .args(["explain", "--no-preprocess", "--method", method, "--layer", layer, "--class", class])
                .arg("--weights")
                .arg(tmp.path().join("weights.safetensors"))
                .arg("--config")
                .arg(&config)
                .arg(tmp.path().join("window.nii.gz"))
                .arg("--out")
                .arg(&out)
                .output()
                .unwrap());
        }
        let script = format!("{}/captum_explain.py", common::REFERENCE);
        let o = std::process::Command::new(common::PYTHON)
            .arg(script)
            .arg(tmp.path().join("weights.safetensors"))
            .arg(tmp.path().join("window.nii.gz"))
            .arg(&out)
            .args(["--base", "4", "--method", method, "--layer", layer])
            .output()
            .unwrap();
        assert!(o.status.success(), "{method} at {layer}:\n{}\n{}", text(&o.stdout), text(&o.stderr));
        print!("{}", text(&o.stdout));
    }
}

/// A phantom and a U-Net that finds its lesion, for checking where the tumor map lies. The
/// network is built by hand, transparent where a briefly trained one finds no tumor in
/// phantoms this small: its input block takes the local 3×3×3 mean of the normalised CT
/// minus 0.75 (above 175 HU), the skip carries it past the zeroed lower levels, and the
/// tumor logit is 20 times it minus 1 (background 0, liver −5), so tumor is predicted where
/// the local mean is above 200 HU. The scan (`case.nii.gz`) is stored LPS-like, 4 × 5 × 8
/// mm, a 250 HU lesion in a 100 HU liver off the centre; the config resamples it to
/// 4 × 4 × 8 mm and slides 16³ windows over it.
const MAKE_PHANTOM: &str = r#"
import sys, json, numpy as np, nibabel as nib, torch
sys.path.insert(0, sys.argv[1])
from unet import UNet3d
from safetensors.torch import save_file
d = sys.argv[2]
sd = {k: torch.zeros_like(v) for k, v in UNet3d(base_channels=4, num_classes=3).state_dict().items()}
for k in sd:
    if k.endswith("running_var") or ("batch_norm" in k and k.endswith(".weight")):
        sd[k].fill_(1.0)
sd["inc.conv_block_1.conv_1.weight"][0, 0] = 1.0 / 27
sd["inc.conv_block_1.conv_1.bias"][0] = -0.75
sd["inc.conv_block_1.conv_2.weight"][0, 0, 1, 1, 1] = 1.0
sd["up2.conv.conv_1.weight"][0, 8, 1, 1, 1] = 1.0
sd["up2.conv.conv_2.weight"][0, 0, 1, 1, 1] = 1.0
sd["outc.conv_1.weight"][2, 0] = 20.0
sd["outc.conv_1.bias"][:] = torch.tensor([0.0, -5.0, -1.0])
save_file({k: v.contiguous() for k, v in sd.items()}, d + "/weights.safetensors")
json.dump({"model": {"base_channels": 4},
           "preprocess": {"mode": "spacing", "target_spacing": [4.0, 4.0, 8.0],
                          "intensity": {"kind": "window", "lower": -200.0, "upper": 300.0}},
           "validation": {"sliding_window": {"patch": [16, 16, 16], "overlap": 0.25}}},
          open(d + "/config.json", "w"))
shape = (40, 36, 20)
i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
img = np.full(shape, -1000.0, np.float32)
img[((i - 20) / 18.0) ** 2 + ((j - 18) / 16.0) ** 2 < 1] = 40.0
img[((i - 14) / 9.0) ** 2 + ((j - 16) / 8.0) ** 2 + ((k - 10) / 6.0) ** 2 < 1] = 100.0
img[((i - 10) / 4.0) ** 2 + ((j - 20) / 3.5) ** 2 + ((k - 12) / 2.5) ** 2 < 1] = 250.0
img += np.random.default_rng(0).normal(0, 5, shape).astype(np.float32)
s = np.array([4.0, 5.0, 8.0])
aff = np.diag([-s[0], -s[1], s[2], 1.0])
aff[:3, 3] = [(shape[0] - 1) * s[0] - 80, (shape[1] - 1) * s[1] - 90, 20]
nib.save(nib.Nifti1Image(img[::-1, ::-1].copy(), aff), d + "/inputs/case.nii.gz")
"#;

/// The share of the tumor map's mass (sum of its values) within 2 voxels of the tumor that
/// `lits predict` found (26-connected dilation on the scan's grid), the tumor's size and
/// the share of the scan within those 2 voxels; and the map's geometry.
const TUMOR_MASS: &str = r#"
import sys, numpy as np, nibabel as nib
from scipy import ndimage
scan, out = sys.argv[1], sys.argv[2]
src = nib.load(scan)
m = nib.load(f"{out}/case_seg_explain_tumor.nii.gz")
assert m.shape == src.shape and np.array_equal(m.affine, src.affine) and m.get_data_dtype() == np.float32
heat = np.asarray(m.dataobj).astype(np.float64)
tumor = np.asarray(nib.load(f"{out}/case_seg.nii.gz").dataobj) == 2
assert heat.min() >= 0 and heat.sum() > 0 and tumor.sum() > 0, (heat.min(), heat.sum(), tumor.sum())
near = ndimage.binary_dilation(tumor, ndimage.generate_binary_structure(3, 3), iterations=2)
print(f"{heat[near].sum() / heat.sum():.4f} {tumor.sum()} {near.mean():.4f}")
"#;

#[test]
fn tumor_map_lies_on_the_predicted_tumor_and_bad_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let inputs = tmp.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    python(MAKE_PHANTOM, &[Path::new(common::REFERENCE), tmp.path()]);
    let scan = inputs.join("case.nii.gz");
    // `lits CMD FLAGS... --weights W --config C SCAN --out OUT`.
    let on = |cmd: &str, flags: &[&str], scan: &Path, out: &Path| {
        lits(&cache)
            .arg(cmd)
            .args(flags)
            .arg("--weights")
            .arg(tmp.path().join("weights.safetensors"))
            .arg("--config")
            .arg(tmp.path().join("config.json"))
            .arg(scan)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = tmp.path().join("out");
    let o = ok(on("explain", &["--preview"], &scan, &out));
    let err = text(&o.stderr);
    assert!(err.contains("case_seg_explain_tumor.nii.gz (peak resident memory ") && err.contains(" MiB; "), "{err}");
    assert!(err.contains("network ") && err.contains("rest "), "{err}");
    assert!(out.join("case_seg_explain_tumor.png").is_file());
    ok(on("predict", &[], &scan, &out));
    let report = python(TUMOR_MASS, &[&scan, &out]);
    println!("tumor map mass within 2 voxels of the predicted tumor, tumor voxels, share of the scan there: {report}");
    let share: f64 = report.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap();
    // The region is a small part of the scan (printed); most of the map must lie there.
    assert!(share >= 0.9, "only {share} of the tumor map lies on and around the predicted tumor");

    // The same scan without its lesion: tumor is predicted nowhere, so the map is zero.
    // Said in a warning naming the scan and the class, in the scan's line and in the JSON
    // summary; the map is still written. The scan with the lesion carries no warning.
    let clean = tmp.path().join("clean");
    std::fs::create_dir(&clean).unwrap();
    python(
        "import sys, numpy as np, nibabel as nib\n\
         s = nib.load(sys.argv[1]); x = np.asarray(s.dataobj).copy(); x[x > 175] = 100.0\n\
         nib.save(nib.Nifti1Image(x, s.affine, s.header), sys.argv[2] + '/no-lesion.nii.gz')",
        &[&scan, &clean],
    );
    let out_clean = tmp.path().join("out-clean");
    let summary = tmp.path().join("explain.json");
    let o = ok(on("explain", &["--json", summary.to_str().unwrap()], &clean.join("no-lesion.nii.gz"), &out_clean));
    let err = text(&o.stderr);
    let warning = err.lines().find(|l| l.contains("WARN")).unwrap_or_else(|| panic!("no warning:\n{err}"));
    assert!(warning.contains("no-lesion.nii.gz") && warning.contains("predicts tumor nowhere") && warning.contains("zero"), "{err}");
    let line = err.lines().find(|l| l.contains("no-lesion_seg_explain_tumor.nii.gz (peak")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("tumor predicted nowhere: the map is zero"), "{line}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let entry = &v["scans"][0];
    assert_eq!(entry["class"], "tumor", "{v}");
    assert_eq!(entry["class_voxels"], 0, "{v}");
    assert_eq!(entry["map_is_zero"], true, "{v}");
    assert!(entry["warning"].as_str().is_some_and(|w| w.contains("nowhere")), "{v}");
    let zero = python(
        "import sys, numpy as np, nibabel as nib\nprint(int(np.count_nonzero(np.asarray(nib.load(sys.argv[1]).dataobj))))",
        &[&out_clean.join("no-lesion_seg_explain_tumor.nii.gz")],
    );
    assert_eq!(zero.trim(), "0", "the map is written, zero everywhere");
    let summary2 = tmp.path().join("explain2.json");
    let o = ok(on("explain", &["--json", summary2.to_str().unwrap()], &scan, &tmp.path().join("out-lesion")));
    assert!(!text(&o.stderr).contains("WARN"), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary2).unwrap()).unwrap();
    assert!(v["scans"][0]["class_voxels"].as_u64().unwrap() > 0 && v["scans"][0]["map_is_zero"] == false, "{v}");
    assert!(v["scans"][0].get("warning").is_none(), "{v}");

    // Bad input as for predict: reported by name, the others explained, nothing left of
    // the bad ones; unknown names refused with the choices.
    std::fs::write(inputs.join("bad.nii.gz"), b"not a nifti file at all").unwrap();
    let out2 = tmp.path().join("out2");
    let o = on("explain", &[], &inputs, &out2);
    let err = text(&o.stderr);
    assert!(!o.status.success() && err.contains("bad.nii.gz: "), "{err}");
    assert!(err.contains("error: 1 of 2 scans could not be explained"), "{err}");
    assert!(out2.join("case_seg_explain_tumor.nii.gz").is_file());
    assert!(!out2.join("bad_seg_explain_tumor.nii.gz").exists());
    for (flag, value, choices) in [
        ("--class", "kidney", "background, liver, tumor"),
        ("--layer", "conv9", "inc, down1, down2, mid, up1, up2, outc"),
        ("--method", "lime", "guided-gradcam, gradcam"),
    ] {
        let o = on("explain", &[flag, value], &scan, &tmp.path().join("x"));
        let err = text(&o.stderr);
        assert!(!o.status.success() && err.contains(value) && err.contains(choices), "{flag}: {err}");
    }
    assert!(!tmp.path().join("x").exists(), "nothing written");
}
