"""Reference LiTS metrics from medpy.metric.binary, for the parity tests of lits.

Usage: medpy_metrics.py DIR

DIR/cases.json lists cases: [{"name", "shape": [i, j, k], "spacing": [si, sj, sk],
"pred": FILE, "ref": FILE}], FILE being raw uint8 label arrays in C order relative to DIR.
Prints one JSON object {name: {"liver": {...}, "tumor": {...}}} where liver is label >= 1
and tumor is label == 2, each with medpy's dc, jc, ravd, assd, hd, hd95, the voxel counts,
and rmsd (the root mean square of the union of medpy's two directed surface distance sets).
A metric medpy refuses (an empty mask) is null, and so is medpy 0.5.2's dc of two empty
masks, which is NaN (numpy's 0/0; its ZeroDivisionError branch for 1.0 never runs).
"""

import json
import os
import sys

import numpy as np
from medpy.metric import binary

# medpy's own directed distances: module-level, so not name-mangled.
surface_distances = getattr(binary, "__surface_distances")


def guarded(f, *args, **kwargs):
    try:
        return float(f(*args, **kwargs))
    except RuntimeError:
        return None


def finite_or_none(x):
    x = float(x)
    return x if np.isfinite(x) else None


def rmsd(pred, ref, spacing):
    if not pred.any() or not ref.any():
        return None
    both = np.concatenate(
        [surface_distances(pred, ref, spacing, 1), surface_distances(ref, pred, spacing, 1)]
    )
    return float(np.sqrt(np.mean(both**2)))


def scores(pred, ref, spacing):
    # Quiet numpy's 0/0 warning inside medpy's dc; the NaN itself is reported as null.
    with np.errstate(invalid="ignore"):
        dc = finite_or_none(binary.dc(pred, ref))
    return {
        "pred_voxels": int(np.count_nonzero(pred)),
        "ref_voxels": int(np.count_nonzero(ref)),
        "dc": dc,
        "jc": finite_or_none(binary.jc(pred, ref)),
        "ravd": guarded(binary.ravd, pred, ref),
        "assd": guarded(binary.assd, pred, ref, voxelspacing=spacing),
        "hd": guarded(binary.hd, pred, ref, voxelspacing=spacing),
        "hd95": guarded(binary.hd95, pred, ref, voxelspacing=spacing),
        "rmsd": rmsd(pred, ref, spacing),
    }


def main():
    root = sys.argv[1]
    with open(os.path.join(root, "cases.json")) as f:
        cases = json.load(f)
    out = {}
    for case in cases:
        shape = tuple(case["shape"])
        spacing = tuple(case["spacing"])
        pred = np.fromfile(os.path.join(root, case["pred"]), dtype=np.uint8).reshape(shape)
        ref = np.fromfile(os.path.join(root, case["ref"]), dtype=np.uint8).reshape(shape)
        out[case["name"]] = {
            "liver": scores(pred >= 1, ref >= 1, spacing),
            "tumor": scores(pred == 2, ref == 2, spacing),
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
