//! Bad input, as a user produces it, walked as one table: every row runs `lits` on one
//! bad input and asserts a failing exit status (no panic: never 101), a message naming
//! the file or field and the problem, and that nothing was left half-written (outputs not
//! created, files that existed unchanged). Every row runs, and every failing row is
//! reported at once.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{lits, python, text, train_tiny};

/// Writes the bad files of the table into `d`:
/// - `scan.nii.gz`: a small RAS scan the tiny model can segment;
/// - `data/`: a LiTS folder whose case 0 says its 100³ voxels are 50 mm wide, whose case 1
///   has label value 7, whose case 2 has a label map of another shape, and a good case 3;
/// - `pred/`, `ref/`: two predictions and references, reference 0 with a valid sform but a
///   pixdim of zeros;
/// - weights derived from `run/best.safetensors`: int32 values (`int.safetensors`), one
///   tensor cut short (`shape.safetensors`), the file cut in half (`cut.safetensors`).
const MAKE: &str = r#"
import sys, shutil, numpy as np, nibabel as nib
from safetensors.torch import load_file, save_file
d, run = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
def body(shape):
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    img = np.full(shape, -1000.0, np.float32)
    img[((i - shape[0] / 2) / (shape[0] / 2.2)) ** 2 + ((j - shape[1] / 2) / (shape[1] / 2.2)) ** 2 < 1] = 40.0
    return img + rng.normal(0, 5, shape).astype(np.float32)
aff = np.diag([8.0, 8.0, 10.0, 1.0])
nib.save(nib.Nifti1Image(body((24, 24, 16)), aff), f"{d}/scan.nii.gz")
data = f"{d}/data"
lab = lambda shape, v=1: np.pad(np.full([n - 8 for n in shape], v, np.uint8), 4)
nib.save(nib.Nifti1Image(np.zeros((100, 100, 100), np.int16), np.diag([50.0, 50.0, 50.0, 1])), f"{data}/volume-0.nii.gz")
nib.save(nib.Nifti1Image(np.zeros((100, 100, 100), np.uint8), np.diag([50.0, 50.0, 50.0, 1])), f"{data}/segmentation-0.nii.gz")
for i in (1, 2, 3):
    nib.save(nib.Nifti1Image(body((24, 24, 16)), aff), f"{data}/volume-{i}.nii.gz")
nib.save(nib.Nifti1Image(lab((24, 24, 16), 7), aff), f"{data}/segmentation-1.nii.gz")
nib.save(nib.Nifti1Image(lab((24, 24, 12)), aff), f"{data}/segmentation-2.nii.gz")
nib.save(nib.Nifti1Image(lab((24, 24, 16)), aff), f"{data}/segmentation-3.nii.gz")
for i in (0, 1):
    seg = lab((24, 24, 16))
    nib.save(nib.Nifti1Image(seg, aff), f"{d}/pred/segmentation-{i}.nii")
    nib.save(nib.Nifti1Image(seg, aff), f"{d}/ref/segmentation-{i}.nii")
# pixdim[1..3] (bytes 80..92 of the header) set to 0; the sform stays valid.
with open(f"{d}/ref/segmentation-0.nii", "r+b") as f:
    f.seek(80); f.write(np.zeros(3, "<f4").tobytes())
