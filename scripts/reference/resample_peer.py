"""Reference resamplers for the parity tests of lits-data's resample module.

Usage: resample_peer.py METHOD IN OUT I,J,K SPACING_I,SPACING_J,SPACING_K TARGET_I,TARGET_J,TARGET_K

IN is a C-order array in raw little-endian float32 (uint8 for the *_nearest methods), shape
I,J,K; OUT receives the result in the same form, and its shape is printed as JSON. The grid
conventions are those stated in lits-data's resample module:

  scipy_zoom      scipy.ndimage.zoom(order=1, grid_mode=False, mode="nearest"), zoom = s / t
                  (first and last voxel centres kept: lits' Alignment::Corners)
  scipy_origin    scipy.ndimage.map_coordinates(order=1, mode="nearest") at source index
                  i * t / s, shape round(n * s / t) (lits' Alignment::Origin)
  sitk_origin     SimpleITK ResampleImageFilter, linear, the input's origin and direction,
                  spacing t, the same shape; points ITK holds to be outside the image get NaN
  sitk_nearest    the same with the nearest-neighbour interpolator on uint8 labels; outside
                  points get 255
"""

import json
import sys

import numpy as np
import scipy.ndimage as ndi
import SimpleITK as sitk


def triple(text, kind):
    return [kind(v) for v in text.split(",")]


def main():
    method, src, dst, shape, spacing, target = sys.argv[1:7]
    shape = triple(shape, int)
    spacing = triple(spacing, float)
    target = triple(target, float)
    dtype = np.uint8 if method.endswith("nearest") else np.float32
    a = np.fromfile(src, dtype=dtype).reshape(shape)
    zoom = [s / t for s, t in zip(spacing, target)]
    out_shape = [max(1, int(round(n * z))) for n, z in zip(shape, zoom)]

    if method == "scipy_zoom":
        out = ndi.zoom(a, zoom, order=1, grid_mode=False, mode="nearest")
    elif method == "scipy_origin":
        coords = np.meshgrid(
            *[np.arange(m) * t / s for m, s, t in zip(out_shape, spacing, target)], indexing="ij"
        )
        out = ndi.map_coordinates(a, coords, order=1, mode="nearest").astype(np.float32)
    elif method in ("sitk_origin", "sitk_nearest"):
        # SimpleITK indexes arrays [z, y, x]: transpose so ITK's x is lits' i.
        img = sitk.GetImageFromArray(np.ascontiguousarray(a.transpose(2, 1, 0)))
        img.SetSpacing(spacing)
        f = sitk.ResampleImageFilter()
        f.SetOutputOrigin(img.GetOrigin())
        f.SetOutputDirection(img.GetDirection())
        f.SetOutputSpacing(target)
        f.SetSize(out_shape)
        if method == "sitk_origin":
            f.SetInterpolator(sitk.sitkLinear)
            f.SetDefaultPixelValue(float("nan"))
        else:
            f.SetInterpolator(sitk.sitkNearestNeighbor)
            f.SetDefaultPixelValue(255)
        out = sitk.GetArrayFromImage(f.Execute(img)).transpose(2, 1, 0)
    else:
        sys.exit(f"unknown method {method}")

    np.ascontiguousarray(out, dtype=dtype).tofile(dst)
    print(json.dumps(list(out.shape)))


if __name__ == "__main__":
    main()
