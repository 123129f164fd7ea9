"""Label files for the end-to-end tests of `lits evaluate`, with medpy's answers.

Usage: evaluate_cases.py OUT [lits|msd]

lits (default): writes OUT/ref/segmentation-N.nii.gz and OUT/pred/ predictions for
  good cases 0-5 (random and structured masks, anisotropic spacing, oblique and flipped
  affines, predictions named segmentation-N, volume-N or .nii, stored as uint8, int16 or
  float32), and bad cases: 20 prediction of another shape, 21 prediction on another grid
  (affine), 22 no prediction, 23 prediction holding label 3; plus a prediction 99 that has
  no reference, and a scan volume-0.nii.gz beside the references (not a reference).
msd: writes OUT/ref/labelsTr/liver_N.nii.gz and OUT/pred/liver_N.nii.gz, good cases only.

Prints JSON {"cases": {N: {"liver": {...}, "tumor": {...}}}, "summary": {structure:
{"dice_per_case", "dice_global"}}} with medpy's metrics (see medpy_metrics.py) for the good
cases, computed with the reference's voxel spacing. The summary follows lits' documented
convention that two empty masks have Dice 1 (medpy's dc is null there, see medpy_metrics.py).
"""

import json
import os
import sys

import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from medpy_metrics import scores  # noqa: E402

SHAPE = (40, 36, 18)


def affine(spacing, rotate=0.0, flip=False, origin=(-60.0, 40.0, 12.5)):
    """Voxel size `spacing`, turned `rotate` radians about z, x axis flipped if `flip`."""
    c, s = np.cos(rotate), np.sin(rotate)
    r = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    if flip:
        r = r @ np.diag([-1.0, 1.0, 1.0])
    a = np.eye(4)
    a[:3, :3] = r @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def organ(centre, radii, tumor=None, shape=SHAPE):
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    p = np.stack([i, j, k], axis=-1).astype(float)
    out = np.zeros(shape, np.uint8)
    out[(((p - centre) / radii) ** 2).sum(-1) <= 1] = 1
    if tumor is not None:
        tc, tr = tumor
        out[(out == 1) & (((p - tc) ** 2).sum(-1) <= tr * tr)] = 2
    return out


def noise(rng, p1, p2, shape=SHAPE):
    u = rng.random(shape)
    return np.where(u < p2, 2, np.where(u < p1 + p2, 1, 0)).astype(np.uint8)


def save(data, aff, path, dtype=np.uint8):
    img = nib.Nifti1Image(data.astype(dtype), aff)
    img.set_data_dtype(dtype)
    nib.save(img, path)


def good_cases(rng):
    """(id, reference, prediction, affine, prediction name, prediction dtype)."""
    e1 = organ([19.0, 17.0, 9.0], [14.0, 11.0, 6.0], ([22.0, 15.0, 9.0], 3.5))
    e2 = organ([20.5, 16.0, 8.5], [15.0, 10.0, 6.5], ([24.0, 14.0, 10.0], 4.0))
    plain = organ([20.0, 18.0, 9.0], [10.0, 9.0, 5.0])
    with_tumor = organ([20.0, 18.0, 9.0], [10.0, 9.0, 5.0], ([20.0, 18.0, 9.0], 3.0))
    return [
        (0, e2, e1, affine([0.74, 0.74, 3.0]), "segmentation-0.nii.gz", np.uint8),
        (1, noise(rng, 0.3, 0.1), noise(rng, 0.25, 0.05), affine([0.7, 1.3, 2.5], 0.3), "volume-1.nii.gz", np.uint8),
        (2, with_tumor, plain, affine([0.8, 0.8, 2.0], flip=True), "segmentation-2.nii", np.int16),
        (3, plain, with_tumor, affine([2.5, 0.6, 0.9]), "volume-3.nii.gz", np.float32),
        (4, plain, plain, affine([0.5, 0.9, 1.5], -0.7, True), "segmentation-4.nii.gz", np.uint8),
        (5, e1, e2, affine([1.0, 0.8, 5.0]), "segmentation-5.nii.gz", np.uint8),
    ]


def main():
    out = sys.argv[1]
    layout = sys.argv[2] if len(sys.argv) > 2 else "lits"
    rng = np.random.default_rng(7)
    ref_dir = os.path.join(out, "ref", "labelsTr") if layout == "msd" else os.path.join(out, "ref")
    pred_dir = os.path.join(out, "pred")
    os.makedirs(ref_dir, exist_ok=True)
    os.makedirs(pred_dir, exist_ok=True)

    expected = {}
    sums = {"liver": [0, 0], "tumor": [0, 0]}
    for n, ref, pred, aff, pred_name, dtype in good_cases(rng):
        if layout == "msd":
            ref_name, pred_name = f"liver_{n}.nii.gz", f"liver_{n}.nii.gz"
        else:
            ref_name = f"segmentation-{n}.nii.gz"
        save(ref, aff, os.path.join(ref_dir, ref_name))
        save(pred, aff, os.path.join(pred_dir, pred_name), dtype)
        # The spacing lits must use: the reference file's, as nibabel reads it back.
        spacing = tuple(float(z) for z in nib.load(os.path.join(ref_dir, ref_name)).header.get_zooms())
        case = {}
        for name, select in [("liver", lambda v: v >= 1), ("tumor", lambda v: v == 2)]:
            p, r = select(pred), select(ref)
            case[name] = scores(p, r, spacing)
            sums[name][0] += 2 * int(np.count_nonzero(p & r))
            sums[name][1] += int(np.count_nonzero(p)) + int(np.count_nonzero(r))
        expected[str(n)] = case

    if layout == "lits":
        base = organ([20.0, 18.0, 9.0], [10.0, 9.0, 5.0])
        a = affine([0.8, 0.8, 2.0])
        for n in (20, 21, 22, 23):
            save(base, a, os.path.join(ref_dir, f"segmentation-{n}.nii.gz"))
        save(base[:, :, :16], a, os.path.join(pred_dir, "segmentation-20.nii.gz"))
        save(base, affine([0.8, 0.8, 2.0], origin=(-50.0, 40.0, 12.5)), os.path.join(pred_dir, "segmentation-21.nii.gz"))
        bad = base.copy()
        bad[5, 5, 5] = 3
        save(bad, a, os.path.join(pred_dir, "segmentation-23.nii.gz"))
        save(base, a, os.path.join(pred_dir, "segmentation-99.nii.gz"))
        save(base.astype(np.float32) * 100.0, a, os.path.join(ref_dir, "volume-0.nii.gz"), np.float32)

    summary = {}
    for name, (num, den) in sums.items():
        dice = [1.0 if c[name]["dc"] is None else c[name]["dc"] for c in expected.values()]
        summary[name] = {"dice_per_case": sum(dice) / len(dice), "dice_global": num / den if den else 1.0}
    json.dump({"cases": expected, "summary": summary}, sys.stdout, allow_nan=False)


if __name__ == "__main__":
    main()
