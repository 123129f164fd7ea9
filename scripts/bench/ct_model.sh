# Sourced by the benchmarks that run lits on the CT of make_ct.py, after lits_bin.sh: writes
# $WORK/ct.nii.gz and defines ct_model BASE, which writes $WORK/wBASE.safetensors (the U-Net
# with seeded random weights, BASE channels) and $WORK/cBASE.json (1.5 mm isotropic, HU
# window, sliding window 128x128x64, overlap 0.25, Gaussian).
"$PY" scripts/bench/make_ct.py "$WORK/ct.nii.gz"

ct_model() {
  "$PY" scripts/reference/parity.py save --out "$WORK/w$1" --base "$1" --seed 0 >/dev/null
  cat > "$WORK/c$1.json" <<JSON
{ "model": { "base_channels": $1 },
  "preprocess": { "mode": "spacing", "target_spacing": [1.5, 1.5, 1.5],
                  "intensity": { "kind": "window", "lower": -200, "upper": 300 } },
  "validation": { "sliding_window": { "patch": [128, 128, 64], "overlap": 0.25, "gaussian": true, "batch": 1 } } }
JSON
}
