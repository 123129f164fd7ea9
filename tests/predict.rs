//! End-to-end tests of `lits predict`: a tiny run is trained, then scans in RAS and in
//! another orientation (anisotropic spacing) are segmented; nibabel reads the masks back.

mod common;

use std::path::{Path, PathBuf};

use common::{lits, ok, python, text, tiny_config, train_tiny};

/// Writes `ras.nii.gz` (RAS, 7.5 × 8 × 10 mm) and `other.nii.gz` (the same world image
/// stored with axes permuted and flipped, an LPS-like orientation) plus scans the model
/// cannot take into `dir`: `bad.nii.gz` (not NIfTI), `fourd.nii.gz` (two time points) and
/// `huge.nii.gz` (1 m voxels).
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
nib.save(nib.Nifti1Image(np.stack([img, img], -1), aff), d + "/fourd.nii.gz")
nib.save(nib.Nifti1Image(img, np.diag([1000.0, 1000.0, 1000.0, 1.0])), d + "/huge.nii.gz")
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

/// The cache folder, a tiny trained run and the scans of [`MAKE_INPUTS`], under `tmp`.
fn run_and_scans(tmp: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let cache = tmp.join("cache");
    let run = train_tiny(tmp, &cache);
    let inputs = tmp.join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    python(MAKE_INPUTS, &[&inputs]);
    (cache, run, inputs)
}

