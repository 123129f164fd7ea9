#!/usr/bin/env bash
# Reading a LiTS-sized CT (512x512x200 int16, scl_slope/scl_inter set): lits_data's
# read_image against nibabel's get_fdata(dtype=float32) on the same file in the same run,
# as .nii.gz and as .nii; for the .nii.gz also the gzip decoders alone.
#
# Usage: scripts/bench/nifti_read.sh [REPEATS]   (default 5; prints the median of each)
# Needs .venv (scripts/setup.sh). Builds the read_bench example in release mode.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPEATS="${1:-5}"
PY=.venv/bin/python
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cargo build --release -q -p lits-data --example read_bench
BENCH=target/release/examples/read_bench

# A synthetic CT: air outside an elliptic body, soft tissue inside, a spine, and noise of
# 15 HU everywhere (noise is what makes real CT compress only about 2:1).
"$PY" - "$WORK" <<'PY'
import sys, numpy as np, nibabel as nib
rng = np.random.default_rng(0)
nx, ny, nz = 512, 512, 200
x = (np.arange(nx) - nx / 2)[:, None, None] / 200.0
y = (np.arange(ny) - ny / 2)[None, :, None] / 150.0
body = (x**2 + y**2) < 1.0
vol = np.where(body, 1064, 24).astype(np.int16) + rng.normal(0, 15, (nx, ny, nz)).astype(np.int16)
spine = ((x**2 + (y + 0.6) ** 2) < 0.02) & body
vol[np.broadcast_to(spine, vol.shape)] += 700
aff = np.diag([-0.7, -0.7, 2.5, 1.0]); aff[:3, 3] = [180, 180, -300]
img = nib.Nifti1Image(np.broadcast_to(vol, (nx, ny, nz)).astype(np.int16), aff)
img.header.set_slope_inter(1.0, -1024.0)
for ext in ("nii.gz", "nii"):
    nib.save(img, f"{sys.argv[1]}/ct.{ext}")
PY

for ext in nii.gz nii; do
  f="$WORK/ct.$ext"
  "$PY" - "$f" "$REPEATS" > "$WORK/py.$ext.json" <<'PY'
import json, sys, time, nibabel as nib, numpy as np
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    a = nib.load(sys.argv[1]).get_fdata(dtype=np.float32)
    times.append(time.perf_counter() - t)
print(json.dumps({"what": "nibabel", "seconds": times, "check": float(a.sum(dtype=np.float64))}))
PY
  "$BENCH" "$f" "$REPEATS" > "$WORK/rs.$ext.json"
  "$PY" - "$f" "$WORK/py.$ext.json" "$WORK/rs.$ext.json" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for p in sys.argv[2:] for l in open(p)]
med = {r["what"]: statistics.median(r["seconds"]) for r in rows}
check = {r["what"]: r["check"] for r in rows}
assert abs(check["nibabel"] - check["read_image"]) <= 1e-6 * abs(check["nibabel"]), check
name = os.path.basename(sys.argv[1])
size = os.path.getsize(sys.argv[1]) / 2**20
print(f"{name} ({size:.0f} MiB): nibabel {med['nibabel']:.3f} s, lits read_image {med['read_image']:.3f} s, "
      f"ratio {med['nibabel'] / med['read_image']:.2f}x")
if "gunzip_libdeflate" in med:
    print(f"  gzip alone: libdeflate {med['gunzip_libdeflate']:.3f} s, flate2/zlib-rs {med['gunzip_flate2_zlib_rs']:.3f} s")
PY
done
