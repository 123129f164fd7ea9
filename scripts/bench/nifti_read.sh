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
BENCH="${CARGO_TARGET_DIR:-target}/release/examples/read_bench"

"$PY" scripts/bench/make_ct.py "$WORK/ct.nii.gz" "$WORK/ct.nii"

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
