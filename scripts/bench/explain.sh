#!/usr/bin/env bash
# `lits explain` (Guided Grad-CAM of the tumor class) of a LiTS-sized CT against
# `lits predict` of it: the same 512x512x200 int16 .nii.gz (0.7x0.7x2.5 mm, LPS, from
# scripts/bench/make_ct.py), the same weights, preprocessing and sliding window, each in its
# own process. Reports lits' own split of the scan's time (read, preprocess, network: for
# explain the forward and backward passes of every window and the blending; rest) and the
# peak resident memory each reports for the scan (VmHWM, reset before the scan).
# Preprocessing: 1.5 mm isotropic, HU window; sliding window 128x128x64, overlap 0.25,
# Gaussian; the U-Net with seeded random weights (time does not depend on their values).
#
# Usage: scripts/bench/explain.sh [BASE_CHANNELS...]   (default: 8, the quick start's width)
#        LITS_BIN=path/to/lits skips the release build. Needs .venv (scripts/setup.sh).
# Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lits_bin.sh
BASES=("$@")
[ ${#BASES[@]} -gt 0 ] || BASES=(8)

. scripts/bench/ct_model.sh

echo "| U-Net base channels | command | scan total (s) | read | preprocess | network | rest | peak resident memory |"
echo "|---|---|---|---|---|---|---|---|"
for base in "${BASES[@]}"; do
  ct_model "$base"
  for cmd in predict explain; do
    line=$("$LITS_BIN" "$cmd" --weights "$WORK/w$base.safetensors" --config "$WORK/c$base.json" \
      "$WORK/ct.nii.gz" --out "$WORK/out" 2>&1 | grep "peak resident memory") \
      || { echo "lits $cmd wrote no report" >&2; exit 1; }
    "$PY" - "$base" "$cmd" "$line" <<'PY'
import re, sys
base, cmd, line = sys.argv[1], sys.argv[2], sys.argv[3]
t = dict(re.findall(r"(read|preprocess|network|rest) ([0-9.]+) s", line))
total = float(re.search(r"; ([0-9.]+) s:", line).group(1))
peak = re.search(r"peak resident memory ([^;]+);", line).group(1)
print(f"| {base} | {cmd} | {total:.2f} | {t['read']} | {t['preprocess']} | {t['network']} | {t['rest']} | {peak} |")
PY
  done
  [ -s "$WORK/out/ct_seg.nii.gz" ] && [ -s "$WORK/out/ct_seg_explain_tumor.nii.gz" ] \
    || { echo "an output is missing" >&2; exit 1; }
  rm -rf "$WORK/out"
done
echo
echo "1-minute load average at the end: $(cut -d' ' -f1 /proc/loadavg)"
