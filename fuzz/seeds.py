"""Writes the fuzz targets' seed corpora into fuzz/seeds/<target>/: tiny valid inputs of
every kind the test suites build (NIfTI datatypes, byte orders, gzip, qform/sform; cached
.npy arrays; the shipped configs; weights and checkpoints). Run with the project's Python:
    .venv/bin/python fuzz/seeds.py
The files are committed; rerun only when a reader learns a new kind of input."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
SEEDS = ROOT / "seeds"


def fresh(target):
    d = SEEDS / target
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def nifti():
    """From the NIfTI conformance fixtures (scripts/reference/nifti_fixtures.py, which the
    lits-data tests use): every datatype in both byte orders, scaled, with sform and qform,
    gzip-compressed or not, and with each of the affine sources; the small ones only."""
    d = fresh("nifti")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(REPO / "scripts/reference/nifti_fixtures.py"), "write", tmp],
                       check=True, stdout=subprocess.DEVNULL)
        for p in sorted(Path(tmp).glob("*.nii*")):
            keep = p.name.endswith((".nii", ".nii.gz")) and p.stat().st_size <= 2048 and (
                "_scaled_sq." in p.name or p.name.startswith(("i2_le_raw_", "nibabel_")))
            if keep:
                shutil.copy(p, d / p.name)


def npy():
    d = fresh("npy")
    np.save(d / "image_f32.npy", np.arange(24, dtype="<f4").reshape(2, 3, 4) / 7)
    np.save(d / "label_u8.npy", np.array([0, 1, 2, 1] * 3, dtype=np.uint8).reshape(3, 2, 2))
    np.save(d / "big_f32.npy", np.ones((2, 2, 2), dtype=">f4"))
    np.save(d / "fortran_f32.npy", np.asfortranarray(np.arange(8, dtype="<f4").reshape(2, 2, 2)))
    np.save(d / "fg_f32.npy", np.array([1.5, -3.0], dtype="<f4").reshape(2, 1, 1))


def config():
    d = fresh("config")
    for p in sorted((REPO / "configs").glob("*.json")):
        shutil.copy(p, d / p.name)
    (d / "empty.json").write_text("{}\n")
    (d / "split_kfold.json").write_text(json.dumps({
        "data": {"split": {"kind": "k_fold", "folds": 5, "fold": 1}},
        "schedule": {"kind": "plateau", "patience": 3},
        "optimizer": {"kind": "sgd", "lr": 0.01},
        "early_stop": {"patience": 2},
    }))


def tensors(prefix):
    return {
        f"{prefix}inc.conv_block_1.conv_1.weight": np.ones((2, 1, 3, 3, 3), np.float32),
        f"{prefix}inc.conv_block_1.conv_1.bias": np.zeros(2, np.float32),
        f"{prefix}mid.batch_norm_1.num_batches_tracked": np.array(3, np.int64),
    }


def safetensors():
    d = fresh("safetensors")
    save_file(tensors(""), d / "weights.safetensors")
    save_file(tensors("model."), d / "lightning.safetensors")
    save_file({"x": np.arange(6, dtype=np.float64).reshape(2, 3), "b": np.array([1, 0], np.uint8)}, d / "kinds.safetensors")


def checkpoint():
    d = fresh("checkpoint")
    state = {
        "version": 1,
        "epochs_done": 2,
        "global_step": 80,
        "schedule": {"cfg": {"kind": "poly", "power": 0.9}, "base_lr": 0.003, "epochs": 32, "lr": 0.0028,
                     "best": None, "bad_epochs": 0},
        "best": [0.5, 2],
        "stale_validations": 0,
        "seed": 0,
        "config_sha256": "0" * 64,
        "stopped_early": False,
    }
    t = tensors("model.")
    t["optim.__steps__"] = np.array([80], np.int64)
    t["optim.inc.conv_block_1.conv_1.bias.exp_avg"] = np.zeros(2, np.float32)
    save_file(t, d / "last.ckpt", metadata={"lits_state": json.dumps(state)})


if __name__ == "__main__":
    for make in (nifti, npy, config, safetensors, checkpoint):
        make()
    for p in sorted(SEEDS.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:6d}  {p.relative_to(ROOT)}")