#[test]
fn masks_keep_geometry_bad_files_reported_with_peak_memory_bare_mode_is_argmax() {
    let tmp = tempfile::tempdir().unwrap();
    let (cache, run, inputs) = run_and_scans(tmp.path());

    // A folder with bad files: the others are written, each bad one named with its
    // problem, exit non-zero at the end.
    let out = tmp.path().join("out");
    let o = lits(&cache).args(["predict", "--run"]).arg(&run).arg(&inputs).arg("--out").arg(&out).output().unwrap();
    let err = text(&o.stderr);
    assert!(!o.status.success(), "a bad scan must fail the command");
    assert!(err.contains("bad.nii.gz: "), "{err}");
    assert!(err.contains("fourd.nii.gz: ") && err.contains("dimension 4 has 2 entries"), "{err}");
    assert!(err.contains("huge.nii.gz: spacing: voxel size [1000.0, 1000.0, 1000.0] mm is not a CT's"), "{err}");
    assert!(err.contains("error: 3 of 5 scans could not be segmented"), "{err}");
    for bad in ["bad", "fourd", "huge"] {
        assert!(!out.join(format!("{bad}_seg.nii.gz")).exists(), "{bad}");
    }
    python(CHECK_MASKS, &[&inputs, &out]);
    // Each written scan reports its peak memory and where the time went: stages that add
    // up to the total, the network's share among them. (The figures themselves belong to
    // the benchmarks: scripts/bench/predict_memory.sh.)
    for name in ["ras", "other"] {
        let line = err.lines().find(|l| l.contains(&format!("{name}_seg.nii.gz"))).unwrap_or_else(|| panic!("{err}"));
        let after = |key: &str| -> f64 {
            line.split(key)
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {key:?} in {line:?}"))
        };
        let mib = after("(peak resident memory ");
        assert!(mib > 0.0 && line.contains(" MiB; "), "{line}");
        let total = after("MiB; ");
        let stages = ["read ", "preprocess ", "network ", "rest "].map(after);
        assert!(stages.iter().all(|&s| s >= 0.0) && stages[2] > 0.0, "{line}");
        assert!((stages.iter().sum::<f64>() - total).abs() <= 0.02, "stages add up to the total: {line}");
    }

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

    // A config whose model cannot be built: an error naming the file and field, no panic,
    // nothing written; through --config and through a run directory alike.
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    cfg["model"]["base_channels"] = 0.into();
    let bad_run = tmp.path().join("bad-run");
    std::fs::create_dir(&bad_run).unwrap();
    for f in ["best.safetensors", "plans.json"] {
        std::fs::copy(run.join(f), bad_run.join(f)).unwrap();
    }
    std::fs::write(bad_run.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let out3 = tmp.path().join("out3");
    for how in [
        vec!["--run".to_string(), bad_run.display().to_string()],
        vec![
            "--weights".to_string(),
            bad_run.join("best.safetensors").display().to_string(),
            "--config".to_string(),
            bad_run.join("config.json").display().to_string(),
        ],
    ] {
        let o = lits(&cache).arg("predict").args(&how).arg(inputs.join("ras.nii.gz")).arg("--out").arg(&out3).output().unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{how:?}: {err}");
        assert!(err.contains("config.json") && err.contains("model.base_channels") && err.contains("got 0"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out3.exists(), "{how:?} left {}", out3.display());
    }

    let bare = tmp.path().join("bare");
    predict_ok(&cache, &["--no-preprocess", "--no-postprocess", "--probabilities"], &run, &[inputs.join("ras.nii.gz")], &bare);
    python(CHECK_BARE, &[&inputs, &bare]);
}

/// A run whose preprocessing the data resolves (`target_spacing: null`, so the dataset's
/// median spacing, and nnU-Net's foreground z-score, so the training cases' statistics)
/// hands its model on as two files: `best.safetensors` and `config.json`, copied alone into
/// an empty folder, segment a scan byte for byte as `predict --run` does. A config that
/// still needs the dataset (as a user writes one) is refused naming what is missing.
#[test]
fn weights_and_config_carried_alone_predict_as_the_run_does() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let mut cfg = tiny_config(0, 1, 2, 1);
    cfg["preprocess"]["target_spacing"] = serde_json::Value::Null;
    cfg["preprocess"]["intensity"] = serde_json::json!({ "kind": "foreground_z_score" });
    let cfg_path = tmp.path().join("resolved-by-data.json");
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let run = tmp.path().join("run");
    ok(lits(&cache).args(["train", "--config"]).arg(&cfg_path).arg("--out").arg(&run).output().unwrap());
    let recorded: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("plans.json")).unwrap()).unwrap();
    assert_eq!(recorded["preprocess"]["target_spacing"], plan["median_spacing"], "the median spacing is recorded");
    let stats = &recorded["preprocess"]["intensity"]["stats"];
    assert_eq!(stats["mean"], plan["normaliser"]["shift"], "{stats}");
    assert_eq!(stats["std"], plan["normaliser"]["scale"], "{stats}");

    let inputs = tmp.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    python(MAKE_INPUTS, &[&inputs]);
    let handed = tmp.path().join("handed-on");
    std::fs::create_dir(&handed).unwrap();
    for f in ["best.safetensors", "config.json"] {
        std::fs::copy(run.join(f), handed.join(f)).unwrap();
    }
    let scans = [inputs.join("ras.nii.gz"), inputs.join("other.nii.gz")];
    let by_run = tmp.path().join("by-run");
    predict_ok(&cache, &["--probabilities"], &run, &scans, &by_run);
    let by_files = tmp.path().join("by-files");
    ok(lits(&cache)
        .args(["predict", "--probabilities", "--weights"])
        .arg(handed.join("best.safetensors"))
        .arg("--config")
        .arg(handed.join("config.json"))
        .args(&scans)
        .arg("--out")
        .arg(&by_files)
        .output()
        .unwrap());
    for name in ["ras_seg.nii.gz", "ras_seg_prob2.nii.gz", "other_seg.nii.gz", "other_seg_prob1.nii.gz"] {
        let (a, b) = (std::fs::read(by_run.join(name)).unwrap(), std::fs::read(by_files.join(name)).unwrap());
        assert!(a == b, "{name} differs between --run and the carried weights and config");
    }

    // The config as the user wrote it names nothing the data resolved: refused, naming
    // the file and what it lacks, nothing written.
    std::fs::copy(&cfg_path, handed.join("config.json")).unwrap();
    let out = tmp.path().join("unresolved");
    let o = lits(&cache)
        .args(["predict", "--weights"])
        .arg(handed.join("best.safetensors"))
        .arg("--config")
        .arg(handed.join("config.json"))
        .arg(&scans[0])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("handed-on/config.json") && err.contains("target_spacing") && err.contains("plans.json"), "{err}");
    assert!(!out.exists(), "{}", out.display());
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

