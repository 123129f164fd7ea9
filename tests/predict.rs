//! End-to-end tests of `lits predict`: a tiny run is trained, then scans in RAS and in
//! another orientation (anisotropic spacing) are segmented; nibabel reads the masks back.

mod common;

use std::path::Path;

use common::{lits, ok, python, text, train_tiny};

/// Writes `ras.nii.gz` (RAS, 7.5 × 8 × 10 mm) and `other.nii.gz` (the same world image
/// stored with axes permuted and flipped, an LPS-like orientation) plus `bad.nii.gz`
/// (not NIfTI) into `dir`.
const MAKE_INPUTS: &str = r#"
import sys, numpy as np, nibabel as nib
d = sys.argv[1]
shape = (34, 30, 18)
i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
img = np.full(shape, -1000.0, np.float32)
body = ((i - 17) / 15.0) ** 2 + ((j - 15) / 13.0) ** 2 < 1
img[body] = 40.0
liver = ((i - 13) / 7.0) ** 2 + ((j - 14) / 6.0) ** 2 + ((k - 9) / 6.0) ** 2 < 1
img[liver] = 100.0
img[((i - 12) / 2.0) ** 2 + ((j - 14) / 2.0) ** 2 + ((k - 9) / 2.0) ** 2 < 1] = 20.0
img += np.random.default_rng(0).normal(0, 5, shape).astype(np.float32)
aff = np.array([[7.5, 0, 0, -120.0], [0, 8.0, 0, -110.0], [0, 0, 10.0, 30.0], [0, 0, 0, 1]])
nib.save(nib.Nifti1Image(img, aff), d + "/ras.nii.gz")
# Stored axes (a, b, c) = (-j, k, -i): data[a, b, c] = img[n0-1-c, n1-1-a, b].
other = np.flip(np.flip(img, 0), 1).transpose(1, 2, 0).copy()
m = np.zeros((4, 4)); m[3, 3] = 1
m[:, 0] = aff @ np.array([0, -1, 0, 0])
m[:, 1] = aff @ np.array([0, 0, 1, 0])
m[:, 2] = aff @ np.array([-1, 0, 0, 0])
m[:, 3] = aff @ np.array([shape[0] - 1, shape[1] - 1, 0, 1])
nib.save(nib.Nifti1Image(other, m), d + "/other.nii.gz")
assert np.allclose(nib.as_closest_canonical(nib.load(d + "/other.nii.gz")).get_fdata(), img, atol=1e-4)
open(d + "/bad.nii.gz", "wb").write(b"not a nifti file at all")
"#;

/// Each mask has its scan's shape, affine and form codes exactly, u8 labels 0..=2, and the
/// two orientations of one image get the same mask in world space.
const CHECK_MASKS: &str = r#"
import sys, numpy as np, nibabel as nib
d, out = sys.argv[1], sys.argv[2]
masks = {}
for name in ["ras", "other"]:
    src, seg = nib.load(f"{d}/{name}.nii.gz"), nib.load(f"{out}/{name}_seg.nii.gz")
    assert seg.shape == src.shape, (name, seg.shape, src.shape)
    assert np.array_equal(seg.affine, src.affine), (name, seg.affine, src.affine)
    assert int(seg.header["sform_code"]) == int(src.header["sform_code"])
    assert int(seg.header["qform_code"]) == int(src.header["qform_code"])
    assert seg.get_data_dtype() == np.uint8, seg.get_data_dtype()
    data = np.asarray(seg.dataobj)
    assert set(np.unique(data)) <= {0, 1, 2}, np.unique(data)
    masks[name] = np.asarray(nib.as_closest_canonical(seg).dataobj)
assert np.array_equal(masks["ras"], masks["other"]), (masks["ras"] != masks["other"]).sum()
"#;

/// The bare mode writes the argmax of exactly the probabilities it writes.
const CHECK_BARE: &str = r#"
import sys, numpy as np, nibabel as nib
d, out = sys.argv[1], sys.argv[2]
src, seg = nib.load(f"{d}/ras.nii.gz"), nib.load(f"{out}/ras_seg.nii.gz")
probs = np.stack([np.asarray(nib.load(f"{out}/ras_seg_prob{c}.nii.gz").dataobj) for c in range(3)])
assert probs.dtype == np.float32 and probs.shape[1:] == src.shape
assert np.allclose(probs.sum(0), 1, atol=1e-5), np.abs(probs.sum(0) - 1).max()
assert np.array_equal(np.argmax(probs, 0), np.asarray(seg.dataobj)), "mask is not the argmax"
"#;

