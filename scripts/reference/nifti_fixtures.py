"""NIfTI conformance fixtures written by nibabel, and a checker for files lits writes.

    nifti_fixtures.py write DIR
        Writes into DIR one small volume for every combination of datatype (uint8 .. float64),
        byte order, scaling (none or scl_slope/scl_inter) and geometry (sform and qform,
        sform only, qform only, neither), .nii and .nii.gz alternating, plus files saved the
        ordinary nibabel way and nibabel's own bundled test images. DIR/manifest.json lists
        each file with what nibabel reads from it: shape, affine, orientation, zooms, the number of NaN/Inf voxels, the voxels
        of get_fdata(dtype=float32) in C order as raw little-endian float32 (NAME.f32).
        Files lits must refuse are listed with an "error" substring instead.

    nifti_fixtures.py compare ORIGINAL WRITTEN [--labels]
        Reads both with nibabel and checks that WRITTEN has ORIGINAL's shape, affine (1e-5),
        sform/qform codes and parameters, pixdim and units, and its voxels (bit-identical
        with --labels, else 1e-6 relative). Prints what differs; exits 1 if anything does.
"""

import glob
import json
import os
import shutil
import sys

import nibabel as nib
import numpy as np

DTYPES = ["u1", "i1", "u2", "i2", "u4", "i4", "f4", "f8"]
SHAPE = (7, 5, 4)


def rotation(ax, deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [a for a in range(3) if a != ax]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def affine_of(rot, zooms, flips, offset):
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(np.asarray(zooms) * np.asarray(flips))
    a[:3, 3] = offset
    return a


# sform: oblique LPS-like; qform: a different, clearly distinguishable placement.
SFORM = affine_of(rotation(2, 15) @ rotation(0, 5), [0.7, 0.8, 2.5], [-1, -1, 1], [120.5, 95.25, -300.0])
QFORM = affine_of(rotation(1, 10), [0.7, 0.8, 2.5], [1, -1, -1], [-50.0, 20.0, 10.0])


def values(code, rng):
    """Voxel values covering the type's extremes and ordinary values."""
    dt = np.dtype(code)
    n = int(np.prod(SHAPE))
    if dt.kind in "iu":
        info = np.iinfo(dt)
        v = rng.integers(info.min, int(info.max) + 1, size=n, dtype=np.int64)
        v[:4] = [info.min, info.max, 0, 1]
        if dt.itemsize <= 2:
            v[4:20] = rng.integers(0, 3, size=16)  # some label-like values
    else:
        v = rng.normal(0, 1000, size=n)
        v[:5] = [0.0, -0.0, 1e-30, -123.456, 3.0e4]
    return v.astype(dt).reshape(SHAPE, order="F")


def write_raw(path, raw, order, slope, inter, sform, qform):
    """Write a single-file NIfTI-1 with nibabel's own header and array writers, with
    exactly the stored values, byte order and scaling asked for."""
    hdr = nib.Nifti1Header(endianness=order)
    hdr.set_data_shape(raw.shape)
    hdr.set_data_dtype(raw.dtype.newbyteorder(order))
    hdr.set_zooms((0.7, 0.8, 2.5))
    hdr.set_xyzt_units("mm", "sec")
    if qform is not None:
        hdr.set_qform(qform, code=1)
    else:
        hdr.set_qform(None, code=0)
    if sform is not None:
        hdr.set_sform(sform, code=2)
    else:
        hdr.set_sform(None, code=0)
    hdr["scl_slope"] = slope
    hdr["scl_inter"] = inter
    hdr["vox_offset"] = 352
    with nib.openers.Opener(path, "wb") as f:
        hdr.write_to(f)  # the 348-byte header and the 4-byte extension flag
        nib.volumeutils.array_to_file(raw, f, hdr.get_data_dtype(), offset=352)


def record(out_dir, name, manifest, **extra):
    path = os.path.join(out_dir, name)
    img = nib.load(path)
    data = np.asarray(img.get_fdata(dtype=np.float32))
    raw_dtype = img.header.get_data_dtype()
    entry = {
        "file": name,
        "shape": list(data.shape[:3]),
        "affine": img.affine.tolist(),
        "orientation": "".join(nib.aff2axcodes(img.affine)),
        "zooms": [float(z) for z in img.header.get_zooms()[:3]],
        "integer_exact": bool(raw_dtype.kind in "iu" and img.dataobj.slope == 1 and img.dataobj.inter == 0),
        "labels": bool(np.all(np.isfinite(data)) and np.all(data == np.round(data)) and data.min() >= 0 and data.max() <= 255),
        "voxels": name + ".f32",
        "non_finite": int(np.sum(~np.isfinite(data))),
    }
    entry.update(extra)
    np.ascontiguousarray(data.reshape(data.shape[:3]), dtype="<f4").tofile(os.path.join(out_dir, entry["voxels"]))
    manifest.append(entry)


def write_all(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20240517)
    manifest = []
    geoms = {"sq": (SFORM, QFORM), "s": (SFORM, None), "q": (None, QFORM), "none": (None, None)}
    n = 0
    for code in DTYPES:
        for order in "<>":
            for scaled in (False, True):
                for gname, (sform, qform) in geoms.items():
                    raw = values(code, rng)
                    slope, inter = (2.5, -10.0) if scaled else (0.0, 0.0)
                    if not scaled and n % 3 == 0:
                        slope, inter = (1.0, 0.0)  # explicit identity scaling
                    if not scaled and n % 3 == 1:
                        slope, inter = (np.nan, np.nan)  # nibabel's "no scaling"
                    ext = ".nii.gz" if n % 2 else ".nii"
                    name = f"{code}_{'le' if order == '<' else 'be'}_{'scaled' if scaled else 'raw'}_{gname}{ext}"
                    write_raw(os.path.join(out_dir, name), raw, order, slope, inter, sform, qform)
                    record(out_dir, name, manifest)
                    n += 1

    # The ordinary nibabel way: float data stored as int16 (nibabel picks the scaling),
    # float32 images, uint8 masks, a 4-D file with one time point, a larger volume.
    big = rng.normal(0, 20000, size=(37, 19, 21))
    img = nib.Nifti1Image(big, SFORM)
    img.set_data_dtype(np.int16)
    nib.save(img, os.path.join(out_dir, "saved_int16_nibabel_scaling.nii.gz"))
    record(out_dir, "saved_int16_nibabel_scaling.nii.gz", manifest)
    nib.save(nib.Nifti1Image(big.astype(np.float32), QFORM), os.path.join(out_dir, "saved_f32.nii.gz"))
    record(out_dir, "saved_f32.nii.gz", manifest)
    mask = rng.integers(0, 3, size=(33, 18, 17)).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, np.diag([-0.8, -0.8, 1.5, 1.0])), os.path.join(out_dir, "saved_mask.nii.gz"))
    record(out_dir, "saved_mask.nii.gz", manifest)
    four = rng.integers(-1000, 2000, size=(6, 5, 4, 1)).astype(np.int16)
    nib.save(nib.Nifti1Image(four, SFORM), os.path.join(out_dir, "saved_4d_one_point.nii"))
    record(out_dir, "saved_4d_one_point.nii", manifest)

    # nibabel's bundled test images, as they ship with the pip package.
    data_dir = os.path.join(os.path.dirname(nib.__file__), "tests", "data")
    for src in sorted(glob.glob(os.path.join(data_dir, "*.nii")) + glob.glob(os.path.join(data_dir, "*.nii.gz"))):
        name = "nibabel_" + os.path.basename(src)
        try:
            img = nib.load(src)
        except Exception:
            continue
        if not isinstance(img, nib.Nifti1Image) and not isinstance(img, nib.Nifti2Image):
            continue  # CIFTI and others are not volumes
        shutil.copyfile(src, os.path.join(out_dir, name))
        if isinstance(img, nib.Nifti2Image):
            manifest.append({"file": name, "error": "NIfTI-2"})
        elif len(img.shape) > 3 and any(d > 1 for d in img.shape[3:]):
            manifest.append({"file": name, "error": "dimension 4 has"})
        else:
            record(out_dir, name, manifest)

    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump({"nibabel": nib.__version__, "cases": manifest}, f, indent=1)