/// The uncertainty map: float32 on the scan's grid with its affine, in [0, ln 3], equal to
/// the entropy of the mean probabilities written beside it; the mask is their argmax where
/// post-processing left it alone; one pass gives another map than four.
const CHECK_UNCERTAINTY: &str = r#"
import sys, numpy as np, nibabel as nib
d, out, one = sys.argv[1], sys.argv[2], sys.argv[3]
src = nib.load(f"{d}/ras.nii.gz")
u = nib.load(f"{out}/ras_seg_uncertainty.nii.gz")
assert u.shape == src.shape and np.array_equal(u.affine, src.affine), (u.shape, u.affine)
assert u.get_data_dtype() == np.float32, u.get_data_dtype()
h = np.asarray(u.dataobj)
assert h.min() >= 0 and h.max() <= np.log(3) + 1e-6, (h.min(), h.max())
assert h.max() > 1e-3, "no uncertainty anywhere"
p = np.stack([np.asarray(nib.load(f"{out}/ras_seg_prob{c}.nii.gz").dataobj) for c in range(3)]).astype(np.float64)
want = -(p * np.log(np.where(p > 0, p, 1))).sum(0)
assert np.abs(h - want).max() < 1e-5, np.abs(h - want).max()
mask = np.asarray(nib.load(f"{out}/ras_seg.nii.gz").dataobj)
kept = mask > 0
assert np.array_equal(mask[kept], np.argmax(p, 0)[kept]), "mask is not the argmax of the mean"
h1 = np.asarray(nib.load(f"{one}/ras_seg_uncertainty.nii.gz").dataobj)
assert not np.array_equal(h1, h), "one pass and four passes agree"
"#;

/// The preview against the mask: size from the documented layout (the longest side of the
/// scan 384 px, panels 16 px apart under a 24 px band), and in each panel liver pixels red,
/// tumor pixels green, the rest grey, found through the documented pixel-to-voxel mapping
/// in RAS order (axial and coronal with the patient's right on the left, anterior and
/// superior up, sagittal with anterior on the left).
const CHECK_PREVIEW: &str = r#"
import sys, numpy as np, nibabel as nib
out, rgb_path, w, h = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rgb = np.fromfile(rgb_path, np.uint8).reshape(h, w, 3).astype(int)
seg = nib.as_closest_canonical(nib.load(f"{out}/ras_seg.nii.gz"))
mask = np.asarray(seg.dataobj)
n = np.array(mask.shape)
ext = n * np.array(seg.header.get_zooms()[:3], np.float64)
s = 384 / ext.max()
panels = [(2, 0, 1), (1, 0, 2), (0, 1, 2)]  # (fixed, horizontal, vertical) axes
size = lambda a: max(1, int(np.floor(ext[a] * s + 0.5)))
ws, hs = [size(p[1]) for p in panels], [size(p[2]) for p in panels]
assert (w, h) == (16 + sum(x + 16 for x in ws), 24 + max(hs) + 16), (w, h, ws, hs)
liver = np.argwhere(mask >= 1)
centre = np.floor(liver.mean(0) + 0.5).astype(int) if len(liver) else n // 2
left, seen = 16, {0: 0, 1: 0, 2: 0}
voxel = lambda m, k: m - 1 - np.minimum(((np.arange(k) + 0.5) * m / k).astype(int), m - 1)
for (f, a, b), pw, ph in zip(panels, ws, hs):
    lab = np.take(mask, centre[f], axis=f)[np.ix_(voxel(n[a], pw), voxel(n[b], ph))].T
    r, g, bl = (rgb[24:24 + ph, left:left + pw, c] for c in range(3))
    grey = (r == g) & (g == bl)
    assert grey[lab == 0].all(), "colour outside the mask"
    assert ((r > g + 50) & (g == bl))[lab == 1].all(), "liver not red"
    assert ((g > r + 50) & (r == bl))[lab == 2].all(), "tumor not green"
    for c in seen:
        seen[c] += int((lab == c).sum())
    left += pw + 16
