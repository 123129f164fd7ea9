"""A NumPy transcription of the original mlf-core preprocessing (REFERENCE.md section 3).

Usage: mlfcore_preprocess.py VOLUME.nii[.gz] SEGMENTATION.nii[.gz] OUT_PREFIX [SLICES CUBE]

Writes OUT_PREFIX.image.f32 (float32) and OUT_PREFIX.label.u8 (uint8), each a C-order
CUBE x CUBE x CUBE array in raw little-endian bytes, and prints a JSON line with the cube's
start (in pooled voxels) and the slice offset. SLICES defaults to 512 and CUBE to 128, the
original's values. The parity test of lits-data's preprocess module compares lits' Mlfcore
mode with this, voxel for voxel.

Steps, per volume:
1. read image and label as float32, scl_slope/scl_inter applied (nibabel get_fdata);
2. along the third axis pad to SLICES (image with its minimum, label with 0; the extra split
   half before, half after, the odd one after) or centre-crop to SLICES;
3. 2x2x2 mean pooling of both; labels: mean, round half to even, clip to 0..2;
4. the liver bounding-box centre, floor((first + last) / 2) per axis over label >= 1, and the
   CUBE^3 block centre - CUBE/2 .. centre + CUBE/2, zero where it leaves the volume.

Step 4 in the original sliced `a[c - h : c + h]` and zero-padded at the high end, so a block
starting before index 0 wrapped around; lits (and this transcription) instead zero-fill
whichever side the block leaves the volume, keeping the liver centred. A case without liver
is centred on the middle of the pooled volume.
"""

import json
import sys

import nibabel as nib
import numpy as np


def pad_or_crop_slices(a, slices, fill):
    n = a.shape[2]
    if n <= slices:
        extra = slices - n
        before = extra // 2
        return np.pad(a, ((0, 0), (0, 0), (before, extra - before)), constant_values=fill), before
    start = (n - slices) // 2
    return a[:, :, start : start + slices], -start


def mean_pool_2(a):
    i, j, k = (d // 2 for d in a.shape)
    a = a[: 2 * i, : 2 * j, : 2 * k].astype(np.float64)
    return a.reshape(i, 2, j, 2, k, 2).mean(axis=(1, 3, 5))


def liver_centre(label):
    where = np.nonzero(label >= 1)
    if where[0].size == 0:
        return [n // 2 for n in label.shape]
    return [(int(w.min()) + int(w.max())) // 2 for w in where]


def cut_cube(a, start, edge):
    out = np.zeros((edge, edge, edge), dtype=a.dtype)
    src, dst = [], []
    for s, n in zip(start, a.shape):
        lo, hi = max(s, 0), min(s + edge, n)
        if lo >= hi:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = a[tuple(src)]
    return out


def main():
    volume, segmentation, prefix = sys.argv[1:4]
    slices = int(sys.argv[4]) if len(sys.argv) > 4 else 512
    cube = int(sys.argv[5]) if len(sys.argv) > 5 else 128

    image = nib.load(volume).get_fdata(dtype=np.float32)
    label = nib.load(segmentation).get_fdata(dtype=np.float32)

    image, offset = pad_or_crop_slices(image, slices, image.min())
    label, _ = pad_or_crop_slices(label, slices, 0)

    image = mean_pool_2(image).astype(np.float32)
    label = np.clip(np.round(mean_pool_2(label)), 0, 2).astype(np.uint8)

    start = [c - cube // 2 for c in liver_centre(label)]
    cut_cube(image, start, cube).tofile(prefix + ".image.f32")
    cut_cube(label, start, cube).tofile(prefix + ".label.u8")
    print(json.dumps({"cube_start": start, "slice_offset": offset}))


if __name__ == "__main__":
    main()
