#!/usr/bin/env python3
"""The real-CT smoke check's scan and its analysis (tests/real_ct.rs).

  fetch OUT.nii.gz
      Downloads pyradiomics 3.0.1's source distribution from PyPI (pinned by its sha256),
      takes data/lung2_image.nrrd out of it (a chest and upper-abdomen CT, 512x512x61 at
      0.63 x 0.63 x 5 mm, intensities in HU) and writes it as NIfTI to OUT with SimpleITK,
      which turns NRRD's LPS geometry into the NIfTI affine. Does nothing when OUT exists;
      OUT only ever appears complete (written under a temporary name, then renamed).
  analyse CT.nii.gz MASK.nii.gz
      Prints a JSON report of MASK (labels 0 background, 1 liver, 2 tumor; the grid of CT)
      against the anatomy of CT: the liver volume (labels >= 1, litres) and the liver and
      tumor voxels above the diaphragm dome, found from the lung air (below). Slices in the
      report are numbered from the scan's lower (inferior) end, from 0.

The dome. Both volumes are reoriented to RAS from their affines (nibabel), so array axis 0
increases towards the patient's right, 1 anterior, 2 superior, whatever the stored order.
  - Air is below AIR_HU. Air components (6-connected) touching a side face of the volume
    (the right-left or anterior-posterior ends) are outside air; of the others, those of at
    least LUNG_MIN_ML are the lungs and airways; smaller ones (bowel gas, a stomach bubble)
    are not. On lung2 the lungs and airways form one component of 3.9 l; the largest gas
    component left out holds 70 ml.
  - Columns: a liver or tumor voxel higher than its column's (fixed right-left and
    anterior-posterior position) lowest lung-air voxel by more than TOLERANCE_MM is above
    the dome: there is lung under it. For this the lung air is first eroded in-plane by
    RIM_MM: at the steep posterior recesses a 5 mm slice cuts the lung's tip into a thin
    rim of partial-volume air, under tissue that is liver or diaphragm; a liver outlined
    on lung2 by thresholding reaches 10 voxels over that rim, and the same liver dilated
    in-plane by 1.3 mm 202 voxels, none of them once the rim is eroded.
  - Slices: the midline is halfway between the lung air's rightmost and leftmost voxels.
    In the right half, the lung air's area per slice grows from the lung base up to its
    largest; the dome slice is the highest slice below that largest one whose area is
    under DOME_FRACTION of it, i.e. where the right hemidiaphragm still fills a good part
    of the right hemithorax. A liver or tumor voxel in a slice higher than the dome slice
    by more than TOLERANCE_MM is above the dome. This catches the heart taken for liver:
    it sits on the central part of the diaphragm, with no lung under most of it, mostly
    above the apex of the right dome. On lung2 (slices counted from its lower end) the
    right lung's area (cm2) from its base up is 37, 57, 70, 87, 100, 116, 147 and 155 (its
    largest) in slices 12-19: the dome slice is 17 (75 % of the largest; 18 has 95 %), the
    liver's top is in slices 17-18 and the heart is in slices 16 to about 32.
Exit status 1 with a message naming the file on any problem.
"""

import hashlib
import json
import os
import sys
import tarfile
import tempfile
import urllib.request

SDIST_URL = (
    "https://files.pythonhosted.org/packages/1b/35/"
    "c7f7fb7affd302fd8107dcee6b6e7aaf3708b75ad69d5f9a3dfcadb73eaa/pyradiomics-3.0.1.tar.gz"
)
SDIST_SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"
MEMBER = "pyradiomics-3.0.1/data/lung2_image.nrrd"
MEMBER_SHA256 = "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651"
SHAPE = (512, 512, 61)

AIR_HU = -400.0
LUNG_MIN_ML = 500.0
DOME_FRACTION = 0.85
TOLERANCE_MM = 5.0
RIM_MM = 2.0


def fail(path, msg):
    print("real_ct: %s: %s" % (path, msg), file=sys.stderr)
    sys.exit(1)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url, dest):
    # pip's certificate bundle, when one is set, is what this site's HTTPS needs.
    import ssl

    cafile = os.environ.get("PIP_CERT") or None
    ctx = ssl.create_default_context(cafile=cafile)
    with urllib.request.urlopen(url, timeout=120, context=ctx) as r, open(dest, "wb") as f:
        while True:
            block = r.read(1 << 20)
            if not block:
                break
            f.write(block)


def fetch(out):
    if os.path.exists(out):
        return
    out_dir = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        fail(out, "cannot create its folder: %s" % e)
    import SimpleITK as sitk

    # Temporaries beside OUT, so that the last step is a rename within one file system.
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".real-ct.") as tmp:
        sdist = os.path.join(tmp, "pyradiomics-3.0.1.tar.gz")
        try:
            download(SDIST_URL, sdist)
        except OSError as e:
            fail(SDIST_URL, "download failed: %s" % e)
        got = sha256(sdist)
        if got != SDIST_SHA256:
            fail(SDIST_URL, "sha256 is %s, expected %s" % (got, SDIST_SHA256))
        nrrd = os.path.join(tmp, "lung2_image.nrrd")
        try:
            with tarfile.open(sdist, "r:gz") as tar, tar.extractfile(MEMBER) as src, open(nrrd, "wb") as dst:
                dst.write(src.read())
        except (KeyError, OSError, tarfile.TarError) as e:
            fail(sdist, "cannot extract %s: %s" % (MEMBER, e))
        if sha256(nrrd) != MEMBER_SHA256:
            fail(MEMBER, "sha256 is not the pinned %s" % MEMBER_SHA256)
        part = os.path.join(tmp, "lung2_image.nii.gz")
        try:
            sitk.WriteImage(sitk.ReadImage(nrrd), part)
        except RuntimeError as e:
            fail(nrrd, "conversion to NIfTI failed: %s" % e)
        import nibabel as nib

        shape = nib.load(part).shape
        if shape != SHAPE:
            fail(part, "shape %s, expected %s" % (shape, SHAPE))
        os.replace(part, out)