#[test]
fn masks_keep_geometry_bad_file_reported_bare_mode_is_argmax() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let run = train_tiny(tmp.path(), &cache);
    let inputs = tmp.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    python(MAKE_INPUTS, &[&inputs]);

    // A folder with one bad file: the others are written, the bad one named, exit non-zero.
    let out = tmp.path().join("out");
    let o = lits(&cache).args(["predict", "--run"]).arg(&run).arg(&inputs).arg("--out").arg(&out).output().unwrap();
    assert!(!o.status.success(), "a bad scan must fail the command");
    assert!(text(&o.stderr).contains("bad.nii.gz"), "{}", text(&o.stderr));
    assert!(!out.join("bad_seg.nii.gz").exists());
    python(CHECK_MASKS, &[&inputs, &out]);

    // Weights and config instead of the run directory (plans.json beside the config).
    let out2 = tmp.path().join("out2");
    ok(lits(&cache)
        .args(["predict", "--weights"])
        .arg(run.join("best.safetensors"))
        .arg("--config")
        .arg(run.join("config.json"))
        .arg(inputs.join("ras.nii.gz"))
        .arg(inputs.join("other.nii.gz"))
        .arg("--out")
        .arg(&out2)
        .output()
        .unwrap());
    python(CHECK_MASKS, &[&inputs, &out2]);

    let bare = tmp.path().join("bare");
    ok(lits(&cache)
        .args(["predict", "--no-preprocess", "--no-postprocess", "--probabilities", "--run"])
        .arg(&run)
        .arg(inputs.join("ras.nii.gz"))
        .arg("--out")
        .arg(&bare)
        .output()
        .unwrap());
    python(CHECK_BARE, &[&inputs, &bare]);
}

/// Seeded PyTorch weights of the reference U-Net (random BatchNorm statistics included,
/// `scripts/reference/parity.py`'s `model`) and a float32 volume of exactly one window.
const MAKE_WINDOW: &str = r#"
import sys, argparse, numpy as np, nibabel as nib
sys.path.insert(0, sys.argv[1])
from parity import model, state
from safetensors.torch import save_file
d = sys.argv[2]
save_file(state(model(argparse.Namespace(seed=5, base=4, classes=3))), d + "/weights.safetensors")
x = np.random.default_rng(1).normal(0, 1, (16, 24, 20)).astype(np.float32)
nib.save(nib.Nifti1Image(x, np.diag([0.8, 0.9, 2.5, 1.0])), d + "/window.nii.gz")
"#;

/// The reference U-Net's eval-mode softmax on the stored voxels, against what lits wrote.
const CHECK_WINDOW: &str = r#"
import sys, numpy as np, nibabel as nib, torch
sys.path.insert(0, sys.argv[1])
from unet import UNet3d
from safetensors.torch import load_file
d, out = sys.argv[2], sys.argv[3]
m = UNet3d(base_channels=4, num_classes=3)
m.load_state_dict(load_file(d + "/weights.safetensors"), strict=True)
m.eval()
src = nib.load(d + "/window.nii.gz")
x = torch.from_numpy(np.asarray(src.dataobj, dtype=np.float32))
with torch.no_grad():
    want = torch.softmax(m(x[None, None]), 1)[0].numpy()
got = np.stack([np.asarray(nib.load(f"{out}/window_seg_prob{c}.nii.gz").dataobj) for c in range(3)])
assert got.dtype == np.float32 and got.shape == want.shape, (got.dtype, got.shape)
assert np.array_equal(nib.load(f"{out}/window_seg_prob1.nii.gz").affine, src.affine)
diff = np.abs(got.astype(np.float64) - want).max()
assert diff < 1e-5, f"lits and PyTorch softmax differ by {diff}"
assert want.max(0).min() < 0.9, "degenerate reference: one class everywhere"
print(f"max |diff| = {diff:.2e}")
"#;

#[test]
fn bare_mode_on_one_window_equals_the_pytorch_softmax() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = Path::new(common::REFERENCE);
    python(MAKE_WINDOW, &[reference, tmp.path()]);
    let cfg = serde_json::json!({
        "model": { "base_channels": 4 },
        "validation": { "sliding_window": { "patch": [16, 24, 20] } }
    });
    let config = tmp.path().join("config.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let out = tmp.path().join("out");
    ok(lits(&tmp.path().join("cache"))
        .args(["predict", "--no-preprocess", "--no-postprocess", "--probabilities", "--weights"])
        .arg(tmp.path().join("weights.safetensors"))
        .arg("--config")
        .arg(&config)
        .arg(tmp.path().join("window.nii.gz"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap());
    let report = python(CHECK_WINDOW, &[reference, tmp.path(), &out]);
    println!("{report}");
}
