#!/usr/bin/env bash
# Loading a LiTS-sized CT (512x512x200 int16 .nii.gz, 0.7x0.7x2.5 mm) and resampling it to
# 1.5 mm isotropic (trilinear): lits_data (read_image + resample::image_to_spacing) against
# nibabel get_fdata + scipy.ndimage.zoom(order=1) and against SimpleITK ReadImage +
# ResampleImageFilter (linear, float32), on the same file in the same run. Time is the median
# of REPEATS runs in one process per tool; peak RSS comes from a separate single run of each
# under /usr/bin/time -v (the Python figures include the interpreter and its imports).
#
# Usage: scripts/bench/resample.sh [REPEATS]   (default 3). Prints a Markdown table.
# Needs .venv (scripts/setup.sh). Builds the resample_bench example in release mode.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPEATS="${1:-3}"
PY=.venv/bin/python
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cargo build --release -q -p lits-data --example resample_bench
BENCH="$TARGET_DIR/release/examples/resample_bench"

# The synthetic CT of scripts/bench/make_ct.py (also used by nifti_read.sh).
"$PY" scripts/bench/make_ct.py "$WORK/ct.nii.gz"

cat > "$WORK/peer.py" <<'PY'
import json, sys, time
import numpy as np

tool, path, target, repeats = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
load, resample = [], []
for _ in range(repeats):
    if tool == "scipy":
        import nibabel as nib
        import scipy.ndimage as ndi
        t = time.perf_counter()
        img = nib.load(path)
        a = img.get_fdata()
        load.append(time.perf_counter() - t)
        t = time.perf_counter()
        zoom = [s / target for s in img.header.get_zooms()[:3]]
        out = ndi.zoom(a, zoom, order=1)
        resample.append(time.perf_counter() - t)
        shape = out.shape
    else:
        import SimpleITK as sitk
        t = time.perf_counter()
        img = sitk.ReadImage(path, sitk.sitkFloat32)
        load.append(time.perf_counter() - t)
        t = time.perf_counter()
        f = sitk.ResampleImageFilter()
        f.SetOutputOrigin(img.GetOrigin())
        f.SetOutputDirection(img.GetDirection())
        f.SetOutputSpacing([target] * 3)
        f.SetSize([int(round(n * s / target)) for n, s in zip(img.GetSize(), img.GetSpacing())])
        f.SetInterpolator(sitk.sitkLinear)
        f.SetOutputPixelType(sitk.sitkFloat32)
        out = f.Execute(img)
        resample.append(time.perf_counter() - t)
        shape = out.GetSize()
print(json.dumps({"load_s": load, "resample_s": resample, "shape": list(shape)}))
PY

run() {  # name, command...: timing JSON to $WORK/NAME.json, peak RSS (KiB) to $WORK/NAME.rss
  local name=$1; shift
  "$@" "$REPEATS" > "$WORK/$name.json"
  /usr/bin/time -f "%M" -o "$WORK/$name.rss" "$@" 1 > /dev/null
}
run lits "$BENCH" "$WORK/ct.nii.gz" 1.5
run scipy "$PY" "$WORK/peer.py" scipy "$WORK/ct.nii.gz" 1.5
run sitk "$PY" "$WORK/peer.py" sitk "$WORK/ct.nii.gz" 1.5

"$PY" - "$WORK" <<'PY'
import json, os, statistics, sys
w = sys.argv[1]
rows = {}
for name in ("lits", "scipy", "sitk"):
    d = json.load(open(f"{w}/{name}.json"))
    load, res = statistics.median(d["load_s"]), statistics.median(d["resample_s"])
    rss = int(open(f"{w}/{name}.rss").read().split()[-1]) / 1024
    rows[name] = (load, res, load + res, rss, d["shape"])
label = {
    "lits": "lits_data read_image + image_to_spacing",
    "scipy": "nibabel get_fdata + scipy.ndimage.zoom(order=1)",
    "sitk": "SimpleITK ReadImage + ResampleImageFilter (linear)",
}
base = rows["lits"][2]
print(f"1-minute load average at the end: {os.getloadavg()[0]:.2f}; output shape {rows['lits'][4]}")
print("| tool | load (s) | resample (s) | total (s) | total vs lits | peak RSS (MiB) |")
print("|---|---|---|---|---|---|")
for name, (load, res, total, rss, _) in rows.items():
    print(f"| {label[name]} | {load:.2f} | {res:.2f} | {total:.2f} | {total / base:.1f}x | {rss:.0f} |")
PY