def compare(orig, written, labels):
    a, b = nib.load(orig), nib.load(written)
    ha, hb = a.header, b.header
    problems = []
    if a.shape[:3] != b.shape[:3]:
        problems.append(f"shape {a.shape} != {b.shape}")
    if not np.allclose(a.affine, b.affine, atol=1e-5, rtol=0):
        problems.append(f"affine\n{a.affine}\n!=\n{b.affine}")
    for field in ["sform_code", "qform_code", "quatern_b", "quatern_c", "quatern_d",
                  "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "xyzt_units"]:
        if not np.array_equal(ha[field], hb[field]):
            problems.append(f"{field} {ha[field]} != {hb[field]}")
    if not np.array_equal(ha["pixdim"][:4], hb["pixdim"][:4]):
        problems.append(f"pixdim {ha['pixdim']} != {hb['pixdim']}")
    if not problems:
        if labels:
            va, vb = np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)
            if hb.get_data_dtype() != np.uint8:
                problems.append(f"labels written as {hb.get_data_dtype()}, not uint8")
            elif not np.array_equal(va.reshape(vb.shape), vb):
                problems.append(f"{np.sum(va.reshape(vb.shape) != vb)} label voxels differ")
        else:
            va = a.get_fdata(dtype=np.float32).reshape(b.shape)
            vb = b.get_fdata(dtype=np.float32)
            bad = ~np.isclose(vb, va, rtol=1e-6, atol=0)
            if bad.any():
                problems.append(f"{bad.sum()} voxels differ, e.g. {va[bad][:3]} vs {vb[bad][:3]}")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write_all(sys.argv[2])
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3], "--labels" in sys.argv[4:]))
    else:
        sys.exit(__doc__)
