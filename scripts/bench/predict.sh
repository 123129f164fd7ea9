#!/usr/bin/env bash
# Whole `lits predict` of a LiTS-sized CT (512x512x200 int16 .nii.gz, 0.7x0.7x2.5 mm, LPS,
# from scripts/bench/make_ct.py) against the network's time alone in the same run: the
# process's wall time (libtorch start-up and model loading included) and lits' own split
# of the scan's time into read, preprocess, network (the sliding window: forward passes and
# blending) and the rest (tensors, back to the scan's grid, post-processing, writing).
# Preprocessing: 1.5 mm isotropic, HU window; sliding window 128x128x64, overlap 0.25,
# Gaussian; the U-Net with seeded random weights (time does not depend on their values).
#
# Usage: scripts/bench/predict.sh [BASE_CHANNELS...]   (default: 8, the quick start's width)
#        LITS_BIN=path/to/lits skips the release build. Needs .venv (scripts/setup.sh).
# Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lits_bin.sh
BASES=("$@")
[ ${#BASES[@]} -gt 0 ] || BASES=(8)

. scripts/bench/ct_model.sh

echo "| U-Net base channels | whole process (s) | scan total (s) | read | preprocess | network | rest | whole / network |"
echo "|---|---|---|---|---|---|---|---|"
for base in "${BASES[@]}"; do
  ct_model "$base"
  start=$(date +%s.%N)
  line=$("$LITS_BIN" predict --weights "$WORK/w$base.safetensors" --config "$WORK/c$base.json" \
    "$WORK/ct.nii.gz" --out "$WORK/out" 2>&1 | grep "peak resident memory")
  whole=$(echo "$(date +%s.%N) - $start" | bc)
  [ -s "$WORK/out/ct_seg.nii.gz" ] || { echo "no mask written: $line" >&2; exit 1; }
  "$PY" - "$whole" "$base" "$line" <<'PY'
import re, sys
whole, base, line = float(sys.argv[1]), sys.argv[2], sys.argv[3]
t = dict(re.findall(r"(read|preprocess|network|rest) ([0-9.]+) s", line))
total = float(re.search(r"; ([0-9.]+) s:", line).group(1))
print(f"| {base} | {whole:.2f} | {total:.2f} | {t['read']} | {t['preprocess']} | {t['network']} | {t['rest']} "
      f"| {whole / float(t['network']):.2f} |")
PY
  rm -rf "$WORK/out"
done
echo
echo "1-minute load average at the end: $(cut -d' ' -f1 /proc/loadavg)"
