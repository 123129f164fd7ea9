#!/usr/bin/env bash
# Peak resident memory of `lits predict` on a LiTS-sized CT (512x512x200 int16 .nii.gz,
# 0.7x0.7x2.5 mm, LPS, from scripts/bench/make_ct.py: 200 MiB as float32), as lits reports
# it per scan, for the pipeline alone: a 4-channel U-Net with seeded random weights, so
# that the network's own activations (one window) stay small beside the scan. Two
# preprocessings: 1.5 mm isotropic (prepared grid 0.36x the scan) and the recommended
# 0.8x0.8x1.5 mm with a body crop (1.27x the scan before cropping); each plain, with
# --preview, and with --uncertainty 2 --probabilities.
#
# Usage: scripts/bench/predict_memory.sh   (LITS_BIN=path/to/lits skips the release build)
# Needs .venv (scripts/setup.sh). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lits_bin.sh

"$PY" scripts/bench/make_ct.py "$WORK/ct.nii.gz"
# A 64x64x32 scan of the same spacing: what libtorch, the model and one window cost alone.
"$PY" - "$WORK/small.nii.gz" <<'PY'
import sys, numpy as np, nibabel as nib
vol = np.random.default_rng(0).normal(40, 15, (64, 64, 32)).astype(np.float32)
nib.save(nib.Nifti1Image(vol, np.diag([-0.7, -0.7, 2.5, 1.0])), sys.argv[1])
PY
"$PY" scripts/reference/parity.py save --out "$WORK/weights" --base 4 --seed 0 >/dev/null

config() {  # name, preprocess JSON
  cat > "$WORK/$1.json" <<JSON
{ "model": { "base_channels": 4, "dropout": 0.1 },
  "preprocess": $2,
  "validation": { "sliding_window": { "patch": [128, 128, 64], "overlap": 0.25 } } }
JSON
}
config iso '{ "mode": "spacing", "target_spacing": [1.5, 1.5, 1.5], "intensity": { "kind": "window", "lower": -200, "upper": 300 } }'
config patch '{ "mode": "spacing", "target_spacing": [0.8, 0.8, 1.5], "crop": { "kind": "body", "threshold": -500, "margin_mm": [5, 5, 0] }, "intensity": { "kind": "window", "lower": -200, "upper": 300 } }'

row() {  # scan, config, options...
  local scan=$1 cfg=$2 start line secs mib
  shift 2
  start=$(date +%s.%N)
  line=$("$LITS_BIN" predict --weights "$WORK/weights.safetensors" --config "$WORK/$cfg.json" \
    "$@" "$WORK/$scan.nii.gz" --out "$WORK/out" 2>&1 | grep "peak resident memory")
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  mib=$(echo "$line" | sed -E 's/.*peak resident memory ([0-9]+) MiB.*/\1/')
  printf '| %s | %s | %s | %s | %.1f | %.0f |\n' "$scan" "$cfg" "${*:-none}" "$mib" "$(echo "$mib / 200" | bc -l)" "$secs"
  rm -rf "$WORK/out"
}

echo "| scan | preprocessing | options | peak resident memory (MiB) | × float32 CT (200 MiB) | seconds |"
echo "|---|---|---|---|---|---|"
row small iso
for cfg in iso patch; do
  row ct "$cfg"
  row ct "$cfg" --preview
  row ct "$cfg" --uncertainty 2 --probabilities
done
echo
echo "1-minute load average at the end: $(cut -d' ' -f1 /proc/loadavg)"