assert not np.frombuffer(open(f"{d}/ref/segmentation-0.nii", "rb").read()[80:92], "<f4").any()
w = load_file(f"{run}/best.safetensors")
save_file({k: v.to(__import__("torch").int32) if k == "outc.conv_1.weight" else v for k, v in w.items()}, f"{d}/int.safetensors")
save_file({k: v[:2].contiguous() if k == "outc.conv_1.weight" else v for k, v in w.items()}, f"{d}/shape.safetensors")
raw = open(f"{run}/best.safetensors", "rb").read()
open(f"{d}/cut.safetensors", "wb").write(raw[: len(raw) // 2])
"#;

/// One row: a command on bad input and what must come of it.
struct Row {
    what: &'static str,
    cmd: Command,
    /// Substrings the output (stdout and stderr) must hold.
    says: Vec<String>,
    /// Paths that must not exist afterwards.
    absent: Vec<PathBuf>,
    /// Files whose bytes must be unchanged afterwards (read before the run).
    unchanged: Vec<(PathBuf, Vec<u8>)>,
}

impl Row {
    fn new(what: &'static str, cmd: Command, says: &[&str]) -> Self {
        Row { what, cmd, says: says.iter().map(|s| s.to_string()).collect(), absent: Vec::new(), unchanged: Vec::new() }
    }
    fn absent(mut self, p: impl Into<PathBuf>) -> Self {
        self.absent.push(p.into());
        self
    }
    fn unchanged(mut self, p: &Path) -> Self {
        self.unchanged.push((p.to_path_buf(), fs::read(p).unwrap()));
        self
    }
    /// Runs the row; returns what went wrong, if anything.
    fn check(mut self) -> Option<String> {
        let o = self.cmd.output().unwrap();
        let out = format!("{}{}", text(&o.stdout), text(&o.stderr));
        eprintln!("{} -> {}: {}", self.what, o.status, out.lines().filter(|l| l.contains("error")).collect::<Vec<_>>().join(" | "));
        let mut wrong = Vec::new();
        if o.status.success() {
            wrong.push("exit status 0".to_string());
        }
        if o.status.code() == Some(101) || out.contains("panicked") {
            wrong.push("a panic".into());
        }
        for s in &self.says {
            if !out.contains(s.as_str()) {
                wrong.push(format!("no {s:?} in the output"));
            }
        }
        for p in &self.absent {
            if p.exists() {
                wrong.push(format!("{} was left behind", p.display()));
            }
        }
        for (p, bytes) in &self.unchanged {
            if fs::read(p).ok().as_ref() != Some(bytes) {
                wrong.push(format!("{} was changed", p.display()));
            }
        }
        (!wrong.is_empty()).then(|| format!("{}: {}\n--- output ---\n{out}", self.what, wrong.join("; ")))
    }
}

/// A copy of the run (what `predict` and `resume` read) with `edit` applied to its config.
fn run_copy(run: &Path, to: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    fs::create_dir_all(to.join("checkpoints")).unwrap();
    for f in ["config.json", "plans.json", "split.json", "best.safetensors", "last.safetensors", "metrics.jsonl", "checkpoints/last.ckpt"] {
        fs::copy(run.join(f), to.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(to.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    fs::write(to.join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    to.to_path_buf()
}

fn write_json(p: &Path, v: &serde_json::Value) -> PathBuf {
    fs::write(p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p.to_path_buf()
}

/// A small tmpfs mounted at `dir` for the length of the test (`None` where this user may
/// not mount one).
struct FullDisk(PathBuf);

impl FullDisk {
    fn mount(dir: &Path) -> Option<Self> {
        fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"]).arg(dir).status().is_ok_and(|s| s.success());
        ok.then(|| FullDisk(dir.to_path_buf()))
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn every_bad_input_is_refused_naming_it_and_leaves_nothing_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cache = t.join("cache");
    let run = train_tiny(t, &cache);
    for sub in ["data", "pred", "ref"] {
        fs::create_dir(t.join(sub)).unwrap();
    }
    python(MAKE, &[t, &run]);
    let scan = t.join("scan.nii.gz");
    let base: serde_json::Value = serde_json::from_slice(&fs::read(run.join("config.json")).unwrap()).unwrap();
    let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = base.clone();
        edit(&mut v);
        v
    };
    let predict = |model: &[&std::ffi::OsStr], out: &Path| {
        let mut c = lits(&cache);
        c.arg("predict").args(model).arg(&scan).arg("--out").arg(out);
        c
    };
    let os = |p: &Path| p.as_os_str().to_owned();
    let mut rows = Vec::new();

    // A model the config cannot build, by --config and through a run's config.json.
    let zero = write_json(&t.join("zero.json"), &edited(&|v| v["model"]["base_channels"] = 0.into()));
    let w = run.join("best.safetensors");
    rows.push(
        Row::new(
            "base_channels 0 (--config)",
            predict(&["--weights".as_ref(), w.as_os_str(), "--config".as_ref(), zero.as_os_str()], &t.join("o1")),
            &["zero.json", "model.base_channels"],
        )
        .absent(t.join("o1")),
    );
    let r0 = run_copy(&run, &t.join("run-zero"), |v| v["model"]["base_channels"] = 0.into());
    rows.push(
        Row::new(
            "base_channels 0 (--run)",
            predict(&["--run".as_ref(), r0.as_os_str()], &t.join("o2")),
            &["config.json", "model.base_channels"],
        )
        .absent(t.join("o2")),
    );

    // Weights that do not fit: another width, another dtype, a tensor cut short, a file cut short.
    let wide = write_json(&t.join("wide.json"), &edited(&|v| v["model"]["base_channels"] = 8.into()));
    let cfg = run.join("config.json");
    for (what, weights, cfg, says) in [
        ("weights of another model width", w.clone(), wide.clone(), vec!["best.safetensors", "mis-shaped"]),
        ("weights of another dtype", t.join("int.safetensors"), cfg.clone(), vec!["int.safetensors", "outc.conv_1.weight"]),
        (
            "weights of another shape",
            t.join("shape.safetensors"),
            cfg.clone(),
            vec!["shape.safetensors", "outc.conv_1.weight", "mis-shaped"],
        ),
        ("weights cut short", t.join("cut.safetensors"), cfg.clone(), vec!["cut.safetensors", "not a readable safetensors file"]),
    ] {
        let out = t.join(format!("o-{}", weights.file_stem().unwrap().to_string_lossy()));
        rows.push(
            Row::new(what, predict(&[&os(Path::new("--weights")), &os(&weights), &os(Path::new("--config")), &os(&cfg)], &out), &says)
                .absent(out),
        );
    }

    // Checkpoints a resume cannot use: cut short, or of another model width.
    let cut = run_copy(&run, &t.join("run-cut"), |_| {});
    let ckpt = cut.join("checkpoints/last.ckpt");
    let bytes = fs::read(&ckpt).unwrap();
    fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let mut c = lits(&cache);
    c.args(["train", "--resume"]).arg(&cut);
    rows.push(
        Row::new("a checkpoint cut short", c, &["last.ckpt"])
            .unchanged(&ckpt)
            .unchanged(&cut.join("metrics.jsonl"))
            .unchanged(&cut.join("best.safetensors")),
    );
    let other = run_copy(&run, &t.join("run-wide"), |v| v["model"]["base_channels"] = 8.into());
    let mut c = lits(&cache);
    c.args(["train", "--resume"]).arg(&other);
    rows.push(
        Row::new("a checkpoint of another model width", c, &["last.ckpt", "another configuration"])
            .unchanged(&other.join("checkpoints/last.ckpt"))
            .unchanged(&other.join("metrics.jsonl")),
    );

    // Configs refused whole before any phantom is generated or case prepared.
    let fresh_cache = t.join("fresh-cache");
    let bad = write_json(
        &t.join("bad.json"),
        &edited(&|v| {
            v["data"]["dir"] = serde_json::Value::Null;
            v["patches"]["foreground_fraction"] = 1.5.into();
            v["patches"]["augment"] = serde_json::json!({ "scale": 2.0 });
            v["validation"]["sliding_window"]["patch"] = serde_json::json!([30, 30, 30]);
        }),
    );
    let mut c = lits(&fresh_cache);
    c.args(["train", "--config"]).arg(&bad).arg("--out").arg(t.join("run-bad"));
    rows.push(
        Row::new(
            "three bad config values",
            c,
            &["bad.json", "patches.foreground_fraction", "patches.augment.scale", "validation.sliding_window.patch[0]"],
        )
        .absent(t.join("run-bad"))
        .absent(&fresh_cache),
    );
    let huge = write_json(
        &t.join("huge.json"),
        &edited(&|v| {
            v["data"]["dir"] = serde_json::Value::Null;
            v["data"]["synth"]["in_plane_voxels"] = serde_json::json!([2048, 2048]);
            v["data"]["synth"]["slices"] = serde_json::json!([2048, 2048]);
        }),
    );
    let mut c = lits(&fresh_cache);
    c.args(["train", "--config"]).arg(&huge).arg("--out").arg(t.join("run-huge"));
    rows.push(
        Row::new("phantoms too large to allocate", c, &["huge.json", "data.synth.in_plane_voxels"])
            .absent(t.join("run-huge"))
            .absent(&fresh_cache),
    );

    // A dataset with a header that asks for 244 G voxels, a label value 7 and a label map
    // of another grid: each case named with its problem, the good case cached.
    let fine = write_json(&t.join("fine.json"), &serde_json::json!({ "mode": "spacing", "target_spacing": [0.8, 0.8, 0.8] }));
    let mut c = lits(&cache);
    c.args(["preprocess", "--data"]).arg(t.join("data")).arg("--config").arg(&fine).arg("--out").arg(t.join("prep"));
    rows.push(Row::new(
        "a dataset with three bad cases",
        c,
        &["volume-0.nii.gz", "more than 1073741824", "segmentation-1.nii.gz", "7", "segmentation-2.nii.gz", "1 processed", "3 failed"],
    ));

    // A reference with zero pixdim fails its case; the other is scored.
    let mut c = lits(&cache);
    c.args(["evaluate", "--pred"]).arg(t.join("pred")).arg("--ref").arg(t.join("ref"));
    rows.push(Row::new(
        "a reference with zero pixdim",
        c,
        &["segmentation-0.nii", "voxel size [0.0, 0.0, 0.0]", "1 cases scored, 1 failed"],
    ));

    // Outputs that cannot be written: a file where the folder should be.
    let file = t.join("a-file");
    fs::write(&file, b"keep me").unwrap();
    rows.push(
        Row::new("--out is a file (predict)", predict(&["--run".as_ref(), run.as_os_str()], &file), &["a-file", "is not a folder"])
            .unchanged(&file),
    );
    let mut c = lits(&cache);
    c.args(["train", "--config"]).arg(&cfg).arg("--out").arg(&file);
    rows.push(Row::new("--out is a file (train)", c, &["a-file", "is not a folder"]).unchanged(&file));

    // A device this machine lacks, asked for by name.
    if !lits_model::backend::cuda_available() {
        let out = t.join("o-cuda");
        let mut c = predict(&["--run".as_ref(), run.as_os_str()], &out);
        c.args(["--device", "cuda"]);
        rows.push(Row::new("--device cuda without a GPU", c, &["error: --device: `cuda` asked for", "0 CUDA device(s)"]).absent(out));
    }

    // A full disk: the mask cannot be written; no partial file stays.
    let disk = FullDisk::mount(&t.join("full"));
    let full_out = t.join("full/out");
    if disk.is_some() {
        // Fill the tmpfs to the last byte, so the mask cannot be written.
        let _ = fs::write(t.join("full/filler"), vec![0u8; 128 * 1024]);
        rows.push(Row::new(
            "a full disk",
            predict(&["--run".as_ref(), run.as_os_str()], &full_out),
            &["scan_seg.nii.gz", "No space left on device"],
        ));
    } else {
        eprintln!("note: cannot mount a tmpfs here (not root?); the full-disk row is not run");
    }

    let failures: Vec<String> = rows.into_iter().filter_map(Row::check).collect();
    if disk.is_some() {
        let left: Vec<_> = fs::read_dir(&full_out).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "a full disk left files behind: {left:?}");
    }
    drop(disk);
    assert!(failures.is_empty(), "{} of the bad inputs were not handled:\n\n{}", failures.len(), failures.join("\n\n"));

    // And the good path still works: a run trained on a GPU is used on this machine's CPU.
    if !lits_model::backend::cuda_available() {
        let gpu_run = run_copy(&run, &t.join("run-cuda"), |v| v["device"] = "cuda".into());
        let o = predict(&["--run".as_ref(), gpu_run.as_os_str()], &t.join("o-cpu")).output().unwrap();
        let err = text(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(err.contains("trained on `cuda`") && err.contains("running on the CPU"), "{err}");
        assert!(t.join("o-cpu/scan_seg.nii.gz").is_file());
    }
}