assert seen[0] > 0 and seen[1] + seen[2] > 0, f"the slices must show mask and background: {seen}"
print(seen)
"#;

/// `lits predict FLAGS... --run RUN SCANS... --out OUT`, which must succeed.
fn predict_ok(cache: &Path, flags: &[&str], run: &Path, scans: &[PathBuf], out: &Path) {
    ok(lits(cache).arg("predict").args(flags).arg("--run").arg(run).args(scans).arg("--out").arg(out).output().unwrap());
}

/// Decodes an 8-bit RGB PNG: width, height, pixels.
fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight));
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn preview_and_monte_carlo_uncertainty_are_right_and_repeatable() {
    let tmp = tempfile::tempdir().unwrap();
    let (cache, run, inputs) = run_and_scans(tmp.path());
    let scans = [inputs.join("ras.nii.gz"), inputs.join("other.nii.gz")];
    let predict = |out: &str, passes: &str| -> PathBuf {
        let out = tmp.path().join(out);
        predict_ok(&cache, &["--preview", "--probabilities", "--uncertainty", passes], &run, &scans, &out);
        out
    };
    let (four, again, one) = (predict("four", "4"), predict("again", "4"), predict("one", "1"));
    python(CHECK_UNCERTAINTY, &[&inputs, &four, &one]);
    for f in ["ras_seg.nii.gz", "ras_seg_uncertainty.nii.gz", "other_seg_uncertainty.nii.gz", "ras_seg_preview.png"] {
        let (a, b) = (std::fs::read(four.join(f)).unwrap(), std::fs::read(again.join(f)).unwrap());
        assert!(a == b, "{f} differs between two identical calls");
    }

    // The same world image stored in another orientation looks the same.
    let preview = decode_png(&four.join("ras_seg_preview.png"));
    assert!(decode_png(&four.join("other_seg_preview.png")) == preview, "orientation changes the preview");
    // The barely trained network calls everything tumor once the scan is prepared; on the
    // raw voxels its mask is mixed, which the colour check needs.
    let bare = tmp.path().join("bare");
    predict_ok(&cache, &["--no-preprocess", "--no-postprocess", "--preview"], &run, &scans[..1], &bare);
    let (w, h, rgb) = decode_png(&bare.join("ras_seg_preview.png"));
    let raw = tmp.path().join("preview.rgb");
    std::fs::write(&raw, &rgb).unwrap();
    let seen = python(CHECK_PREVIEW, &[&bare, &raw, Path::new(&w.to_string()), Path::new(&h.to_string())]);
    println!("preview pixels per label: {seen}");

    // Refused before any scan is read: zero passes, and a network without dropout.
    let o = lits(&cache)
        .args(["predict", "--uncertainty", "0", "--run"])
        .arg(&run)
        .arg(&inputs)
        .arg("--out")
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    assert!(!o.status.success() && text(&o.stderr).contains("--uncertainty"), "{}", text(&o.stderr));
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    cfg["model"]["dropout"] = 0.0.into();
    cfg["model"]["updown_dropout"] = 0.0.into();
    let no_dropout = tmp.path().join("no_dropout.json");
    std::fs::write(&no_dropout, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let o = lits(&cache)
        .args(["predict", "--uncertainty", "3", "--weights"])
        .arg(run.join("best.safetensors"))
        .arg("--config")
        .arg(&no_dropout)
        .arg(inputs.join("ras.nii.gz"))
        .arg("--out")
        .arg(tmp.path().join("y"))
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(!o.status.success() && err.contains("model.dropout") && err.contains("no dropout"), "{err}");
    assert!(!tmp.path().join("y").exists(), "nothing written");
}
