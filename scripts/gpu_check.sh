#!/usr/bin/env bash
# GPU check of deterministic training, for a CUDA node:
#   1. `lits env --json` must see a CUDA device (libtorch_cuda linked, driver present);
#   2. two short trainings of the same config and seed on the GPU, compared byte for byte
#      (weights and metric log), and a third with another seed that must differ;
#   3. a training step of the default U-Net (base 32) timed on the GPU, lits against the
#      PyTorch reference (scripts/bench/model_bench.py, train step).
#
#   scripts/gpu_check.sh [--device cuda|cpu] [--size N]
#
# Environment: LITS_BIN (default target/release/lits), BENCH_MODEL (default
# target/release/examples/bench_model, for step 3), PYTHON (default .venv/bin/python; any
# Python with the same torch works). Where the binaries were built on another machine, set
# LD_LIBRARY_PATH to that machine's torch/lib (python3 -c 'import torch, os;
# print(os.path.dirname(torch.__file__))'). `--device cpu` runs the same checks on the CPU
# (for trying the script out). Exits non-zero on the first failed check.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
device=cuda
size=64
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    *) echo "usage: $0 [--device cuda|cpu] [--size N]" >&2; exit 2 ;;
  esac
done
lits=${LITS_BIN:-$root/target/release/lits}
bench=${BENCH_MODEL:-$root/target/release/examples/bench_model}
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$lits" ] || { echo "gpu_check: no lits binary at $lits (build with cargo build --release -p lits-cli)" >&2; exit 1; }
work=$(mktemp -d -t lits-gpu-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
export LITS_CACHE_DIR="$work/cache"

echo "== 1. environment"
"$lits" env --json >"$work/env.json"
"$python" - "$work/env.json" "$device" <<'PY'
import json, sys
env, device = json.load(open(sys.argv[1])), sys.argv[2]
print(json.dumps({k: env.get(k) for k in ("libtorch", "cuda", "cudnn", "devices")}, indent=1))
if device.startswith("cuda") and not env.get("cuda", {}).get("available"):
    sys.exit("gpu_check: FAILED: lits sees no CUDA device")
PY

echo "== 2. determinism on $device"
cat >"$work/config.json" <<JSON
{
  "name": "gpu-check", "seed": 0, "deterministic": true, "device": "$device", "threads": 4,
  "loader_workers": 2,
  "data": { "synth": { "cases": 6, "seed": 3 }, "split": { "kind": "ids", "val": [5] } },
  "preprocess": { "mode": "spacing", "target_spacing": [4.0, 4.0, 5.0],
                  "intensity": { "kind": "window", "lower": -200.0, "upper": 300.0 } },
  "patches": { "patch": [64, 64, 32], "batch_size": 4, "foreground_fraction": 0.5 },
  "model": { "base_channels": 16, "dropout": 0.1, "updown_dropout": 0.001 },
  "loss": { "kind": "dice_ce", "class_weights": [1.0, 1.0, 1.0], "batch_dice": true, "dice_background": false },
  "optimizer": { "kind": "adam", "lr": 0.001 },
  "epochs": 3, "steps_per_epoch": 10,
  "validation": { "every": 3, "sliding_window": { "patch": [64, 64, 32], "overlap": 0.5 } }
}
JSON
for run in a b; do
  "$lits" train --config "$work/config.json" --out "$work/$run" >/dev/null 2>"$work/$run.log"
done
"$lits" train --config "$work/config.json" --seed 1 --out "$work/c" >/dev/null 2>"$work/c.log"
sum() { sha256sum "$1" | cut -d' ' -f1; }
for f in last.safetensors metrics.jsonl; do
  a=$(sum "$work/a/$f") b=$(sum "$work/b/$f")
  echo "$f: $a / $b"
  [ "$a" = "$b" ] || { echo "gpu_check: FAILED: two runs with the same seed differ in $f" >&2; exit 1; }
done
c=$(sum "$work/c/last.safetensors")
[ "$c" != "$(sum "$work/a/last.safetensors")" ] || { echo "gpu_check: FAILED: another seed gave the same weights" >&2; exit 1; }
echo "same seed: identical bytes; other seed: different weights"

echo "== 3. training step, lits against PyTorch"
if [ -x "$bench" ]; then
  "$python" "$root/scripts/bench/model_bench.py" run --bin "$bench" --only train --size "$size" \
    --rounds 2 --iters 5 --threads 4 --device "$device" --workdir "$work/bench"
else
  echo "no bench_model binary at $bench (cargo build --release -p lits-model --example bench_model); step skipped" >&2
  exit 1
fi
echo "gpu_check: passed"