def load_ras(path):
    import nibabel as nib
    import numpy as np

    try:
        img = nib.as_closest_canonical(nib.load(path))
        data = np.asarray(img.dataobj)
    except Exception as e:  # nibabel raises many kinds on a bad file
        fail(path, "cannot read: %s" % e)
    if data.ndim != 3:
        fail(path, "expected a 3-D volume, got shape %s" % (data.shape,))
    return img.affine, data


def lungs(ct, voxel_ml):
    """The lung air (and airways) of `ct` in RAS; also the kept and dropped components' volumes."""
    import numpy as np
    from scipy import ndimage as ndi

    labels, n = ndi.label(ct < AIR_HU)
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1]]
    outside = np.unique(np.concatenate([f.ravel() for f in faces]))
    ml = np.bincount(labels.ravel(), minlength=n + 1) * voxel_ml
    inside = np.ones(n + 1, bool)
    inside[0] = False
    inside[outside] = False
    keep = inside & (ml >= LUNG_MIN_ML)
    dropped = sorted((float(v) for v in ml[inside & ~keep]), reverse=True)
    return keep[labels], [round(float(v), 1) for v in ml[keep]], [round(v, 1) for v in dropped]


def analyse(ct_path, mask_path):
    import numpy as np
    from scipy import ndimage as ndi

    ct_affine, ct = load_ras(ct_path)
    mask_affine, mask = load_ras(mask_path)
    if mask.shape != ct.shape or not np.allclose(mask_affine, ct_affine, atol=1e-3):
        fail(mask_path, "not on the grid of %s (shape %s vs %s)" % (ct_path, mask.shape, ct.shape))
    values = np.unique(mask)
    if not set(values.tolist()) <= {0, 1, 2}:
        fail(mask_path, "labels %s, expected 0, 1, 2" % values.tolist())
    ct = ct.astype(np.float32)
    spacing = np.sqrt((ct_affine[:3, :3] ** 2).sum(axis=0))
    voxel_ml = float(abs(np.linalg.det(ct_affine[:3, :3]))) / 1000.0
    tol = max(1, int(round(TOLERANCE_MM / spacing[2])))
    nz = ct.shape[2]

    lung, lung_ml, dropped_ml = lungs(ct, voxel_ml)
    if not lung.any():
        fail(ct_path, "no lung air (an air region of at least %g ml inside the body)" % LUNG_MIN_ML)
    liver = mask >= 1
    z = np.arange(nz)

    # Columns: lowest lung-air slice of each (x, y) after the rim's erosion; nz where the
    # column has none.
    rim = [max(1, int(round(RIM_MM / s))) for s in spacing[:2]]
    core = ndi.binary_erosion(lung, structure=np.ones((2 * rim[0] + 1, 2 * rim[1] + 1, 1), bool))
    lowest = np.where(core.any(axis=2), np.argmax(core, axis=2), nz)
    above_column = liver & (z[None, None, :] > lowest[:, :, None] + tol)

    # Slices: the right hemithorax's lung air per slice.
    xs = np.flatnonzero(lung.any(axis=(1, 2)))
    midline = (xs[0] + xs[-1]) / 2.0
    right = np.arange(ct.shape[0]) > midline
    area = lung[right].sum(axis=(0, 1)) * (spacing[0] * spacing[1] / 100.0)
    largest = int(np.argmax(area))
    under = np.flatnonzero(area[:largest] < DOME_FRACTION * area[largest])
    # No such slice: the scan starts above the dome, and all of it is above the dome.
    dome = int(under[-1]) if under.size else -1 - tol
    above_slice = liver & (z[None, None, :] > dome + tol)

    above = above_column | above_slice
    per_slice = above.sum(axis=(0, 1))
    liver_slices = np.flatnonzero(liver.any(axis=(0, 1)))
    return {
        "ct": ct_path,
        "mask": mask_path,
        "spacing_mm": [round(float(s), 4) for s in spacing],
        "liver_litres": round(float(liver.sum()) * voxel_ml / 1000.0, 6),
        "tumor_litres": round(float((mask == 2).sum()) * voxel_ml / 1000.0, 6),
        "liver_voxels": int(liver.sum()),
        "tumor_voxels": int((mask == 2).sum()),
        "liver_slices": [int(liver_slices[0]), int(liver_slices[-1])] if liver_slices.size else None,
        "lung_components_ml": lung_ml,
        "air_components_dropped_ml": dropped_ml[:5],
        "midline_voxel": midline,
        "right_lung_area_cm2": [round(float(a), 1) for a in area],
        "largest_right_lung_slice": largest,
        "dome_slice": dome,
        "dome_z_mm": float(ct_affine[2, 2] * dome + ct_affine[2, 3]),
        "tolerance_slices": tol,
        "above_dome_voxels": int(above.sum()),
        "above_dome_column_voxels": int(above_column.sum()),
        "above_dome_slice_voxels": int(above_slice.sum()),
        "above_dome_tumor_voxels": int((above & (mask == 2)).sum()),
        "above_dome_per_slice": {str(k): int(per_slice[k]) for k in np.flatnonzero(per_slice)},
    }


def main(argv):
    if len(argv) == 3 and argv[1] == "fetch":
        fetch(argv[2])
    elif len(argv) == 4 and argv[1] == "analyse":
        print(json.dumps(analyse(argv[2], argv[3]), indent=1))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
