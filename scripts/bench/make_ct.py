"""A synthetic LiTS-sized CT for benchmarks: 512x512x200 int16 with scl_slope 1 and
scl_inter -1024, LPS, 0.7 x 0.7 x 2.5 mm; air outside an elliptic body, soft tissue inside,
a spine, and 15 HU of noise everywhere (noise is what makes real CT compress only about
2:1). Deterministic (seed 0).

Usage: make_ct.py OUT.nii.gz [OUT.nii ...]   (each path gets the same volume)
"""
import sys

import nibabel as nib
import numpy as np

if len(sys.argv) < 2:
    sys.exit(__doc__)
rng = np.random.default_rng(0)
nx, ny, nz = 512, 512, 200
x = (np.arange(nx) - nx / 2)[:, None, None] / 200.0
y = (np.arange(ny) - ny / 2)[None, :, None] / 150.0
body = (x**2 + y**2) < 1.0
vol = np.where(body, 1064, 24).astype(np.int16) + rng.normal(0, 15, (nx, ny, nz)).astype(np.int16)
spine = ((x**2 + (y + 0.6) ** 2) < 0.02) & body
vol[np.broadcast_to(spine, vol.shape)] += 700
aff = np.diag([-0.7, -0.7, 2.5, 1.0])
aff[:3, 3] = [180, 180, -300]
img = nib.Nifti1Image(np.broadcast_to(vol, (nx, ny, nz)).astype(np.int16), aff)
img.header.set_slope_inter(1.0, -1024.0)
img.header.set_xyzt_units("mm", "sec")
for path in sys.argv[1:]:
    nib.save(img, path)
